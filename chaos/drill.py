"""Drills: a fault left for people to handle, with the clock running (`gameday run PLAN --drill`).

A drill injects the plan's fault (a one-way one, such as a server killed and kept down) and
does not heal it. It announces itself, then measures three times from the moment the fault
was injected:
- **time to detect**: the first acknowledgement (`gameday ack --target X`) or the first alert
  the plan's Alertmanager shows with the plan's labels;
- **time to mitigate**: users are served again, by the drill's HTTP probe (the first of five
  consecutive good answers after the first failure; 0 when users never saw a failure);
- **time to restore**: the deployment is back to its steady state (the entrypoint answers,
  every server is in rotation, the database's standby streams, the cache has a replica) and
  the fault is no longer in effect.
If people have not restored it by the plan's deadline, the drill heals the fault itself and
fails. The three times go to the ledger (kind "drill") and to the run's report.

Everything goes through the normal machinery: the lease (one game day per target), the
undo journal (written before the fault acts), the heal-always fault session (Ctrl-C and
SIGTERM heal), the injection gates and abort conditions of every scenario fault (chaos.gates:
a paused target refuses the drill; `gameday pause` heals it within a second), and the deadline.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chaos.base import Fault, FaultError, FaultRefused
from chaos.gates import register
from chaos.journal import Journal
from chaos.registry import fault_for
from chaos.runner import FaultSession, TimeLimit, heal_pending, install_signal_handlers
from chaos.scenario import ABORT_CONDITIONS, INJECTION_GATES
from gameday import checks, deployment, facts
from gameday.checks.resilience import time_to_recover
from gameday.gamedays import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    Ready,
    judge_regressions,
    prepare,
)
from gameday.history import FaultEvent, Sample
from gameday.ledger import (
    LEASE_TOKEN_ENV,
    LEDGER_URL_ENV,
    LeaseHeld,
    LeaseKeeper,
    Ledger,
    LedgerError,
    RunRecord,
    iso,
)
from gameday.notify import Notice, notify
from gameday.plan import Drill
from gameday.probes.http import HttpProbe
from gameday.run import Run, ScenarioResult
from gameday.secrets import redact
from gameday.target import Target
from gameday.verdict import Verdict, failed, passed

POLL_SEC = 0.5
#: how often the (heavier) steady-state check runs
STEADY_EVERY_SEC = 1.0
#: probe samples before the fault, so "users never saw a failure" has evidence
BASELINE_SEC = 2.0

Log = Callable[[str], None]


def _say(line: str) -> None:
    print(f"gameday: {redact(line)}", flush=True)


def _err(line: str) -> None:
    print(f"gameday: {redact(line)}", file=sys.stderr, flush=True)


def cmd_drill(plan: str, *, ignore_window: bool = False, check: bool = False) -> int:
    """`gameday run PLAN --drill`: exit 0 restored by people in time, 1 not (or regressed,
    or stopped), 2 bad input, 3 refused."""
    ready = prepare(plan, ignore_window=ignore_window, breaks=True)
    if isinstance(ready, int):
        return ready
    loaded = ready.loaded
    drill = loaded.plan.drill
    if drill is None:
        _err(f"{loaded.source}: drill: the plan has no drill section (fault, deadline_sec, ...)")
        return EXIT_BAD_INPUT
    try:
        fault = fault_for(loaded.target, drill.fault, drill.params)
        description = fault.describe()
    except (FaultError, KeyError) as exc:
        _err(f"{loaded.source}: drill.fault: {exc}")
        return EXIT_BAD_INPUT
    if check:
        _say(
            f"{loaded.source}: ok: drill {loaded.name} would {description} on "
            f"{loaded.target.name}, healed after {drill.deadline_sec:g} s unless restored"
        )
        return EXIT_OK
    return DrillRun(ready, drill, fault).run()


def steady_state(target: Target) -> Verdict:
    """The deployment as it should be: entrypoint healthy, every server in rotation, the
    database's standby streaming, the cache's replica online (each where the target has it)."""
    try:
        for verdict in deployment.steady_state(target):
            if not verdict.ok:
                return verdict
        if target.database is not None:
            db = target.database
            verdict = checks.standby_streaming(
                facts.replication(db),
                synchronous=db.synchronous,
                max_lag_sec=db.max_replica_lag_sec,
            )
        if verdict.ok and target.cache is not None:
            verdict = checks.cache_replicated(facts.cache_replication(target.cache))
    except Exception as exc:  # not reachable yet is exactly "not restored"
        return failed("steady_state", f"{type(exc).__name__}: {exc}".splitlines()[0])
    return verdict


def first_alert(drill: Drill, since_wall: float) -> float | None:
    """POSIX time at which the first matching alert that began after the fault started
    firing, from Alertmanager's API; None if there is none (or it cannot be read)."""
    if drill.alertmanager_url is None:
        return None
    import httpx

    url = drill.alertmanager_url.rstrip("/") + "/api/v2/alerts"
    try:
        alerts = httpx.get(url, params={"active": "true"}, timeout=2).json()
    except Exception:
        return None
    starts: list[float] = []
    for alert in alerts if isinstance(alerts, list) else []:
        labels = alert.get("labels") or {}
        if any(labels.get(k) != v for k, v in drill.alert_labels.items()):
            continue
        try:
            began = datetime.fromisoformat(str(alert["startsAt"]).replace("Z", "+00:00"))
        except (KeyError, ValueError):
            continue
        # Alertmanager keeps the start of an alert that was firing before: not this fault's.
        if began.timestamp() >= since_wall - 1.0:
            starts.append(max(began.timestamp(), since_wall))
    return min(starts) if starts else None


