"""The fault protocol: a reversible change to a target.

A fault is built from a target and its parameters, can say in one line what it would do
(`describe`, used by `--dry-run`), refuses early when it cannot act safely (`preflight`),
`inject`s, `heal`s (idempotent: safe after a partial inject, twice, or from another process),
and tells whether it is still in effect. Everything `heal` needs is in `undo_params()`, which
the undo journal writes to disk *before* `inject` runs, so a fresh process (`gameday heal`)
can rebuild the fault with `from_undo` and heal it after the run that injected it was killed.

Adding a fault type is one subclass in one module of `chaos/`, listed in that module's
`FAULTS` and the module named in chaos/registry.py; its docstring is what `gameday faults`
shows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from gameday.secrets import redact
from gameday.target import Target


class FaultError(Exception):
    """A fault could not act; the message is one line for the user."""


class FaultRefused(FaultError):
    """The fault refused before acting (unhealthy target, wrong account, missing role...)."""


@dataclass(frozen=True)
class Observation:
    """Something the deployment itself reported while a fault acted (AWS's own "failover
    completed" event, the zone the primary moved to), at a wall time (POSIX seconds). The
    steps put them into the run's history as marks, next to what the probes saw."""

    name: str
    wall: float
    detail: dict[str, str] = field(default_factory=dict, hash=False)


class Fault(ABC):
    """Base of every fault. Subclasses set `name`, `label` and `providers`."""

    #: registry key, a capability name of gameday.target.FAULT_NAMES ("database-failover");
    #: the same name exists for several providers
    name: ClassVar[str]
    #: short human label for reports ("database failover"); set on the class, or per instance
    #: when it comes from the parameters (the command fault), hence not a ClassVar
    label: str
    #: the target providers this class serves ("lab", "docker", "aws", "generic")
    providers: ClassVar[tuple[str, ...]]

    def __init__(self, target: Target, params: dict[str, str]) -> None:
        self.target = target
        self.params = dict(params)
        #: set by the runner: persists undo params learnt during inject (journal.update)
        self.on_remember: Callable[[dict[str, str]], None] | None = None
        #: what the deployment reported while inject acted, for the history (may stay empty)
        self.observations: list[Observation] = []

    def remember(self, **values: str) -> None:
        """Record what heal will need, durably, before the change that needs it is made."""
        self.params.update(values)
        if self.on_remember is not None:
            self.on_remember(self.undo_params())

    @classmethod
    def unavailable(cls, target: Target) -> str | None:
        """Why this built-in fault cannot act on `target` at all, in one line (a lab without
        zone networks has no NAT to disable); None when it can. Asked before a scenario
        starts, so its scenarios skip with the reason. Default: available."""
        return None

    @abstractmethod
    def describe(self) -> str:
        """One line: what inject would do to what (shown by --dry-run and in reports)."""

    def preflight(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Raise FaultRefused if the fault cannot act safely now. Default: no extra check."""

    @abstractmethod
    def inject(self) -> None:
        """Make the change. Called only after the undo record is on disk."""

    @abstractmethod
    def heal(self) -> None:
        """Undo the change and wait until the target is back. Idempotent."""

    @abstractmethod
    def in_effect(self) -> bool:
        """Is the change still in effect (a stopped server still stopped...)?"""

    def undo_params(self) -> dict[str, str]:
        """What heal needs, written to the journal before inject. Default: the parameters.

        A fault that learns something while injecting (which node was primary) records it
        with `remember`, and the journal is updated before the change is made.
        """
        return dict(self.params)

    @classmethod
    def from_undo(cls, target: Target, params: dict[str, str]) -> Fault:
        """Rebuild the fault in a new process, from what the journal kept."""
        return cls(target, params)


def one_line(exc: BaseException) -> str:
    """An exception as one redacted line for the user."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return redact(text)
