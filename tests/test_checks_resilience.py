"""Unit tests of the checks over a history (gameday.checks.resilience) on hand-built samples.

Every check has a case where it must pass and one where it must fail, and each asserts on
the numbers the verdict measured and on the words its message shows the user.
"""

from __future__ import annotations

from collections import Counter

import pytest

from gameday.checks.resilience import (
    availability,
    latency_percentiles,
    latency_within,
    longest_outage,
    lost_writes,
    lost_writes_in,
    natural_key,
    outages,
    phase_of,
    servers_by_phase,
    silences,
    time_to_recover,
    traffic_moved_to,
)
from gameday.clock import Clock
from gameday.history import History, ReadBack, Record, RunHeader, Sample
from gameday.stats import nearest_rank

# -- builders --------------------------------------------------------------------------------


def series(
    pattern: str,
    *,
    start: float = 0.0,
    step: float = 0.1,
    probe: str = "health",
    seq0: int = 0,
    error: str = "timeout",
    duration: float | None = 0.01,
    server: str | None = None,
) -> list[Sample]:
    """One sample per character, sent every `step` s from `start`: "." ok, "x" failed."""
    out = []
    for i, c in enumerate(pattern):
        ok = c == "."
        # A timed-out request has no duration: it was cut, not answered.
        took = duration if ok or error != "timeout" else None
        out.append(
            Sample(
                probe=probe, seq=seq0 + i, sent=round(start + i * step, 6), duration=took, ok=ok,
                status=200 if ok else None, error=None if ok else error, server=server,
            )
        )  # fmt: skip
    return out


def ok_at(sent: float, server: str | None = None, *, ms: float = 10.0) -> Sample:
    return Sample("health", int(sent * 1000), sent, ms / 1000, True, 200, None, server)


def failed_at(sent: float, error: str = "timeout") -> Sample:
    return Sample("health", int(sent * 1000), sent, None, False, None, error)


# -- phases ----------------------------------------------------------------------------------


def test_phase_of_puts_the_window_edges_during_the_fault() -> None:
    window = (10.0, 20.0)
    assert [phase_of(t, window) for t in (9.99, 10.0, 20.0, 20.01)] == [
        "before", "during", "during", "after",
    ]  # fmt: skip


def test_nearest_rank_returns_a_measured_value() -> None:
    values = [float(v) for v in range(1, 11)]
    assert nearest_rank(values, 50) == 5.0
    assert nearest_rank(values, 95) == 10.0
    assert nearest_rank(values, 1) == 1.0
    with pytest.raises(ValueError):
        nearest_rank([], 50)


# -- availability ----------------------------------------------------------------------------


def during_fault_with_4_failures() -> list[Sample]:
    # 10 failures before the fault (outside the window), then 300 requests in [10, 40):
    # 3 timeouts and 1 refused connection among them.
    before = series("x" * 10, start=0.0)
    during = series("." * 300, start=10.0, seq0=10)
    for i in (50, 51, 52):
        during[i] = failed_at(during[i].sent, "timeout")
    during[200] = failed_at(during[200].sent, "refused")
    return before + during


def test_availability_passes_at_or_above_the_minimum() -> None:
    verdict = availability(during_fault_with_4_failures(), window=(10.0, 40.0), min_ratio=0.98)
    assert verdict.ok
    assert verdict.message == (
        "health: 98.7% of 300 requests succeeded during the fault [10 s, 40 s] (min 98%): "
        "4 failed (timeout 3, refused 1)"
    )
    assert verdict.measured["total"] == 300
    assert verdict.measured["ratio"] == pytest.approx(296 / 300)
    assert verdict.measured["errors"] == {"timeout": 3, "refused": 1}


def test_availability_fails_below_the_minimum() -> None:
    verdict = availability(during_fault_with_4_failures(), window=(10.0, 40.0), min_ratio=0.99)
    assert not verdict.ok
    assert "98.7% of 300 requests succeeded" in verdict.message
    assert "(min 99%): 4 failed (timeout 3, refused 1)" in verdict.message


