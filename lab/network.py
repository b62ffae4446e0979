"""Make the lab's network real (namespaces, veths, routes, NAT), break it, and remove it.

`ensure` builds what lab/netplan.py describes, idempotently: it makes what is missing and puts
back what a fault took away (links up, routes, the router's rules), so `lab up` is also the
heal of every network fault. Faults only ever touch chains of their own (`<prefix>nat-off` in a
NAT's namespace, `<prefix>split` in the zones') or a zone's link state; `remove` deletes every
namespace of the lab, which takes every veth, route and rule in them along (the host's end of
its veth dies with its peer).

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2, iptables and util-linux's nsenter:
`unavailable()` says in one line why not, and the lab then runs on 127.0.0.1 as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.netplan import (
    HOST,
    NAT_OFF_CHAIN,
    OUTSIDE,
    SPLIT_CHAIN,
    VPC,
    ZONES,
    NetPlan,
)

NETWORK_ENV = "GAMEDAY_LAB_NETWORK"  # "loopback": run without namespaces even as root
TOOLS = ("ip", "iptables", "nsenter", "sysctl")
_SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"
COMMAND_TIMEOUT_SEC = 30.0
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


class NetworkError(Exception):
    """A network operation failed; the message is one line naming the command."""


def tool(name: str) -> str:
    """The absolute path of `ip`, `iptables`... (sbin is not on every PATH)."""
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":" + _SBIN)
    if found is None:
        raise NetworkError(f"{name} is not installed")
    return found


def _capabilities() -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def unavailable() -> str | None:
    """Why this process cannot give the lab network namespaces, in one line; None if it can.

    Judged without touching anything (a target is rendered from it before any lab starts).
    """
    if os.environ.get(NETWORK_ENV, "").strip().lower() == "loopback":
        return f"{NETWORK_ENV}=loopback"
    if os.geteuid() != 0:
        return "not root (network namespaces need root)"
    caps = _capabilities()
    for bit, name in ((CAP_NET_ADMIN, "CAP_NET_ADMIN"), (CAP_SYS_ADMIN, "CAP_SYS_ADMIN")):
        if not caps >> bit & 1:
            return f"root without {name} (a container without it cannot make namespaces)"
    for name in TOOLS:
        try:
            tool(name)
        except NetworkError:
            return f"{name} is not installed (iproute2, iptables, util-linux; run `make setup`)"
    return None


def _run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> str:
    try:
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_SEC,
            check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{shlex.join(argv)}: {exc}") from None
    if check and proc.returncode != 0:
        why = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise NetworkError(f"{shlex.join(argv)}: {why[-1] if why else proc.returncode}")
    return proc.stdout


def _ip(*args: str, ns: str | None = None, stdin: str | None = None, check: bool = True) -> str:
    argv = [tool("ip")] + (["-n", ns] if ns else []) + list(args)
    return _run(argv, stdin=stdin, check=check)


def _in(ns: str, *argv: str, check: bool = True) -> str:
    """Run a command inside namespace `ns` (`ip netns exec`)."""
    return _run([tool("ip"), "netns", "exec", ns, *argv], check=check)


def _iptables(ns: str, *args: str, check: bool = True) -> str:
    return _in(ns, tool("iptables"), "-w", *args, check=check)


# -- what exists ---------------------------------------------------------------------------


def namespaces(plan: NetPlan) -> list[str]:
    """The lab's namespaces that exist now (stale ones of a crashed lab included)."""
    out = _ip("-j", "netns", "list", check=False) or "[]"
    try:
        names = [entry["name"] for entry in json.loads(out)]
    except (ValueError, KeyError, TypeError):
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(plan.prefix))


def _links(ns: str | None) -> dict[str, dict[str, object]]:
    out = _ip("-j", "link", "show", ns=ns, check=False) or "[]"
    try:
        return {entry["ifname"]: entry for entry in json.loads(out)}
    except (ValueError, KeyError, TypeError):
        return {}


def _rules(ns: str) -> list[str]:
    """The router's policy rules as `ip rule` prints them (without the pref's colon)."""
    return [line.replace(":", "", 1).strip() for line in _ip("rule", ns=ns).splitlines()]


@dataclass(frozen=True)
class Inventory:
    """What of a lab's network is on the machine: counted before `up`, while up, after `down`."""

    namespaces: int
    links: int  # veth ends, in the lab's namespaces and the host's
    rules: int  # iptables rules and policy rules the lab made, faults' included
    routes: int  # the host's routes to the lab's range

    def total(self) -> int:
        return self.namespaces + self.links + self.rules + self.routes


