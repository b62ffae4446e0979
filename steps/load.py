"""Steps that put load on the target: probes and locust users for the rest of the scenario,
and locust runs compared with a recorded baseline.

Every load a scenario asks for is added up and checked against the target's `load:` caps
before it starts (the engine's `Scenario.reserve`): the first step past them fails with one
line and starts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from pytest_bdd import given, parsers, then

from gameday import baseline as bl
from gameday import load
from gameday.needs import App, Check, Role, needs
from gameday.scenario import Scenario
from gameday.target import Target


def _no_baseline(target: Target, args: Mapping[str, object]) -> str | None:
    path = bl.baseline_path(target.name)
    if path.exists():
        return None
    return (
        f"no load baseline {path}: record one with `gameday baseline record --target "
        f"{target.name} --users N --spawn-rate N --duration S`"
    )


def _not_reference_shop(target: Target, args: Mapping[str, object]) -> str | None:
    """The locust journeys (loadtests/locustfile.py) speak the reference CloudMart API."""
    return load.journeys_refusal(target)


SHOP_USERS = Check(_not_reference_shop)


@given(parsers.parse('a steady load of {rate:d} requests per second on "{path}"'))
def steady_load(scenario: Scenario, rate: int, path: str) -> None:
    scenario.start_http(path, rate)


@given(parsers.parse("a steady load of {rate:d} requests per second on the health path"))
def steady_health_load(scenario: Scenario, rate: int) -> None:
    scenario.start_http(scenario.target.entrypoint.health_path, rate)


@given(parsers.parse("a writer placing {rate:d} orders per second through the entrypoint"))
@given(parsers.parse("a writer committing {rate:d} orders per second"))
@needs(App("orders"))
def orders_writer(scenario: Scenario, rate: int) -> None:
    scenario.start_writer("orders", rate)


@given(parsers.parse("a writer committing {rate:d} rows per second to the database"))
@needs(Role("database"))
def ledger_writer(scenario: Scenario, rate: int) -> None:
    scenario.start_writer("ledger", rate)


@given(parsers.parse("a writer setting {rate:d} keys per second in the cache"))
@needs(Role("cache"))
def cache_writer(scenario: Scenario, rate: int) -> None:
    scenario.start_writer("cache", rate)


# -- locust users in the background ------------------------------------------------------


@given(parsers.parse("{users:d} users browsing the shop"))
@needs(SHOP_USERS)
def users_browsing(scenario: Scenario, users: int) -> None:
    scenario.start_users(users, "browsing")


@given(parsers.parse("{users:d} users shopping"))
@needs(SHOP_USERS)
def users_shopping(scenario: Scenario, users: int) -> None:
    scenario.start_users(users, "shopping")


@given(parsers.parse("{users:d} users browsing and shopping"))
@needs(SHOP_USERS)
def users_browsing_and_shopping(scenario: Scenario, users: int) -> None:
    scenario.start_users(users, "all")


# -- a load compared with its baseline -----------------------------------------------------


@given(
    parsers.parse("a load of {users:d} users for {seconds:d} seconds"),
    target_fixture="load_result",
)
@needs(SHOP_USERS)
def load_for(scenario: Scenario, users: int, seconds: int) -> bl.LoadResult:
    return scenario.run_load(users, seconds)


@pytest.fixture
def load_baseline(target: Target) -> bl.Baseline:
    """The target's default baseline (the scenarios needing one skip before they start)."""
    return bl.load_baseline(bl.baseline_path(target.name))


@given("a load baseline for this target")
@needs(Check(_no_baseline))
def baseline_exists(load_baseline: bl.Baseline) -> None:
    """Skip early, before any load runs, when the target has no baseline to compare with."""


@then(parsers.parse('p{pct:d} latency of "{endpoint}" is within {percent:g}% of the baseline'))
def latency_within_baseline(
    scenario: Scenario,
    load_baseline: bl.Baseline,
    load_result: bl.LoadResult,
    pct: int,
    endpoint: str,
    percent: float,
) -> None:
    users = scenario.planned_users
    scenario.judge(
        bl.judge_metric(load_baseline, load_result, endpoint, f"p{pct}", percent, users=users)
    )


@then(parsers.parse("throughput is within {percent:g}% of the baseline"))
def throughput_within_baseline(
    scenario: Scenario, load_baseline: bl.Baseline, load_result: bl.LoadResult, percent: float
) -> None:
    users = scenario.planned_users
    scenario.judge(
        bl.judge_metric(load_baseline, load_result, bl.TOTAL, "rps", percent, users=users)
    )


@then(parsers.parse("at most {percent:g}% of the load's requests failed"))
def load_failures_at_most(scenario: Scenario, load_result: bl.LoadResult, percent: float) -> None:
    scenario.judge(bl.failure_ratio_at_most(load_result, percent / 100))