def test_availability_never_rounds_a_failure_up_to_the_minimum() -> None:
    samples = series("." * 9899 + "x" * 101)
    verdict = availability(samples, window=None, min_ratio=0.99)
    assert not verdict.ok
    assert verdict.message.startswith("health: 98.99% of 10000 requests succeeded over the run")


def test_availability_never_shows_100_percent_with_failures() -> None:
    verdict = availability(series("." * 9999 + "x"), window=None, min_ratio=0.99)
    assert verdict.ok
    assert "99.99% of 10000" in verdict.message


def test_availability_names_http_statuses() -> None:
    samples = [*series("...."), Sample("health", 9, 1.0, 0.01, False, 503, "http")]
    verdict = availability(samples, window=None, min_ratio=0.9)
    assert not verdict.ok
    assert verdict.message.endswith("1 failed (http 503 1)")


def test_availability_without_samples_in_the_window_is_no_evidence() -> None:
    verdict = availability(series("....."), window=(10.0, 20.0), min_ratio=0.5)
    assert not verdict.ok
    assert verdict.message == (
        "health: no requests were sent during the fault [10 s, 20 s]: no evidence of availability"
    )
    assert verdict.measured["total"] == 0


# -- longest outage --------------------------------------------------------------------------


def two_outages() -> list[Sample]:
    # every 0.1 s: ok until 2.0, 5 failures (2.0-2.4), ok from 2.5, 30 failures (3.5-6.4),
    # ok from 6.5 on
    return series("." * 20 + "x" * 5 + "." * 10 + "x" * 30 + "." * 20)


def test_outages_are_measured_from_first_failure_to_next_success() -> None:
    found = outages(two_outages())
    assert [(o.start, o.end, o.failures, o.ongoing) for o in found] == [
        (2.0, 2.5, 5, False), (3.5, 6.5, 30, False),
    ]  # fmt: skip


def test_longest_outage_passes_when_within_the_limit() -> None:
    verdict = longest_outage(two_outages(), max_sec=5.0)
    assert verdict.ok
    assert verdict.message == (
        "health: longest outage 3 s from 3.5 s to 6.5 s (30 failed requests), max 5 s; "
        "2 outage(s) among 85 requests from 0 s to 8.4 s"
    )
    assert verdict.measured["longest_sec"] == pytest.approx(3.0)
    assert verdict.measured["longest_start"] == 3.5


def test_longest_outage_fails_beyond_the_limit() -> None:
    verdict = longest_outage(list(reversed(two_outages())), max_sec=2.0)
    assert not verdict.ok
    assert verdict.message.startswith(
        "health: longest outage 3 s from 3.5 s to 6.5 s (30 failed requests) exceeds 2 s"
    )
    assert verdict.measured["outages"] == 2


def test_a_probe_still_failing_at_the_end_fails_whatever_the_limit() -> None:
    samples = series("." * 10 + "x" * 10, error="refused", duration=0.2)
    verdict = longest_outage(samples, max_sec=60.0)
    assert not verdict.ok
    # from the first failure (1.0 s) to the last failure's send (1.9 s) plus its 0.2 s
    assert verdict.measured["longest_sec"] == pytest.approx(1.1)
    assert verdict.measured["still_failing"] is True
    assert verdict.message == (
        "health: still failing at the end: 10 failed requests since 1 s "
        "(1.1 s and counting, max 60 s)"
    )


def test_a_trailing_timeout_without_duration_ends_at_its_send_time() -> None:
    found = outages(series("..xxx"))
    assert found[-1].ongoing
    assert found[-1].length == pytest.approx(0.2)


def test_longest_outage_without_failures_is_zero() -> None:
    verdict = longest_outage(series("." * 50), max_sec=1.0)
    assert verdict.ok
    assert verdict.measured["longest_sec"] == 0.0
    assert verdict.message == "health: no failed request among 50 requests from 0 s to 4.9 s"


def test_longest_outage_without_samples_is_no_evidence() -> None:
    assert not longest_outage([], max_sec=1.0).ok


