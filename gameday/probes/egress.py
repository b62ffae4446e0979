"""The egress probe: does a zone reach the internet, and through which address does it leave?

One probe per zone (`egress <zone>`), at a fixed rate (gameday.probes.schedule.FixedRate, so a
sample's send time is when its request really started). Each sample is one attempt: `ok` when
the internet answered, and `server` the address the internet saw the zone come from (its NAT's
public address), so checks can say "zone a lost egress at +3.1 s" and "zones a and b both leave
through 198.51.100.2". How the zone is reached is the target's `egress.via`:

- `netns`: the harness itself enters the zone's network namespace (setns on the probe's own
  worker threads, root only) and GETs the internet service on a new connection every time,
  which answers with JSON naming the caller's address (`{"source": "198.51.100.2"}`). A worker
  that cannot enter the namespace sends nothing: it never falls back to the machine's own
  network, which would measure the wrong thing (and reach a real internet).
- `servers`: GET `egress.path` on a server of the zone (the reference app's `/egress`), which
  calls the internet itself: 200 with `source`, or 502 when the zone has no way out. A server
  that cannot be reached is a failure too (no answer about its egress).
- `routes` (AWS): no traffic; each tick reads the zone's private route tables: the sample is
  ok while every one sends 0.0.0.0/0 to a NAT gateway (active), and `server` is that NAT's
  public address. `judged_from` says so, for the verdicts.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from gameday.checks.schedule import ScheduleReport
from gameday.clock import Clock
from gameday.history import Sample
from gameday.probes.http import error_kind
from gameday.probes.schedule import FixedRate, Tick
from gameday.target import Target

CLONE_NEWNET = 0x40000000
PROBE_PREFIX = "egress "
JUDGED_FROM = {
    "netns": "requests from inside the zone",
    "servers": "the zone's servers' /egress",
    "routes": "the zone's route tables, not traffic",
}


def probe_name(zone: str) -> str:
    return f"{PROBE_PREFIX}{zone}"


class NamespaceError(OSError):
    """The worker could not enter the zone's network namespace: nothing was sent."""


