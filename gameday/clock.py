"""The one clock of a run: every probe sample and fault event is timed by it.

Times are seconds since the run started, read from `time.monotonic()`, so a wall-clock step
(NTP, a VM resumed) can never reorder samples or stretch an outage. Wall time is derived, not
read: one anchor pair (`time.time()`, `time.monotonic()`) taken together when the clock is
created maps any clock time to UTC for reports and for lining a history up with logs.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime


class Clock:
    """Seconds since the start of a run; `Clock()` starts one now.

    `Clock(wall_anchor=..., monotonic_anchor=...)` (or `Clock.from_dict`) rebuilds the clock of
    an earlier run from its history file. `wall()` is then exact; `now()` only means something
    in the process (or at least the boot) that took the anchor, because `time.monotonic()`
    has no meaning across machines or reboots.
    """

    __slots__ = ("_monotonic", "_wall")

    def __init__(
        self, *, wall_anchor: float | None = None, monotonic_anchor: float | None = None
    ) -> None:
        if (wall_anchor is None) != (monotonic_anchor is None):
            raise ValueError("a clock anchor needs both wall_anchor and monotonic_anchor")
        if wall_anchor is None or monotonic_anchor is None:
            # Read monotonic on both sides of time.time() and keep the midpoint: the pair is
            # then off by at most half of the (microseconds) gap between the two reads.
            before = time.monotonic()
            wall_anchor = time.time()
            monotonic_anchor = (before + time.monotonic()) / 2
        if not (math.isfinite(wall_anchor) and math.isfinite(monotonic_anchor)):
            raise ValueError(f"clock anchor must be finite, got {wall_anchor}, {monotonic_anchor}")
        self._wall = float(wall_anchor)
        self._monotonic = float(monotonic_anchor)

    @property
    def wall_anchor(self) -> float:
        """`time.time()` (POSIX seconds) at clock time 0."""
        return self._wall

    @property
    def monotonic_anchor(self) -> float:
        """`time.monotonic()` at clock time 0."""
        return self._monotonic

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self._monotonic

    def wall_anchor_now(self) -> float:
        """`time.time()` at clock time 0 as the wall clock reads today: what converts another
        system's wall-clock times (Alertmanager's, CloudWatch's) to clock time. It drifts from
        `wall_anchor` when the machine's wall clock is slewed or stepped during the run (seen
        here: +13 s in a minute), which would shift every time converted after the step."""
        return time.time() - self.now()

    def wall(self, t: float) -> datetime:
        """The UTC wall time of clock time `t`."""
        return datetime.fromtimestamp(self._wall + t, tz=UTC)

    def to_dict(self) -> dict[str, float]:
        return {"wall": self._wall, "monotonic": self._monotonic}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> Clock:
        try:
            wall, mono = data["wall"], data["monotonic"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a clock anchor needs 'wall' and 'monotonic', got {data!r}") from exc
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (wall, mono)):
            raise ValueError(f"clock anchor values must be numbers, got {data!r}")
        return cls(wall_anchor=float(wall), monotonic_anchor=float(mono))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Clock):
            return NotImplemented
        return (self._wall, self._monotonic) == (other._wall, other._monotonic)

    def __hash__(self) -> int:
        return hash((self._wall, self._monotonic))

    def __repr__(self) -> str:
        return f"Clock(wall_anchor={self._wall!r}, monotonic_anchor={self._monotonic!r})"
