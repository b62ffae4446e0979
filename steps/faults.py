"""Steps that break the deployment and judge what users saw.

When-steps name what happens in the user's words ("the database fails over"); the target's
provider decides what that means (pg_auto_failover in the lab, an RDS reboot on AWS). Every
injected fault joins the scenario's fault session, which heals it when the scenario ends,
whatever happened. Then-steps judge the scenario's history with pure checks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from pytest_bdd import given, parsers, then, when

from chaos.base import Fault, FaultError, fault_class
from chaos.journal import Journal, heal_pending
from chaos.runner import (
    AbortCondition,
    ErrorBudget,
    FaultSession,
    TimeLimit,
    install_signal_handlers,
)
from gameday.checks import history as hc
from gameday.checks.cache import CacheWrite, writes_survive_restart
from gameday.history import Mark
from gameday.load import LOCUST_PROBE_PREFIX
from gameday.probes.cache_keys import keys_present, write_keys
from gameday.scenario import Scenario
from gameday.target import Cache, LoadBalancer, Target
from gameday.verdict import Verdict, failed

MAX_HOLD_SEC = 300
# No fault of a game day stays in effect longer than this, whatever the scenario says.
MAX_FAULT_SEC = 300.0
WRITE_PROBES = ("orders", "ledger")


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Before the first destructive scenario: heal what a killed run left, catch SIGTERM."""
    from gameday.pytest_plugin import SESSION_KEY, live_writer

    state = session.config.stash.get(SESSION_KEY, None)
    if state is None or state.target is None or state.run is None or state.dry_run:
        return
    if not any(
        i.get_closest_marker("destructive") and not i.get_closest_marker("skip")
        for i in session.items
    ):
        return
    install_signal_handlers()
    say = live_writer(session.config)
    try:
        healed = heal_pending(state.target, log=say)
    except FaultError as exc:
        pytest.exit(f"undo journal: {exc}", returncode=1)
    if healed:
        say(f"healed {len(healed)} fault(s) an earlier run left behind: {'; '.join(healed)}")


@pytest.fixture
def error_budgets() -> dict[str, int]:
    """Probe name -> failures allowed while a fault is in effect (Given-steps fill it)."""
    return {}


@given(parsers.parse('an error budget of {failures:d} failed requests for the "{probe}" probe'))
def error_budget(error_budgets: dict[str, int], failures: int, probe: str) -> None:
    error_budgets[probe] = failures


@pytest.fixture
def faults(scenario: Scenario) -> Iterator[FaultSession]:
    """The scenario's faults; healed at the end of the scenario, before its probes stop."""
    with FaultSession(log=scenario.say) as session:
        yield session


def _inject(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    name: str,
    budgets: dict[str, int] | None = None,
    **params: str,
) -> None:
    fault: Fault = fault_class(name, target.provider)(target, dict(params))
    # The session holds the fault before it acts: a signal in between cannot orphan it.
    active = faults.inject(
        fault,
        journal=Journal(target),
        run_id=scenario.run.run_id,
        history=scenario.run.writer,
        clock=scenario.run.clock,
        dry_run=scenario.dry_run,
    )
    if scenario.dry_run:
        pytest.skip(f"dry run: would {fault.describe()}")
    scenario.say(f"injected: {fault.describe()}")
    # What the deployment itself reported (AWS's failover events), next to the probes' view.
    for seen in fault.observations:
        at = seen.wall - scenario.run.clock.wall_anchor
        scenario.run.record(Mark(seen.name, at, {"fault": fault.label, **seen.detail}))
    since = scenario.run.clock.now()
    conditions: list[AbortCondition] = [TimeLimit(MAX_FAULT_SEC, scenario.run.clock)]
    for probe, budget in (budgets or {}).items():
        scenario.probe(probe)  # a clear error if the budget names a probe that does not run

        def failures(probe: str = probe) -> int:
            return sum(1 for s in scenario.samples(probe) if not s.ok and s.sent >= since)

        conditions.append(ErrorBudget(failures, budget))
    faults.watch(active, conditions, interval_sec=0.5)


# -- faults --------------------------------------------------------------------------------


@when("the database fails over")
@when("the RDS instance is rebooted with failover")
def database_fails_over(
    scenario: Scenario, faults: FaultSession, target: Target, error_budgets: dict[str, int]
) -> None:
    _inject(scenario, faults, target, "database-failover", error_budgets)


@when("the database primary crashes")
def database_primary_crashes(
    scenario: Scenario, faults: FaultSession, target: Target, error_budgets: dict[str, int]
) -> None:
    _inject(scenario, faults, target, "database-crash", error_budgets)


@when(parsers.parse('server "{server}" stops'))
def server_stops(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    server: str,
) -> None:
    _inject(scenario, faults, target, "stop-server", error_budgets, server=server, mode="graceful")