def enter_netns(path: str) -> None:
    """Move the calling thread (only it: network namespaces are per thread) into `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise NamespaceError(errno, f"setns({path}): {os.strerror(errno)}")
    finally:
        os.close(fd)


class EgressProbe:
    """Ask whether `zone` reaches the internet, `rate` times a second (see the module doc)."""

    def __init__(
        self,
        target: Target,
        *,
        zone: str,
        rate: float,
        clock: Clock,
        record: Callable[[Sample], None],
        limit: int | None = None,
    ) -> None:
        egress = target.egress
        if egress is None:
            raise ValueError(f"target {target.name!r} declares no egress")
        if zone not in target.egress_zones():
            raise ValueError(f"target {target.name!r} has no egress to probe in zone {zone!r}")
        self.name = probe_name(zone)
        self.zone = zone
        self.rate = rate
        self.via = egress.via
        self.judged_from = JUDGED_FROM[egress.via]
        self.timeout_sec = egress.timeout_sec
        self._target = target
        self._record = record
        self._local = threading.local()
        self._ask: Callable[[], tuple[str | None, int | None]]
        if egress.via == "netns":
            assert egress.url is not None  # the target's validation says so
            self._netns = egress.zones[zone].netns
            self._url = urlsplit(egress.url)
            self._ask = self._ask_in_netns
        elif egress.via == "servers":
            import httpx

            server = next(s for s in target.servers if s.zone == zone and s.url)
            assert server.url is not None
            self._client = httpx.Client(base_url=server.url, timeout=self.timeout_sec * 2 + 1)
            self._path = egress.path
            self._ask = self._ask_server
        else:
            self._routes = _Routes(target, zone)
            self._ask = self._routes.ask
        self._scheduler = FixedRate(
            self._tick, rate=rate, clock=clock, timeout_sec=self.timeout_sec * 2 + 1,
            limit=limit, name=self.name, unit="request",
        )  # fmt: skip

    def start(self) -> EgressProbe:
        self._scheduler.start()
        return self

    def stop(self) -> None:
        self._scheduler.stop()
        if self.via == "servers":
            self._client.close()

    def join(self) -> None:
        self._scheduler.join()

    def settled_until(self) -> float:
        return self._scheduler.settled_until()

    def schedule_report(self) -> ScheduleReport:
        return self._scheduler.report()

    # -- one attempt ----------------------------------------------------------------------
    def _tick(self, tick: Tick) -> None:
        started = time.monotonic()
        source: str | None = None
        status: int | None = None
        error: str | None = None
        try:
            source, status = self._ask()
        except NamespaceError:
            error = "other"
        except Exception as exc:  # every attempt is a sample, whatever broke
            error = error_kind(exc)
        if error is None and source is None:
            error = "http" if status is not None else "other"
        duration = None if error == "timeout" else time.monotonic() - started
        self._record(
            Sample(
                probe=self.name, seq=tick.seq, sent=tick.sent, duration=duration,
                ok=error is None, status=status, error=error, server=source,
            )
        )  # fmt: skip

    def _ask_in_netns(self) -> tuple[str | None, int | None]:
        if getattr(self._local, "netns", None) != self._netns:
            enter_netns(self._netns)  # raises rather than ask from the wrong network
            self._local.netns = self._netns
        host, port = self._url.hostname or "", self._url.port or 80
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout_sec)
        try:
            conn.request("GET", self._url.path or "/", headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            return None, resp.status
        return str(json.loads(body)["source"]), resp.status

    def _ask_server(self) -> tuple[str | None, int | None]:
        resp = self._client.get(self._path)
        try:
            body: Any = resp.json()
        except ValueError:
            body = {}
        source = body.get("source") if isinstance(body, dict) else None
        if resp.status_code != 200 or not isinstance(source, str):
            return None, resp.status_code
        return source, resp.status_code


class _Routes:
    """AWS: the zone's egress as its private route tables say (no traffic is sent)."""

    def __init__(self, target: Target, zone: str) -> None:
        from gameday.aws import client

        aws = target.aws
        assert aws is not None  # the target's validation says so
        self._ec2 = client(aws, "ec2")
        name = next(z for z in aws.zones if z == zone or z == aws.region + zone)
        declared = aws.zones[name]
        nats = self._ec2.describe_nat_gateways()["NatGateways"]
        self._public = {
            n["NatGatewayId"]: (n.get("NatGatewayAddresses") or [{}])[0].get("PublicIp")
            or n["NatGatewayId"]
            for n in nats
        }
        tables = list(declared.private_route_table_ids)
        if not tables and declared.nat_gateway_id:
            # Found once, at the start: while the fault is in effect no table routes to the NAT.
            for table in self._ec2.describe_route_tables()["RouteTables"]:
                if _default_nat(table) == (declared.nat_gateway_id, "active"):
                    tables.append(table["RouteTableId"])
        if not tables:
            raise ValueError(f"aws.zones.{name}: no private route table to judge egress by")
        self._tables = sorted(tables)

    def ask(self) -> tuple[str | None, int | None]:
        found = self._ec2.describe_route_tables(RouteTableIds=self._tables)["RouteTables"]
        sources = set()
        for table in found:
            nat, state = _default_nat(table)
            if nat is None or state != "active":
                return None, None
            sources.add(str(self._public.get(nat, nat)))
        if len(found) != len(self._tables) or len(sources) != 1:
            return None, None
        return sources.pop(), None


def _default_nat(table: dict[str, Any]) -> tuple[str | None, str | None]:
    for route in table.get("Routes", []):
        if route.get("DestinationCidrBlock") == "0.0.0.0/0":
            return route.get("NatGatewayId"), route.get("State")
    return None, None
