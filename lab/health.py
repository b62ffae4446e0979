"""Questions asked of the lab's running services: who is primary, who is up.

Each function asks one real service and answers with plain data; `lab status`, `lab up`'s
waits and the lab's faults all use them. Nothing here changes the lab.
"""

from __future__ import annotations

import csv
import io
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
import psycopg
import redis

from lab.layout import (
    MONITORING_GROUP,
    REDIS_MASTER_NAME,
    SERVERS,
    LabLayout,
    LabServer,
)

TIMEOUT_SEC = 1.0
T = TypeVar("T")


@dataclass(frozen=True)
class Component:
    """One row of `lab status`."""

    name: str
    group: str
    port: int
    healthy: bool
    role: str = ""
    detail: str = ""


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    """Something accepts connections on host:port (127.0.0.1 unless the lab's network says)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def haproxy_servers(layout: LabLayout) -> dict[tuple[str, str], str]:
    """(proxy, server) -> status ("UP", "DOWN", "MAINT", ...) from HAProxy's CSV stats."""
    resp = httpx.get(layout.stats_url + ";csv", timeout=TIMEOUT_SEC)
    resp.raise_for_status()
    text = resp.text.lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        (r["pxname"], r["svname"]): r["status"]
        for r in rows
        if r["svname"] not in ("FRONTEND", "BACKEND")
    }


@dataclass(frozen=True)
class PgNode:
    name: str
    port: int
    reported_state: str
    goal_state: str
    health: int


def pg_nodes(layout: LabLayout) -> list[PgNode]:
    """The data nodes as pg_auto_failover's monitor sees them."""
    with psycopg.connect(layout.monitor_admin_url, connect_timeout=2, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nodename, nodeport, reportedstate::text, goalstate::text, health"
            " FROM pgautofailover.node ORDER BY nodeid"
        ).fetchall()
    return [PgNode(*row) for row in rows]


SYNC_STANDBYS_SQL = (
    "SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_replication"
    " WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum'))"
)


def pg_disagreement(layout: LabLayout, server: LabServer, monitor_says: str) -> str | None:
    """Why the node itself contradicts the monitor's settled `monitor_says` ("primary" or
    "secondary"), or None when it agrees. The monitor reports what the keepers last told it:
    a node that accepts writes while called secondary (two writable nodes), or a primary
    without a standby streaming synchronously, would pass on its word alone, and a failover
    from there can lose acknowledged writes. Asked over TCP as the superuser (the only role
    that sees every pg_stat_replication column)."""
    url = layout.db_node_url(server, "postgres")
    with psycopg.connect(url, connect_timeout=2, autocommit=True) as conn:
        row = conn.execute(SYNC_STANDBYS_SQL).fetchone()
    if row is None:
        return "answered nothing about its role"
    return disagreement(monitor_says, in_recovery=bool(row[0]), sync_standbys=int(row[1]))


def disagreement(monitor_says: str, *, in_recovery: bool, sync_standbys: int) -> str | None:
    """`pg_disagreement`'s judgement of what the node said of itself."""
    if monitor_says == "secondary" and not in_recovery:
        return "accepts writes though the monitor calls it secondary"
    if monitor_says == "primary":
        if in_recovery:
            return "in recovery though the monitor calls it primary"
        if sync_standbys < 1:
            return "no standby streaming synchronously from it"
    return None


def pg_primary(layout: LabLayout) -> LabServer | None:
    """The server whose node is the settled primary, if any."""
    for node in pg_nodes(layout):
        if node.reported_state == "primary" and node.goal_state == "primary":
            return next(s for s in SERVERS if s.pg_node_name == node.name)
    return None


def redis_role(layout: LabLayout, server: LabServer) -> dict[str, str]:
    client = redis.Redis(
        host=layout.server_host(server),
        port=layout.redis_port(server),
        socket_timeout=TIMEOUT_SEC,
        socket_connect_timeout=TIMEOUT_SEC,
        decode_responses=True,
    )
    try:
        info = client.info("replication")
    finally:
        client.close()
    return {k: str(v) for k, v in info.items()}


def sentinel_view(port: int, host: str = "127.0.0.1") -> dict[str, str]:
    client = redis.Redis(
        host=host,
        port=port,
        socket_timeout=TIMEOUT_SEC,
        socket_connect_timeout=TIMEOUT_SEC,
        decode_responses=True,
    )
    try:
        master = cast(dict[str, Any], client.sentinel_master(REDIS_MASTER_NAME))
    finally:
        client.close()
    return {k: str(v) for k, v in master.items()}


def backend_url(layout: LabLayout, server: LabServer) -> str:
    return f"http://{layout.server_host(server)}:{layout.backend_port(server)}"