@when(parsers.parse('server "{server}" is killed'))
def server_killed(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    server: str,
) -> None:
    _inject(scenario, faults, target, "stop-server", error_budgets, server=server, mode="kill")


@when(parsers.parse('the backend of server "{server}" is killed'))
def backend_killed(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    server: str,
) -> None:
    _inject(scenario, faults, target, "kill-backend", error_budgets, server=server)


@when(parsers.parse('the NAT of zone "{zone}" is disabled'))
def nat_disabled(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    zone: str,
) -> None:
    _inject(scenario, faults, target, "disable-nat", error_budgets, zone=zone)


@when(parsers.parse('the servers of zone "{zone}" stop'))
@when(parsers.parse('the instances of zone "{zone}" are stopped'))
def zone_servers_stop(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    zone: str,
) -> None:
    _inject(scenario, faults, target, "stop-server", error_budgets, zone=zone, mode="graceful")


@when(
    parsers.parse(
        'the instances of zone "{zone}" are stopped and the auto scaling group replaces them'
    )
)
def zone_servers_replaced(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    zone: str,
) -> None:
    _inject(scenario, faults, target, "stop-server", error_budgets, zone=zone, replace="asg")


@when(parsers.parse('zone "{zone}" goes down'))
@when(parsers.parse('availability zone "{zone}" loses power'))
def zone_goes_down(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    zone: str,
) -> None:
    _inject(scenario, faults, target, "zone-outage", error_budgets, zone=zone)


@when("the cache fails over")
@when("the ElastiCache primary fails over")
def cache_fails_over(
    scenario: Scenario, faults: FaultSession, target: Target, error_budgets: dict[str, int]
) -> None:
    _inject(scenario, faults, target, "cache-failover", error_budgets)


@when("the cache master crashes")
def cache_master_crashes(
    scenario: Scenario, faults: FaultSession, target: Target, error_budgets: dict[str, int]
) -> None:
    _inject(scenario, faults, target, "cache-crash", error_budgets)


@when(parsers.parse('server "{server}" is paused'))
def server_paused(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    server: str,
) -> None:
    _inject(scenario, faults, target, "stop-server", error_budgets, server=server, mode="pause")


@when(parsers.parse('the service "{service}" of server "{server}" stops'))
def service_stops(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    service: str,
    server: str,
) -> None:
    _inject(
        scenario, faults, target, "stop-service", error_budgets,
        server=server, service=service, mode="graceful",
    )  # fmt: skip


@when("the cache restarts")
def cache_restarts(
    scenario: Scenario, faults: FaultSession, target: Target, error_budgets: dict[str, int]
) -> None:
    _inject(scenario, faults, target, "cache-restart", error_budgets)


@when(parsers.parse('the fault "{name}" is injected'))
def declared_fault(
    scenario: Scenario,
    faults: FaultSession,
    target: Target,
    error_budgets: dict[str, int],
    name: str,
) -> None:
    if name not in target.faults:
        known = ", ".join(sorted(target.faults)) or "none"
        pytest.skip(f"target {target.name!r} declares no fault {name!r} (declared: {known})")
    _inject(
        scenario, faults, target, "command", error_budgets, **{"label": name, **target.faults[name]}
    )


@when(parsers.parse("{seconds:g} seconds pass"))
@when(parsers.parse("the fault lasts {seconds:g} seconds"))
def fault_lasts(scenario: Scenario, seconds: float) -> None:
    time.sleep(min(seconds, MAX_HOLD_SEC))


# -- judging -------------------------------------------------------------------------------


def judge(scenario: Scenario, verdict: Verdict) -> None:
    """Keep the verdict for the report and assert on it (an aborted fault fails it)."""
    aborts = [e for e in scenario.history().fault_events if e.phase == "abort"]
    if aborts:
        # The deployment broke worse than the scenario allows: that is the verdict.
        reason = aborts[0].detail.get("reason", "an abort condition fired")
        verdict = failed("fault_aborted", f"{aborts[0].fault} was healed early: {reason}")
    scenario.run.judge(scenario.nodeid, scenario.title, verdict)
    assert verdict.ok, verdict.message


def _fault_start(scenario: Scenario) -> float:
    start = scenario.fault_start()
    assert start is not None, "no fault was injected in this scenario"
    return start


def _await_recovery(scenario: Scenario, probe: str, within: float) -> Verdict:
    start = _fault_start(scenario)
    scenario.probe(probe)  # a clear error if the scenario never started it

    def judge() -> Verdict:
        return hc.time_to_recover(scenario.samples(probe), fault_start=start, within_sec=within)

    # Wait past the limit by a little so that N consecutive successes can be seen.
    verdict = scenario.wait_for(
        judge, deadline=start + within + 3.0, waiting_for=f"{probe} to recover"
    )
    recovery = verdict.measured.get("recovery_sec")
    if verdict.ok and isinstance(recovery, int | float):
        # At the recovery moment itself, not when this step noticed it.
        scenario.run.record(
            Mark(
                name="recovered",
                at=start + recovery,
                detail={"probe": probe, "after_sec": f"{recovery:.3f}"},
            )
        )
    return verdict


