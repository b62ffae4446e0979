"""Cache checks: did the cache keep what it promised across a restart?

The seed's Redis runs with `appendonly yes` and `appendfsync everysec`, and claims "at most
1 s of writes lost". So a write acknowledged more than `grace_sec` before the restart must be
there after it; a write acknowledged later may be lost and is only counted.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from gameday.verdict import Verdict, failed, passed

# How many missing keys a message lists; the counts are always complete.
LISTED_KEYS = 10


@dataclass(frozen=True)
class CacheWrite:
    """A SET the cache acknowledged: its key and when (run clock seconds) the reply came."""

    key: str
    acked_at: float


def writes_survive_restart(
    writes: Sequence[CacheWrite],
    present: Collection[str],
    *,
    restart_at: float,
    grace_sec: float = 1.0,
) -> Verdict:
    """Every write acknowledged more than `grace_sec` before `restart_at` is `present`.

    Fails too when no write was acknowledged that early: nothing would have been judged.
    """
    name = "writes_survive_restart"
    cutoff = restart_at - grace_sec
    owed = [w for w in writes if w.acked_at < cutoff]
    late = [w for w in writes if w.acked_at >= cutoff]
    if not owed:
        return failed(
            name,
            f"no write was acknowledged more than {grace_sec:g} s before the restart "
            f"({len(writes)} writes in all): nothing to judge",
            owed=0,
        )
    missing = [w.key for w in owed if w.key not in present]
    late_lost = sum(1 for w in late if w.key not in present)
    tail = f"; of {len(late)} acknowledged within {grace_sec:g} s of the restart, {late_lost} lost"
    if missing:
        listed = ", ".join(missing[:LISTED_KEYS]) + (" ..." if len(missing) > LISTED_KEYS else "")
        return failed(
            name,
            f"{len(missing)} of {len(owed)} writes acknowledged more than {grace_sec:g} s before "
            f"the restart are missing ({listed}){tail}",
            owed=len(owed), missing=len(missing), late=len(late), late_lost=late_lost,
        )  # fmt: skip
    return passed(
        name,
        f"all {len(owed)} writes acknowledged more than {grace_sec:g} s before the restart "
        f"survived{tail}",
        owed=len(owed), missing=0, late=len(late), late_lost=late_lost,
    )  # fmt: skip
