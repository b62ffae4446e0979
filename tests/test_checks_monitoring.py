"""The monitoring checks on hand-built alert marks: each must pass on a history that deserves
it and fail on one that does not (rule never fired, receiver never told, alert that never
resolves, alert in the steady state, a stop that came late or never)."""

from __future__ import annotations

import pytest

from gameday.checks import monitoring as mc
from gameday.history import (
    MARK_ALERT_DELIVERED,
    MARK_ALERT_FIRING,
    MARK_ALERT_RESOLVED,
    FaultEvent,
    Mark,
)
from gameday.verdict import passed

WALL = 1_700_000_000.0  # the run clock's wall anchor in these histories


def firing(at: float, alert: str = "PostgreSQLDown", fp: str = "f1", **detail: str) -> Mark:
    return Mark(MARK_ALERT_FIRING, at, {"alert": alert, "fingerprint": fp, **detail})


def resolved(at: float, alert: str = "PostgreSQLDown", fp: str = "f1") -> Mark:
    return Mark(MARK_ALERT_RESOLVED, at, {"alert": alert, "fingerprint": fp})


def delivered(at: float, status: str = "firing", alert: str = "PostgreSQLDown") -> Mark:
    return Mark(MARK_ALERT_DELIVERED, at, {"alert": alert, "fingerprint": "f1", "status": status})


def events(*marks: Mark) -> list[mc.AlertEvent]:
    return mc.alert_events(marks)


def fired(evs: list[mc.AlertEvent], within: float = 90, start: float = 10.0):  # type: ignore[no-untyped-def]
    return mc.alert_fired(
        evs, "PostgreSQLDown", fault_start=start, within_sec=within, wall_anchor=WALL
    )


# -- fires ---------------------------------------------------------------------------------


def test_fired_measures_time_to_detect_from_the_fault_and_reports_the_monitorings_own() -> None:
    v = fired(events(firing(17.5, starts_at=f"{WALL + 17.2:.3f}", server="server1")))
    assert v.ok, v.message
    assert v.measured["time_to_detect_sec"] == 7.5
    assert v.measured["monitoring_detect_sec"] == pytest.approx(7.2)
    assert "PostgreSQLDown fired on server1 7.5 s after the fault" in v.message


def test_fired_fails_when_the_rule_never_fires_naming_what_did() -> None:
    v = fired(events(firing(15.0, alert="InstanceDown", fp="x")))
    assert not v.ok
    assert v.message == (
        "PostgreSQLDown did not fire within 90 s of the fault (fired meanwhile: InstanceDown)"
    )
    assert v.measured["time_to_detect_sec"] is None


def test_fired_fails_when_it_fires_later_than_promised() -> None:
    v = fired(events(firing(110.0)), within=90)
    assert not v.ok and "100 s after the fault, later than 90 s" in v.message


def test_fired_fails_when_the_alert_was_already_firing_before_the_fault() -> None:
    # Firing since 4 s, never resolved: a sighting after the fault is no detection of it.
    v = fired(events(firing(4.0), firing(12.0, fp="f2")))
    assert not v.ok
    assert "already firing when the fault began (since 6 s before it)" in v.message


def test_a_late_notice_of_an_alert_that_began_before_the_fault_is_no_detection() -> None:
    # Seen 0.5 s into the fault, but the monitoring says it began 30 s before: the last
    # scenario's alert arriving late (it made a scenario meant to fail "resolves" pass).
    stale = firing(10.5, starts_at=f"{WALL - 20.0:.3f}")
    v = fired(events(stale))
    assert not v.ok
    assert "already firing when the fault began (the monitoring says since 30 s" in v.message
    # ... and a fresh sighting after it still counts, from its own time
    fresh = firing(14.0, fp="f2", starts_at=f"{WALL + 13.8:.3f}")
    v = fired(events(stale, fresh))
    assert v.ok and v.measured["time_to_detect_sec"] == 4.0


def test_an_alert_that_resolved_before_the_fault_does_not_count_as_already_firing() -> None:
    assert fired(events(firing(2.0), resolved(5.0), firing(15.0, fp="f2"))).ok