@dataclass
class Times:
    detect: float | None = None
    detected_by: str = ""
    mitigate: float | None = None
    restore: float | None = None


class DrillRun:
    def __init__(self, ready: Ready, drill: Drill, fault: Fault, *, log: Log = _say) -> None:
        self.ready = ready
        self.loaded = ready.loaded
        self.drill = drill
        self.fault = fault
        self.target = ready.loaded.target
        self.log = log
        self.host = socket.gethostname()
        self.stop_reason: str | None = None

    def _notice(self, event: str, **kw: Any) -> Notice:
        return Notice(event, self.loaded.name, self.target.name, self.host, at=iso(time.time()),
                      **kw)  # fmt: skip

    def run(self) -> int:
        url, source = self.ready.ledger_url, self.ready.ledger_source
        try:
            ledger = Ledger.open(url, source=source)
        except LedgerError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
        with ledger:
            try:
                lease, previous = ledger.acquire(
                    self.target, plan=self.loaded.name, ttl_sec=self.loaded.plan.lease_ttl_sec
                )
            except LeaseHeld as exc:
                _err(f"refused: {exc}")
                return EXIT_REFUSED
            keeper = LeaseKeeper(lease, self.target, url=url, on_stop=self._lost_lease).start()
            # The gates and conditions read the process's ledger and know its own lease by
            # this token, as in a pytest session (gameday run hands the plan's ledger on the
            # same way).
            if url:
                os.environ[LEDGER_URL_ENV] = url
            os.environ[LEASE_TOKEN_ENV] = lease.token
            register()
            try:
                if previous is not None:
                    self.log(f"took over the lease of a game day that died holding it "
                             f"({previous.describe(lease.since)})")  # fmt: skip
                self._gates()
                restore = install_signal_handlers(log=self.log)
                try:
                    healed = heal_pending(self.target, log=self.log)
                finally:
                    restore()
                if healed:
                    self.log(f"healed {len(healed)} fault(s) an earlier run left behind")
                return self._drill(ledger, lease)
            except FaultRefused as exc:
                _err(f"refused: {self.fault.label}: {exc}")
                return EXIT_REFUSED
            except FaultError as exc:
                _err(f"drill: {exc}")
                return EXIT_FAILED
            finally:
                keeper.stop()
                try:
                    ledger.release(keeper.lease)
                except Exception as exc:  # it expires by itself
                    _err(f"ledger: could not give the lease back ({exc}); it expires by itself")

    def _gates(self) -> None:
        for gate in INJECTION_GATES:
            gate(self.target)

    def _lost_lease(self, reason: str) -> None:
        # Pauses reach the drill through its fault's abort conditions (and its gates before
        # the fault); the keeper only adds a lost lease.
        if "paused" not in reason:
            self.stop_reason = reason

    def _drill(self, ledger: Ledger, lease: Any) -> int:
        target, drill, fault = self.target, self.drill, self.fault
        steady = steady_state(target)
        if not steady.ok:
            raise FaultRefused(f"the deployment is not in its steady state: {steady.message}")
        run = Run.start(target)
        ledger.attach_run(lease, run.run_id)
        path = drill.probe_path or target.entrypoint.health_path
        probe = HttpProbe(target, path=path, rate=drill.probe_rate, clock=run.clock,
                          record=run.record)  # fmt: skip
        probe.start()
        self.log(f"drill {self.loaded.name}: run {run.run_id}, probe {probe.name} at "
                 f"{drill.probe_rate:g}/s; history in {run.folder / 'history.jsonl'}")  # fmt: skip
        times = Times()
        outcome, message = "failed", ""
        fault_at = run.clock.now()
        try:
            time.sleep(BASELINE_SEC)
            with FaultSession(log=self.log) as session:
                self._gates()  # a pause during the baseline refuses the fault
                active = session.inject(
                    fault, journal=Journal(target), run_id=run.run_id, history=run.writer,
                    clock=run.clock, dry_run=False,
                )  # fmt: skip
                begun = [
                    r.at for r in run.writer.records()
                    if isinstance(r, FaultEvent) and r.phase == "inject-start"
                ]  # fmt: skip
                fault_at = min(begun, default=run.clock.now())
                deadline = TimeLimit(drill.deadline_sec, run.clock, since=fault_at)
                conditions = [deadline, *(make(target) for make in ABORT_CONDITIONS)]
                watchdog = session.watch(active, conditions, interval_sec=POLL_SEC)
                fault_wall = run.clock.wall_anchor + fault_at
                heal_at = iso(fault_wall + drill.deadline_sec)
                ack = f"`gameday ack --target {self.loaded.plan.target}`"
                self.log(f"DRILL: {fault.describe()}; acknowledge with {ack}; healed "
                         f"automatically at {heal_at}")  # fmt: skip
                notify(
                    self.loaded.plan.notify,
                    self._notice(
                        "drill-start", run_id=run.run_id,
                        summary=f"{fault.describe()} at {iso(fault_wall)}. Acknowledge with "
                        f"`gameday ack --target {self.loaded.plan.target}`; restore the "
                        f"service; it is healed automatically at {heal_at}.",
                    ),
                    log=self.log,
                )  # fmt: skip
                self._watch(ledger, run, probe, fault_at, fault_wall, times, watchdog, active)
                if watchdog.fired:
                    if "time limit" in watchdog.fired:
                        message = (f"not restored within the deadline of {drill.deadline_sec:g} "
                                   "s: healed automatically")  # fmt: skip
                    else:
                        outcome, message = "aborted", watchdog.fired
                elif self.stop_reason:
                    outcome, message = "aborted", self.stop_reason
                elif times.restore is not None:
                    outcome, message = "passed", "restored by people before the deadline"
        except FaultRefused as exc:  # paused (or taken) after the drill began: nothing injected
            outcome, message = "aborted", f"refused: {exc}"
        except KeyboardInterrupt as exc:  # the session healed on the way out
            outcome, message = "aborted", f"interrupted ({type(exc).__name__} {exc})".strip()
        finally:
            probe.stop()
        return self._record(ledger, run, probe.name, fault_at, times, outcome, message)

    def _watch(
        self, ledger: Ledger, run: Run, probe: HttpProbe, fault_at: float, fault_wall: float,
        times: Times, watchdog: Any, active: Any,
    ) -> None:  # fmt: skip
        """Until restored (and users served again), the deadline, a pause or a lost lease."""
        next_steady = 0.0
        while not (watchdog.fired or active.healed or self.stop_reason):
            now = run.clock.now()
            if times.detect is None:
                acks = ledger.events(self.target, kind="ack", since=fault_wall)
                alert = first_alert(self.drill, fault_wall)
                candidates = [(a.at, f"acknowledged by {a.who}") for a in acks[:1]]
                if alert is not None:
                    candidates.append((alert, "first alert"))
                if candidates:
                    at, by = min(candidates)
                    times.detect, times.detected_by = at - fault_wall, by
                    self.log(f"drill: detected after {times.detect:.1f} s ({by})")
            verdict = self._mitigation(run, probe.name, fault_at)
            mitigated = verdict.measured.get("recovery_sec") if verdict.ok else None
            if times.restore is None and now >= next_steady:
                next_steady = now + STEADY_EVERY_SEC
                if steady_state(self.target).ok and not self.fault.in_effect():
                    times.restore = run.clock.now() - fault_at
                    self.log(f"drill: restored after {times.restore:.1f} s")
            if times.restore is not None and mitigated is not None:
                times.mitigate = float(mitigated)
                return
            time.sleep(POLL_SEC)

    def _mitigation(self, run: Run, probe: str, fault_at: float) -> Verdict:
        samples = [r for r in run.writer.records() if isinstance(r, Sample) and r.probe == probe]
        return time_to_recover(samples, fault_start=fault_at, within_sec=self.drill.deadline_sec)

    def _record(
        self, ledger: Ledger, run: Run, probe: str, fault_at: float, times: Times,
        outcome: str, message: str,
    ) -> int:  # fmt: skip
        if times.mitigate is None:
            verdict = self._mitigation(run, probe, fault_at)
            if verdict.ok:
                times.mitigate = float(verdict.measured.get("recovery_sec") or 0.0)
        title = f"drill: {self.fault.label}"
        node = f"drill::{self.fault.name}"
        for check, value, what in (
            ("time_to_detect", times.detect, times.detected_by or "nobody acknowledged"),
            ("time_to_mitigate", times.mitigate, f"users served again ({probe})"),
            ("time_to_restore", times.restore, "steady state again"),
        ):
            verdict = (
                passed(check, f"{what} after {value:.1f} s", sec=value)
                if value is not None
                else failed(check, f"{check.replace('_', ' ')}: not reached ({what})", sec=None)
            )
            run.judge(node, title, verdict)
        duration = run.clock.now() - fault_at
        run.scenarios.append(ScenarioResult(node, title, "passed" if outcome == "passed" else
                                            "failed", message, duration))  # fmt: skip
        report = run.finish()
        from gameday.baseline import git_revision
        from gameday.trend import verdict_metrics

        verdicts = [v.to_dict() for v in run.verdicts]
        plan = self.loaded.plan
        record = RunRecord(
            run_id=run.run_id, kind="drill", plan=plan.name, target_name=self.target.name,
            target_key=self.target.identity(), harness_revision=git_revision(),
            deployment_revision="", host=self.host,
            started_at=run.clock.wall_anchor + fault_at, ended_at=time.time(),
            scenario=node, title=title, outcome=outcome, message=message,
            duration_sec=duration, metrics=verdict_metrics(verdicts), verdicts=verdicts,
            report=str(report.resolve()),
        )  # fmt: skip
        ledger.append([record])
        found = judge_regressions(ledger, self.loaded, run.run_id) if outcome == "passed" else []
        for reg in found:
            _err(f"REGRESSION: {reg}")
        shown = ", ".join(
            f"{name} {'-' if value is None else f'{value:.1f} s'}"
            for name, value in (("detect", times.detect), ("mitigate", times.mitigate),
                                ("restore", times.restore))
        )  # fmt: skip
        final = "regressed" if found else outcome
        notify(
            plan.notify,
            self._notice("drill-end", run_id=run.run_id, outcome=final,
                         summary=f"{shown}; {message}", regressions=[str(r) for r in found],
                         report=str(report.resolve())),
            log=self.log,
        )  # fmt: skip
        self.log(f"drill {plan.name} on {self.target.name}: {final.upper()}: {shown}; {message}; "
                 f"report {report.resolve()}")  # fmt: skip
        return EXIT_OK if final == "passed" else EXIT_FAILED
