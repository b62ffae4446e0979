"""The target's alerts during a scenario: what fired, when it reached its receiver, when it
resolved, all on the run's timeline.

An `AlertWatch` runs for the rest of a scenario once a step asks for it (`watch(scenario)`).
It observes, it never judges (gameday.checks.monitoring does, over the marks it leaves):

- it polls the target's Alertmanager (`/api/v2/alerts`, every POLL_SEC) or, on AWS, the
  CloudWatch alarms the target names per purpose, and records each change as a mark:
  `alert-firing` when an alert is first seen firing, `alert-resolved` when it is gone;
- with `monitoring.receiver.listen`, it runs the webhook receiver that Alertmanager sends
  to, and records every alert each notification carries as `alert-delivered` (its status:
  firing or resolved) at the moment the notification arrived. With
  `monitoring.receiver.integration` instead (Slack, e-mail: receivers that cannot be read
  back), Alertmanager's own counters of sent and failed notifications are the evidence.

Marks carry the alert's name, fingerprint, severity, instance and server labels, and the
monitoring's own timestamp (`starts_at`, POSIX seconds: Prometheus's firing time as
Alertmanager holds it, or CloudWatch's state change time), so a report can set the harness's
detection next to the monitoring's own clock.

`AlertStop` is the stop condition of `Given the game day stops if alert "X" fires`: an abort
condition (chaos.runner's protocol: `check() -> str | None`) over the watch's current state.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from gameday.checks import monitoring as mc
from gameday.checks.monitoring import AlertEvent, alert_events
from gameday.history import (
    MARK_ALERT_DELIVERED,
    MARK_ALERT_FIRING,
    MARK_ALERT_RESOLVED,
    FaultEvent,
    Mark,
    Record,
)
from gameday.verdict import Verdict, failed, passed

if TYPE_CHECKING:
    from gameday.clock import Clock
    from gameday.scenario import Scenario
    from gameday.target import Target

PROBE_NAME = "alerts"
POLL_SEC = 0.25
CLOUDWATCH_POLL_SEC = 1.0
COUNTERS_POLL_SEC = 1.0
HTTP_TIMEOUT_SEC = 2.0
# Labels copied into a mark's detail (the rest stay in Alertmanager).
SHOWN_LABELS = ("instance", "server", "job")


class MonitoringError(Exception):
    """The monitoring could not be read or the receiver not started; one line."""


@dataclass(frozen=True)
class Alert:
    """One firing alert as the monitoring reports it."""

    name: str
    fingerprint: str
    severity: str = ""
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    #: the monitoring's own firing time, POSIX seconds (None when it gives none)
    starts_at: float | None = None
    #: "active", or Alertmanager's "suppressed" (silenced or inhibited: it pages nobody)
    state: str = "active"

    def detail(self, **more: str) -> dict[str, str]:
        out = {"alert": self.name, "fingerprint": self.fingerprint}
        if self.severity:
            out["severity"] = self.severity
        for key in SHOWN_LABELS:
            if self.labels.get(key):
                out[key] = self.labels[key]
        if self.starts_at is not None:
            out["starts_at"] = f"{self.starts_at:.3f}"
        if self.state != "active":
            out["state"] = self.state
        out.update(more)
        return out


def parse_time(text: str | None) -> float | None:
    """RFC 3339 as Alertmanager writes it (nanoseconds, `Z`) to POSIX seconds."""
    if not text or text.startswith("0001-"):
        return None
    head, dot, rest = text.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def alert_from_alertmanager(item: dict[str, Any]) -> Alert:
    labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
    # The API's status is an object ({"state": "active"}); a webhook's is a word ("firing").
    status = item.get("status")
    state = str(status.get("state", "active")) if isinstance(status, dict) else "active"
    return Alert(
        name=labels.get("alertname", "?"),
        fingerprint=str(item.get("fingerprint") or ""),
        severity=labels.get("severity", ""),
        labels=labels,
        starts_at=parse_time(item.get("startsAt")),
        state="active" if state in ("active", "unprocessed") else state,
    )


class AlertSource(Protocol):
    """Where the alerts firing now are read."""

    poll_sec: float

    def firing(self) -> list[Alert]: ...

    def describe(self) -> str: ...


class Alertmanager:
    """An Alertmanager's API v2: the alerts it holds that are not resolved."""

    poll_sec = POLL_SEC

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=HTTP_TIMEOUT_SEC)

    def describe(self) -> str:
        return f"Alertmanager at {self.url}"

    def firing(self) -> list[Alert]:
        try:
            resp = self._client.get(f"{self.url}/api/v2/alerts")
            resp.raise_for_status()
            items = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise MonitoringError(f"{self.describe()}: {type(exc).__name__}: {exc}") from None
        return [alert_from_alertmanager(i) for i in items if isinstance(i, dict)]

    def counters(self, integration: str) -> tuple[float, float]:
        """Notifications Alertmanager sent, and failed to send, through `integration`."""
        resp = self._client.get(f"{self.url}/metrics")
        resp.raise_for_status()
        sent = failed = 0.0
        label = f'integration="{integration}"'
        for line in resp.text.splitlines():
            if label not in line:
                continue
            if line.startswith("alertmanager_notifications_total{"):
                sent += float(line.rpartition(" ")[2])
            elif line.startswith("alertmanager_notifications_failed_total{"):
                failed += float(line.rpartition(" ")[2])
        return sent, failed

    def close(self) -> None:
        self._client.close()