def backend_health(layout: LabLayout, server: LabServer) -> dict[str, str]:
    resp = httpx.get(backend_url(layout, server) + "/health", timeout=TIMEOUT_SEC)
    resp.raise_for_status()
    return {k: str(v) for k, v in resp.json().items()}


def egress(layout: LabLayout, server: LabServer) -> dict[str, str]:
    """What the server's zone reaches of the internet: its backend's `GET /egress` (the lab's
    own health check of the zone's NAT, from inside the zone)."""
    resp = httpx.get(backend_url(layout, server) + "/egress", timeout=TIMEOUT_SEC * 2)
    return {k: str(v) for k, v in resp.json().items()}


def _ask(fn: Callable[..., T], *args: Any) -> tuple[T | None, str]:
    """Run a question; an unreachable service answers with its error instead of raising."""
    try:
        return fn(*args), ""
    except Exception as exc:  # any failure to ask is a health fact, not a crash of status
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:120]


def components(layout: LabLayout) -> list[Component]:
    """Every component of the lab with its health, in a stable order."""
    rows: list[Component] = []
    lb, err = _ask(haproxy_servers, layout)
    lb_ok = lb is not None
    rows.append(Component("haproxy", "control", layout.http_port, lb_ok, "load balancer", err))
    nodes, pg_err = _ask(pg_nodes, layout)
    rows.append(
        Component(
            "monitor", "control", layout.monitor_port, nodes is not None, "pg monitor", pg_err
        )
    )
    by_name = {n.name: n for n in nodes or []}
    for s in SERVERS:
        node = by_name.get(s.pg_node_name)
        if node is None:
            rows.append(
                Component(s.postgres_program, s.name, layout.pg_port(s), False, "?",
                          pg_err or "not registered")
            )  # fmt: skip
        else:
            settled = node.reported_state == node.goal_state
            ok = settled and node.reported_state in ("primary", "secondary") and node.health == 1
            detail = "" if settled else f"{node.reported_state} -> {node.goal_state}"
            if ok:
                disagrees, err = _ask(pg_disagreement, layout, s, node.reported_state)
                ok = disagrees is None and not err
                detail = disagrees or err
            rows.append(
                Component(s.postgres_program, s.name, layout.pg_port(s), ok,
                          node.reported_state, detail)
            )  # fmt: skip
    infos = {s: _ask(redis_role, layout, s) for s in SERVERS}
    masters = [s for s, (info, _) in infos.items() if info and info.get("role") == "master"]
    for s, (info, err) in infos.items():
        if info is None:
            rows.append(Component(s.redis_program, s.name, layout.redis_port(s), False, "?", err))
            continue
        role = "master" if info.get("role") == "master" else "replica"
        if role == "master":
            # A crashed master comes back still saying "master" until Sentinel demotes it:
            # two masters is a split brain, not health.
            ok = len(masters) == 1
            detail = "" if ok else "two masters (split brain until Sentinel demotes one)"
        else:
            ok = info.get("master_link_status") == "up"
            detail = "" if ok else f"link {info.get('master_link_status')}"
        rows.append(Component(s.redis_program, s.name, layout.redis_port(s), ok, role, detail))
    lb_status = lb or {}
    endpoint_up = [n for (px, n), st in lb_status.items() if px == "redis-primary" and st == "UP"]
    rows.append(
        Component("redis-primary", "control", layout.redis_endpoint_port, len(endpoint_up) == 1,
                  "cache endpoint", "-> " + ",".join(endpoint_up) if endpoint_up else "no master")
    )  # fmt: skip
    groups = [SERVERS[0].name, SERVERS[1].name, "control"]
    for i, port in enumerate(layout.sentinel_ports()):
        view, err = _ask(sentinel_view, port, layout.host_of(groups[i]))
        if view is None:
            rows.append(Component(f"sentinel{i + 1}", groups[i], port, False, "sentinel", err))
            continue
        others = int(view.get("num-other-sentinels", "0"))
        ok = others == 2 and "down" not in view.get("flags", "")
        detail = f"master {view.get('ip')}:{view.get('port')}, {others} peers"
        rows.append(Component(f"sentinel{i + 1}", groups[i], port, ok, "sentinel", detail))
    for s in SERVERS:
        health, err = _ask(backend_health, layout, s)
        in_lb = lb_status.get(("servers", s.name), "?")
        ok = health is not None and in_lb == "UP"
        detail = err or (
            f"lb {in_lb}, db {health.get('database')}, cache {health.get('cache')}"
            if health
            else ""
        )
        rows.append(
            Component(s.backend_program, s.name, layout.backend_port(s), ok, "backend", detail)
        )
    if layout.monitoring and _runtime(layout) != "docker":
        rows += monitoring_components(layout)
    if layout.namespaced:
        rows += _nat_rows(layout)
    return rows


