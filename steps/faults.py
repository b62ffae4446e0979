"""Steps that break the deployment and judge what users saw.

When-steps name what happens in the user's words ("the database fails over"); the target
decides what that means (its declared command fault, else its provider's: pg_auto_failover
in the lab, an RDS reboot on AWS). Each step declares the fault it needs, so a target without
it skips the scenario before it starts. Then-steps judge the scenario's history.
"""

from __future__ import annotations

from pytest_bdd import given, parsers, then, when

from chaos.scenario import FaultNeed, ScenarioFaults
from gameday.checks.cache import CacheWrite
from gameday.needs import ORDINALS, NthServer, Role, Servers, Zone, needs, nth_server
from gameday.scenario import Scenario

# "the first server", "the last server": servers of any deployment by their place.
ORDINAL = "|".join(ORDINALS)

# -- abort conditions ----------------------------------------------------------------------


@given(parsers.parse('an error budget of {failures:d} failed requests for the "{probe}" probe'))
def error_budget(faults: ScenarioFaults, failures: int, probe: str) -> None:
    faults.budget(probe, failures)


# -- faults --------------------------------------------------------------------------------


@when("the database fails over")
@when("the RDS instance is rebooted with failover")
@needs(FaultNeed("database-failover"))
def database_fails_over(faults: ScenarioFaults) -> None:
    faults.inject("database-failover")


@when("the database primary crashes")
@needs(FaultNeed("database-crash"))
def database_primary_crashes(faults: ScenarioFaults) -> None:
    faults.inject("database-crash")


@when(parsers.parse('server "{server}" stops'))
@needs(FaultNeed("stop-server"), Servers(arg="server"))
def server_stops(faults: ScenarioFaults, server: str) -> None:
    faults.inject("stop-server", server=server, mode="graceful")


@when(parsers.parse('server "{server}" is killed'))
@needs(FaultNeed("stop-server"), Servers(arg="server"))
def server_killed(faults: ScenarioFaults, server: str) -> None:
    faults.inject("stop-server", server=server, mode="kill")


@when(parsers.parse('server "{server}" is paused'))
@needs(FaultNeed("stop-server"), Servers(arg="server"))
def server_paused(faults: ScenarioFaults, server: str) -> None:
    faults.inject("stop-server", server=server, mode="pause")


@when(parsers.re(rf"the (?P<ordinal>{ORDINAL}) server stops"))
@needs(FaultNeed("stop-server"), NthServer())
def nth_server_stops(scenario: Scenario, faults: ScenarioFaults, ordinal: str) -> None:
    faults.inject("stop-server", server=_nth(scenario, ordinal), mode="graceful")


@when(parsers.re(rf"the (?P<ordinal>{ORDINAL}) server is killed"))
@needs(FaultNeed("stop-server"), NthServer())
def nth_server_killed(scenario: Scenario, faults: ScenarioFaults, ordinal: str) -> None:
    faults.inject("stop-server", server=_nth(scenario, ordinal), mode="kill")


@when(parsers.re(rf"the backend of the (?P<ordinal>{ORDINAL}) server is killed"))
@needs(FaultNeed("kill-backend"), NthServer())
def nth_backend_killed(scenario: Scenario, faults: ScenarioFaults, ordinal: str) -> None:
    faults.inject("kill-backend", server=_nth(scenario, ordinal))


def _nth(scenario: Scenario, ordinal: str) -> str:
    name = nth_server(scenario.target, ordinal)
    assert name is not None  # the step's need says so before the scenario starts
    return name


@when(parsers.parse('the backend of server "{server}" is killed'))
@needs(FaultNeed("kill-backend"), Servers(arg="server"))
def backend_killed(faults: ScenarioFaults, server: str) -> None:
    faults.inject("kill-backend", server=server)


@when(parsers.parse('the service "{service}" of server "{server}" stops'))
@needs(FaultNeed("stop-service"), Servers(arg="server"))
def service_stops(faults: ScenarioFaults, service: str, server: str) -> None:
    faults.inject("stop-service", server=server, service=service, mode="graceful")


