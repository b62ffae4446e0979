"""The network checks on hand-built histories: each passes when it should and fails, with the
numbers, when the history deserves it (a NAT shared by both zones, two primaries at once)."""

from __future__ import annotations

from gameday.checks.network import (
    egress_back,
    egress_kept,
    egress_lost,
    one_writer_at_a_time,
    own_nat_per_zone,
    zone_samples,
)
from gameday.history import Sample

NAT_A, NAT_B = "198.51.100.2", "198.51.100.6"
INTERVAL = 0.1


def egress(zone: str, start: float, end: float, *, fails: tuple[float, float] | None = None,
           via: str = NAT_A, duration: float = 0.005) -> list[Sample]:  # fmt: skip
    """A sample every INTERVAL from `start` to `end`; those sent inside `fails` time out."""
    out, seq = [], 0
    while (t := round(start + seq * INTERVAL, 3)) < end:
        bad = fails is not None and fails[0] <= t < fails[1]
        out.append(
            Sample(f"egress {zone}", seq, t, None if bad else duration, not bad,
                   error="timeout" if bad else None, server=None if bad else via)
        )  # fmt: skip
        seq += 1
    return out


# -- egress_lost ---------------------------------------------------------------------------


def test_egress_lost_at_the_first_failure_and_never_answered_until_the_heal() -> None:
    samples = egress("a", 0, 12, fails=(5.05, 10.0))
    verdict = egress_lost(samples, zone="a", fault_start=5.0, took_hold=5.02, end=10.0,
                          within_sec=2)  # fmt: skip
    assert verdict.ok, verdict.message
    assert verdict.measured["lost_at"] == 5.1
    assert abs(verdict.measured["after_hold_sec"] - 0.08) < 1e-9
    assert "zone a lost egress at 5.1 s, 0.1 s after the fault began" in verdict.message


def test_egress_kept_through_the_fault_fails_as_not_lost() -> None:
    # A NAT that the fault did not stop (or the zone leaves through another one).
    samples = egress("a", 0, 12)
    verdict = egress_lost(samples, zone="a", fault_start=5.0, took_hold=5.0, end=10.0,
                          within_sec=2)  # fmt: skip
    assert not verdict.ok
    assert "zone a kept its egress" in verdict.message
    assert f"(through {NAT_A})" in verdict.message


def test_egress_lost_too_late_fails_with_the_delay() -> None:
    samples = egress("a", 0, 12, fails=(8.0, 10.0))
    verdict = egress_lost(samples, zone="a", fault_start=5.0, took_hold=5.0, end=10.0,
                          within_sec=2)  # fmt: skip
    assert not verdict.ok
    assert "3 s after the fault began" in verdict.message and "later than 2 s" in verdict.message


def test_a_request_answered_only_after_the_heal_began_does_not_count_as_egress() -> None:
    # Sent during the fault, its retried SYN went through once the heal began (1.02 s later).
    samples = egress("a", 0, 12, fails=(5.0, 10.0))
    late = Sample("egress a", 999, 9.3, 1.02, True, server=NAT_A)
    verdict = egress_lost([*samples, late], zone="a", fault_start=5.0, took_hold=5.0,
                          end=9.6, within_sec=2)  # fmt: skip
    assert verdict.ok, verdict.message


def test_egress_that_came_back_during_the_fault_is_not_lost_from_there() -> None:
    samples = [s for s in egress("a", 0, 12, fails=(5.0, 10.0)) if not 6.0 <= s.sent < 7.0]
    samples += [Sample("egress a", 500, 6.5, 0.01, True, server=NAT_A)]
    verdict = egress_lost(samples, zone="a", fault_start=5.0, took_hold=5.0, end=10.0,
                          within_sec=1.5)  # fmt: skip
    # Lost for good only from 7 s, 2 s after the fault: and it says it answered in between.
    assert not verdict.ok
    assert "lost egress at 7 s" in verdict.message
    assert "answered again at 6.5 s after failing earlier" in verdict.message


def test_egress_lost_without_samples_is_no_evidence() -> None:
    verdict = egress_lost([], zone="a", fault_start=5.0, took_hold=5.0, end=10.0, within_sec=2)
    assert not verdict.ok and "no evidence" in verdict.message


# -- egress_kept ---------------------------------------------------------------------------


def test_the_other_zone_kept_its_egress() -> None:
    verdict = egress_kept(egress("b", 0, 12, via=NAT_B), zone="b", window=(5.0, 10.0))
    assert verdict.ok, verdict.message
    assert f"through {NAT_B}" in verdict.message


def test_a_nat_shared_by_both_zones_makes_the_other_zone_lose_egress_too() -> None:
    # Zone b leaves through zone a's NAT: disabling it cuts zone b as well.
    samples = egress("b", 0, 12, fails=(5.05, 10.0), via=NAT_A)
    verdict = egress_kept(samples, zone="b", window=(5.0, 10.2))
    assert not verdict.ok
    assert "zone b lost egress during the fault: 49 of 53 requests failed" in verdict.message
    assert "the first at 5.1 s, the last at 9.9 s (timeout 49)" in verdict.message


