"""What every AWS fault shares: clients made from the target, the account guard, the zone
lookup and the wait for AWS to settle.

The account guard is the first thing every AWS fault does, before preflight reads anything
and again before heal writes anything: the target's `account_id` must be the account of the
credentials in use (`sts:GetCallerIdentity`). A target without `account_id` is refused: a
game day run with the wrong profile must not stop production instances of another account.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from chaos.base import Fault, FaultError, FaultRefused
from gameday import aws as aws_api
from gameday.target import Aws, AwsZone, Target
from gameday.wait import poll_until

# How often the faults ask AWS whether something settled. AWS rate-limits Describe calls;
# every 2 s is well below the limits and fine next to failovers measured in minutes.
POLL_SEC = 2.0


class AwsFault(Fault):
    """Base of the AWS faults: `client(service)`, `guard()`, and `zone()` lookups."""

    providers: ClassVar[tuple[str, ...]] = ("aws",)
    #: seconds between Describe calls while waiting; tests make it short
    poll_sec: float = POLL_SEC

    def __init__(self, target: Target, params: dict[str, str]) -> None:
        super().__init__(target, params)
        self._account_checked = False
        self._clients: dict[str, Any] = {}

    @property
    def aws(self) -> Aws:
        if self.target.aws is None:
            raise FaultRefused(
                f"{self.target.source or self.target.name}: aws: required but missing "
                f"(the {self.name} fault needs the AWS resources)"
            )
        return self.target.aws

    def client(self, service: str) -> Any:
        """A client of this fault's own, made on first use (a poll loop reuses it)."""
        if service not in self._clients:
            self._clients[service] = aws_api.client(self.aws, service)
        return self._clients[service]

    def guard(self) -> None:
        """Refuse unless the credentials in use belong to the target's account."""
        if self._account_checked:
            return
        require_account(self.target)
        self._account_checked = True

    def preflight(self) -> None:
        self.guard()

    def zone(self, name: str) -> tuple[str, AwsZone]:
        return zone_named(self.target, name)

    def wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Poll `ready` (Describe calls) until it says yes; FaultError naming `what` if not."""
        if not poll_until(ready, timeout=timeout, interval=self.poll_sec):
            raise FaultError(f"{self.label}: {what} not true after {timeout:g} s")


def require_account(target: Target) -> None:
    """FaultRefused (one line) unless STS says the credentials are in the target's account."""
    shown = target.source or target.name
    aws = target.aws
    if aws is None:
        raise FaultRefused(f"{shown}: aws: required but missing")
    if aws.account_id is None:
        raise FaultRefused(
            f"{shown}: aws.account_id is not set: destructive steps need it, to be sure they "
            "act on the right account"
        )
    try:
        actual = aws_api.caller_account(aws)
    except Exception as exc:
        raise FaultRefused(
            f"{shown}: cannot tell which AWS account the credentials belong to "
            f"(sts:GetCallerIdentity: {type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    if actual != aws.account_id:
        raise FaultRefused(
            f"{shown}: the credentials in use are for AWS account {actual}, but the target "
            f"says aws.account_id {aws.account_id}: refusing to change anything"
        )


def zone_named(target: Target, name: str) -> tuple[str, AwsZone]:
    """The target's zone `name`: its full name ("ap-northeast-2a") or its letter ("a")."""
    aws = target.aws
    zones = aws.zones if aws is not None else {}
    if name in zones:
        return name, zones[name]
    if aws is not None and f"{aws.region}{name}" in zones:
        return f"{aws.region}{name}", zones[f"{aws.region}{name}"]
    known = ", ".join(sorted(zones)) or "none"
    raise FaultRefused(f"{target.source or target.name}: aws.zones has no zone {name!r} ({known})")


def split_ids(value: str) -> list[str]:
    """A comma-separated list from the undo params ("" is none)."""
    return [v for v in value.split(",") if v]
