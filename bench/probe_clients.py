"""Benchmark: which HTTP client the HTTP probe should use, by CPU per request.

Each client sends `--requests` GETs one after another on one keep-alive connection (a closed
loop, as wrk -c1) to the lab's entrypoint: httpx.Client (what the probe used before: a thread
per request on top), httpx.AsyncClient on one event loop, h11 under an asyncio protocol, and
gameday.probes.http11 (what the probe uses now). Printed per client: requests per second of
wall time, and CPU microseconds per request of this process (user + system). wrk on one
connection for the same number of seconds is the reference. Medians over runs, [min - max],
and the machine's load (`uptime`).

    .venv/bin/python bench/probe_clients.py --requests 3000 --runs 3
    .venv/bin/python bench/probe_clients.py --requests 3000 --runs 3 --path /health

The default path is HAProxy's own answer (/lb/static): no backend in the way, so the numbers
are the clients' (a busy backend would add its own noise).

Starts the lab of $GAMEDAY_LAB_BASE_PORT if needed (and stops it after, if it started it).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import h11
import httpx

from gameday.probes.http11 import Connection
from gameday.target import load_target
from lab import control
from lab.configs import STATIC_PATH
from lab.layout import LabLayout


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def with_httpx_sync(url: str, n: int) -> None:
    with httpx.Client() as client:
        for _ in range(n):
            client.get(url).raise_for_status()


async def with_httpx_async(url: str, n: int) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(n):
            (await client.get(url)).raise_for_status()


class _H11(asyncio.Protocol):
    def __init__(self) -> None:
        self.conn = h11.Connection(h11.CLIENT)
        self.done: asyncio.Future[int] | None = None
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                self.conn.start_next_cycle()
                assert self.done is not None
                self.done.set_result(self.status)
                return

    def get(self, host: str, path: str) -> asyncio.Future[int]:
        self.done = asyncio.get_running_loop().create_future()
        request = h11.Request(method="GET", target=path, headers=[("Host", host)])
        self.transport.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        return self.done


async def with_h11(url: str, n: int) -> None:
    u = urlsplit(url)
    _, proto = await asyncio.get_running_loop().create_connection(_H11, u.hostname, u.port)
    for _ in range(n):
        assert await proto.get(u.netloc, u.path) == 200
    proto.transport.close()


class _Waiter:
    """The Listener side of gameday.probes.http11.Connection, for one request at a time."""

    def __init__(self) -> None:
        self.done: asyncio.Future[int] | None = None

    def answered(
        self, conn: Connection, job: object, status: int, header: str | None, keep_alive: bool
    ) -> None:
        assert self.done is not None and keep_alive
        self.done.set_result(status)

    def broken(self, conn: Connection, job: object, exc: BaseException | None) -> None:
        assert self.done is not None
        self.done.set_exception(exc or ConnectionResetError())

    def dropped(self, conn: Connection) -> None:
        pass


async def with_gameday(url: str, n: int) -> None:
    u = urlsplit(url)
    waiter = _Waiter()
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(waiter, "x-served-by"),
                                           u.hostname, u.port)  # fmt: skip
    request = f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode()
    for i in range(n):
        waiter.done = loop.create_future()
        conn.send(i, request)
        assert await waiter.done == 200
    conn.close()


CLIENTS: dict[str, Callable[[str, int], object]] = {
    "httpx.Client (sync)": with_httpx_sync,
    "httpx.AsyncClient": lambda url, n: asyncio.run(with_httpx_async(url, n)),
    "h11 + asyncio protocol": lambda url, n: asyncio.run(with_h11(url, n)),
    "gameday.probes.http11": lambda url, n: asyncio.run(with_gameday(url, n)),
}


def wrk_c1(url: str, seconds: int) -> float:
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{seconds}s", url], capture_output=True,
                         text=True, check=True, timeout=seconds + 30).stdout  # fmt: skip
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    return float(found.group(1))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--path", default=STATIC_PATH)
    args = parser.parse_args()
    layout = LabLayout.from_env()
    started = not control.is_running(layout)
    control.up(layout)
    target = load_target("lab")
    url = target.entrypoint.url.rstrip("/") + args.path
    print(f"load before: {uptime()}", flush=True)
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in [*CLIENTS, "wrk -c1"]}
    try:
        for i in range(args.runs):
            seconds = 0.0
            for name, client in CLIENTS.items():
                cpu0, wall0 = _cpu(), time.monotonic()
                try:
                    client(url, args.requests)
                except Exception as exc:  # an overloaded endpoint: say so, keep the others
                    print(f"run {i + 1} {name}: failed ({type(exc).__name__}: {exc}); left out",
                          flush=True)  # fmt: skip
                    continue
                wall, cpu = time.monotonic() - wall0, _cpu() - cpu0
                seconds = max(seconds, wall)
                rows[name].append((args.requests / wall, cpu / args.requests * 1e6))
                print(f"run {i + 1} {name}: {args.requests / wall:.0f} req/s, "
                      f"{cpu / args.requests * 1e6:.0f} µs CPU/request", flush=True)  # fmt: skip
            rps = wrk_c1(url, max(1, round(seconds)))
            rows["wrk -c1"].append((rps, float("nan")))
            print(f"run {i + 1} wrk -c1: {rps:.0f} req/s", flush=True)
    finally:
        if started:
            control.down(layout)
    print(f"load after: {uptime()}")
    print(f"median of {args.runs} runs, {args.requests} GET {url} on one connection [min - max]:")
    for name, values in rows.items():
        if not values:
            print(f"  {name:24s} no run finished")
            continue
        rps = [v[0] for v in values]
        cpu = [v[1] for v in values]
        cpu_text = (
            f"{statistics.median(cpu):6.0f} µs CPU/request [{min(cpu):.0f} - {max(cpu):.0f}]"
            if name != "wrk -c1"
            else "(its own process)"
        )
        print(f"  {name:24s} {statistics.median(rps):7.0f} req/s [{min(rps):.0f} - "
              f"{max(rps):.0f}]   {cpu_text}")  # fmt: skip


if __name__ == "__main__":
    main()