def inventory(plan: NetPlan) -> Inventory:
    present = namespaces(plan)
    links = sum(1 for name in _links(None) if name.startswith(plan.prefix))
    rules = 0
    for ns in present:
        links += sum(1 for name in _links(ns) if name.startswith(plan.prefix))
        for table in ("filter", "nat"):
            listed = _iptables(ns, "-t", table, "-S", check=False)
            rules += sum(1 for line in listed.splitlines() if line.startswith("-A "))
        if ns == plan.netns(VPC):
            rules += sum(1 for rule in _rules(ns) if int(rule.split()[0]) not in (0, 32766, 32767))
    host_routes = _ip("route", "show", plan.lab_range, check=False)
    routes = sum(1 for line in host_routes.splitlines() if line.strip())
    return Inventory(len(present), links, rules, routes)


def foreign_routes(plan: NetPlan) -> list[str]:
    """The host's routes into the lab's range that lead elsewhere than the lab's own link
    (another lab on an overlapping block, a VPN): the lab would shadow or be shadowed."""
    own = plan.ifname(HOST, VPC)
    listed = _ip("route", "show", "root", plan.lab_range, check=False)
    return [
        line.strip() for line in listed.splitlines() if line.strip() and f"dev {own}" not in line
    ]


def leftovers(plan: NetPlan) -> list[str]:
    """Anything of this lab's network still on the machine, one line each ([] after `down`)."""
    found = [f"namespace {n}" for n in namespaces(plan)]
    found += [f"link {n}" for n in _links(None) if n.startswith(plan.prefix)]
    for line in _ip("route", "show", plan.lab_range, check=False).splitlines():
        if line.strip():
            found.append(f"route {line.strip()}")
    return found


# -- making it ---------------------------------------------------------------------------


def ensure(plan: NetPlan) -> None:
    """Make the lab's network as planned, from nothing or from what a crash or a fault left.

    Never removes what a fault added to its own chains (a `lab up` during a game day must not
    heal another scenario's fault behind its back); it does bring links back up and put back
    the routes a link taken down lost.
    """
    existing = set(namespaces(plan))
    for ns in plan.namespaces:
        if ns not in existing:
            _ip("netns", "add", ns)
    links = {ns: _links(ns) for ns in plan.namespaces}
    host_links = _links(None)
    for link in plan.links():
        if link.right in links[link.right_ns]:
            continue
        left_in = link.left_ns or "the host"
        present = host_links if link.left_ns is None else links[link.left_ns]
        if link.left in present:  # a half pair cannot be: remove it and make the pair again
            _ip("link", "del", link.left, ns=link.left_ns, check=False)
        where = ["netns", link.left_ns] if link.left_ns else []
        try:
            _ip("link", "add", link.left, *where, "type", "veth",
                "peer", "name", link.right, "netns", link.right_ns)  # fmt: skip
        except NetworkError as exc:
            raise NetworkError(f"link {link.left} ({left_in}) -> {link.right_ns}: {exc}") from None

    batches: dict[str | None, list[str]] = {ns: ["link set lo up"] for ns in plan.namespaces}
    batches[None] = []
    for link in plan.links():
        ends: tuple[tuple[str | None, str, str], ...] = (
            (link.left_ns, link.left, link.left_address),
            (link.right_ns, link.right, link.right_address),
        )
        for end_ns, name, address in ends:
            batches[end_ns] += [f"addr replace {address}/{link.prefixlen} dev {name}",
                                f"link set {name} up"]  # fmt: skip
    # The internet's one service: an address of its own, as a public endpoint would have.
    batches[plan.netns(OUTSIDE)].append(f"addr replace {plan.outside_service_address}/32 dev lo")
    for route in plan.routes():
        table = "" if route.table == "main" else f" table {route.table}"
        batches[route.ns].append(f"route replace {route.dest} via {route.via}{table}")
    for batch_ns, lines in batches.items():
        _ip("-batch", "-", ns=batch_ns, stdin="\n".join(lines) + "\n")

    vpc = plan.netns(VPC)
    have = _rules(vpc)
    for rule in plan.policy_rules():
        pref = rule.rsplit(" pref ", 1)[1]
        if not any(r.split()[0] == pref for r in have):
            _ip("rule", "add", *rule.split(), ns=vpc)

    # The router and the NATs forward; reverse-path filtering would drop the replies that
    # come back from a NAT for the zone the policy routes chose.
    forward = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
               "net.ipv4.conf.default.rp_filter=0"]  # fmt: skip
    router_ifs = [link.right for link in plan.links() if link.right_ns == vpc]
    _in(vpc, tool("sysctl"), "-qw", *forward,
        *(f"net.ipv4.conf.{name}.rp_filter=0" for name in router_ifs))  # fmt: skip
    for zone in ZONES:
        nat = plan.netns(plan.nat(zone))
        _in(nat, tool("sysctl"), "-qw", *forward)
        out_if = plan.ifname(plan.nat(zone), "out")
        _ensure_chain(nat, plan.chain(NAT_OFF_CHAIN), hooks=("FORWARD",))
        _ensure_rule(nat, "nat", "POSTROUTING", "-o", out_if, "-j", "MASQUERADE")
        _ensure_chain(plan.netns(zone), plan.chain(SPLIT_CHAIN), hooks=("INPUT", "OUTPUT"))


