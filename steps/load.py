"""Steps that put load on the target: probes and locust users for the rest of the scenario,
and locust runs compared with a recorded baseline.

Every load a scenario asks for is added up and checked against the target's `load:` caps
before it starts: the first step past them fails with one line and starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pytest_bdd import given, parsers, then

from gameday import baseline as bl
from gameday import load
from gameday.probes.http import HttpProbe
from gameday.probes.writes import CacheProbe, LedgerProbe, OrdersProbe, WriteProbe
from gameday.scenario import Scenario
from gameday.target import Cache, Database, Target
from steps.faults import judge

# Every probe is bounded even if a scenario forgets to end: at most this long.
MAX_PROBE_SEC = 600
# Background users start within this, or the step fails (locust's start-up is 2-3 s here).
USERS_START_SEC = 30.0


@dataclass
class PlannedLoad:
    """What the scenario's Given-steps asked for so far."""

    users: int = 0
    rps: float = 0.0


@pytest.fixture
def planned_load() -> PlannedLoad:
    return PlannedLoad()


def _reserve(target: Target, planned: PlannedLoad, *, users: int = 0, rps: float = 0.0) -> None:
    users_after = planned.users + users
    rps_after = planned.rps + rps + load.users_ceiling_rps(users)
    try:
        load.check_limits(target, users=users_after, rps=rps_after)
    except load.LoadLimitError as exc:
        pytest.fail(str(exc), pytrace=False)
    planned.users, planned.rps = users_after, rps_after


def _start(scenario: Scenario, what: str, make: object) -> None:
    if scenario.dry_run:
        scenario.say(f"dry run: would start {what}")
        return
    scenario.add_probe(make())  # type: ignore[operator]


@given(parsers.parse('a steady load of {rate:d} requests per second on "{path}"'))
def steady_load(
    scenario: Scenario, target: Target, planned_load: PlannedLoad, rate: int, path: str
) -> None:
    _reserve(target, planned_load, rps=rate)
    _start(
        scenario,
        f"GET {path} at {rate}/s",
        lambda: HttpProbe(
            target, path=path, rate=rate, clock=scenario.run.clock, record=scenario.run.record,
            limit=rate * MAX_PROBE_SEC,
        ),
    )  # fmt: skip


def _writer(
    scenario: Scenario,
    target: Target,
    planned: PlannedLoad,
    probe: type[WriteProbe],
    rate: int,
) -> None:
    _reserve(target, planned, rps=rate)
    _start(
        scenario,
        f"{probe.__name__} at {rate} writes/s",
        lambda: probe(
            target, run_id=scenario.key, rate=rate, clock=scenario.run.clock,
            record=scenario.run.record, limit=rate * MAX_PROBE_SEC,
        ),
    )  # fmt: skip


@given(parsers.parse("a writer placing {rate:d} orders per second through the entrypoint"))
@given(parsers.parse("a writer committing {rate:d} orders per second"))
def orders_writer(scenario: Scenario, target: Target, planned_load: PlannedLoad, rate: int) -> None:
    _writer(scenario, target, planned_load, OrdersProbe, rate)


@given(parsers.parse("a writer committing {rate:d} rows per second to the database"))
def ledger_writer(
    scenario: Scenario, target: Target, planned_load: PlannedLoad, database: Database, rate: int
) -> None:
    _writer(scenario, target, planned_load, LedgerProbe, rate)


@given(parsers.parse("a writer setting {rate:d} keys per second in the cache"))
def cache_writer(
    scenario: Scenario, target: Target, planned_load: PlannedLoad, cache: Cache, rate: int
) -> None:
    _writer(scenario, target, planned_load, CacheProbe, rate)


# -- locust users in the background ------------------------------------------------------


