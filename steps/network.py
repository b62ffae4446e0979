"""Steps about the network between zones: each zone's way to the internet, and which nodes of
the data stores take writes while the zones are split.

Given-steps start the probes (`egress <zone>` per zone; `writable database` and `writable
cache`, asking every node directly); Then-steps judge them. The faults themselves (a NAT
disabled, a zone down, the zones partitioned) are steps/faults.py's.
"""

from __future__ import annotations

from pytest_bdd import given, parsers, then

from chaos.scenario import ScenarioFaults
from gameday.needs import Egress, Nodes, needs
from gameday.scenario import Scenario


@given(parsers.parse("egress is probed from every zone {rate:d} times a second"))
@needs(Egress())
def egress_probed(scenario: Scenario, rate: int) -> None:
    scenario.start_egress(rate)


@given(
    parsers.parse("every database node and cache node is asked for writes {rate:d} times a second")
)
@needs(Nodes("database"), Nodes("cache"))
def nodes_asked_for_writes(scenario: Scenario, rate: int) -> None:
    scenario.start_writable(["database", "cache"], rate)


@then("each zone reaches the internet through a NAT of its own")
@needs(Egress())
def own_nat_per_zone(scenario: Scenario) -> None:
    scenario.judge(scenario.own_nat_per_zone())


@then(parsers.parse('zone "{zone}" lost egress within {seconds:g} seconds of the fault'))
@needs(Egress(arg="zone"))
def zone_lost_egress(scenario: Scenario, zone: str, seconds: float) -> None:
    scenario.judge(scenario.egress_lost(zone, seconds))


@then(parsers.parse('zone "{zone}" never lost egress during the fault'))
@needs(Egress(arg="zone"))
def zone_kept_egress(scenario: Scenario, zone: str) -> None:
    scenario.judge(scenario.egress_kept(zone))


@then("the other zones never lost egress during the fault")
@needs(Egress())
def other_zones_kept_egress(scenario: Scenario, faults: ScenarioFaults) -> None:
    hit = faults.zones_hit()
    others = [z for z in scenario.target.egress_zones() if z not in hit]
    scenario.judge_all([scenario.egress_kept(z) for z in others] or [scenario.no_other_zone()])


@then(parsers.parse('zone "{zone}" has egress again within {seconds:g} seconds of the heal'))
@needs(Egress(arg="zone"))
def zone_egress_back(scenario: Scenario, zone: str, seconds: float) -> None:
    scenario.judge(scenario.egress_back(zone, seconds))


@then("at most one database node accepted writes at a time during the fault")
@needs(Nodes("database"))
def one_database_writer(scenario: Scenario) -> None:
    scenario.judge(scenario.one_writer_at_a_time("database"))


@then("at most one cache node accepted writes at a time during the fault")
@needs(Nodes("cache"))
def one_cache_writer(scenario: Scenario) -> None:
    scenario.judge(scenario.one_writer_at_a_time("cache"))


@then("the cache lost no acknowledged write")
def cache_lost_nothing(scenario: Scenario) -> None:
    scenario.judge(scenario.lost_writes("cache"))