class CloudWatchAlarms:
    """CloudWatch alarms named per purpose: an alarm in state ALARM is that alert firing."""

    poll_sec = CLOUDWATCH_POLL_SEC

    def __init__(self, target: Target) -> None:
        assert target.monitoring is not None and target.aws is not None
        self.aws = target.aws
        self.purposes = {
            alarm: purpose for purpose, alarm in target.monitoring.cloudwatch_alarms.items()
        }
        self._client: Any = None

    def describe(self) -> str:
        return f"CloudWatch alarms in {self.aws.region} ({', '.join(self.purposes)})"

    def _cloudwatch(self) -> Any:
        if self._client is None:
            from gameday.aws import client

            self._client = client(self.aws, "cloudwatch")
        return self._client

    def firing(self) -> list[Alert]:
        try:
            answer = self._cloudwatch().describe_alarms(AlarmNames=sorted(self.purposes))
        except Exception as exc:  # botocore's errors: one line, whatever their class
            raise MonitoringError(f"{self.describe()}: {type(exc).__name__}: {exc}") from None
        out = []
        for alarm in answer.get("MetricAlarms", []) + answer.get("CompositeAlarms", []):
            if alarm.get("StateValue") != "ALARM":
                continue
            name = alarm["AlarmName"]
            updated = alarm.get("StateUpdatedTimestamp")
            out.append(
                Alert(
                    name=self.purposes.get(name, name),
                    fingerprint=f"{name}@{updated.timestamp() if updated else ''}",
                    labels={"instance": name},
                    starts_at=updated.timestamp() if updated else None,
                )
            )
        return out

    def actions_since(self, since_wall: float) -> list[tuple[str, float, str]]:
        """(alarm, wall time, summary) of each alarm action CloudWatch ran since `since_wall`:
        its own record of a notification sent (to SNS, an Auto Scaling policy...)."""
        out = []
        for name in sorted(self.purposes):
            answer = self._cloudwatch().describe_alarm_history(
                AlarmName=name, HistoryItemType="Action", MaxRecords=20
            )
            for item in answer.get("AlarmHistoryItems", []):
                at = item["Timestamp"].timestamp()
                if at >= since_wall:
                    out.append((name, at, str(item.get("HistorySummary", ""))))
        return out


# -- the webhook receiver --------------------------------------------------------------------


class Receiver:
    """The webhook an Alertmanager sends to: each notification's alerts, on arrival."""

    def __init__(self, listen: str, on_alert: Callable[[str, Alert], None]) -> None:
        host, _, port = listen.rpartition(":")
        self.address = (host, int(port))
        self.on_alert = on_alert
        self.notifications = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.deliver(body)

            def log_message(self, *args: object) -> None:
                pass

        try:
            server = http.server.ThreadingHTTPServer(self.address, Handler)
        except OSError as exc:
            host, port = self.address
            raise MonitoringError(
                f"cannot run the alert receiver on {host}:{port} (monitoring.receiver.listen): "
                f"{exc.strerror}"
            ) from None
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="alert receiver", daemon=True
        )
        self._thread.start()

    def deliver(self, body: bytes) -> None:
        """One notification (Alertmanager's webhook payload, version 4)."""
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return
        self.notifications += 1
        for item in payload.get("alerts") or []:
            if isinstance(item, dict):
                self.on_alert(str(item.get("status", "firing")), alert_from_alertmanager(item))

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# -- the watch ---------------------------------------------------------------------------------


def source_of(target: Target) -> AlertSource:
    m = target.monitoring
    if m is None:
        raise MonitoringError(f"target {target.name!r} has no monitoring role")
    if m.alertmanager_url is not None:
        return Alertmanager(m.alertmanager_url)
    return CloudWatchAlarms(target)


