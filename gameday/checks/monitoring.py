"""Checks over a scenario's alert marks: did the pager ring, in time, and stop again?

Pure functions over the `alert-firing`, `alert-delivered` and `alert-resolved` marks an
`AlertWatch` leaves in the history (gameday/monitoring.py), and the scenario's fault events.
Times are seconds on the run's clock.

- time to detect: from the fault's start (its inject-start) to the moment the harness first
  saw the alert firing (Alertmanager's API, polled every 0.25 s, or a notification, whichever
  came first). The monitoring's own firing time (`starts_at`, Prometheus's as Alertmanager
  holds it) is reported beside it; bench/monitoring.py measures how well the two agree.
- delivery: a notification carrying the alert, with status firing, reached the receiver.
- resolution: the alert was gone from the monitoring after the fault healed (heal-end).
- silence: no alert fired in a window (the steady state), or none but those allowed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from gameday.history import (
    MARK_ALERT_DELIVERED,
    MARK_ALERT_FIRING,
    MARK_ALERT_RESOLVED,
    FaultEvent,
    Mark,
)
from gameday.verdict import Verdict, failed, passed

KINDS = {
    MARK_ALERT_FIRING: "firing",
    MARK_ALERT_DELIVERED: "delivered",
    MARK_ALERT_RESOLVED: "resolved",
}


@dataclass(frozen=True)
class AlertEvent:
    """One alert mark, parsed."""

    kind: str  # firing, delivered, resolved
    at: float
    alert: str
    fingerprint: str
    severity: str = ""
    status: str = ""  # of a delivery: firing, resolved, failed
    where: str = ""  # server or instance
    starts_at: float | None = None  # the monitoring's own time, POSIX seconds

    def shown(self, origin: float) -> str:
        place = f" on {self.where}" if self.where else ""
        return f"{self.alert}{place} at +{_sec(self.at - origin)} s"


def alert_events(marks: Iterable[Mark]) -> list[AlertEvent]:
    """The alert marks among `marks`, in time order."""
    out = []
    for m in marks:
        kind = KINDS.get(m.name)
        if kind is None:
            continue
        d = m.detail
        try:
            starts_at = float(d["starts_at"]) if d.get("starts_at") else None
        except ValueError:
            starts_at = None
        out.append(
            AlertEvent(
                kind,
                m.at,
                d.get("alert", "?"),
                d.get("fingerprint", ""),
                severity=d.get("severity", ""),
                status=d.get("status", ""),
                where=d.get("server") or d.get("instance", ""),
                starts_at=starts_at,
            )
        )
    return sorted(out, key=lambda e: e.at)


def _sec(x: float) -> str:
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _firing_at(events: Sequence[AlertEvent], t: float) -> list[AlertEvent]:
    """The firing events of alerts still firing at time `t` (fired before, not resolved)."""
    active: dict[str, AlertEvent] = {}
    for e in events:
        if e.at > t:
            break
        if e.kind == "firing":
            active[e.fingerprint] = e
        elif e.kind == "resolved":
            active.pop(e.fingerprint, None)
    return list(active.values())


# -- the checks --------------------------------------------------------------------------------


# How far before the fault an alert's own start may lie and still be this fault's.
STARTS_AT_SLACK_SEC = 5.0


def alert_fired(
    events: Sequence[AlertEvent],
    alert: str,
    *,
    fault_start: float,
    within_sec: float,
    wall_anchor: float,
) -> Verdict:
    """`alert` was first seen firing at most `within_sec` after the fault began, and was not
    already firing when it began (then nothing says when this fault was detected).

    measured: time_to_detect_sec (the harness's sighting), monitoring_detect_sec (the
    monitoring's own starts_at, when it gives one), fired_at (run clock)."""
    name = "alert_fires"
    before = [e for e in _firing_at(events, fault_start) if e.alert == alert]
    if before:
        return failed(
            name,
            f"{alert} was already firing when the fault began (since "
            f"{_sec(fault_start - before[0].at)} s before it): cannot tell when the fault "
            "was detected",
            alert=alert,
            time_to_detect_sec=None,
        )
    fired = [e for e in events if e.kind == "firing" and e.alert == alert and e.at >= fault_start]
    # A sighting after the fault of an alert the monitoring itself says began well before it:
    # a late notice of an earlier alert (the last scenario's, still on its way), not this
    # fault's detection. The slack covers the two clocks' disagreement (measured: < 0.3 s).
    stale = [
        e for e in fired
        if e.starts_at is not None and e.starts_at - wall_anchor < fault_start - STARTS_AT_SLACK_SEC
    ]  # fmt: skip
    fired = [e for e in fired if e not in stale]
    if stale and not fired:
        since = fault_start - (stale[0].starts_at or 0.0) + wall_anchor
        return failed(
            name,
            f"{alert} was already firing when the fault began (the monitoring says since "
            f"{_sec(since)} s before it): cannot tell when the fault was detected",
            alert=alert,
            time_to_detect_sec=None,
        )
    if not fired:
        others = sorted({e.alert for e in events if e.kind == "firing" and e.at >= fault_start})
        seen = f" (fired meanwhile: {', '.join(others)})" if others else " (no alert fired)"
        return failed(
            name,
            f"{alert} did not fire within {_sec(within_sec)} s of the fault{seen}",
            alert=alert,
            time_to_detect_sec=None,
            within_sec=within_sec,
        )
    first = fired[0]
    detect = first.at - fault_start
    measured: dict[str, object] = {
        "alert": alert,
        "time_to_detect_sec": round(detect, 3),
        "fired_at": first.at,
        "within_sec": within_sec,
        "where": first.where,
    }
    own = ""
    if first.starts_at is not None:
        monitoring = first.starts_at - wall_anchor - fault_start
        measured["monitoring_detect_sec"] = round(monitoring, 3)
        own = f"; the monitoring's own firing time: {_sec(monitoring)} s"
    where = f" on {first.where}" if first.where else ""
    if detect > within_sec:
        return failed(
            name,
            f"{alert} fired{where} {_sec(detect)} s after the fault, later than "
            f"{_sec(within_sec)} s{own}",
            **measured,
        )
    return passed(name, f"{alert} fired{where} {_sec(detect)} s after the fault{own}", **measured)


def alert_delivered(
    events: Sequence[AlertEvent], alert: str, *, fired_at: float, within_sec: float
) -> Verdict:
    """A notification with `alert` firing reached the receiver at most `within_sec` after the
    harness saw it fire; a failed send (Alertmanager's counters) fails."""
    name = "alert_delivered"
    mine = [e for e in events if e.kind == "delivered" and e.alert == alert and e.at >= fired_at]
    failures = [e for e in mine if e.status == "failed"]
    arrived = [e for e in mine if e.status == "firing"]
    if failures and not arrived:
        return failed(
            name,
            f"Alertmanager failed to send {alert} to the receiver "
            f"({_sec(failures[0].at - fired_at)} s after it fired)",
            alert=alert,
            delivery_sec=None,
        )
    if not arrived:
        other = sorted({e.alert for e in events if e.kind == "delivered" and e.at >= fired_at})
        seen = f" (it received: {', '.join(other)})" if other else " (it received nothing)"
        return failed(
            name,
            f"{alert} did not reach the receiver within {_sec(within_sec)} s of firing{seen}",
            alert=alert,
            delivery_sec=None,
        )
    delay = arrived[0].at - fired_at
    if delay > within_sec:
        return failed(
            name,
            f"{alert} reached the receiver {_sec(delay)} s after firing, later than "
            f"{_sec(within_sec)} s",
            alert=alert,
            delivery_sec=round(delay, 3),
        )
    return passed(
        name,
        f"{alert} reached the receiver {_sec(delay)} s after it fired",
        alert=alert,
        delivery_sec=round(delay, 3),
    )


def alert_resolved(
    events: Sequence[AlertEvent],
    alert: str,
    *,
    fired_at: float,
    heal: tuple[float, float | None] | None,
    within_sec: float,
) -> Verdict:
    """Every `alert` that fired since `fired_at` was gone from the monitoring at most
    `within_sec` after the heal began. `heal`: (heal-start, heal-end or None while healing).
    A heal takes its own time (the lab's waits until everything is healthy again); the
    alert may well resolve before the heal has ended.

    measured: time_to_resolve_sec (from heal-start), heal_sec, and whether the receiver was
    told (resolved_delivered)."""
    name = "alert_resolves"
    if heal is None:
        return failed(
            name,
            f"the fault was not seen healed, so {alert} cannot resolve after it",
            alert=alert,
            time_to_resolve_sec=None,
        )
    heal_start, heal_end = heal
    fired = {
        e.fingerprint: e
        for e in events
        if e.kind == "firing" and e.alert == alert and e.at >= fired_at
    }
    resolved = {
        e.fingerprint: e
        for e in events
        if e.kind == "resolved" and e.fingerprint in fired and e.at >= fired_at
    }
    still = [fired[fp] for fp in fired if fp not in resolved]
    heal_sec = round(heal_end - heal_start, 3) if heal_end is not None else None
    if still:
        where = ", ".join(sorted({e.where or e.fingerprint for e in still}))
        return failed(
            name,
            f"{alert} ({where}) had not resolved {_sec(within_sec)} s after the heal began",
            alert=alert,
            time_to_resolve_sec=None,
            within_sec=within_sec,
            heal_sec=heal_sec,
        )
    if not resolved:
        return failed(
            name,
            f"{alert} never fired, so it cannot resolve",
            alert=alert,
            time_to_resolve_sec=None,
        )
    after = max(e.at for e in resolved.values()) - heal_start
    told = any(
        e.kind == "delivered" and e.alert == alert and e.status == "resolved"
        for e in events
        if e.at >= fired_at
    )
    measured = {
        "alert": alert,
        "time_to_resolve_sec": round(max(after, 0.0), 3),
        "heal_sec": heal_sec,
        "resolved_delivered": told,
        "within_sec": within_sec,
    }
    took = f" (the heal took {_sec(heal_sec)} s)" if heal_sec is not None else ""
    if after > within_sec:
        return failed(
            name,
            f"{alert} resolved {_sec(after)} s after the heal began, later than "
            f"{_sec(within_sec)} s{took}",
            **measured,
        )
    return passed(
        name, f"{alert} resolved {_sec(max(after, 0.0))} s after the heal began{took}", **measured
    )


def heal_window(
    fault_events: Sequence[FaultEvent], after: float
) -> tuple[float, float | None] | None:
    """(heal-start, heal-end) of the scenario's last heal after `after`, if one began."""
    starts = [e.at for e in fault_events if e.phase == "heal-start" and e.at >= after]
    if not starts:
        return None
    ends = [e.at for e in fault_events if e.phase == "heal-end" and e.at >= max(starts)]
    return (max(starts), max(ends) if ends else None)


def no_alert_fired(
    events: Sequence[AlertEvent],
    *,
    window: tuple[float, float],
    allowed: Collection[str] = (),
    origin: float = 0.0,
) -> Verdict:
    """No alert but those `allowed` fired in `window`, or was firing when it began.
    `origin`: where the message counts seconds from (the scenario's start)."""
    name = "no_alert"
    start, end = window
    found = [e for e in _firing_at(events, start) if e.alert not in allowed]
    found += [
        e for e in events if e.kind == "firing" and start < e.at <= end and e.alert not in allowed
    ]
    span = f"{_sec(end - start)} s"
    but = f" other than {', '.join(sorted(allowed))}" if allowed else ""
    if found:
        listed = "; ".join(e.shown(origin) for e in found[:10])
        return failed(
            name,
            f"{len(found)} alert(s){but} fired during the steady state ({span}): {listed}",
            alerts=sorted({e.alert for e in found}),
            window_sec=round(end - start, 3),
        )
    return passed(
        name,
        f"no alert{but} fired during the steady state ({span})",
        alerts=[],
        window_sec=round(end - start, 3),
    )


def time_to_detect_under(detect: Verdict, limit_sec: float) -> Verdict:
    """The detection a previous `alert_fired` measured was faster than `limit_sec`."""
    name = "time_to_detect"
    value = detect.measured.get("time_to_detect_sec")
    alert = detect.measured.get("alert", "the alert")
    if not isinstance(value, int | float):
        return failed(
            name,
            f"{alert} was not detected, so its time to detect is unknown",
            time_to_detect_sec=None,
            limit_sec=limit_sec,
        )
    if value >= limit_sec:
        return failed(
            name,
            f"time to detect {alert}: {_sec(value)} s, not under {_sec(limit_sec)} s",
            time_to_detect_sec=value,
            limit_sec=limit_sec,
        )
    return passed(
        name,
        f"time to detect {alert}: {_sec(value)} s (under {_sec(limit_sec)} s)",
        time_to_detect_sec=value,
        limit_sec=limit_sec,
    )


def stopped_by(
    events: Sequence[AlertEvent],
    fault_events: Sequence[FaultEvent],
    alert: str,
    *,
    within_sec: float,
) -> Verdict:
    """The game day was stopped because `alert` fired: an abort naming it, at most
    `within_sec` after the harness first saw the alert (its arrival)."""
    name = "stopped_by_alert"
    aborts = [e for e in fault_events if e.phase == "abort"]
    mine = [e for e in aborts if f'alert "{alert}"' in e.detail.get("reason", "")]
    if not mine:
        why = f" (it was stopped by: {aborts[0].detail.get('reason')})" if aborts else ""
        return failed(
            name, f"the game day was not stopped by {alert}{why}", alert=alert, stop_delay_sec=None
        )
    abort = mine[0]
    arrivals = [e for e in events if e.kind == "firing" and e.alert == alert and e.at <= abort.at]
    if not arrivals:
        return failed(
            name,
            f"stopped by {alert} before the harness saw it fire",
            alert=alert,
            stop_delay_sec=None,
        )
    delay = abort.at - arrivals[-1].at
    heal = next((e.at for e in fault_events if e.phase == "heal-start" and e.at >= abort.at), None)
    measured = {
        "alert": alert,
        "stop_delay_sec": round(delay, 3),
        "fault": abort.fault,
        "heal_start_sec": round(heal - arrivals[-1].at, 3) if heal is not None else None,
    }
    if delay > within_sec:
        return failed(
            name,
            f"{abort.fault} was healed {_sec(delay)} s after {alert} arrived, "
            f"later than {_sec(within_sec)} s",
            **measured,
        )
    return passed(
        name, f"{abort.fault} was healed {_sec(delay)} s after {alert} arrived", **measured
    )