@when(parsers.parse('the NAT of zone "{zone}" is disabled'))
@needs(FaultNeed("disable-nat"), Zone())
def nat_disabled(faults: ScenarioFaults, zone: str) -> None:
    faults.inject("disable-nat", zone=zone)


@when(parsers.parse('the servers of zone "{zone}" stop'))
@when(parsers.parse('the instances of zone "{zone}" are stopped'))
@needs(FaultNeed("stop-server"), Zone())
def zone_servers_stop(faults: ScenarioFaults, zone: str) -> None:
    faults.inject("stop-server", zone=zone, mode="graceful")


@when(
    parsers.parse(
        'the instances of zone "{zone}" are stopped and the auto scaling group replaces them'
    )
)
@needs(FaultNeed("stop-server"), Zone())
def zone_servers_replaced(faults: ScenarioFaults, zone: str) -> None:
    faults.inject("stop-server", zone=zone, replace="asg")


@when(parsers.parse('zone "{zone}" goes down'))
@when(parsers.parse('availability zone "{zone}" loses power'))
@needs(FaultNeed("zone-outage"), Zone())
def zone_goes_down(faults: ScenarioFaults, zone: str) -> None:
    faults.inject("zone-outage", zone=zone)


@when(parsers.parse('zones "{zone}" and "{peer}" are partitioned'))
@when(parsers.parse('zone "{zone}" is cut off from zone "{peer}"'))
@needs(FaultNeed("zone-partition"), Zone(), Zone("peer"))
def zones_partitioned(faults: ScenarioFaults, zone: str, peer: str) -> None:
    faults.inject("zone-partition", zone=zone, peer=peer)


@when("the cache fails over")
@when("the ElastiCache primary fails over")
@needs(FaultNeed("cache-failover"))
def cache_fails_over(faults: ScenarioFaults) -> None:
    faults.inject("cache-failover")


@when("the cache master crashes")
@needs(FaultNeed("cache-crash"))
def cache_master_crashes(faults: ScenarioFaults) -> None:
    faults.inject("cache-crash")


@when("the cache restarts")
@needs(FaultNeed("cache-restart"))
def cache_restarts(faults: ScenarioFaults) -> None:
    faults.inject("cache-restart")


# -- resources: what the resource alert rules watch (bounded by the target's `stress:`) -------


@when(parsers.parse('the CPU of server "{server}" is stressed'))
@needs(FaultNeed("cpu-stress"), Servers(arg="server"))
def cpu_stressed(faults: ScenarioFaults, server: str) -> None:
    faults.inject("cpu-stress", server=server)


@when(parsers.re(rf"the CPU of the (?P<ordinal>{ORDINAL}) server is stressed"))
@needs(FaultNeed("cpu-stress"), NthServer(count=1))
def nth_cpu_stressed(scenario: Scenario, faults: ScenarioFaults, ordinal: str) -> None:
    faults.inject("cpu-stress", server=_nth(scenario, ordinal))


@when(parsers.parse('the memory of server "{server}" is filled to {percent:g}%'))
@needs(FaultNeed("memory-pressure"), Servers(arg="server"))
def memory_filled(faults: ScenarioFaults, server: str, percent: float) -> None:
    faults.inject("memory-pressure", server=server, percent=f"{percent:g}")


@when(
    parsers.re(rf"the memory of the (?P<ordinal>{ORDINAL}) server is filled to (?P<pct>[0-9.]+)%")
)
@needs(FaultNeed("memory-pressure"), NthServer(count=1))
def nth_memory_filled(scenario: Scenario, faults: ScenarioFaults, ordinal: str, pct: str) -> None:
    faults.inject("memory-pressure", server=_nth(scenario, ordinal), percent=pct)


@when(parsers.parse('the disk of server "{server}" is filled to {percent:g}%'))
@needs(FaultNeed("disk-fill"), Servers(arg="server"))
def disk_filled(faults: ScenarioFaults, server: str, percent: float) -> None:
    faults.inject("disk-fill", server=server, percent=f"{percent:g}")