@then(parsers.parse("writes succeed again within {seconds:g} seconds"))
def writes_recover(scenario: Scenario, seconds: float) -> None:
    writers = [p for p in WRITE_PROBES if p in scenario.probes]
    assert writers, "no writer runs in this scenario (start one with a Given step)"
    for probe in writers:
        judge(scenario, _await_recovery(scenario, probe, seconds))


@then(parsers.parse('"{path}" answers again within {seconds:g} seconds'))
def path_recovers(scenario: Scenario, path: str, seconds: float) -> None:
    judge(scenario, _await_recovery(scenario, f"GET {path}", seconds))


@then(parsers.parse("the cache accepts writes again within {seconds:g} seconds"))
def cache_recovers(scenario: Scenario, seconds: float) -> None:
    judge(scenario, _await_recovery(scenario, "cache", seconds))


@then("no acknowledged write is lost")
def no_write_lost(scenario: Scenario) -> None:
    writers = [p for p in WRITE_PROBES if p in scenario.probes]
    assert writers, "no writer runs in this scenario (start one with a Given step)"
    for probe in writers:
        scenario.probe(probe).read_back()  # type: ignore[attr-defined]
        judge(scenario, hc.lost_writes_in(scenario.history(), probe))


@then(parsers.parse("the cache lost at most {seconds:g} second of acknowledged writes"))
@then(parsers.parse("the cache lost at most {seconds:g} seconds of acknowledged writes"))
def cache_loss_bounded(scenario: Scenario, seconds: float) -> None:
    probe = scenario.probe("cache")
    probe.read_back()  # type: ignore[attr-defined]
    rate = probe.rate  # type: ignore[attr-defined]
    verdict = hc.lost_writes_in(scenario.history(), "cache", max_lost=int(rate * seconds))
    judge(scenario, verdict)


@given(
    parsers.parse("keys written to the cache for {seconds:g} seconds"),
    target_fixture="cache_writes",
)
def keys_written(scenario: Scenario, cache: Cache, seconds: float) -> list[CacheWrite]:
    """Timestamped SETs, one after another; judged against a restart by the step below."""
    if scenario.dry_run:
        return []
    return write_keys(cache.url, seconds=min(seconds, MAX_HOLD_SEC), clock=scenario.run.clock)


@then(
    parsers.parse(
        "every cache write acknowledged more than {grace:g} second before the restart survived"
    )
)
@then(
    parsers.parse(
        "every cache write acknowledged more than {grace:g} seconds before the restart survived"
    )
)
def cache_writes_survived(
    scenario: Scenario, cache: Cache, cache_writes: list[CacheWrite], grace: float
) -> None:
    present = keys_present(cache.url, [w.key for w in cache_writes])
    verdict = writes_survive_restart(
        cache_writes, present, restart_at=_fault_start(scenario), grace_sec=grace
    )
    judge(scenario, verdict)


@then(parsers.parse('"{path}" answered at least {percent:g}% of requests during the fault'))
def available_during_fault(scenario: Scenario, path: str, percent: float) -> None:
    window = scenario.fault_window()
    assert window is not None, "no fault was injected in this scenario"
    verdict = hc.availability(
        scenario.samples(f"GET {path}"), window=window, min_ratio=percent / 100
    )
    judge(scenario, verdict)


@then(parsers.parse("at least {percent:g}% of the users' requests succeeded during the fault"))
def users_served_during_fault(scenario: Scenario, percent: float) -> None:
    window = scenario.fault_window()
    assert window is not None, "no fault was injected in this scenario"
    users = scenario.probe("locust")  # a clear error if no users run in this scenario
    users.settle()  # type: ignore[attr-defined]
    samples = [s for s in scenario.history().samples() if s.probe.startswith(LOCUST_PROBE_PREFIX)]
    judge(scenario, hc.availability(samples, window=window, min_ratio=percent / 100))


@then(
    parsers.parse(
        'all traffic moves to server "{server}" within the load balancer\'s detection time'
    )
)
def traffic_moves(scenario: Scenario, load_balancer: LoadBalancer, server: str) -> None:
    window = scenario.fault_window()
    assert window is not None, "no fault was injected in this scenario"
    probe = next((p for p in scenario.probes if p.startswith("GET ")), None)
    assert probe is not None, "no HTTP load runs in this scenario"
    verdict = hc.traffic_moved_to(
        scenario.samples(probe), window=window, survivor=server,
        within_sec=load_balancer.detection_sec,
    )  # fmt: skip
    judge(scenario, verdict)