class AlertWatch:
    """The scenario's view of the target's alerts (a probe named "alerts": started once,
    stopped when the scenario ends). `firing()` is the state now; marks are the history."""

    name = PROBE_NAME

    def __init__(
        self,
        target: Target,
        *,
        clock: Clock,
        record: Callable[[Record], None],
        source: AlertSource | None = None,
    ) -> None:
        self.target = target
        self.clock = clock
        self.record = record
        self.source = source if source is not None else source_of(target)
        receiver = target.monitoring.receiver if target.monitoring else None
        self.receiver = (
            Receiver(receiver.listen, self._delivered)
            if receiver is not None and receiver.listen
            else None
        )
        self.integration = receiver.integration if receiver is not None else None
        self.started_at = 0.0
        self.error: str | None = None  # the last failure to read the monitoring
        self._firing: dict[str, Alert] = {}
        self._seen_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._changed = threading.Condition()

    # -- life ----------------------------------------------------------------------------

    def start(self) -> AlertWatch:
        self.started_at = self.clock.now()
        if self.receiver is not None:
            self.receiver.start()
        self.poll()  # the state at the start, before anything is injected
        self._spawn(self._run, "alert watch")
        if self.integration and isinstance(self.source, Alertmanager):
            self._spawn(self._run_counters, "alert counters")
        if isinstance(self.source, CloudWatchAlarms):
            self._spawn(self._run_actions, "alarm actions")
        return self

    def _spawn(self, run: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=run, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.receiver is not None:
            self.receiver.stop()
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    # -- what is firing ----------------------------------------------------------------------

    def firing(self) -> list[Alert]:
        with self._lock:
            return list(self._firing.values())

    def first_seen(self, fingerprint: str) -> float | None:
        with self._lock:
            return self._seen_at.get(fingerprint)

    def wait_change(self, timeout: float) -> None:
        """Return at the next change of state (or after `timeout`): steps that wait for an
        alert react at once instead of on their own polling period."""
        with self._changed:
            self._changed.wait(timeout)

    def poll(self) -> None:
        try:
            now_firing = {a.fingerprint: a for a in self.source.firing()}
        except MonitoringError as exc:
            self.error = str(exc)
            return
        self.error = None
        at = self.clock.now()
        with self._lock:
            new = [a for fp, a in now_firing.items() if fp not in self._firing]
            gone = [a for fp, a in self._firing.items() if fp not in now_firing]
            for alert in new:
                self._seen(alert, at, via="poll")
            for alert in gone:
                del self._firing[alert.fingerprint]
                self._mark(MARK_ALERT_RESOLVED, at, alert.detail(via="poll"))
        if new or gone:
            self._notify()

    def _seen(self, alert: Alert, at: float, *, via: str) -> None:
        """Under the lock: the alert is firing; first sighting makes the firing mark."""
        if alert.fingerprint in self._firing:
            return
        self._firing[alert.fingerprint] = alert
        self._seen_at.setdefault(alert.fingerprint, at)
        self._mark(MARK_ALERT_FIRING, at, alert.detail(via=via))

    def _delivered(self, status: str, alert: Alert) -> None:
        at = self.clock.now()
        with self._lock:
            if status == "firing":
                # A notification can be the first word of an alert the poll has not seen yet.
                self._seen(alert, at, via="receiver")
            self._mark(MARK_ALERT_DELIVERED, at, alert.detail(status=status, via="receiver"))
        self._notify()

    def _mark(self, name: str, at: float, detail: dict[str, str]) -> None:
        with contextlib.suppress(ValueError, OSError):  # the run's history closed: ignore
            self.record(Mark(name, at, detail))

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.wait(self.source.poll_sec):
            self.poll()

    def _run_counters(self) -> None:
        """Alertmanager's counters for the receiver's integration: each notification sent
        while alerts fire is their delivery (the counters do not say which alert)."""
        assert isinstance(self.source, Alertmanager) and self.integration
        last: tuple[float, float] | None = None
        while not self._stop.wait(COUNTERS_POLL_SEC):
            try:
                now = self.source.counters(self.integration)
            except (httpx.HTTPError, ValueError):
                continue
            if last is not None and now[0] > last[0]:
                status = "failed" if now[1] > last[1] else "firing"
                at = self.clock.now()
                with self._lock:
                    for alert in self._firing.values():
                        self._mark(
                            MARK_ALERT_DELIVERED,
                            at,
                            alert.detail(status=status, via=self.integration),
                        )
                self._notify()
            last = now

    def _run_actions(self) -> None:
        """CloudWatch's history of alarm actions: an action run is the alarm's delivery."""
        assert isinstance(self.source, CloudWatchAlarms)
        done: set[tuple[str, float]] = set()
        while not self._stop.wait(CLOUDWATCH_POLL_SEC * 5):
            anchor = self.clock.wall_anchor_now()  # CloudWatch's times are wall-clock
            try:
                actions = self.source.actions_since(anchor + self.started_at)
            except Exception:
                continue
            for alarm, wall, summary in actions:
                if (alarm, wall) in done:
                    continue
                done.add((alarm, wall))
                purpose = self.source.purposes.get(alarm, alarm)
                detail = {
                    "alert": purpose,
                    "fingerprint": alarm,
                    "status": "firing",
                    "via": "cloudwatch-action",
                    "summary": summary[:200],
                }
                self._mark(MARK_ALERT_DELIVERED, wall - anchor, detail)
            if actions:
                self._notify()


def watch(scenario: Scenario) -> AlertWatch:
    """The scenario's alert watch, started the first time a step asks for it."""
    running = scenario.probes.get(PROBE_NAME)
    if isinstance(running, AlertWatch):
        return running
    made = AlertWatch(scenario.target, clock=scenario.run.clock, record=scenario.run.record)
    if scenario.dry_run:
        return made
    try:
        scenario.add_probe(made)
    except MonitoringError as exc:
        scenario.probes.pop(PROBE_NAME, None)
        import pytest

        pytest.fail(str(exc), pytrace=False)
    return made


# -- stop conditions ---------------------------------------------------------------------------


@dataclass
class AlertStop:
    """An abort condition: an alert the scenario did not expect is firing. `names`: any of
    these alerts; `critical_except`: any critical alert not named there."""

    alerts: AlertWatch
    names: Sequence[str] = ()
    critical_except: Sequence[str] | None = None

    def matches(self, alert: Alert) -> bool:
        if alert.state != "active":
            return False  # silenced or inhibited: it pages nobody
        if alert.name in self.names:
            return True
        if self.critical_except is not None:
            return alert.severity == "critical" and alert.name not in self.critical_except
        return False

    def check(self) -> str | None:
        for alert in self.alerts.firing():
            if self.matches(alert):
                where = alert.labels.get("server") or alert.labels.get("instance") or ""
                return f'alert "{alert.name}" fired' + (
                    f" ({alert.severity}, {where})" if alert.severity or where else ""
                )
        return None

    def describe(self) -> str:
        if self.names:
            return "alert " + " or ".join(f'"{n}"' for n in self.names)
        others = ", ".join(f'"{n}"' for n in self.critical_except or ())
        return "any critical alert" + (f" other than {others}" if others else "")


def _where(alert: Alert) -> str:
    return alert.labels.get("server") or alert.labels.get("instance") or "?"


def settle(watch: AlertWatch, timeout: float) -> list[Alert]:
    """Wait (bounded) until nothing fires; what still fires then."""
    deadline = time.monotonic() + timeout
    while True:
        firing = [a for a in watch.firing() if a.state == "active"]
        if not firing or time.monotonic() >= deadline:
            return firing
        watch.wait_change(min(1.0, max(deadline - time.monotonic(), 0.01)))


# -- a scenario's alerts, for its steps ---------------------------------------------------------

# How long `Given no alert is firing` waits for alerts of an earlier scenario to resolve.
QUIET_TIMEOUT_SEC = 120.0
# "it reaches the receiver" without a bound: Alertmanager's group_wait plus a margin.
DELIVERY_TIMEOUT_SEC = 60.0
# How long the stop-condition step waits for the stop, after the fault began.
STOP_TIMEOUT_SEC = 180.0
# A steady state shorter than this was not watched at all (the watch began at the Then-step).
WATCHED_AT_LEAST_SEC = 1.0
# A verdict waited for is judged a little past its bound: the sighting that decides it may
# be polled a moment after the bound passed.
GRACE_SEC = 1.0


class ScenarioAlerts:
    """The monitoring steps' engine: waits (bounded) for what they judge, then judges it with
    gameday.checks.monitoring over the scenario's marks."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.watch = watch(scenario)

    def events(self) -> list[AlertEvent]:
        # From the writer's index of non-sample records: polled while a step waits, it must
        # not copy the run's samples (a snapshot of the whole history) each time.
        s = self.scenario
        records = s.run.writer.events(first_record=s.first_record, since=s.started)
        return alert_events(r for r in records if isinstance(r, Mark))

    def _fault_events(self) -> list[FaultEvent]:
        return self.scenario.fault_events()

    def quiet(self, timeout_sec: float = QUIET_TIMEOUT_SEC) -> Verdict:
        """Nothing fires now (alerts of an earlier scenario are waited out, bounded)."""
        if self.scenario.dry_run:
            return passed("no_alert_firing", "dry run: alerts not read")
        if self.watch.error:
            return failed("no_alert_firing", f"cannot read the alerts: {self.watch.error}")
        still = settle(self.watch, timeout_sec)
        if still:
            return failed(
                "no_alert_firing",
                f"alerts still firing after waiting {timeout_sec:g} s for a quiet start: "
                + ", ".join(sorted(f"{a.name} ({_where(a)})" for a in still)),
                alerts=sorted({a.name for a in still}),
            )
        self.watch.started_at = self.scenario.run.clock.now()  # the steady state starts quiet
        return passed("no_alert_firing", "no alert is firing")

    def fired(self, alert: str, within_sec: float) -> Verdict:
        start = self.scenario.fault_start()
        clock = self.scenario.run.clock

        def judge() -> Verdict:
            anchor = clock.wall_anchor_now()  # the monitoring's timestamps are wall-clock
            return mc.alert_fired(
                self.events(), alert, fault_start=start, within_sec=within_sec, wall_anchor=anchor
            )

        return self.scenario.wait_for(
            judge, start + within_sec + GRACE_SEC, waiting_for=f"{alert} to fire"
        )

    def delivered(self, detection: Verdict, within_sec: float = DELIVERY_TIMEOUT_SEC) -> Verdict:
        alert, fired_at = self._detected(detection)
        if fired_at is None:
            return failed("alert_delivered", f"{alert} never fired, so it cannot be delivered")

        def judge() -> Verdict:
            return mc.alert_delivered(
                self.events(), alert, fired_at=fired_at, within_sec=within_sec
            )

        return self.scenario.wait_for(
            judge, fired_at + within_sec + GRACE_SEC, waiting_for=f"{alert} at the receiver"
        )

    def resolved(
        self, detection: Verdict, within_sec: float, *, heal: Callable[[], None]
    ) -> Verdict:
        """Heal the scenario's faults (now, if not yet), then wait for `alert` to resolve."""
        alert, fired_at = self._detected(detection)
        if fired_at is None:
            return failed("alert_resolves", f"{alert} never fired, so it cannot resolve")
        heal()
        healing = mc.heal_window(self._fault_events(), fired_at)
        began = healing[0] if healing else self.scenario.run.clock.now()

        def judge() -> Verdict:
            return mc.alert_resolved(
                self.events(),
                alert,
                fired_at=fired_at,
                heal=mc.heal_window(self._fault_events(), fired_at),
                within_sec=within_sec,
            )

        return self.scenario.wait_for(
            judge, began + within_sec + GRACE_SEC, waiting_for=f"{alert} to resolve"
        )

    def silent(self, allowed: Sequence[str] = ()) -> Verdict:
        """No alert (but `allowed`) fired from the start of the watch to the first fault (or
        to now, in a scenario without one)."""
        starts = [e.at for e in self._fault_events() if e.phase == "inject-start"]
        end = min(starts) if starts else self.scenario.run.clock.now()
        if self.watch.error:
            return failed("no_alert", f"cannot read the alerts: {self.watch.error}")
        if end - self.watch.started_at < WATCHED_AT_LEAST_SEC:
            return failed(
                "no_alert",
                "the alerts were not watched during the steady state (start watching with "
                "`Given no alert is firing` before it)",
            )
        return mc.no_alert_fired(
            self.events(),
            window=(self.watch.started_at, end),
            allowed=allowed,
            origin=self.scenario.started,
        )

    def stop_condition(
        self, names: Sequence[str] = (), critical_except: Sequence[str] | None = None
    ) -> AlertStop:
        return AlertStop(self.watch, names=tuple(names), critical_except=critical_except)

    def stopped(self, alert: str, within_sec: float) -> Verdict:
        start = self.scenario.fault_start()

        def judge() -> Verdict:
            return mc.stopped_by(self.events(), self._fault_events(), alert, within_sec=within_sec)

        return self.scenario.wait_for(
            judge, start + STOP_TIMEOUT_SEC, waiting_for=f"the game day to stop on {alert}"
        )

    @staticmethod
    def _detected(detection: Verdict) -> tuple[str, float | None]:
        alert = str(detection.measured.get("alert", "the alert"))
        fired_at = detection.measured.get("fired_at")
        return alert, float(fired_at) if isinstance(fired_at, int | float) else None
