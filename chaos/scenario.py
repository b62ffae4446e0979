"""The faults of one scenario, bound to its run: what a When-step's fault means on the target,
whether the run may break anything at all, and healing whatever happens.

`ScenarioFaults.inject("database-failover", server=...)`:
1. refuses unless the run has the user's opt-in (`--allow-destructive` or the target's
   `allow_destructive`), whatever the feature's tags say, and unless every injection gate
   agrees (a paused target, another game day holding it: see `INJECTION_GATES`);
2. finds what the name means on this target (chaos.registry: a declared command fault wins
   over the provider's own);
3. injects it through the scenario's FaultSession: journaled before it acts, healed at the
   end of the scenario, on an exception, Ctrl-C or SIGTERM;
4. puts what the deployment itself reported (AWS's failover events) on the timeline, and
   watches abort conditions (a time limit, error budgets, the gates' own conditions) that
   heal it early.

`FaultNeed` is the need a When-step declares (`@needs(FaultNeed("database-failover"))`), so a
target that does not provide the fault skips the scenario before it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType

import pytest

from chaos.base import FaultError, one_line
from chaos.journal import Journal
from chaos.registry import fault_for, provided
from chaos.runner import AbortCondition, ErrorBudget, FaultSession, TimeLimit, heal_pending
from gameday.history import Mark
from gameday.scenario import Scenario
from gameday.target import Target

# No fault of a game day stays in effect longer than this, whatever the scenario says.
MAX_FAULT_SEC = 300.0
WATCH_INTERVAL_SEC = 0.5

#: Called with the target before any fault is injected; raising FaultError (one line) refuses
#: the injection. Other rooms register theirs (the game-day lease and kill switch).
INJECTION_GATES: list[Callable[[Target], None]] = []
#: Made per injected fault; each condition heals the fault early when it fires.
ABORT_CONDITIONS: list[Callable[[Target], AbortCondition]] = []


@dataclass(frozen=True)
class FaultNeed:
    """The target must provide fault `name` (built in, or declared under `faults:`); with
    `arg`, the fault the step names in that argument (`the fault "NAME" is injected`)."""

    name: str = ""
    arg: str | None = None

    @classmethod
    def of_arg(cls, arg: str) -> FaultNeed:
        return cls(arg=arg)

    def why_not(self, target: Target, args: Mapping[str, object]) -> str | None:
        name = str(args.get(self.arg, "")) if self.arg else self.name
        source, what = provided(target, name)
        return None if source else what


def opt_in_refusal(scenario: Scenario) -> str | None:
    """Why this run may not inject a fault at all, or None when it may."""
    if scenario.run.allow_destructive or scenario.dry_run:
        return None
    return (
        f"refusing to inject a fault into {scenario.target.source}: the run has no opt-in "
        f"(pass --allow-destructive or set allow_destructive: true in {scenario.target.source}; "
        "tag the scenario @destructive)"
    )


class ScenarioFaults:
    """The faults of one scenario: injected by its When-steps, healed when it ends."""

    def __init__(self, scenario: Scenario, *, healed_before: Callable[[], None]) -> None:
        self.scenario = scenario
        self.target = scenario.target
        self.session = FaultSession(log=scenario.say)
        #: probe name -> failures allowed while a fault is in effect
        self.budgets: dict[str, int] = {}
        #: the scenario's own stop conditions (an alert that must not fire...), watched while
        #: each of its faults is in effect
        self.conditions: list[AbortCondition] = []
        self._healed_before = healed_before

    def __enter__(self) -> ScenarioFaults:
        self.session.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.session.__exit__(exc_type, exc, tb)

    def servers_left(self) -> list[str]:
        """The target's servers that no fault of this scenario took down (by its `server`
        parameter): where traffic must go."""
        down = {a.fault.params.get("server") for a in self.session.active}
        return [s.name for s in self.target.servers if s.name not in down]

    def zones_hit(self) -> list[str]:
        """The zones the scenario's faults were aimed at (their `zone` and `peer` parameters)."""
        hit = {a.fault.params.get(key, "") for a in self.session.active for key in ("zone", "peer")}
        return sorted(z for z in hit if z)

    def heal(self) -> None:
        """Heal every fault of the scenario now ("the fault is healed"), each recorded like any
        heal, so the Then-steps can judge what came after it; the scenario's end heals
        nothing twice."""
        self.session.heal_all()

    def budget(self, probe: str, failures: int) -> None:
        """At most `failures` failed samples of `probe` while a fault is in effect."""
        self.budgets[probe] = failures

    def stop_when(self, condition: AbortCondition) -> None:
        """Heal every fault of the scenario early (its watchdog's abort) when `condition`
        fires, like a FIS stop condition on a CloudWatch alarm."""
        self.conditions.append(condition)

    def heal_now(self) -> None:
        """Heal the scenario's faults now, before its end (a Then-step that judges what
        happens after the heal); the end of the scenario then has nothing left to heal."""
        self.session.heal_all()

    def inject(self, name: str, **params: str) -> None:
        """Inject the target's fault `name` with the step's `params`; see the module doc."""
        scenario = self.scenario
        refusal = opt_in_refusal(scenario)
        if refusal:
            pytest.fail(refusal, pytrace=False)
        refused_now = ""
        try:
            for gate in INJECTION_GATES:
                try:
                    gate(self.target)
                except FaultError as exc:
                    if not scenario.dry_run:
                        raise
                    # A dry run injects nothing: it says what it would do, and that a real
                    # run would be refused now (a paused target, another game day holding it).
                    refused_now = f" (a real run would be refused now: {one_line(exc)})"
                    break
            fault = fault_for(self.target, name, params)
            if not scenario.dry_run:
                self._healed_before()
            # The session holds the fault before it acts: a signal in between cannot orphan it.
            active = self.session.inject(
                fault,
                journal=Journal(self.target),
                run_id=scenario.run.run_id,
                history=scenario.run.writer,
                clock=scenario.run.clock,
                dry_run=scenario.dry_run,
            )
        except FaultError as exc:
            pytest.fail(f"{name}: {one_line(exc)}", pytrace=False)
        if scenario.dry_run:
            pytest.skip(f"dry run: would {fault.describe()}{refused_now}")
        scenario.say(f"injected: {fault.describe()}")
        for seen in fault.observations:
            at = seen.wall - scenario.run.clock.wall_anchor
            scenario.run.record(Mark(seen.name, at, {"fault": fault.label, **seen.detail}))
        since = scenario.run.clock.now()
        conditions: list[AbortCondition] = [TimeLimit(MAX_FAULT_SEC, scenario.run.clock)]
        for probe, allowed in self.budgets.items():
            scenario.probe(probe)  # the step fails, naming the probes, if it does not run

            def failures(probe: str = probe) -> int:
                # A bisection of the probe's failure times, kept as samples arrive: polled
                # every WATCH_INTERVAL_SEC, it must not grow with the run's records.
                return scenario.failures(probe, since=since)

            conditions.append(ErrorBudget(failures, allowed))
        conditions += [make(self.target) for make in ABORT_CONDITIONS]
        conditions += self.conditions
        self.session.watch(active, conditions, interval_sec=WATCH_INTERVAL_SEC)


class PendingHeal:
    """Heals, once per run, what the undo journal of the target's deployment holds from a
    run that was killed: before the first fault of this run, or at its start."""

    def __init__(self, target: Target, say: Callable[[str], None]) -> None:
        self.target = target
        self.say = say
        self.done = False

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            healed = heal_pending(self.target, log=self.say)
        except FaultError as exc:
            pytest.exit(f"undo journal: {one_line(exc)}", returncode=1)
        if healed:
            self.say(
                f"healed {len(healed)} fault(s) an earlier run left behind: {'; '.join(healed)}"
            )
