"""The pieces of the egress probe, without a lab: the lab's internet service answers with the
caller's address; the reference app's `GET /egress` reports what it reached; the probe records
one sample per attempt, through a zone's servers or from inside a namespace, and never asks
from the machine's own network when it cannot enter the zone's."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gameday.clock import Clock
from gameday.history import Sample
from gameday.probes.egress import EgressProbe
from gameday.target import Target, _parse_target
from lab.app.main import Settings, create_app
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def outside() -> Iterator[str]:
    """The lab's internet service, on loopback."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.outside", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until("the outside service answers", lambda: httpx.get(url).status_code == 200, 30)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_internet_service_answers_with_the_callers_address(outside: str) -> None:
    answer = httpx.get(outside)
    assert answer.json() == {"source": "127.0.0.1"}
    assert answer.http_version == "HTTP/1.0"  # one request a connection: a new flow each time


def ask_egress(egress_url: str | None) -> httpx.Response:
    """GET /egress of the reference app, in process (no lifespan: /egress needs no pool)."""
    settings = Settings(
        server_name="server1", zone="a", db_write_url="postgresql://x@127.0.0.1:9/x",
        db_read_url="postgresql://x@127.0.0.1:9/x", redis_url="redis://127.0.0.1:9/0",
        egress_url=egress_url,
    )  # fmt: skip

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/egress")

    return asyncio.run(ask())


def test_the_apps_egress_endpoint_says_what_it_reached(outside: str) -> None:
    ok = ask_egress(outside)
    assert ok.status_code == 200
    body = ok.json()
    assert body["ok"] is True and body["source"] == "127.0.0.1"
    assert (body["server"], body["zone"]) == ("server1", "a")

    closed = ask_egress(f"http://127.0.0.1:{free_port()}/")
    assert closed.status_code == 502
    assert closed.json()["ok"] is False and closed.json()["error"] == "refused"

    none = ask_egress(None)
    assert none.status_code == 404 and none.json()["error"] == "no egress URL configured"


class _Zone(http.server.BaseHTTPRequestHandler):
    """A server of a zone answering `/egress` as the reference app does."""

    answer: tuple[int, dict[str, object]] = (200, {"ok": True, "source": "198.51.100.2"})

    def do_GET(self) -> None:
        status, body = self.answer
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def zone_server() -> Iterator[tuple[str, type[_Zone]]]:
    handler = type("Handler", (_Zone,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def target(server_url: str, egress: str) -> Target:
    return _parse_target(
        f"name: shop\nprovider: generic\nentrypoint:\n  url: {server_url}\n"
        f"servers:\n  - name: web1\n    zone: a\n    url: {server_url}\n{egress}",
        "shop.yaml",
    )


def probe(t: Target, count: int) -> list[Sample]:
    samples: list[Sample] = []
    EgressProbe(t, zone="a", rate=20, clock=Clock(), record=samples.append, limit=count) \
        .start().join()  # fmt: skip
    return sorted(samples, key=lambda s: s.seq)


def test_through_a_server_the_probe_records_the_address_seen_and_the_failures(
    zone_server: tuple[str, type[_Zone]],
) -> None:
    url, handler = zone_server
    t = target(url, "egress:\n  via: servers\n")
    [first] = probe(t, 1)
    assert (first.probe, first.ok, first.server, first.error) == (
        "egress a",
        True,
        "198.51.100.2",
        None,
    )
    handler.answer = (502, {"ok": False, "error": "timeout"})
    [cut] = probe(t, 1)
    assert (cut.ok, cut.status, cut.error, cut.server) == (False, 502, "http", None)


def test_a_probe_that_cannot_enter_the_zone_sends_nothing_from_the_machine(
    zone_server: tuple[str, type[_Zone]],
) -> None:
    url, handler = zone_server
    calls: list[str] = []
    handler.do_GET = lambda self: calls.append(self.path)  # type: ignore[method-assign]
    # The "internet" URL is reachable from the machine: the probe must still not call it.
    t = target(
        url,
        f"egress:\n  via: netns\n  url: {url}/\n  zones:\n"
        "    a:\n      netns: /run/netns/gameday-test-no-such-namespace\n",
    )
    samples = probe(t, 3)
    time.sleep(0.2)
    assert [(s.ok, s.error) for s in samples] == [(False, "other")] * 3
    assert calls == []
