"""The cache persistence check on hand-built writes: it must say pass and fail."""

from __future__ import annotations

from gameday.checks.cache import CacheWrite, writes_survive_restart

WRITES = [CacheWrite(f"k{i}", acked_at=i * 0.5) for i in range(10)]  # 0.0 .. 4.5 s
ALL = {w.key for w in WRITES}


def test_passes_when_every_early_write_survived_even_if_late_ones_are_lost() -> None:
    # Restart at 4.6 s: writes before 3.6 s are owed (k0..k7); k8 (4.0) and k9 (4.5) are not.
    verdict = writes_survive_restart(WRITES, ALL - {"k8", "k9"}, restart_at=4.6)
    assert verdict.ok, verdict.message
    assert verdict.measured == {"owed": 8, "missing": 0, "late": 2, "late_lost": 2}
    assert verdict.message == (
        "all 8 writes acknowledged more than 1 s before the restart survived; "
        "of 2 acknowledged within 1 s of the restart, 2 lost"
    )


def test_fails_naming_the_missing_early_writes() -> None:
    verdict = writes_survive_restart(WRITES, ALL - {"k2", "k9"}, restart_at=4.6)
    assert not verdict.ok
    assert verdict.message.startswith(
        "1 of 8 writes acknowledged more than 1 s before the restart are missing (k2)"
    )


def test_fails_when_everything_was_lost() -> None:
    verdict = writes_survive_restart(WRITES, set(), restart_at=10.0, grace_sec=1.0)
    assert not verdict.ok and verdict.measured["missing"] == 10


def test_fails_when_nothing_was_acknowledged_early_enough_to_judge() -> None:
    verdict = writes_survive_restart(WRITES[:2], set(), restart_at=1.0)
    assert not verdict.ok
    assert "nothing to judge" in verdict.message


def test_the_grace_is_a_strict_boundary() -> None:
    # Acknowledged exactly grace_sec before the restart: within the allowed loss, not owed.
    writes = [CacheWrite("a", 1.0), CacheWrite("b", 2.0)]
    verdict = writes_survive_restart(writes, {"a"}, restart_at=3.0, grace_sec=1.0)
    assert verdict.ok and verdict.measured["owed"] == 1