def _users(
    scenario: Scenario, target: Target, planned: PlannedLoad, users: int, journeys: str
) -> None:
    _reserve(target, planned, users=users)
    classes = load.USER_CLASSES[journeys]
    if scenario.dry_run:
        scenario.say(f"dry run: would start {users} locust users ({', '.join(classes)})")
        return
    plan = load.LocustPlan(
        host=target.entrypoint.url, users=users, spawn_rate=users, run_time_sec=MAX_PROBE_SEC,
        folder=scenario.run.folder / f"locust-{scenario.key}", user_classes=classes,
        records=True,
    )  # fmt: skip
    users_load = load.BackgroundLoad(plan, clock=scenario.run.clock, record=scenario.run.record)
    scenario.add_probe(users_load)
    if not users_load.wait_sending(USERS_START_SEC):
        pytest.fail(
            f"locust users sent no request within {USERS_START_SEC:g} s "
            f"(log: {plan.folder}/locust.log)",
            pytrace=False,
        )
    scenario.say(f"{users} locust users ({', '.join(classes)}) are sending requests")


@given(parsers.parse("{users:d} users browsing the shop"))
def users_browsing(
    scenario: Scenario, target: Target, planned_load: PlannedLoad, users: int
) -> None:
    _users(scenario, target, planned_load, users, "browsing")


@given(parsers.parse("{users:d} users shopping"))
def users_shopping(
    scenario: Scenario, target: Target, planned_load: PlannedLoad, users: int
) -> None:
    _users(scenario, target, planned_load, users, "shopping")


@given(parsers.parse("{users:d} users browsing and shopping"))
def users_browsing_and_shopping(
    scenario: Scenario, target: Target, planned_load: PlannedLoad, users: int
) -> None:
    _users(scenario, target, planned_load, users, "all")


# -- a load compared with its baseline -----------------------------------------------------


@given(
    parsers.parse("a load of {users:d} users for {seconds:d} seconds"),
    target_fixture="load_result",
)
def load_for(
    scenario: Scenario, target: Target, planned_load: PlannedLoad, users: int, seconds: int
) -> bl.LoadResult:
    _reserve(target, planned_load, users=users)
    if scenario.dry_run:
        pytest.skip(f"dry run: would run {users} locust users for {seconds} s")
    scenario.say(f"locust: {users} users for {seconds} s")
    try:
        return bl.run_locust(
            target, users=users, spawn_rate=users, duration_sec=seconds,
            workdir=scenario.run.folder / f"load-{scenario.key}",
        )  # fmt: skip
    except bl.BaselineError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def load_baseline(target: Target) -> bl.Baseline:
    """The target's default baseline; scenarios that compare with it skip when there is none."""
    path = bl.baseline_path(target.name)
    if not path.exists():
        pytest.skip(
            f"no load baseline {path}: record one with "
            f"`gameday baseline record --target {target.name} --users N --spawn-rate N "
            "--duration S`"
        )
    return bl.load_baseline(path)


@given("a load baseline for this target")
def baseline_exists(load_baseline: bl.Baseline) -> None:
    """Skip early, before any load runs, when the target has no baseline to compare with."""


@then(parsers.parse('p{pct:d} latency of "{endpoint}" is within {percent:g}% of the baseline'))
def latency_within_baseline(
    scenario: Scenario,
    load_baseline: bl.Baseline,
    load_result: bl.LoadResult,
    planned_load: PlannedLoad,
    pct: int,
    endpoint: str,
    percent: float,
) -> None:
    verdict = bl.judge_metric(
        load_baseline, load_result, endpoint, f"p{pct}", percent, users=planned_load.users
    )
    judge(scenario, verdict)


@then(parsers.parse("throughput is within {percent:g}% of the baseline"))
def throughput_within_baseline(
    scenario: Scenario,
    load_baseline: bl.Baseline,
    load_result: bl.LoadResult,
    planned_load: PlannedLoad,
    percent: float,
) -> None:
    verdict = bl.judge_metric(
        load_baseline, load_result, bl.TOTAL, "rps", percent, users=planned_load.users
    )
    judge(scenario, verdict)


@then(parsers.parse("at most {percent:g}% of the load's requests failed"))
def load_failures_at_most(scenario: Scenario, load_result: bl.LoadResult, percent: float) -> None:
    judge(scenario, bl.failure_ratio_at_most(load_result, percent / 100))