def _ensure_chain(ns: str, chain: str, *, hooks: Iterable[str]) -> None:
    _iptables(ns, "-N", chain, check=False)  # exists already: fine
    for hook in hooks:
        _ensure_rule(ns, "filter", hook, "-j", chain)


def _ensure_rule(ns: str, table: str, chain: str, *rule: str) -> None:
    check = [tool("ip"), "netns", "exec", ns, tool("iptables"), "-w", "-t", table, "-C", chain]
    try:
        done = subprocess.run(
            [*check, *rule], capture_output=True, timeout=COMMAND_TIMEOUT_SEC, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{shlex.join([*check, *rule])}: {exc}") from None
    if done.returncode != 0:  # -C exits 1 when the rule is not there
        _iptables(ns, "-t", table, "-I", chain, "1", *rule)


def remove(plan: NetPlan) -> None:
    """Delete every namespace of the lab (their veths, routes and rules go with them), and the
    host's end of its veth if it outlived its peer."""
    for ns in namespaces(plan):
        _ip("netns", "del", ns, check=False)
    for name in _links(None):
        if name.startswith(plan.prefix):
            _ip("link", "del", name, check=False)
    left = leftovers(plan)
    if left:
        raise NetworkError(f"could not remove the lab's network: {', '.join(left)}")


# -- breaking it (the lab's network faults) --------------------------------------------------


def _chain_rules(ns: str, chain: str) -> list[str]:
    listed = _iptables(ns, "-S", chain, check=False)
    return [line for line in listed.splitlines() if line.startswith("-A ")]


def block_nat(plan: NetPlan, zone: str) -> None:
    """The zone's NAT stops forwarding: everything it would pass is dropped."""
    ns, chain = plan.netns(plan.nat(zone)), plan.chain(NAT_OFF_CHAIN)
    if not _chain_rules(ns, chain):
        _iptables(ns, "-A", chain, "-j", "DROP")


def unblock_nat(plan: NetPlan, zone: str) -> None:
    ns = plan.netns(plan.nat(zone))
    if ns in namespaces(plan):
        _iptables(ns, "-F", plan.chain(NAT_OFF_CHAIN))


def nat_blocked(plan: NetPlan, zone: str) -> bool:
    return bool(_chain_rules(plan.netns(plan.nat(zone)), plan.chain(NAT_OFF_CHAIN)))


def split(plan: NetPlan, zone: str, peer: str) -> None:
    """`zone` and `peer` stop reaching each other (both ways, in both namespaces); both still
    reach the public subnet and their NATs."""
    for here, there in ((zone, peer), (peer, zone)):
        ns, chain = plan.netns(here), plan.chain(SPLIT_CHAIN)
        subnet = plan.zone_subnet(there)
        present = _chain_rules(ns, chain)
        for flag in ("-s", "-d"):
            if not any(f"{flag} {subnet}" in line for line in present):
                _iptables(ns, "-A", chain, flag, subnet, "-j", "DROP")


def unsplit(plan: NetPlan, zones: Iterable[str] = ZONES) -> None:
    present = namespaces(plan)
    for zone in zones:
        if plan.netns(zone) in present:
            _iptables(plan.netns(zone), "-F", plan.chain(SPLIT_CHAIN))


def split_zones(plan: NetPlan) -> list[str]:
    """The zones whose namespaces drop traffic of another zone now."""
    return [z for z in ZONES if _chain_rules(plan.netns(z), plan.chain(SPLIT_CHAIN))]


def set_zone_link(plan: NetPlan, zone: str, *, up: bool) -> None:
    """Take the zone's link down (every program in it unreachable at once, still running)
    or up again (its routes are then put back by `ensure`)."""
    _ip("link", "set", plan.zone_link(zone), "up" if up else "down", ns=plan.netns(zone))


def zone_link_up(plan: NetPlan, zone: str) -> bool:
    link = _links(plan.netns(zone)).get(plan.zone_link(zone))
    flags = link.get("flags", []) if link else []
    return isinstance(flags, list) and "UP" in flags
