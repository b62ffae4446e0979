"""Steps that put load on the target: probes started for the rest of the scenario."""

from __future__ import annotations

from pytest_bdd import given, parsers

from gameday.probes.http import HttpProbe
from gameday.probes.writes import CacheProbe, LedgerProbe, OrdersProbe, WriteProbe
from gameday.scenario import Scenario
from gameday.target import Cache, Database, Target

# Every probe is bounded even if a scenario forgets to end: at most this long.
MAX_PROBE_SEC = 600


def _start(scenario: Scenario, what: str, make: object) -> None:
    if scenario.dry_run:
        scenario.say(f"dry run: would start {what}")
        return
    scenario.add_probe(make())  # type: ignore[operator]


@given(parsers.parse('a steady load of {rate:d} requests per second on "{path}"'))
def steady_load(scenario: Scenario, target: Target, rate: int, path: str) -> None:
    _start(
        scenario,
        f"GET {path} at {rate}/s",
        lambda: HttpProbe(
            target, path=path, rate=rate, clock=scenario.run.clock, record=scenario.run.record,
            limit=rate * MAX_PROBE_SEC,
        ),
    )  # fmt: skip


def _writer(scenario: Scenario, target: Target, probe: type[WriteProbe], rate: int) -> None:
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
def orders_writer(scenario: Scenario, target: Target, rate: int) -> None:
    _writer(scenario, target, OrdersProbe, rate)


@given(parsers.parse("a writer committing {rate:d} rows per second to the database"))
def ledger_writer(scenario: Scenario, target: Target, database: Database, rate: int) -> None:
    _writer(scenario, target, LedgerProbe, rate)


@given(parsers.parse("a writer setting {rate:d} keys per second in the cache"))
def cache_writer(scenario: Scenario, target: Target, cache: Cache, rate: int) -> None:
    _writer(scenario, target, CacheProbe, rate)
