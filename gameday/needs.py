"""What a step needs from the target, declared on the step and checked before the scenario.

A scenario whose steps need a role, an API, a fault or a server the target does not have is
skipped before its first step runs (so before any probe starts or any fault is injected), with
one line saying what is missing and how to declare it. Steps declare their needs with
`@needs(...)`; the pytest plugin reads them from every step of a scenario
(`scenario_needs`) and asks each one `why_not(target, args)`.

Needs are values with one method, so the layers stay one way: gameday defines the needs it
can judge from the target file alone (roles, app APIs, servers, zones, the load balancer's
state), and chaos adds the one about faults (a registry lookup), which gameday cannot import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from gameday.target import Target

NEEDS_ATTR = "__gameday_needs__"
F = TypeVar("F", bound=Callable[..., Any])


class Need(Protocol):
    """Something a step needs: `why_not` says in one line why the target cannot give it
    (None: it can). `args` are the step's parsed arguments ({"server": "server1"})."""

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None: ...


def needs(*wanted: Need) -> Callable[[F], F]:
    """Step decorator: the step needs all of `wanted` (in any order with pytest-bdd's own)."""

    def mark(func: F) -> F:
        setattr(func, NEEDS_ATTR, (*getattr(func, NEEDS_ATTR, ()), *wanted))
        return func

    return mark


def declared_needs(func: Callable[..., object]) -> tuple[Need, ...]:
    found: tuple[Need, ...] = getattr(func, NEEDS_ATTR, ())
    return found


def first_unmet(
    target: Target, steps: Iterable[tuple[tuple[Need, ...], Mapping[str, object]]]
) -> str | None:
    """The first reason, over a scenario's steps (their needs and parsed arguments), that
    the target cannot run it; None when it can."""
    for wanted, args in steps:
        for need in wanted:
            reason = need.why_not(target, args)
            if reason:
                return reason
    return None


# -- needs judged from the target file ---------------------------------------------------------

_ROLE_HOW = {
    "load_balancer": "load_balancer: (kind, and where to read its state)",
    "database": "database: writer_url",
    "cache": "cache: url",
    "servers": "servers: (name and zone of each)",
    "monitoring": "monitoring: alertmanager_url, or cloudwatch_alarms on AWS; docs/monitoring.md",
}


@dataclass(frozen=True)
class Role:
    """A role of the target: load_balancer, database, cache, servers."""

    name: str

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        if getattr(target, self.name):
            return None
        return f"target {target.name!r} has no {self.name} role (declare {_ROLE_HOW[self.name]})"


@dataclass(frozen=True)
class App:
    """An API of the application the target describes under `app:` (orders, sessions,
    rate_limit, products); switched off with null."""

    feature: str

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        present = (
            target.app.product_path is not None
            if self.feature == "products"
            else getattr(target.app, self.feature) is not None
        )
        if present:
            return None
        field = "product_path" if self.feature == "products" else self.feature
        return f"target {target.name!r} declares no app.{field} API (docs/targets.md, app)"


@dataclass(frozen=True)
class Cache:
    """Something of the cache role beyond its URL: `persistence`, or a failover manager."""

    what: str

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        cache = target.cache
        if cache is None:
            return Role("cache").why_not(target, args)
        if self.what == "persistence" and cache.persistence is None:
            return f"target {target.name!r} declares no cache.persistence"
        if self.what == "sentinels" and not cache.sentinels:
            manager = cache.failover_manager()
            if manager == "managed":
                return (
                    f"target {target.name!r}: the cache fails over by itself (managed), "
                    "there is no failover manager to ask"
                )
            return (
                f"target {target.name!r} declares no cache failover manager "
                "(cache.sentinels for Sentinel)"
            )
        return None


@dataclass(frozen=True)
class Servers:
    """At least `count` servers; with `arg`, the server the step names must be one of them."""

    count: int = 1
    arg: str | None = None

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        names = [s.name for s in target.servers]
        if len(names) < self.count:
            return (
                f"target {target.name!r} has {len(names)} server(s), the scenario needs "
                f"{self.count} (declare servers:)"
            )
        if self.arg is not None and args.get(self.arg) not in names:
            return (
                f"target {target.name!r} has no server {args.get(self.arg)!r} "
                f"(servers: {', '.join(names) or 'none'})"
            )
        return None


ORDINALS = {"first": 0, "second": 1, "third": 2, "last": -1}


def nth_server(target: Target, ordinal: str) -> str | None:
    """The name of the target's `ordinal` server ("first", "second", "third", "last"), so
    scenarios can name servers of any deployment without knowing what they are called."""
    index = ORDINALS.get(ordinal)
    if index is None or not target.servers or index >= len(target.servers):
        return None
    return target.servers[index].name


@dataclass(frozen=True)
class NthServer:
    """The server a step names by its place ("the first server"), and at least `count`
    servers in all (a server lost must leave others to carry the traffic)."""

    arg: str = "ordinal"
    count: int = 2

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        ordinal = str(args.get(self.arg))
        if ordinal not in ORDINALS:
            return f"{ordinal!r} is not a server's place (one of {', '.join(ORDINALS)})"
        shortage = Servers(count=self.count).why_not(target, args)
        if shortage:
            return shortage
        if nth_server(target, ordinal) is None:
            return f"target {target.name!r} has no {ordinal} server ({len(target.servers)})"
        return None


