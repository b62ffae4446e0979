"""Steps about the deployment as a whole: the entrypoint and the load balancer."""

from __future__ import annotations

from collections import Counter

from pytest_bdd import given, parsers, then, when

from gameday import checks, facts
from gameday.facts import HttpAnswer
from gameday.target import LoadBalancer, Server, Target


@when("I request the health path through the entrypoint", target_fixture="health_answer")
def request_health(target: Target) -> HttpAnswer:
    return facts.health(target)


@then(parsers.parse("it answers {status:d}"))
def answers(health_answer: HttpAnswer, status: int) -> None:
    verdict = checks.entrypoint_healthy(health_answer, status)
    assert verdict.ok, verdict.message


@when(
    parsers.parse("I send {count:d} health checks through the entrypoint"),
    target_fixture="rotation",
)
def send_health_checks(target: Target, servers: list[Server], count: int) -> Counter[str]:
    answered, _ = facts.rotation_sample(target, count)
    return answered


@then("every server of the target answered some of them")
def every_server_answered(servers: list[Server], rotation: Counter[str]) -> None:
    verdict = checks.all_servers_in_rotation([s.name for s in servers], rotation, None)
    assert verdict.ok, verdict.message


@then("the load balancer reports every server UP")
def lb_reports_up(
    servers: list[Server], load_balancer: LoadBalancer, rotation: Counter[str]
) -> None:
    states = facts.lb_backend_states(load_balancer)
    verdict = checks.all_servers_in_rotation([s.name for s in servers], rotation, states)
    assert verdict.ok, verdict.message


@given("the deployment is healthy")
def deployment_healthy(target: Target) -> None:
    """The steady state a fault starts from: refuse to break an unhealthy deployment."""
    verdict = checks.entrypoint_healthy(facts.health(target))
    assert verdict.ok, f"refusing to start: {verdict.message}"
    if target.servers:
        answered, _ = facts.rotation_sample(target, 4 * len(target.servers))
        states = facts.lb_backend_states(target.load_balancer) if target.load_balancer else None
        verdict = checks.all_servers_in_rotation([s.name for s in target.servers], answered, states)
        assert verdict.ok, f"refusing to start: {verdict.message}"