def _nat_rows(layout: LabLayout) -> list[Component]:
    """One row per zone's NAT: the zone reaches the internet, through its own NAT's address
    (asked from inside the zone, through its backend). A zone whose NAT is down, or that
    leaves through another zone's NAT, is not healthy."""
    rows = []
    for s in SERVERS:
        nat = layout.net.nat(s.zone)
        answer, err = _ask(egress, layout, s)
        own = layout.net.nat_public_address(s.zone)
        if answer is None:
            rows.append(Component(nat, f"zone {s.zone}", layout.outside_port, False, "nat", err))
            continue
        source = answer.get("source")
        ok = answer.get("ok") == "True" and source == own
        if ok:
            detail = f"{s.zone} -> internet as {own}"
        elif answer.get("ok") == "True":
            detail = f"{s.zone} leaves as {source}, not its own NAT's {own}"
        else:
            detail = f"no egress from zone {s.zone}: {answer.get('error', '?')}"
        rows.append(Component(nat, f"zone {s.zone}", layout.outside_port, ok, "nat", detail))
    return rows


def _runtime(layout: LabLayout) -> str:
    from lab.docker_runtime import runtime_of

    return runtime_of(layout)


# -- monitoring ------------------------------------------------------------------------------


def metrics(host: str, port: int) -> dict[str, float]:
    """An exporter's samples without labels (name -> value), and that it answers at all."""
    resp = httpx.get(f"http://{host}:{port}/metrics", timeout=TIMEOUT_SEC)
    resp.raise_for_status()
    found: dict[str, float] = {}
    for line in resp.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found.setdefault(name, float(value))
    return found


def prometheus_state(layout: LabLayout) -> dict[str, int]:
    """Ready, with its rules loaded: how many targets are up, and alerts firing."""
    base = layout.prometheus_url
    httpx.get(f"{base}/-/ready", timeout=TIMEOUT_SEC).raise_for_status()
    targets = httpx.get(f"{base}/api/v1/targets?state=active", timeout=TIMEOUT_SEC).json()
    active = targets["data"]["activeTargets"]
    rules = httpx.get(f"{base}/api/v1/rules?type=alert", timeout=TIMEOUT_SEC).json()
    alerting = [r for g in rules["data"]["groups"] for r in g["rules"]]
    return {
        "targets": len(active),
        "up": sum(1 for t in active if t["health"] == "up"),
        "rules": len(alerting),
        "firing": sum(1 for r in alerting if r["state"] == "firing"),
    }


def alertmanager_alerts(layout: LabLayout) -> list[dict[str, Any]]:
    base = layout.alertmanager_url
    httpx.get(f"{base}/-/ready", timeout=TIMEOUT_SEC).raise_for_status()
    resp = httpx.get(f"{base}/api/v2/alerts", timeout=TIMEOUT_SEC)
    resp.raise_for_status()
    return cast(list[dict[str, Any]], resp.json())


def monitoring_components(layout: LabLayout) -> list[Component]:
    """Prometheus and Alertmanager on the monitoring host; each server's exporters."""
    rows: list[Component] = []
    state, err = _ask(prometheus_state, layout)
    detail = err or (
        f"{state['up']}/{state['targets']} targets up, {state['rules']} rules, "
        f"{state['firing']} firing"
        if state
        else ""
    )
    ok = state is not None and state["rules"] > 0
    rows.append(Component("prometheus", MONITORING_GROUP, layout.prometheus_port, ok,
                          "monitoring", detail))  # fmt: skip
    alerts, err = _ask(alertmanager_alerts, layout)
    names = sorted({a["labels"].get("alertname", "?") for a in alerts or []})
    listed = f": {', '.join(names)}" if names else ""
    detail = err or f"{len(alerts or [])} active alerts{listed}"
    rows.append(Component("alertmanager", MONITORING_GROUP, layout.alertmanager_port,
                          alerts is not None, "alerting", detail))  # fmt: skip
    for s in SERVERS:
        host = layout.server_host(s)  # in the server's zone with zone networks
        for program, port, role, key in (
            (s.node_exporter_program, layout.node_exporter_port(s), "node exporter (disk)",
             "node_filesystem_size_bytes"),
            (s.hostview_program, layout.hostview_port(s), "cpu/memory view",
             "node_memory_MemAvailable_bytes"),
            (s.pg_exporter_program, layout.pg_exporter_port(s), "postgres exporter", "pg_up"),
            (s.redis_exporter_program, layout.redis_exporter_port(s), "redis exporter",
             "redis_up"),
        ):  # fmt: skip
            found, err = _ask(metrics, host, port)
            value = _sample(found or {}, key)
            detail = err or (f"{key} {value:g}" if value is not None else f"no {key}")
            rows.append(Component(program, s.name, port, found is not None, role, detail))
    return rows


def _sample(found: dict[str, float], name: str) -> float | None:
    for key, value in found.items():
        if key == name or key.startswith(name + "{"):
            return value
    return None