def test_egress_kept_without_samples_is_no_evidence() -> None:
    verdict = egress_kept(egress("b", 0, 4), zone="b", window=(5.0, 10.0))
    assert not verdict.ok and "no evidence" in verdict.message


# -- egress_back ---------------------------------------------------------------------------


def test_egress_back_soon_after_the_heal() -> None:
    samples = egress("a", 0, 14, fails=(5.0, 10.3))
    verdict = egress_back(samples, zone="a", heal_start=10.0, within_sec=5)
    assert verdict.ok, verdict.message
    assert abs(verdict.measured["back_sec"] - 0.3) < 1e-9


def test_egress_back_too_late_or_never_fails() -> None:
    late = egress("a", 0, 20, fails=(5.0, 16.0))
    verdict = egress_back(late, zone="a", heal_start=10.0, within_sec=5)
    assert not verdict.ok and "6 s after the heal began" in verdict.message
    never = egress("a", 0, 14, fails=(5.0, 14.0))
    verdict = egress_back(never, zone="a", heal_start=10.0, within_sec=5)
    assert not verdict.ok
    assert "zone a has no egress back after the heal began at 10 s" in verdict.message


# -- own_nat_per_zone ----------------------------------------------------------------------


def test_each_zone_through_its_own_nat() -> None:
    verdict = own_nat_per_zone(
        {"a": egress("a", 0, 5), "b": egress("b", 0, 5, via=NAT_B)}, before=5.0
    )
    assert verdict.ok, verdict.message
    assert f"zone a through {NAT_A}; zone b through {NAT_B}" in verdict.message


def test_one_nat_for_both_zones_fails_naming_it() -> None:
    verdict = own_nat_per_zone({"a": egress("a", 0, 5), "b": egress("b", 0, 5, via=NAT_A)})
    assert not verdict.ok
    assert f"zones a and b both leave through {NAT_A}" in verdict.message


def test_a_zone_that_never_reached_the_internet_fails() -> None:
    verdict = own_nat_per_zone({"a": egress("a", 0, 5), "b": egress("b", 0, 5, fails=(0, 5))})
    assert not verdict.ok and "zone b never reached the internet" in verdict.message


def test_zone_samples_groups_by_probe_name() -> None:
    grouped = zone_samples([*egress("a", 0, 0.3), *egress("b", 0, 0.2)], "egress ")
    assert {z: len(s) for z, s in grouped.items()} == {"a": 3, "b": 2}


# -- one_writer_at_a_time ------------------------------------------------------------------

NODE_1, NODE_2 = "10.0.0.34:5432", "10.0.0.50:5432"


def rounds(accepting: list[tuple[bool, bool]], start: float = 0.0) -> list[Sample]:
    """One round every 0.2 s; per round whether node 1 and node 2 took the write."""
    out = []
    for seq, (one, two) in enumerate(accepting):
        t = start + seq * 0.2
        for node, ok, dt in ((NODE_1, one, 0.0), (NODE_2, two, 0.01)):
            out.append(Sample("writable database", seq, t + dt, 0.005, ok, server=node,
                              outcome="ok" if ok else "fail"))  # fmt: skip
    return out


def test_one_writer_through_a_failover_passes_and_names_the_sequence() -> None:
    samples = rounds([(True, False)] * 5 + [(False, False)] * 3 + [(False, True)] * 5)
    verdict = one_writer_at_a_time(samples, store="database", window=(0.0, 10.0))
    assert verdict.ok, verdict.message
    assert f"writer: {NODE_1} then {NODE_2}" in verdict.message
    assert "3 rounds found no node taking writes" in verdict.message


def test_two_primaries_at_once_fail_naming_both_nodes() -> None:
    samples = rounds([(True, False)] * 5 + [(True, True)] * 4 + [(True, False)] * 3)
    verdict = one_writer_at_a_time(samples, store="database", window=(0.0, 10.0))
    assert not verdict.ok
    assert f"two database nodes accepted writes at once (split brain): {NODE_1} and {NODE_2}" in (
        verdict.message
    )
    assert "in 4 of 12 rounds from 1 s to 1.6 s" in verdict.message
    assert verdict.measured["split_rounds"] == 4


def test_two_writers_outside_the_window_are_not_judged_and_no_round_is_no_evidence() -> None:
    samples = rounds([(True, True)] * 3 + [(True, False)] * 10)
    assert one_writer_at_a_time(samples, store="cache", window=(1.0, 3.0)).ok
    verdict = one_writer_at_a_time(samples, store="cache", window=(50.0, 60.0))
    assert not verdict.ok and "no evidence" in verdict.message
