"""Did a probe keep its schedule? A probe that cannot send at the rate it was asked for must
say so, or its samples read as "the target answered everything" while half the requests were
never sent, or went out seconds after they were due.

Every probe keeps a `ScheduleReport` of its own schedule (`probe.schedule_report()`): how many
operations fell due, how many really started, and how late they started against their due
times (operation k of a probe started at `first_due` is due at `first_due + k / asked_rate`).
`rate_kept` judges one report. Both are pure: a report is plain numbers, and the check is
tested on hand-built ones.

A start is *late* when it came more than `late_sec` (10 ms by default) after its due time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gameday.verdict import Verdict, failed, passed

CHECK = "rate_kept"
# A start later than this after its due time is counted as late (the probes' jitter goal:
# p99 of real starts within 10 ms of their due times).
LATE_SEC = 0.010
# What `rate_kept` allows by default: 1 % fewer operations than fell due, 1 % of them late.
MAX_RATE_ERROR = 0.01
MAX_LATE_RATIO = 0.01


def due_count(first_due: float, ended: float, rate: float, limit: int | None) -> int:
    """How many operations fell due from `first_due` until `ended` (the first one included),
    at most `limit`."""
    if ended < first_due:
        return 0
    # A hair of tolerance: `ended` taken right at a due time must count that operation.
    n = math.floor((ended - first_due) * rate + 1e-9) + 1
    return n if limit is None else min(n, limit)


@dataclass(frozen=True)
class ScheduleReport:
    """What a probe's schedule did, from its first due time to `ended` (when it stopped, or
    when the report was taken while it still ran).

    `unit` names one operation in messages ("request", "write"). `late` counts starts later
    than `late_sec` after their due time; `worst_late_sec` is the latest start's lateness.
    """

    probe: str
    unit: str
    asked_rate: float
    first_due: float | None  # None: the probe never started
    ended: float | None
    due: int
    sent: int
    late: int
    late_sec: float
    worst_late_sec: float

    @property
    def achieved_rate(self) -> float:
        """The rate the probe really sent at: the asked rate scaled by the share of the
        operations that fell due which really started."""
        return self.asked_rate * self.sent / self.due if self.due else 0.0


def _rate(x: float) -> str:
    """A rate for a message: 1000, 255, 99.5, 0.25."""
    if x >= 1000:
        return f"{x:.0f}"
    text = f"{x:.1f}" if x >= 100 else f"{x:.2f}"
    return text.rstrip("0").rstrip(".") or "0"


def _ms(sec: float) -> str:
    """Milliseconds for a message: 190 ms, 10 ms, 8.4 ms."""
    ms = sec * 1000
    text = f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}".rstrip("0").rstrip(".")
    return f"{text or '0'} ms"


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def rate_kept(
    report: ScheduleReport,
    *,
    max_rate_error: float = MAX_RATE_ERROR,
    max_late_ratio: float = MAX_LATE_RATIO,
) -> Verdict:
    """Pass when the probe started at least (1 - `max_rate_error`) of the operations that fell
    due and at most `max_late_ratio` of its starts were late.

    "GET /health: asked 300/s, sent 255/s (2550 of 3000 due); 45 requests late by more than
    10 ms (worst 190 ms)".
    """
    if not 0 <= max_rate_error < 1 or not 0 <= max_late_ratio <= 1:
        raise ValueError(
            f"max_rate_error must be in [0, 1) and max_late_ratio in [0, 1], "
            f"got {max_rate_error} and {max_late_ratio}"
        )
    r = report
    measured = {
        "probe": r.probe,
        "asked_rate": r.asked_rate,
        "achieved_rate": r.achieved_rate,
        "due": r.due,
        "sent": r.sent,
        "late": r.late,
        "late_sec": r.late_sec,
        "worst_late_sec": r.worst_late_sec,
        # With these two a report can tell which samples were late: sample k was due at
        # first_due + k / asked_rate.
        "first_due": r.first_due,
    }
    if r.due == 0:
        return passed(CHECK, f"{r.probe}: no {r.unit} fell due (asked {_rate(r.asked_rate)}/s)",
                      **measured)  # fmt: skip
    rate_part = (
        f"{r.probe}: asked {_rate(r.asked_rate)}/s, sent {_rate(r.achieved_rate)}/s"
        f" ({r.sent} of {r.due} due)"
    )
    threshold = f"late by more than {_ms(r.late_sec)}"
    if r.late:
        late_part = f"{_plural(r.late, r.unit)} {threshold} (worst {_ms(r.worst_late_sec)})"
    else:
        late_part = f"no {r.unit} {threshold} (worst {_ms(r.worst_late_sec)})"
    short = r.sent < r.due * (1 - max_rate_error)
    too_late = r.late > r.sent * max_late_ratio
    message = f"{rate_part}; {late_part}"
    if not (short or too_late):
        return passed(CHECK, message, **measured)
    why = []
    if short:
        why.append(f"more than {max_rate_error * 100:g}% of the {r.unit}s due never started")
    if too_late:
        why.append(f"more than {max_late_ratio * 100:g}% started late")
    return failed(CHECK, f"{message}: the probe did not keep its rate ({'; '.join(why)})",
                  **measured)  # fmt: skip