# -- delivered ------------------------------------------------------------------------------


def test_delivered_passes_on_a_firing_notification_after_the_alert_fired() -> None:
    v = mc.alert_delivered(
        events(firing(17.0), delivered(18.5)), "PostgreSQLDown", fired_at=17.0, within_sec=60
    )
    assert v.ok and v.measured["delivery_sec"] == 1.5


def test_delivered_fails_when_the_receiver_got_nothing() -> None:
    # The receiver is wrong: Alertmanager sends elsewhere, nothing arrives.
    v = mc.alert_delivered(events(firing(17.0)), "PostgreSQLDown", fired_at=17.0, within_sec=60)
    assert not v.ok
    assert (
        v.message == "PostgreSQLDown did not reach the receiver within 60 s of firing "
        "(it received nothing)"
    )


def test_delivered_fails_on_a_failed_send_and_on_other_alerts_only() -> None:
    failed_send = mc.alert_delivered(
        events(firing(17.0), delivered(18.0, status="failed")),
        "PostgreSQLDown",
        fired_at=17.0,
        within_sec=60,
    )
    assert not failed_send.ok and "failed to send" in failed_send.message
    other = mc.alert_delivered(
        events(firing(17.0), delivered(18.0, alert="RedisDown")),
        "PostgreSQLDown",
        fired_at=17.0,
        within_sec=60,
    )
    assert not other.ok and "(it received: RedisDown)" in other.message
    resolved_only = mc.alert_delivered(
        events(firing(17.0), delivered(18.0, status="resolved")),
        "PostgreSQLDown",
        fired_at=17.0,
        within_sec=60,
    )
    assert not resolved_only.ok


def test_delivered_fails_when_late() -> None:
    v = mc.alert_delivered(
        events(firing(17.0), delivered(97.0)), "PostgreSQLDown", fired_at=17.0, within_sec=60
    )
    assert not v.ok and "80 s after firing, later than 60 s" in v.message


# -- resolves -------------------------------------------------------------------------------


def resolves(
    evs: list[mc.AlertEvent],
    heal: tuple[float, float | None] | None = (40.0, 45.0),
    within: float = 120,
):  # type: ignore[no-untyped-def]
    return mc.alert_resolved(evs, "PostgreSQLDown", fired_at=17.0, heal=heal, within_sec=within)


def test_resolved_measures_from_the_heal_and_notes_the_resolved_notification() -> None:
    v = resolves(events(firing(17.0), resolved(47.0), delivered(48.0, status="resolved")))
    assert v.ok, v.message
    assert v.measured["time_to_resolve_sec"] == 7.0
    assert v.measured["heal_sec"] == 5.0
    assert v.measured["resolved_delivered"] is True
    assert v.message == "PostgreSQLDown resolved 7 s after the heal began (the heal took 5 s)"


def test_an_alert_may_resolve_before_a_long_heal_has_ended() -> None:
    v = resolves(events(firing(17.0), resolved(43.0)), heal=(40.0, 60.0))
    assert v.ok and v.measured["time_to_resolve_sec"] == 3.0


def test_resolved_fails_on_an_alert_that_never_resolves() -> None:
    v = resolves(events(firing(17.0, server="server1")))
    assert not v.ok
    assert v.message == "PostgreSQLDown (server1) had not resolved 120 s after the heal began"


def test_resolved_fails_when_one_of_two_instances_stays_firing_or_it_is_late() -> None:
    two = events(firing(17.0), firing(17.5, fp="f2", server="server2"), resolved(30.0))
    v = resolves(two, heal=(25.0, 26.0), within=60)
    assert not v.ok and "(server2)" in v.message
    late = resolves(events(firing(17.0), resolved(200.0)))
    assert not late.ok and "160 s after the heal began, later than 120 s" in late.message


def test_resolved_fails_without_a_heal() -> None:
    v = resolves(events(firing(17.0), resolved(30.0)), heal=None, within=60)
    assert not v.ok and "not seen healed" in v.message