@when(parsers.re(rf"the disk of the (?P<ordinal>{ORDINAL}) server is filled to (?P<pct>[0-9.]+)%"))
@needs(FaultNeed("disk-fill"), NthServer(count=1))
def nth_disk_filled(scenario: Scenario, faults: ScenarioFaults, ordinal: str, pct: str) -> None:
    faults.inject("disk-fill", server=_nth(scenario, ordinal), percent=pct)


@when(parsers.parse('the fault "{name}" is injected'))
@needs(FaultNeed.of_arg("name"))
def declared_fault(faults: ScenarioFaults, name: str) -> None:
    faults.inject(name)


@when("the fault is healed")
def fault_healed(faults: ScenarioFaults) -> None:
    faults.heal()


@when(parsers.parse("{seconds:g} seconds pass"))
@when(parsers.parse("the fault lasts {seconds:g} seconds"))
def time_passes(scenario: Scenario, seconds: float) -> None:
    scenario.hold(seconds)


# -- judging -------------------------------------------------------------------------------


@then(parsers.parse("writes succeed again within {seconds:g} seconds"))
def writes_recover(scenario: Scenario, seconds: float) -> None:
    scenario.judge_all(scenario.writes_recovered(seconds))


@then(parsers.parse('"{path}" answers again within {seconds:g} seconds'))
def path_recovers(scenario: Scenario, path: str, seconds: float) -> None:
    scenario.judge(scenario.recovered(f"GET {path}", seconds))


@then(parsers.parse("the health path answers again within {seconds:g} seconds"))
def health_recovers(scenario: Scenario, seconds: float) -> None:
    scenario.judge(scenario.recovered(scenario.health_probe(), seconds))


@then(parsers.parse("the cache accepts writes again within {seconds:g} seconds"))
def cache_recovers(scenario: Scenario, seconds: float) -> None:
    scenario.judge(scenario.recovered("cache", seconds))


@then("no acknowledged write is lost")
def no_write_lost(scenario: Scenario) -> None:
    scenario.judge_all(scenario.no_write_lost())


@then(parsers.parse("the cache lost at most {seconds:g} second of acknowledged writes"))
@then(parsers.parse("the cache lost at most {seconds:g} seconds of acknowledged writes"))
def cache_loss_bounded(scenario: Scenario, seconds: float) -> None:
    scenario.judge(scenario.cache_loss_at_most(seconds))


@given(
    parsers.parse("keys written to the cache for {seconds:g} seconds"),
    target_fixture="cache_writes",
)
@needs(Role("cache"))
def keys_written(scenario: Scenario, seconds: float) -> list[CacheWrite]:
    return scenario.write_cache_keys(seconds)


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
@needs(Role("cache"))
def cache_writes_survived(scenario: Scenario, cache_writes: list[CacheWrite], grace: float) -> None:
    scenario.judge(scenario.cache_writes_survived(cache_writes, grace))


@then(parsers.parse('"{path}" answered at least {percent:g}% of requests during the fault'))
def available_during_fault(scenario: Scenario, path: str, percent: float) -> None:
    scenario.judge(scenario.available_during_fault(f"GET {path}", percent / 100))


@then(parsers.parse("the health path answered at least {percent:g}% of requests during the fault"))
def health_available_during_fault(scenario: Scenario, percent: float) -> None:
    scenario.judge(scenario.available_during_fault(scenario.health_probe(), percent / 100))


@then(parsers.parse("at least {percent:g}% of the users' requests succeeded during the fault"))
def users_served_during_fault(scenario: Scenario, percent: float) -> None:
    scenario.judge(scenario.users_served_during_fault(percent / 100))


@then(
    parsers.parse(
        'all traffic moves to server "{server}" within the load balancer\'s detection time'
    )
)
@needs(Role("load_balancer"), Servers(arg="server"))
def traffic_moves(scenario: Scenario, server: str) -> None:
    scenario.judge(scenario.traffic_moved([server]))


@then("all traffic moves to the other servers within the load balancer's detection time")
@needs(Role("load_balancer"), Servers(count=2))
def traffic_moves_to_others(scenario: Scenario, faults: ScenarioFaults) -> None:
    scenario.judge(scenario.traffic_moved(faults.servers_left()))