# -- time to recover -------------------------------------------------------------------------


def clean_recovery() -> list[Sample]:
    # every 0.1 s from 5.0 s: ok before the fault at 10.0 s; 23 failures sent 10.0-12.2 s;
    # ok from 12.3 s to 29.9 s.
    return series("." * 50 + "x" * 23 + "." * 177, start=5.0)


def test_clean_recovery_is_measured_from_fault_start_to_the_first_lasting_success() -> None:
    verdict = time_to_recover(clean_recovery(), fault_start=10.0, within_sec=3.0)
    assert verdict.ok
    assert verdict.measured["recovery_sec"] == pytest.approx(2.3)
    assert verdict.measured["recovered_at"] == pytest.approx(12.3)
    assert verdict.measured["outage_sec"] == pytest.approx(2.3)
    assert verdict.message == (
        "health: recovered 2.3 s after the fault began at 10 s (within 3 s): first failure at "
        "10 s, first of 5 consecutive successes at 12.3 s"
    )


def test_recovery_slower_than_allowed_fails() -> None:
    verdict = time_to_recover(clean_recovery(), fault_start=10.0, within_sec=2.0)
    assert not verdict.ok
    assert verdict.measured["recovery_sec"] == pytest.approx(2.3)
    assert "recovered 2.3 s after the fault began at 10 s (> 2 s)" in verdict.message


def test_recovery_counts_from_fault_start_even_when_the_fault_bites_later() -> None:
    # fault at 10.0 s, first failure at 11.0 s, ok again from 12.3 s
    samples = series("." * 60 + "x" * 13 + "." * 20, start=5.0)
    verdict = time_to_recover(samples, fault_start=10.0, within_sec=3.0)
    assert verdict.measured["recovery_sec"] == pytest.approx(2.3)
    assert verdict.measured["outage_sec"] == pytest.approx(1.3)


def test_flapping_is_measured_from_after_the_last_failure() -> None:
    # fault at 10.0: failures 10.0-10.4, 3 ok (10.5-10.7), failures 10.8-10.9, then ok from 11.0
    samples = series("xxxxx" + "..." + "xx" + "." * 20, start=10.0)
    verdict = time_to_recover(samples, fault_start=10.0, within_sec=5.0, consecutive=5)
    assert verdict.ok
    assert verdict.measured["recovery_sec"] == pytest.approx(1.0)
    assert "first of 5 consecutive successes at 11 s" in verdict.message


def test_a_shorter_run_counts_when_fewer_successes_are_required_and_relapse_is_told() -> None:
    samples = series("xxxxx" + "..." + "xx" + "." * 20, start=10.0)
    verdict = time_to_recover(samples, fault_start=10.0, within_sec=5.0, consecutive=2)
    # with 2 consecutive successes needed, the 3 ok at 10.5-10.7 already count
    assert verdict.measured["recovery_sec"] == pytest.approx(0.5)
    assert verdict.measured["relapse_failures"] == 2
    assert verdict.message.endswith("failed again later: 2 requests, the last at 10.9 s")


def test_never_recovered_fails_and_names_the_last_failure() -> None:
    samples = series("." * 5 + "x" * 20 + "..." + "x" + "...", start=5.0)
    verdict = time_to_recover(samples, fault_start=5.5, within_sec=60.0)
    assert not verdict.ok
    assert verdict.measured["recovery_sec"] is None
    assert verdict.measured["last_failure"] == pytest.approx(7.8)
    assert verdict.message == (
        "health: not recovered by the end (last failure at 7.8 s; 3 successes after it, "
        "5 consecutive needed; the fault began at 5.5 s, 21 failed requests since)"
    )


def test_no_failure_after_the_fault_is_a_recovery_of_zero() -> None:
    # failures before the fault are not the fault's doing
    samples = series("xxx" + "." * 50, start=8.0)
    verdict = time_to_recover(samples, fault_start=10.0, within_sec=1.0)
    assert verdict.ok
    assert verdict.measured["recovery_sec"] == 0.0
    assert verdict.message == (
        "health: recovery 0 s: no failed request among 33 sent after the fault began at 10 s "
        "(no outage seen)"
    )


