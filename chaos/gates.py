"""The ledger's say over the engine: the kill switch and the lease as an injection gate and an
abort condition (chaos.scenario's INJECTION_GATES and ABORT_CONDITIONS).

- `ledger_allows` runs right before any fault of a scenario (or a drill) acts: it refuses
  (FaultRefused, one line) while the target is paused, naming who paused it and why, while
  another game day holds the target's lease, and when the ledger cannot be read (nobody can
  tell whether someone pulled the switch). So no fault is injected by anyone while paused,
  also by a session that started before the pause.
- `pause_switch` is polled by every injected fault's watchdog (every 0.5 s): a pause heals the
  fault within a second, also in a session without a lease keeper of its own (one started by
  the holder, under its lease). The keeper of the session that holds the lease
  (gameday.ledger_plugin) stops that session; the gate keeps any other from injecting again.

The ledger is the one of this process: $GAMEDAY_LEDGER_URL, else the default SQLite file
(`gameday run` hands a plan's own ledger to its pytest session through that variable).
"""

from __future__ import annotations

from chaos.base import FaultRefused
from chaos.runner import AbortCondition
from chaos.scenario import ABORT_CONDITIONS, INJECTION_GATES
from gameday.ledger import Ledger, LedgerError, PauseSwitch
from gameday.target import Target


def ledger_allows(target: Target) -> None:
    """Injection gate: refuse a fault on a paused target, on a target another game day holds,
    or when the ledger cannot say which."""
    try:
        with Ledger.open() as ledger:
            pause = ledger.paused(target)
            held = ledger.lease_problem(target) if pause is None else None
    except LedgerError as exc:
        raise FaultRefused(
            f"cannot tell whether target {target.name} is paused ({exc}): no fault while "
            "nobody can tell"
        ) from None
    if pause is not None:
        raise FaultRefused(pause.describe())
    if held is not None:
        raise FaultRefused(held)


def pause_switch(target: Target) -> AbortCondition:
    """Abort condition: the target was paused (or its pause state is unreadable for long)."""
    return PauseSwitch(target)


def register() -> None:
    """Put the gate and the condition in force for every scenario fault of this process
    (idempotent)."""
    if ledger_allows not in INJECTION_GATES:
        INJECTION_GATES.append(ledger_allows)
    if pause_switch not in ABORT_CONDITIONS:
        ABORT_CONDITIONS.append(pause_switch)
