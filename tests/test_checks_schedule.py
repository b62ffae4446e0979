"""The schedule check on hand-built reports, and the log the probes keep to make them."""

from __future__ import annotations

import threading

import pytest

from gameday.checks.schedule import (
    ScheduleReport,
    due_count,
    rate_kept,
)
from gameday.probes.schedule import ScheduleLog


def report(
    *,
    asked: float = 300.0,
    due: int = 3000,
    sent: int = 3000,
    late: int = 0,
    worst: float = 0.0012,
    probe: str = "GET /health",
    unit: str = "request",
) -> ScheduleReport:
    return ScheduleReport(
        probe=probe, unit=unit, asked_rate=asked, first_due=0.5, ended=0.5 + due / asked,
        due=due, sent=sent, late=late, late_sec=0.010, worst_late_sec=worst,
    )  # fmt: skip


# -- rate_kept ---------------------------------------------------------------------------------


def test_a_probe_that_kept_its_rate_passes() -> None:
    verdict = rate_kept(report(asked=100, due=6000, sent=6000))
    assert verdict.ok
    assert verdict.message == (
        "GET /health: asked 100/s, sent 100/s (6000 of 6000 due); "
        "no request late by more than 10 ms (worst 1.2 ms)"
    )


def test_a_probe_that_fell_short_of_its_rate_fails_with_the_numbers() -> None:
    verdict = rate_kept(report(asked=300, due=3000, sent=2550, late=45, worst=0.19))
    assert not verdict.ok
    assert verdict.message.startswith(
        "GET /health: asked 300/s, sent 255/s (2550 of 3000 due); "
        "45 requests late by more than 10 ms (worst 190 ms)"
    )
    assert "more than 1% of the requests due never started" in verdict.message
    assert verdict.measured["achieved_rate"] == pytest.approx(255.0)
    assert verdict.measured["sent"] == 2550 and verdict.measured["due"] == 3000


def test_every_operation_sent_but_too_many_late_fails() -> None:
    # A probe that caught up in bursts sent them all, but not when they were due.
    verdict = rate_kept(report(due=1000, sent=1000, late=11, worst=0.5))
    assert not verdict.ok
    assert "11 requests late by more than 10 ms (worst 500 ms)" in verdict.message
    assert "more than 1% started late" in verdict.message
    assert "never started" not in verdict.message


def test_the_limits_are_the_callers() -> None:
    r = report(due=1000, sent=985, late=15, worst=0.02)
    assert not rate_kept(r).ok
    assert rate_kept(r, max_rate_error=0.02, max_late_ratio=0.02).ok
    # At the limit exactly: 1% short and 1% late still pass.
    assert rate_kept(report(due=1000, sent=990, late=9)).ok
    assert not rate_kept(report(due=1000, sent=989)).ok


def test_one_late_write_is_singular() -> None:
    verdict = rate_kept(report(asked=20, due=200, sent=200, late=1, worst=0.011,
                               probe="ledger", unit="write"))  # fmt: skip
    assert verdict.ok  # 1 of 200 is within the 1% allowed
    assert "ledger: asked 20/s, sent 20/s (200 of 200 due); 1 write late by more than 10 ms" in (
        verdict.message
    )


def test_nothing_due_passes_and_says_so() -> None:
    r = ScheduleReport("GET /health", "request", 5.0, None, None, 0, 0, 0, 0.01, 0.0)
    verdict = rate_kept(r)
    assert verdict.ok
    assert verdict.message == "GET /health: no request fell due (asked 5/s)"


def test_measured_carries_what_a_report_needs_to_find_the_late_samples() -> None:
    m = rate_kept(report()).measured
    assert {"probe", "asked_rate", "first_due", "late_sec", "late", "worst_late_sec"} <= set(m)
    assert m["first_due"] == 0.5 and m["asked_rate"] == 300.0 and m["late_sec"] == 0.01


@pytest.mark.parametrize("kw", [{"max_rate_error": 1.0}, {"max_late_ratio": -0.1}])
def test_limits_out_of_range_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="max_rate_error must be in"):
        rate_kept(report(), **kw)


@pytest.mark.parametrize(
    ("first", "ended", "rate", "limit", "expected"),
    [
        (0.0, 0.0, 100.0, None, 1),  # the first operation is due at once
        (0.0, 0.999, 100.0, None, 100),
        (0.0, 1.0, 100.0, None, 101),
        (2.0, 1.0, 100.0, None, 0),
        (0.0, 10.0, 100.0, 50, 50),
        (1.0, 1.3, 10.0, None, 4),  # 0.3 s at 10/s: due at 1.0, 1.1, 1.2, 1.3
    ],
)
def test_due_count(
    first: float, ended: float, rate: float, limit: int | None, expected: int
) -> None:
    assert due_count(first, ended, rate, limit) == expected


# -- ScheduleLog ---------------------------------------------------------------------------


def test_the_log_counts_starts_late_starts_and_the_worst() -> None:
    log = ScheduleLog("p", rate=10, unit="request", late_sec=0.010)
    log.begin(1.0)
    for seq, lateness in enumerate([0.0, 0.002, 0.009, 0.011, 0.5]):
        log.started(1.0 + seq * 0.1, 1.0 + seq * 0.1 + lateness)
    log.end(1.45)
    r = log.report(now=99.0)  # an ended log reports up to its end, not to now
    assert (r.sent, r.late, r.due) == (5, 2, 5)
    assert r.worst_late_sec == pytest.approx(0.5)
    assert (r.first_due, r.ended) == (1.0, 1.45)


def test_a_running_log_reports_up_to_now_and_counts_what_never_started() -> None:
    log = ScheduleLog("p", rate=100, unit="request")
    log.begin(0.0)
    log.started(0.0, 0.0)
    r = log.report(now=0.5)
    assert (r.due, r.sent) == (51, 1)
    assert not rate_kept(r).ok


def test_a_log_never_begun_reports_nothing_due() -> None:
    r = ScheduleLog("p", rate=100).report(now=3.0)
    assert (r.first_due, r.due, r.sent) == (None, 0, 0)


def test_the_log_is_safe_to_feed_from_many_threads() -> None:
    log = ScheduleLog("p", rate=1000, late_sec=0.010)
    log.begin(0.0)

    def feed() -> None:
        for i in range(2000):
            log.started(0.0, 0.02 if i % 2 else 0.0)

    threads = [threading.Thread(target=feed) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    r = log.report(now=100.0)
    assert (r.sent, r.late) == (16000, 8000)