def test_no_samples_after_the_fault_is_no_evidence() -> None:
    verdict = time_to_recover(series("....."), fault_start=10.0, within_sec=1.0)
    assert not verdict.ok
    assert "no samples sent after the fault began at 10 s" in verdict.message


# -- lost writes -----------------------------------------------------------------------------


def test_natural_order_puts_2_before_10() -> None:
    assert sorted(["w-10", "w-2", "w-1", "a"], key=natural_key) == ["a", "w-1", "w-2", "w-10"]


def test_no_lost_write_passes() -> None:
    ids = [f"o-{i}" for i in range(100)]
    verdict = lost_writes(ids, [], reversed(ids), probe="orders")
    assert verdict.ok
    assert verdict.message == "orders: all 100 acknowledged writes found once in the final read"
    assert verdict.measured["lost"] == 0


def test_lost_writes_lists_the_first_20_in_natural_order() -> None:
    acked = [f"w-{i}" for i in range(1, 101)]
    missing = {f"w-{i}" for i in (3, 10, *range(30, 53))}  # 25 ids
    found = [k for k in acked if k not in missing]
    verdict = lost_writes(acked, [], found)
    assert not verdict.ok
    expected = ["w-3", "w-10", *(f"w-{i}" for i in range(30, 48))]
    assert verdict.measured["lost"] == 25
    assert verdict.measured["lost_ids"] == expected
    assert verdict.message == (
        f"25 of 100 acknowledged writes lost: {', '.join(expected)} and 5 more"
    )


def test_a_write_applied_twice_fails() -> None:
    verdict = lost_writes(["o-1", "o-2", "o-7"], [], ["o-1", "o-7", "o-2", "o-7"])
    assert not verdict.ok
    assert verdict.measured["duplicates"] == 1
    assert verdict.measured["duplicate_ids"] == ["o-7"]
    assert verdict.message == "1 writes applied more than once: o-7"


def test_writes_of_unknown_outcome_are_never_lost() -> None:
    # "o-9" timed out after sending and is not in the final read: not lost; "o-8" was applied
    verdict = lost_writes(["o-1", "o-2"], ["o-8", "o-9"], ["o-2", "o-8", "o-1"])
    assert verdict.ok
    assert verdict.measured["unknown_found"] == 1
    assert verdict.measured["unknown_missing"] == 1
    assert verdict.message == (
        "all 2 acknowledged writes found once in the final read; 2 writes of unknown outcome: "
        "1 applied, 1 not applied (neither counts as lost)"
    )


def test_unknown_outcomes_do_not_hide_a_lost_acknowledged_write() -> None:
    verdict = lost_writes(["o-1", "o-2"], ["o-2", "o-3"], ["o-1", "o-3"])
    assert not verdict.ok
    assert verdict.measured["lost_ids"] == ["o-2"]
    assert verdict.measured["unknown"] == 1  # o-2 was also acknowledged: it counts as such


def test_no_acknowledged_write_is_no_evidence() -> None:
    verdict = lost_writes([], ["o-1"], ["o-1"])
    assert not verdict.ok
    assert verdict.message.startswith("no acknowledged write")


def test_a_million_acknowledged_writes_with_a_handful_lost() -> None:
    acked = [f"order-{i}" for i in range(1_000_000)]
    deleted = {999_999, 17, 500_000, 123_456, 42}
    found = [k for i, k in enumerate(acked) if i not in deleted]
    verdict = lost_writes(acked, [], found)
    assert not verdict.ok
    assert verdict.measured["lost"] == 5
    assert verdict.measured["lost_ids"] == [
        "order-17", "order-42", "order-123456", "order-500000", "order-999999",
    ]  # fmt: skip
    assert verdict.measured["duplicates"] == 0
    assert verdict.message.startswith("5 of 1000000 acknowledged writes lost: order-17, order-42")