@dataclass(frozen=True)
class Zone:
    """The zone a step names (`arg`) is a zone of the target's servers."""

    arg: str = "zone"

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        zones = target.zones()
        named = str(args.get(self.arg))
        if target.aws is not None:
            # AWS zones go by the region's letter too: "a" is ap-northeast-2a.
            zones = sorted({*zones, *target.aws.zones})
            if target.aws.region + named in zones:
                return None
        if named in zones:
            return None
        return (
            f"target {target.name!r} has no zone {args.get(self.arg)!r} "
            f"(zones of its servers: {', '.join(zones) or 'none'})"
        )


@dataclass(frozen=True)
class Egress:
    """The target says how to ask its zones about the internet (`egress:`); with `arg`, the
    zone the step names is one of those zones."""

    arg: str | None = None

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        lab = target.lab
        if target.egress is None and lab is not None and lab.network == "loopback":
            note = f": {lab.network_note}" if lab.network_note else ""
            return f"the lab runs on 127.0.0.1 without zone networks{note}"
        if target.egress is None:
            return (
                f"target {target.name!r} declares no egress (egress: how to ask each zone "
                "whether it reaches the internet, docs/targets.md)"
            )
        zones = target.egress_zones()
        if self.arg is not None and str(args.get(self.arg)) not in zones:
            return (
                f"target {target.name!r} probes no egress in zone {args.get(self.arg)!r} "
                f"(zones: {', '.join(zones) or 'none'})"
            )
        if len(zones) < 1:
            return f"target {target.name!r} has no zone whose egress can be probed"
        return None


@dataclass(frozen=True)
class Nodes:
    """Every node of a store can be asked for writes one by one: `database` (a libpq
    multi-host writer URL with two hosts or more) or `cache` (`cache.nodes`, two or more)."""

    store: str

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        if self.store == "database":
            if target.database is None:
                return Role("database").why_not(target, args)
            hosts = target.database.writer_url.partition("://")[2].split("/")[0]
            if hosts.count(",") < 1:
                return (
                    f"target {target.name!r}: the database writer URL names one host; the "
                    "nodes must be asked one by one (a libpq multi-host URL, h1:5432,h2:5432)"
                )
            return None
        if target.cache is None:
            return Role("cache").why_not(target, args)
        if len(target.cache.nodes) < 2:
            return f"target {target.name!r} declares no cache.nodes (host:port of each node)"
        return None


@dataclass(frozen=True)
class LoadBalancerState:
    """The load balancer's own view of its backends can be read (HAProxy's stats; nginx's
    stub_status has no per-backend state, `none` has nothing to read)."""

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        lb = target.load_balancer
        if lb is None:
            return Role("load_balancer").why_not(target, args)
        if lb.kind == "haproxy" and (lb.stats_url or lb.stats_socket):
            return None
        if lb.kind == "haproxy":
            return f"target {target.name!r}: load_balancer declares no stats_url or stats_socket"
        return (
            f"target {target.name!r}: a {lb.kind} load balancer's per-server state cannot be "
            "read by the harness (judged from the served-by header instead)"
        )


@dataclass(frozen=True)
class Aws:
    """The target's `aws:` section, and in it the field `field` (dotted) when given."""

    field: str | None = None

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        if target.aws is None:
            return f"target {target.name!r} has no aws section"
        if self.field is None:
            return None
        value: object = target.aws
        for part in self.field.split("."):
            value = getattr(value, part, None)
            if not value:
                return f"the target's aws section does not set {self.field}"
        return None


@dataclass(frozen=True)
class Check:
    """A need judged by a function of its own (a recorded load baseline...)."""

    reason: Callable[[Target, Mapping[str, object]], str | None]

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        return self.reason(target, args)


@dataclass(frozen=True)
class Monitoring:
    """The target's monitoring role, and in it: `alerts` (Alertmanager, or CloudWatch alarms
    for the alert the step names in `arg`), `receiver` (a way to see delivery), `alertmanager`
    (Prometheus/Alertmanager only: silence and stop conditions read its alert list)."""

    what: str = "alerts"
    arg: str | None = None

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        m = target.monitoring
        if m is None:
            return Role("monitoring").why_not(target, args)
        if self.what == "receiver" and m.receiver is None:
            return (
                f"target {target.name!r} declares no monitoring.receiver (listen: host:port for "
                "the harness's webhook, or integration: slack), so delivery cannot be seen"
            )
        if self.what == "alertmanager" and m.alertmanager_url is None:
            return f"target {target.name!r} declares no monitoring.alertmanager_url"
        if m.alertmanager_url is None and self.arg is not None:
            alert = str(args.get(self.arg))
            if alert not in m.cloudwatch_alarms:
                return (
                    f"target {target.name!r} names no CloudWatch alarm for {alert!r} "
                    "(monitoring.cloudwatch_alarms)"
                )
        return None
