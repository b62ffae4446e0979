"""One scenario of a run: its probes, its slice of the run's history, and its verdicts.

The Given-steps start probes here (`start_http`, `start_writer`, `start_users`), which stop by
themselves when the scenario ends; every load a scenario asks for is added up and checked
against the target's `load:` caps before it starts. Then-steps ask for a verdict
(`recovered`, `lost_writes`, `available_during_fault`...) and hand it to `judge`, which keeps
it for the report and fails the step with its message. Waiting for a verdict to become true
("writes succeed again within 120 seconds") is bounded and says what it still waits for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from gameday.checks import resilience as rc
from gameday.history import (
    MARK_RECOVERED,
    MARK_SCENARIO_END,
    MARK_SCENARIO_START,
    FaultEvent,
    History,
    Mark,
    Sample,
)
from gameday.run import Run
from gameday.verdict import Verdict, failed

if TYPE_CHECKING:
    from gameday.baseline import LoadResult
    from gameday.checks.cache import CacheWrite
    from gameday.target import Target

POLL_SEC = 0.25
PROGRESS_SEC = 5.0
# How long "the deployment is healthy" waits for a steady state before refusing to start.
STEADY_WAIT_SEC = 30.0
# Every probe is bounded even if a scenario forgets to end: at most this long.
MAX_PROBE_SEC = 600
# No hold ("the fault lasts 10 seconds") lasts longer than this, whatever the scenario says.
MAX_HOLD_SEC = 300
# Background users start within this, or the step fails (locust's start-up is 2-3 s here).
USERS_START_SEC = 30.0
# The writers "writes succeed again" and "no acknowledged write is lost" judge.
WRITE_PROBES = ("orders", "ledger")
# A recovery is judged a little past its limit, so that N consecutive successes can be seen.
RECOVERY_GRACE_SEC = 3.0
# A probe kept its rate when at most this share of its requests started late (> 10 ms): a
# busy 2-core machine makes a few per cent late now and then.
RATE_LATE_RATIO = 0.05
# A request older than its timeout plus this has surely been recorded (answered or cut).
SETTLE_MARGIN_SEC = 0.1


class Probe(Protocol):
    name: str

    def start(self) -> Any: ...

    def stop(self) -> None: ...


@dataclass
class Scenario:
    run: Run
    nodeid: str
    title: str
    dry_run: bool
    say: Callable[[str], None]
    target: Target
    started: float = 0.0
    #: unique per scenario of the run: probes put it in every key they write (ledger rows,
    #: idempotency keys, cache keys) so two scenarios never share a write.
    key: str = ""
    probes: dict[str, Probe] = field(default_factory=dict)
    #: how many records the run's history held when the scenario began
    first_record: int = 0
    #: what the Given-steps asked for so far, checked against the target's caps
    planned_users: int = 0
    planned_rps: float = 0.0

    @classmethod
    def begin(
        cls,
        run: Run,
        nodeid: str,
        title: str,
        *,
        dry_run: bool,
        say: Callable[[str], None],
    ) -> Scenario:
        run.scenarios_begun += 1
        # The record count first, then the time: every record appended before the scenario
        # was then also sent (or made) before it began, so its samples are cut by time alone.
        first_record = len(run.writer)
        scenario = cls(
            run, nodeid, title, dry_run, say, run.target, started=run.clock.now(),
            key=f"{run.run_id}-s{run.scenarios_begun}", first_record=first_record,
        )  # fmt: skip
        run.mark(MARK_SCENARIO_START, scenario=nodeid, title=title)
        return scenario

    def end(self, outcome: str) -> None:
        """Stop the probes, and say for each whether it kept its rate: a verdict kept for the
        report, not asserted (a probe that fell behind is a fact about the measurement, and
        its samples carry their real send times either way)."""
        from gameday.checks.schedule import rate_kept
        from gameday.probes.schedule import Scheduled

        for probe in self.probes.values():
            probe.stop()
            if isinstance(probe, Scheduled):
                verdict = rate_kept(probe.schedule_report(), max_late_ratio=RATE_LATE_RATIO)
                self.run.judge(self.nodeid, self.title, verdict)
        self.run.mark(MARK_SCENARIO_END, scenario=self.nodeid, outcome=outcome)

    # -- probes ------------------------------------------------------------------------------

    def add_probe(self, probe: Probe) -> Probe:
        if probe.name in self.probes:
            raise ValueError(f"this scenario already runs a probe named {probe.name!r}")
        self.probes[probe.name] = probe
        probe.start()
        return probe

    def probe(self, name: str) -> Probe:
        """The probe called `name`; the step fails, saying which run, when there is none."""
        try:
            return self.probes[name]
        except KeyError:
            running = ", ".join(self.probes) or "none"
            pytest.fail(f"no probe {name!r} runs in this scenario (running: {running})", False)

    def reserve(self, *, users: int = 0, rps: float = 0.0) -> None:
        """Add a load to what the scenario runs; the step fails in one line, starting nothing,
        when the total would pass the target's `load:` caps."""
        from gameday import load

        users_after = self.planned_users + users
        rps_after = self.planned_rps + rps + load.users_ceiling_rps(users)
        try:
            load.check_limits(self.target, users=users_after, rps=rps_after)
        except load.LoadLimitError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.planned_users, self.planned_rps = users_after, rps_after

    def _start(self, what: str, make: Callable[[], Probe]) -> None:
        if self.dry_run:
            self.say(f"dry run: would start {what}")
            return
        self.add_probe(make())

    def start_http(self, path: str, rate: int) -> None:
        """GET `path` through the entrypoint `rate` times a second (probe `GET <path>`)."""
        from gameday.probes.http import HttpProbe

        self.reserve(rps=rate)
        self._start(
            f"GET {path} at {rate}/s",
            lambda: HttpProbe(
                self.target, path=path, rate=rate, clock=self.run.clock, record=self.run.record,
                limit=rate * MAX_PROBE_SEC,
            ),
        )  # fmt: skip

    def start_writer(self, kind: str, rate: int) -> None:
        """A write probe: `orders` through the entrypoint's write API, `ledger` rows straight
        to the database, `cache` keys in the cache."""
        from gameday.probes.writes import CacheProbe, LedgerProbe, OrdersProbe, WriteProbe

        probes: dict[str, Callable[..., WriteProbe]] = {
            "orders": OrdersProbe,
            "ledger": LedgerProbe,
            "cache": CacheProbe,
        }
        probe = probes[kind]
        self.reserve(rps=rate)
        self._start(
            f"the {kind} writer at {rate} writes/s",
            lambda: probe(
                self.target, run_id=self.key, rate=rate, clock=self.run.clock,
                record=self.run.record, limit=rate * MAX_PROBE_SEC,
            ),
        )  # fmt: skip

    def start_egress(self, rate: int) -> None:
        """An egress probe per zone of the target (`egress <zone>`), `rate` requests a second
        each, for the rest of the scenario."""
        from gameday.probes.egress import EgressProbe

        zones = self.target.egress_zones()
        self.reserve(rps=rate * len(zones))
        for zone in zones:
            self._start(
                f"the egress probe of zone {zone} at {rate}/s",
                lambda zone=zone: EgressProbe(  # type: ignore[misc]
                    self.target, zone=zone, rate=rate, clock=self.run.clock,
                    record=self.run.record, limit=rate * MAX_PROBE_SEC,
                ),
            )  # fmt: skip

    def start_writable(self, roles: Sequence[str], rate: int) -> None:
        """Ask every node of each store in `roles` ("database", "cache") for a write, `rate`
        rounds a second (probes `writable database`, `writable cache`)."""
        from gameday.probes.writable import WritableNodesProbe

        self.reserve(rps=rate * len(roles))
        for role in roles:
            self._start(
                f"asking every {role} node for a write at {rate}/s",
                lambda role=role: WritableNodesProbe(  # type: ignore[misc]
                    self.target, role=role, run_id=self.key, rate=rate, clock=self.run.clock,
                    record=self.run.record, limit=rate * MAX_PROBE_SEC,
                ),
            )  # fmt: skip

    def start_users(self, users: int, journeys: str) -> None:
        """Locust users of loadtests/locustfile.py for the rest of the scenario, every request
        of theirs a sample on the run's timeline; returns once they send."""
        from gameday import load

        self.reserve(users=users)
        classes = load.USER_CLASSES[journeys]
        if self.dry_run:
            self.say(f"dry run: would start {users} locust users ({', '.join(classes)})")
            return
        plan = load.LocustPlan(
            host=self.target.entrypoint.url, users=users, spawn_rate=users,
            run_time_sec=MAX_PROBE_SEC, folder=self.run.folder / f"locust-{self.key}",
            user_classes=classes, records=True,
        )  # fmt: skip
        users_load = load.BackgroundLoad(plan, clock=self.run.clock, record=self.run.record)
        self.add_probe(users_load)
        if not users_load.wait_sending(USERS_START_SEC):
            pytest.fail(
                f"locust users sent no request within {USERS_START_SEC:g} s "
                f"(log: {plan.folder}/locust.log)",
                pytrace=False,
            )
        self.say(f"{users} locust users ({', '.join(classes)}) are sending requests")

    def run_load(self, users: int, seconds: int) -> LoadResult:
        """Locust users for `seconds`, in the foreground; their statistics."""
        from gameday import baseline as bl

        self.reserve(users=users)
        if self.dry_run:
            pytest.skip(f"dry run: would run {users} locust users for {seconds} s")
        self.say(f"locust: {users} users for {seconds} s")
        try:
            return bl.run_locust(
                self.target, users=users, spawn_rate=users, duration_sec=seconds,
                workdir=self.run.folder / f"load-{self.key}",
            )  # fmt: skip
        except bl.BaselineError as exc:
            pytest.fail(str(exc), pytrace=False)

    def write_cache_keys(self, seconds: float) -> list[CacheWrite]:
        """Timestamped SETs, one after another (the persistence trial's writes)."""
        from gameday.probes.cache_keys import write_keys

        assert self.target.cache is not None
        if self.dry_run:
            return []
        return write_keys(
            self.target.cache.url, seconds=min(seconds, MAX_HOLD_SEC), clock=self.run.clock
        )

    def steady_state(self, within_sec: float = STEADY_WAIT_SEC) -> list[Verdict]:
        """The steady state a fault starts from, waited for (bounded): a deployment that was
        healed a moment ago may still be putting a server back into rotation (a load
        balancer's rise count, nginx's fail_timeout). Past `within_sec` the last verdicts
        stand, and a failed one refuses the scenario."""
        from gameday import deployment

        latest: list[Verdict] = []

        def judge() -> Verdict:
            nonlocal latest
            latest = deployment.steady_state(self.target)
            bad = next((v for v in latest if not v.ok), None)
            return bad or latest[0]

        self.wait_for(
            judge, deadline=self.run.clock.now() + within_sec, waiting_for="the steady state"
        )
        return latest

    def hold(self, seconds: float) -> None:
        """Let time pass (bounded), the probes and faults going on meanwhile."""
        time.sleep(min(seconds, MAX_HOLD_SEC))

    # -- what happened -----------------------------------------------------------------------

    # What the live waits ask several times a second (has the probe recovered, how many
    # failures since the fault, which fault events so far) is answered from the writer's
    # indexes: a poll reads the probe's samples since the fault and the scenario's events, and
    # costs the same whatever else the run has recorded.

    def history(self) -> History:
        """The run's history so far, limited to this scenario's records (a snapshot of the
        writer's memory: for a Then-step, not for polling)."""
        return self.run.writer.history(since=self.started, first_record=self.first_record)

    def samples(
        self, probe: str, *, since: float | None = None, until: float | None = None
    ) -> list[Sample]:
        """This scenario's samples of `probe` sent in [since, until], in send order."""
        start = self.started if since is None else max(since, self.started)
        return list(self.run.writer.samples(probe, since=start, until=until))

    def failures(self, probe: str, *, since: float) -> int:
        """How many of this scenario's samples of `probe` sent at or after `since` failed."""
        return self.run.writer.failures(probe, since=max(since, self.started))

    def fault_events(self) -> list[FaultEvent]:
        """This scenario's fault events so far, in the order recorded."""
        events = self.run.writer.events(first_record=self.first_record, since=self.started)
        return [e for e in events if isinstance(e, FaultEvent)]

    def fault_start(self) -> float:
        """When the first fault of the scenario began; the step fails when none was."""
        starts = [e.at for e in self.fault_events() if e.phase == "inject-start"]
        if not starts:
            pytest.fail("no fault was injected in this scenario", pytrace=False)
        return min(starts)

    def fault_window(self) -> tuple[float, float]:
        """From the first inject to the last heal, or to now while the fault is in effect."""
        events = self.fault_events()
        starts = [e.at for e in events if e.phase == "inject-start"]
        if not starts:
            pytest.fail("no fault was injected in this scenario", pytrace=False)
        ends = [e.at for e in events if e.phase == "heal-end" and e.at >= max(starts)]
        return (min(starts), max(ends) if ends else self.run.clock.now())

    def writers(self) -> list[str]:
        """The write probes of the scenario (the steps fail when there is none)."""
        found = [p for p in WRITE_PROBES if p in self.probes]
        if not found:
            pytest.fail("no writer runs in this scenario (start one with a Given step)", False)
        return found

    def wait_for(
        self, judge: Callable[[], Verdict], deadline: float, *, waiting_for: str = ""
    ) -> Verdict:
        """Re-judge until the verdict passes or the clock passes `deadline` (run time).

        Says every few seconds what it is still waiting for, so a long fault shows progress.
        """
        started = last_said = self.run.clock.now()
        while True:
            verdict = judge()
            now = self.run.clock.now()
            if verdict.ok or now >= deadline:
                return verdict
            if waiting_for and now - last_said >= PROGRESS_SEC:
                last_said = now
                self.say(
                    f"still waiting for {waiting_for}: {now - started:.0f} s "
                    f"(gives up in {deadline - now:.0f} s)"
                )
            time.sleep(POLL_SEC)

    # -- verdicts ------------------------------------------------------------------------------

    def judge(self, verdict: Verdict, *, of_the_stop: bool = False) -> None:
        """Keep the verdict for the report, then pass or fail the step with its message."""
        self.judge_all([verdict], of_the_stop=of_the_stop)

    def judge_all(self, verdicts: Iterable[Verdict], *, of_the_stop: bool = False) -> None:
        """Keep every verdict for the report; the step fails with the first that failed.

        A fault healed early by an abort condition fails every verdict of the scenario: the
        deployment broke worse than the scenario allows, and that is what it found. Except
        verdicts `of_the_stop`: those judge the stop itself (did the game day stop, in time?).
        """
        aborts = [e for e in self.fault_events() if e.phase == "abort"]
        results = list(verdicts)
        if aborts and not of_the_stop:
            reason = aborts[0].detail.get("reason", "an abort condition fired")
            aborted = failed("fault_aborted", f"{aborts[0].fault} was healed early: {reason}")
            results = [aborted] * len(results)
        for verdict in results:
            self.run.judge(self.nodeid, self.title, verdict)
        for verdict in results:
            if not verdict.ok:
                pytest.fail(verdict.message, pytrace=False)

    def _settled(self, probe: Probe) -> tuple[float | None, float | None]:
        """The probe's send interval, and the send time up to which its record is complete
        now: what the probe says (the oldest request still running), else its timeout ago (a
        request older than its timeout has its sample: it was answered or cut)."""
        rate = getattr(probe, "rate", None)
        interval = 1.0 / rate if rate else None
        settled = getattr(probe, "settled_until", None)
        if callable(settled):
            return interval, float(settled())
        timeout = getattr(probe, "timeout_sec", None)
        until = self.run.clock.now() - timeout - SETTLE_MARGIN_SEC if timeout else None
        return interval, until

    def in_effect_at(self, start: float) -> float:
        """When the fault that began at `start` was fully in effect (its inject-end)."""
        ends = [e.at for e in self.fault_events() if e.phase == "inject-end" and e.at >= start]
        return min(ends) if ends else start

    def recovered(self, probe: str, within_sec: float) -> Verdict:
        """Wait (bounded) until `probe` works again after the fault began, at most
        `within_sec` after it; mark the recovery moment on the timeline.

        Judged only over the part of the probe's record that is complete (requests in flight
        may still fail), with its silences counted as failures: a stalled probe is an outage.
        """
        start = self.fault_start()
        running = self.probe(probe)
        timeout = float(getattr(running, "timeout_sec", 0.0))

        def judge() -> Verdict:
            # Only the samples the check can look at: sent from the fault on, up to where the
            # probe's record is complete.
            interval, until = self._settled(running)
            return rc.time_to_recover(
                self.samples(probe, since=start, until=until), fault_start=start,
                within_sec=within_sec, in_effect_at=self.in_effect_at(start), until=until,
                interval=interval,
            )  # fmt: skip

        verdict = self.wait_for(
            judge, deadline=start + within_sec + RECOVERY_GRACE_SEC + timeout,
            waiting_for=f"{probe} to recover",
        )  # fmt: skip
        recovery = verdict.measured.get("recovery_sec")
        if verdict.ok and isinstance(recovery, int | float):
            # At the recovery moment itself, not when this step noticed it.
            detail = {"probe": probe, "after_sec": f"{recovery:.3f}"}
            self.run.record(Mark(MARK_RECOVERED, start + recovery, detail))
        return verdict

    def writes_recovered(self, within_sec: float) -> list[Verdict]:
        return [self.recovered(p, within_sec) for p in self.writers()]

    def lost_writes(self, probe: str, *, max_lost: int = 0) -> Verdict:
        """Stop the write probe, read back every key and judge what is missing.

        A final read that fails (the store still down) is a failed verdict saying so, never
        a traceback and never a pass."""
        try:
            self.probe(probe).read_back()  # type: ignore[attr-defined]
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return failed(
                "lost_writes",
                f"{probe}: the final read of the written ids failed ({type(exc).__name__}: "
                f"{first[:200]}): cannot tell whether acknowledged writes were lost",
                acknowledged=None, lost=None,
            )  # fmt: skip
        return rc.lost_writes_in(self.history(), probe, max_lost=max_lost)

    def no_write_lost(self) -> list[Verdict]:
        return [self.lost_writes(p) for p in self.writers()]

    def cache_loss_at_most(self, seconds: float) -> Verdict:
        """The cache writer lost at most `seconds` worth of its acknowledged writes."""
        rate: float = self.probe("cache").rate  # type: ignore[attr-defined]
        return self.lost_writes("cache", max_lost=int(rate * seconds))

    def available_during_fault(self, probe: str, min_ratio: float) -> Verdict:
        interval, until = self._settled(self.probe(probe))
        return rc.availability(
            self.samples(probe), window=self.fault_window(), min_ratio=min_ratio,
            interval=interval, until=until,
        )  # fmt: skip

    def users_served_during_fault(self, min_ratio: float) -> Verdict:
        from gameday.load import LOCUST_PROBE_PREFIX

        window = self.fault_window()
        self.probe("locust").settle()  # type: ignore[attr-defined]
        history = self.history()
        users = [p for p in history.probes if p.startswith(LOCUST_PROBE_PREFIX)]
        samples = [s for p in users for s in history.samples(p)]
        return rc.availability(samples, window=window, min_ratio=min_ratio)

    def health_probe(self) -> str:
        """The name of the probe on the target's health path (the step fails without one)."""
        name = f"GET {self.target.entrypoint.health_path}"
        self.probe(name)
        return name

    def traffic_moved(self, survivors: Sequence[str]) -> Verdict:
        """From the load balancer's detection time after the fault began, every answer of the
        HTTP probe came from one of `survivors`."""
        window = self.fault_window()
        probe = next((p for p in self.probes if p.startswith("GET ")), None)
        if probe is None:
            pytest.fail("no HTTP load runs in this scenario", pytrace=False)
        lb = self.target.load_balancer
        assert lb is not None  # the step needs the role
        return rc.traffic_moved_to(
            self.samples(probe), window=window, survivor=survivors, within_sec=lb.detection_sec
        )

    # -- the network between zones ----------------------------------------------------------

    def heal_start(self) -> float:
        """When the heal of the scenario's (last) fault began; the step fails when it has not."""
        start = self.fault_start()
        heals = [
            e.at for e in self.history().fault_events if e.phase == "heal-start" and e.at >= start
        ]
        if not heals:
            pytest.fail("no fault was healed yet in this scenario", pytrace=False)
        return max(heals)

    def _egress(self, zone: str) -> tuple[Any, list[Sample]]:
        from gameday.probes.egress import probe_name

        probe = self.probe(probe_name(zone))
        return probe, self.samples(probe_name(zone))

    def egress_lost(self, zone: str, within_sec: float) -> Verdict:
        """The zone's egress failed within `within_sec` of the fault and stayed lost until the
        heal (or until now)."""
        from gameday.checks.network import egress_lost

        start = self.fault_start()
        probe, samples = self._egress(zone)
        heals = [e.at for e in self.history().fault_events if e.phase == "heal-start"]
        end = min((t for t in heals if t >= start), default=self.run.clock.now())
        return egress_lost(
            samples, zone=zone, fault_start=start, took_hold=self.in_effect_at(start), end=end,
            within_sec=within_sec, until=probe.settled_until(), judged_from=probe.judged_from,
        )  # fmt: skip

    def egress_kept(self, zone: str) -> Verdict:
        from gameday.checks.network import egress_kept

        probe, samples = self._egress(zone)
        return egress_kept(
            samples, zone=zone, window=self.fault_window(), until=probe.settled_until(),
            judged_from=probe.judged_from,
        )  # fmt: skip

    def egress_back(self, zone: str, within_sec: float) -> Verdict:
        """Wait (bounded) until the zone's egress answers again after the heal began."""
        from gameday.checks.network import egress_back

        healed = self.heal_start()
        probe, _ = self._egress(zone)

        def judge() -> Verdict:
            return egress_back(
                self.samples(probe.name), zone=zone, heal_start=healed, within_sec=within_sec,
                until=probe.settled_until(), judged_from=probe.judged_from,
            )  # fmt: skip

        return self.wait_for(
            judge, deadline=healed + within_sec + RECOVERY_GRACE_SEC + probe.timeout_sec,
            waiting_for=f"egress of zone {zone}",
        )  # fmt: skip

    def no_other_zone(self) -> Verdict:
        """The verdict when a scenario judges "the other zones" and the fault hit them all."""
        zones = ", ".join(self.target.egress_zones()) or "none"
        return failed("egress_kept", f"no zone was left out of the fault to judge (zones: {zones})")

    def own_nat_per_zone(self) -> Verdict:
        """Before the fault (or so far, without one), each zone left through its own address."""
        from gameday.checks.network import own_nat_per_zone

        faults = [e.at for e in self.history().fault_events if e.phase == "inject-start"]
        probes = {z: self._egress(z)[0] for z in self.target.egress_zones()}
        judged_from = next(iter(probes.values())).judged_from if probes else None
        return own_nat_per_zone(
            {zone: self.samples(probe.name) for zone, probe in probes.items()},
            before=min(faults) if faults else None,
            judged_from=judged_from,
        )

    def one_writer_at_a_time(self, role: str) -> Verdict:
        from gameday.checks.network import one_writer_at_a_time
        from gameday.probes.writable import PROBE_NAMES

        probe = self.probe(PROBE_NAMES[role])
        return one_writer_at_a_time(
            self.samples(PROBE_NAMES[role]), store=role, window=self.fault_window(),
            until=probe.settled_until(),  # type: ignore[attr-defined]
        )  # fmt: skip

    def cache_writes_survived(self, writes: Sequence[CacheWrite], grace_sec: float) -> Verdict:
        from gameday.checks.cache import writes_survive_restart
        from gameday.probes.cache_keys import keys_present

        assert self.target.cache is not None
        present = keys_present(self.target.cache.url, [w.key for w in writes])
        return writes_survive_restart(
            writes, present, restart_at=self.fault_start(), grace_sec=grace_sec
        )