def write_history(*records: Record) -> History:
    return History(RunHeader.create("run-1", "lab", Clock()), records)


def write(seq: int, outcome: str, ok: bool) -> Sample:
    return Sample("orders", seq, seq * 0.05, 0.02, ok, None, None, None, f"o-{seq}", outcome)


def test_lost_writes_in_a_history_uses_outcomes_and_the_final_read() -> None:
    history = write_history(
        write(1, "ok", True), write(2, "info", False), write(3, "fail", False),
        write(4, "ok", True), ReadBack("orders", 60.0, ["o-1", "o-4"]),
    )  # fmt: skip
    verdict = lost_writes_in(history, "orders")
    assert verdict.ok
    assert verdict.measured["acknowledged"] == 2
    assert verdict.measured["unknown_missing"] == 1
    assert verdict.message.startswith("orders: all 2 acknowledged writes found once")


def test_lost_writes_in_a_history_fails_on_a_missing_acknowledged_write() -> None:
    history = write_history(
        write(1, "ok", True), write(2, "ok", True), ReadBack("orders", 60.0, ["o-2"])
    )
    verdict = lost_writes_in(history, "orders")
    assert not verdict.ok
    assert verdict.message == "orders: 1 of 2 acknowledged writes lost: o-1"


def ledger_write(seq: int, node: str) -> Sample:
    return Sample("ledger", seq, seq * 0.05, 0.01, True, None, None, node, str(seq), "ok")


def test_lost_writes_name_the_node_that_acknowledged_them() -> None:
    # Writes 2-4 were acknowledged by the old primary after the failover began; the final
    # primary never had them.
    old, new = "10.0.0.1:5432", "10.0.0.2:5432"
    history = write_history(
        ledger_write(0, old), ledger_write(1, old), ledger_write(2, old), ledger_write(3, old),
        ledger_write(4, old), ledger_write(5, new), ledger_write(6, new),
        ReadBack("ledger", 60.0, ["0", "1", "5", "6"]),
    )  # fmt: skip
    verdict = lost_writes_in(history, "ledger")
    assert not verdict.ok
    assert verdict.message == (
        "ledger: 3 of 7 acknowledged writes lost: 2, 3, 4; the lost ones were sent 0.1-0.2 s "
        f"into the run and acknowledged by {old} 3; the kept ones by {old} 2, {new} 2"
    )
    assert verdict.measured["lost_by_server"] == {old: 3}
    assert verdict.measured["kept_by_server"] == {new: 2, old: 2}


def test_lost_writes_in_a_history_without_final_read_fails() -> None:
    verdict = lost_writes_in(write_history(write(1, "ok", True)), "orders")
    assert not verdict.ok
    assert verdict.message.startswith("orders: no final read of the written ids")


# -- latency ---------------------------------------------------------------------------------


def latency_samples() -> list[Sample]:
    before = [ok_at(i * 0.05, ms=float(i)) for i in range(1, 101)]  # 1..100 ms, t 0.05-5.0
    during = [ok_at(10.0 + i * 0.5, ms=10.0 * i) for i in range(1, 21)]  # 10..200 ms
    during += [failed_at(10.2), failed_at(10.3)]  # failures have no latency to count
    after = [ok_at(25.0, ms=5.0)]
    return before + during + after


def test_latency_percentiles_per_phase_by_nearest_rank() -> None:
    got = latency_percentiles(latency_samples(), window=(10.0, 20.0))
    assert got["before"] == pytest.approx({"p50": 50, "p95": 95, "p99": 99, "count": 100})
    assert got["during"] == pytest.approx({"p50": 100, "p95": 190, "p99": 200, "count": 20})
    assert got["after"] == pytest.approx({"p50": 5, "p95": 5, "p99": 5, "count": 1})


def test_a_phase_without_successful_samples_has_no_percentiles() -> None:
    got = latency_percentiles(latency_samples(), window=(10.0, 30.0))
    assert set(got) == {"before", "during"}


