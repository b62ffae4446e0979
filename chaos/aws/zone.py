"""The whole-zone outage: EC2, NAT, and the data stores' primaries of one zone, at once."""

from __future__ import annotations

from chaos.aws.ec2 import StopServer
from chaos.aws.elasticache import CacheFailover
from chaos.aws.nat import DisableNat
from chaos.aws.rds import DatabaseFailover
from chaos.aws.session import AwsFault, split_ids
from chaos.base import Fault, FaultError
from gameday.target import Target

# Part name -> fault class, in the order they are injected (heal goes the other way).
PARTS: dict[str, type[AwsFault]] = {
    "nat": DisableNat,
    "ec2": StopServer,
    "rds": DatabaseFailover,
    "cache": CacheFailover,
}


class ZoneOutage(AwsFault):
    """A whole zone goes down (what AWS FIS calls an AZ power interruption, without FIS): its
    NAT's routes are removed, its backends stop (forced), and the RDS and ElastiCache
    primaries fail over if they are in that zone.

    Parameter: `zone`. Which parts apply is decided by preflight and written to the undo
    journal, with each part's own undo record, before anything acts; heal heals each part,
    newest first, and reports every part that failed. A part that does not apply (no NAT
    declared, a primary already in another zone) is left out and said so in `describe`.
    """

    name = "zone-outage"
    label = "zone outage"

    def __init__(self, target: Target, params: dict[str, str]) -> None:
        super().__init__(target, params)
        self.parts: dict[str, AwsFault] = {}
        for part in split_ids(self.params.get("parts", "")):
            self.parts[part] = self._part(part)

    def _part(self, part: str) -> AwsFault:
        prefix = f"{part}."
        own = {k.removeprefix(prefix): v for k, v in self.params.items() if k.startswith(prefix)}
        params = {"zone": self.params.get("zone", ""), **own}
        if part == "ec2":
            params.setdefault("mode", "kill")
        fault = PARTS[part](self.target, params)
        fault.poll_sec = self.poll_sec

        def remember(undo: dict[str, str]) -> None:
            self.remember(**{f"{prefix}{k}": v for k, v in undo.items() if k != "zone"})

        fault.on_remember = remember
        return fault

    def _applicable(self) -> list[str]:
        zone_name, zone = self.zone(self.params.get("zone", ""))
        parts = []
        if zone.nat_gateway_id:
            parts.append("nat")
        parts.append("ec2")
        # A primary in another zone is not touched: the outage does not reach it.
        db, cache = self.aws.database, self.aws.cache
        if db is not None and DatabaseFailover(self.target, {}).primary_zone() == zone_name:
            parts.append("rds")
        if cache is not None and CacheFailover(self.target, {}).primary_zone() == zone_name:
            parts.append("cache")
        return parts

    def describe(self) -> str:
        zone = self.params.get("zone", "?")
        parts = ", ".join(self.parts) if self.parts else "NAT, EC2, and primaries found there"
        return f"take zone {zone} down: {parts}"

    def preflight(self) -> None:
        self.guard()
        parts = self._applicable()
        self.parts = {p: self._part(p) for p in parts}
        for fault in self.parts.values():
            fault.preflight()

    def inject(self) -> None:
        if not self.parts:
            self.preflight()
        self.remember(parts=",".join(self.parts))
        for fault in self.parts.values():
            fault.inject()
            self.observations.extend(fault.observations)

    def heal(self) -> None:
        errors = []
        for part, fault in reversed(self.parts.items()):
            try:
                fault.heal()
            except Exception as exc:  # the other parts still heal
                errors.append(f"{part}: {exc}")
        if errors:
            raise FaultError(f"{self.label}: {'; '.join(errors)}")

    def in_effect(self) -> bool:
        return any(f.in_effect() for f in self.parts.values())

    @classmethod
    def from_undo(cls, target: Target, params: dict[str, str]) -> Fault:
        return cls(target, params)


FAULTS: tuple[type[Fault], ...] = (ZoneOutage,)