def test_the_heal_window_is_the_last_heal_after_the_alert() -> None:
    faults = [
        FaultEvent("f", "heal-start", 5.0),
        FaultEvent("f", "heal-end", 6.0),
        FaultEvent("f", "heal-start", 40.0),
    ]
    assert mc.heal_window(faults, 17.0) == (40.0, None)
    assert mc.heal_window([*faults, FaultEvent("f", "heal-end", 45.0)], 17.0) == (40.0, 45.0)
    assert mc.heal_window(faults[:2], 17.0) is None


# -- silence --------------------------------------------------------------------------------


def test_silence_passes_when_nothing_fired_in_the_window() -> None:
    evs = events(firing(2.0), resolved(4.0), firing(70.0, alert="HighCPUUsage", fp="c"))
    v = mc.no_alert_fired(evs, window=(5.0, 65.0))
    assert v.ok and v.message == "no alert fired during the steady state (60 s)"


def test_silence_fails_on_an_alert_in_the_steady_state_naming_it_and_when() -> None:
    evs = events(firing(33.0, alert="HighCPUUsage", fp="c", server="server2"))
    v = mc.no_alert_fired(evs, window=(5.0, 65.0), origin=3.0)
    assert not v.ok
    assert v.message == (
        "1 alert(s) fired during the steady state (60 s): HighCPUUsage on server2 at +30 s"
    )
    assert v.measured["alerts"] == ["HighCPUUsage"]


def test_silence_fails_on_an_alert_still_firing_when_the_window_opens() -> None:
    v = mc.no_alert_fired(events(firing(1.0)), window=(5.0, 65.0))
    assert not v.ok and "PostgreSQLDown" in v.message


def test_silence_allows_the_named_alert_only() -> None:
    evs = events(firing(30.0, alert="HighCPUUsage", fp="c"))
    assert mc.no_alert_fired(evs, window=(5.0, 65.0), allowed=["HighCPUUsage"]).ok
    more = events(firing(30.0, alert="HighCPUUsage", fp="c"), firing(31.0, fp="d"))
    v = mc.no_alert_fired(more, window=(5.0, 65.0), allowed=["HighCPUUsage"])
    assert not v.ok and "other than HighCPUUsage" in v.message and "PostgreSQLDown" in v.message


# -- time to detect, stop ------------------------------------------------------------------


def test_time_to_detect_under_a_limit() -> None:
    detection = fired(events(firing(40.0)))
    assert mc.time_to_detect_under(detection, 31).ok
    late = mc.time_to_detect_under(detection, 30)
    assert not late.ok and late.message == "time to detect PostgreSQLDown: 30 s, not under 30 s"
    never = mc.time_to_detect_under(fired(events()), 30)
    assert not never.ok and "not detected" in never.message
    assert not mc.time_to_detect_under(passed("alert_fires", "?"), 30).ok


def abort(at: float, reason: str) -> FaultEvent:
    return FaultEvent("cache master crash", "abort", at, {"reason": reason})


def test_stopped_by_passes_within_a_second_of_the_alert_arriving() -> None:
    faults = [
        FaultEvent("cache master crash", "inject-start", 5.0),
        abort(12.4, 'alert "RedisDown" fired'),
        FaultEvent("cache master crash", "heal-start", 12.41),
    ]
    v = mc.stopped_by(events(firing(12.0, alert="RedisDown")), faults, "RedisDown", within_sec=1)
    assert v.ok, v.message
    assert v.measured["stop_delay_sec"] == 0.4


def test_stopped_by_fails_when_late_never_or_for_another_reason() -> None:
    arrived = events(firing(12.0, alert="RedisDown"))
    late = mc.stopped_by(
        arrived, [abort(14.0, 'alert "RedisDown" fired')], "RedisDown", within_sec=1
    )
    assert not late.ok and "2 s after RedisDown arrived, later than 1 s" in late.message
    never = mc.stopped_by(arrived, [], "RedisDown", within_sec=1)
    assert not never.ok and never.message == "the game day was not stopped by RedisDown"
    other = mc.stopped_by(arrived, [abort(12.2, "error budget spent")], "RedisDown", within_sec=1)
    assert not other.ok and "(it was stopped by: error budget spent)" in other.message