def test_latency_within_passes_under_the_limit() -> None:
    verdict = latency_within(
        latency_samples(), window=(10.0, 20.0), phase="during", percentile=95, max_ms=200
    )
    assert verdict.ok
    assert verdict.measured["latency_ms"] == pytest.approx(190.0)
    assert verdict.message == (
        "health: p95 latency during the fault 190.0 ms over 20 successful requests (max 200 ms)"
    )


def test_latency_within_fails_over_the_limit() -> None:
    verdict = latency_within(
        latency_samples(), window=(10.0, 20.0), phase="before", percentile=99, max_ms=50
    )
    assert not verdict.ok
    assert "p99 latency before the fault 99.0 ms over 100 successful requests (max 50 ms)" in (
        verdict.message
    )


def test_latency_within_without_samples_in_the_phase_fails() -> None:
    verdict = latency_within(
        latency_samples(), window=(10.0, 30.0), phase="after", percentile=50, max_ms=1000
    )
    assert not verdict.ok
    assert "no successful request after the fault" in verdict.message


# -- where traffic went ----------------------------------------------------------------------


def failover_traffic(stray_at: float | None = None) -> list[Sample]:
    """Answers every 0.5 s from 0 to 40 s; the fault is [10, 30]. Both servers answer, except
    from 12.5 s to 30 s when only server2 does (plus one stray answer if asked)."""
    out = []
    for i in range(81):
        t = i * 0.5
        server = "server2" if 12.5 <= t <= 30.0 or i % 2 else "server1"
        if t == stray_at:
            server = "server1"
        out.append(ok_at(t, server))
    out.append(failed_at(11.25))
    return out


def test_servers_by_phase_counts_successful_answers() -> None:
    got = servers_by_phase(failover_traffic(), window=(10.0, 30.0))
    assert got["before"] == Counter({"server1": 10, "server2": 10})
    assert got["during"] == Counter({"server1": 3, "server2": 38})
    assert got["after"] == Counter({"server1": 10, "server2": 10})


def test_traffic_moved_to_the_survivor_in_time() -> None:
    verdict = traffic_moved_to(
        failover_traffic(), window=(10.0, 30.0), survivor="server2", within_sec=5.0
    )
    assert verdict.ok
    assert verdict.measured["moved_after_sec"] == pytest.approx(2.0)
    assert verdict.measured["answers"] == 31
    assert verdict.message == (
        "health: all 31 answers from 15 s to 30 s came from server2; the last answer from another "
        "server (server1) was at 12 s, 2 s after the fault began"
    )


def test_a_stray_answer_after_the_deadline_fails_and_is_named() -> None:
    verdict = traffic_moved_to(
        failover_traffic(stray_at=17.5), window=(10.0, 30.0), survivor="server2", within_sec=5.0
    )
    assert not verdict.ok
    assert verdict.measured["strays"] == 1
    assert verdict.measured["moved_after_sec"] == pytest.approx(7.5)
    assert verdict.message == (
        "health: 1 of 31 answers from 15 s to 30 s came from other servers than server2 "
        "(server1 1); the last from server1 at 17.5 s, 7.5 s after the fault began (allowed 5 s)"
    )


def test_an_answer_naming_no_server_is_not_the_survivors() -> None:
    samples = [*failover_traffic(), ok_at(20.25, None)]
    verdict = traffic_moved_to(samples, window=(10.0, 30.0), survivor="server2", within_sec=5.0)
    assert not verdict.ok
    assert "the last from (unknown) at 20.25 s" in verdict.message


def test_traffic_moved_to_needs_answers_after_the_deadline() -> None:
    verdict = traffic_moved_to(
        failover_traffic(), window=(10.0, 30.0), survivor="server2", within_sec=25.0
    )
    assert not verdict.ok
    assert "the fault lasted 20 s, less than the 25 s allowed" in verdict.message
    only_failures = [failed_at(20.0)]
    verdict = traffic_moved_to(
        only_failures, window=(10.0, 30.0), survivor="server2", within_sec=5.0
    )
    assert not verdict.ok
    assert "no successful answer from 15 s to 30 s" in verdict.message


