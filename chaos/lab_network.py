"""Faults of the lab's network: a zone's NAT stops forwarding, a zone loses its link, two zones
stop reaching each other. Real packets are dropped; no process is stopped.

They need the lab's zone networks (lab/netplan.py: a namespace per zone, a NAT per zone); on a
lab that runs on 127.0.0.1 (not root) they are unavailable, which skips their scenarios before
they start with that reason. Each heals by undoing exactly its change (a flushed chain, a link
up again) and then the lab's own `up`, which puts back what a link taken down lost (its routes)
and waits until every component, the NATs included, is healthy again. After a SIGKILL, `gameday
heal` rebuilds them from the journal (their parameters name the zones) and does the same.
"""

from __future__ import annotations

from typing import ClassVar

from chaos.base import Fault, FaultRefused
from chaos.lab import _LabFault
from gameday.target import Target
from lab import network
from lab.layout import SERVERS
from lab.netplan import NetPlan


def _zones() -> list[str]:
    return [s.zone for s in SERVERS]


class _NetworkFault(_LabFault):
    providers: ClassVar[tuple[str, ...]] = ("lab",)

    @classmethod
    def unavailable(cls, target: Target) -> str | None:
        lab = target.lab
        if lab is not None and lab.network == "namespaces":
            return None
        note = f": {lab.network_note}" if lab is not None and lab.network_note else ""
        return f"the lab runs on 127.0.0.1 without zone networks{note}"

    @property
    def plan(self) -> NetPlan:
        return self.layout.net

    def zone(self, key: str = "zone") -> str:
        zone = self.params.get(key, "")
        if zone not in _zones():
            raise FaultRefused(f"the lab has no zone {zone!r} (zones: {', '.join(_zones())})")
        return zone

    def programs_of(self, zone: str) -> str:
        server = next(s for s in SERVERS if s.zone == zone)
        return ", ".join(
            (server.backend_program, server.postgres_program, server.redis_program,
             server.sentinel_program)
        )  # fmt: skip

    def preflight(self) -> None:
        self.zone()
        if not self.layout.namespaced:
            raise FaultRefused(self.unavailable(self.target) or "the lab has no zone networks")
        super().preflight()


class DisableNat(_NetworkFault):
    """The NAT of one zone stops forwarding: everything the zone sends to the internet is
    dropped there (iptables DROP in the NAT's namespace), as when its NAT gateway fails. The
    other zone's NAT, the load balancer and the zones' own traffic are untouched.

    Parameter: `zone`. Heal flushes the rule and waits for the lab (the zone's egress
    included) to be healthy.
    """

    name = "disable-nat"
    label = "NAT disabled"

    def describe(self) -> str:
        zone = self.params.get("zone", "?")
        return f"stop the NAT of zone {zone} forwarding ({self.plan.netns(f'nat-{zone}')} drops)"

    def inject(self) -> None:
        network.block_nat(self.plan, self.zone())

    def heal(self) -> None:
        network.unblock_nat(self.plan, self.zone())
        super().heal()

    def in_effect(self) -> bool:
        return network.nat_blocked(self.plan, self.zone())


class ZoneOutage(_NetworkFault):
    """A whole zone goes dark: its namespace loses its link, so the zone's server (backend,
    database node, Redis, Sentinel) becomes unreachable at once, every process still running,
    as a zone losing power or its network looks from outside. Whatever was primary or master
    there must fail over to the other zone; when the link comes back, the old primary must
    rejoin as a standby.

    Parameter: `zone`. Heal brings the link up, puts back its routes and waits until the lab
    is healthy again (roles may stay swapped).
    """

    name = "zone-outage"
    label = "zone outage"

    def describe(self) -> str:
        zone = self.params.get("zone", "?")
        try:
            programs = self.programs_of(self.zone())
        except FaultRefused:
            programs = "its server"
        return f"take zone {zone}'s link down: {programs} unreachable at once, still running"

    def inject(self) -> None:
        network.set_zone_link(self.plan, self.zone(), up=False)

    def heal(self) -> None:
        zone = self.zone()
        if self.plan.netns(zone) in network.namespaces(self.plan):
            network.set_zone_link(self.plan, zone, up=True)
        super().heal()

    def in_effect(self) -> bool:
        return not network.zone_link_up(self.plan, self.zone())


class ZonePartition(_NetworkFault):
    """Two zones stop reaching each other, both ways (iptables DROP in both zones'
    namespaces), while each still reaches the public side (the load balancer, the database's
    monitor, the third Sentinel) and the internet. How split brains happen: each side may
    believe the other is gone.

    Parameters: `zone` and `peer` (default: the other zone). Heal flushes the rules and waits
    until the lab is healthy again.
    """

    name = "zone-partition"
    label = "zones partitioned"

    def _pair(self) -> tuple[str, str]:
        zone = self.zone()
        if not self.params.get("peer"):
            self.params["peer"] = next(z for z in _zones() if z != zone)
        peer = self.zone("peer")
        if peer == zone:
            raise FaultRefused(f"a zone cannot be partitioned from itself ({zone!r})")
        return zone, peer

    def describe(self) -> str:
        zone, peer = self.params.get("zone", "?"), self.params.get("peer") or "the other zone"
        return f"split zone {zone} from zone {peer} (both still reach the public side)"

    def preflight(self) -> None:
        self._pair()
        super().preflight()

    def inject(self) -> None:
        zone, peer = self._pair()
        network.split(self.plan, zone, peer)

    def heal(self) -> None:
        network.unsplit(self.plan, self._pair())
        super().heal()

    def in_effect(self) -> bool:
        return bool(network.split_zones(self.plan))


FAULTS: tuple[type[Fault], ...] = (DisableNat, ZoneOutage, ZonePartition)