def test_lost_writes_within_a_stated_allowance_passes_and_lists_them() -> None:
    acked = [str(i) for i in range(100)]
    found = [k for k in acked if k not in ("7", "8")]
    v = lost_writes(acked, [], found, probe="cache", max_lost=2)
    assert v.ok is True
    assert v.measured["lost"] == 2
    assert "2 lost, within the allowed 2: 7, 8" in v.message


def test_lost_writes_beyond_the_allowance_fails() -> None:
    acked = [str(i) for i in range(100)]
    found = [k for k in acked if k not in ("7", "8", "9")]
    v = lost_writes(acked, [], found, probe="cache", max_lost=2)
    assert v.ok is False
    assert v.message.startswith("cache: 3 of 100 acknowledged writes lost: 7, 8, 9")


def test_time_to_recover_does_not_call_a_quiet_probe_healthy() -> None:
    # One sample after the fault and then silence (a dead probe) is no evidence of "no outage".
    quiet = [Sample(probe="cache", seq=0, sent=10.1, duration=0.001, ok=True)]
    v = time_to_recover(quiet, fault_start=10.0, within_sec=60)
    assert v.ok is False
    assert "only 1 samples sent after the fault began at 10 s (need 5" in v.message


# -- a probe that stalls, dies or still has requests in flight is never "no outage" ---------


def test_silences_are_the_gaps_longer_than_a_few_intervals() -> None:
    sent = [0.0, 0.05, 0.1, 0.15, 1.5, 1.55]
    assert silences(sent, start=0.0, end=3.0, interval=0.05) == [(0.15, 1.5), (1.55, 3.0)]
    assert silences(sent[:4], start=0.0, end=0.2, interval=0.05) == []


def test_a_writer_that_stalls_after_the_fault_has_not_recovered() -> None:
    # Five successes just after the fault began (sent before the master died), then the
    # writer stalls: nothing more for 3 s. That is the outage, not "recovery 0 s".
    samples = series("." * 8, start=0.0, step=0.05, probe="cache")
    verdict = time_to_recover(
        samples, fault_start=0.05, within_sec=60, in_effect_at=0.06, until=3.0, interval=0.05
    )
    assert verdict.ok is False
    assert "not recovered by the end" in verdict.message
    # Without the probe's interval the same history reads as no outage: the bug it fixes.
    naive = time_to_recover(samples, fault_start=0.05, within_sec=60)
    assert naive.ok is True and "no outage seen" in naive.message


def test_no_outage_needs_successes_sent_once_the_fault_took_hold() -> None:
    # Requests sent after the fault took hold are still in flight (not in the record yet):
    # the successes sent before it prove nothing.
    samples = series("." * 6, start=0.0, step=0.05, probe="cache")
    verdict = time_to_recover(
        samples, fault_start=0.0, within_sec=60, in_effect_at=0.2, until=0.25, interval=0.05
    )
    assert verdict.ok is False
    assert "only 2 requests sent since the fault took hold at 0.2 s" in verdict.message


def test_no_outage_passes_when_the_probe_kept_working_through_the_fault() -> None:
    samples = series("." * 60, start=0.0, step=0.05, probe="cache")
    verdict = time_to_recover(
        samples, fault_start=0.5, within_sec=60, in_effect_at=0.6, until=2.9, interval=0.05
    )
    assert verdict.ok is True
    assert verdict.measured["recovery_sec"] == 0.0


def test_a_stalled_probe_counts_as_unavailable_during_the_fault() -> None:
    samples = series("." * 10, start=1.0, step=0.05)  # 1.0 .. 1.45, then silence
    verdict = availability(samples, window=(1.0, 3.0), min_ratio=0.99, interval=0.05)
    assert verdict.ok is False
    assert "silent" in verdict.message
    assert verdict.measured["failed"] > 20
    assert availability(samples, window=(1.0, 3.0), min_ratio=0.99).ok is True
