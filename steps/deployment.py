"""Steps about the deployment as a whole: the entrypoint and the load balancer."""

from __future__ import annotations

from pytest_bdd import given, parsers, then, when

from gameday import checks, deployment, facts
from gameday.facts import HttpAnswer
from gameday.needs import LoadBalancerState, Servers, needs
from gameday.scenario import Scenario
from gameday.target import Target


@when("I request the health path through the entrypoint", target_fixture="health_answer")
def request_health(target: Target) -> HttpAnswer:
    return facts.health(target)


@then(parsers.parse("it answers {status:d}"))
def answers(scenario: Scenario, health_answer: HttpAnswer, status: int) -> None:
    scenario.judge(checks.entrypoint_healthy(health_answer, status))


@when(
    parsers.parse("I send {count:d} health checks through the entrypoint"),
    target_fixture="rotation",
)
@needs(Servers())
def send_health_checks(target: Target, count: int) -> facts.Rotation:
    return facts.rotation_sample(target, count)


@then("every server of the target answered some of them")
def every_server_answered(scenario: Scenario, target: Target, rotation: facts.Rotation) -> None:
    scenario.judge(deployment.rotation(target, rotation))


@then("the load balancer reports every server UP")
@needs(LoadBalancerState())
def lb_reports_up(scenario: Scenario, target: Target, rotation: facts.Rotation) -> None:
    scenario.judge(deployment.rotation(target, rotation, lb_state=True))


@given("the deployment is healthy")
def deployment_healthy(scenario: Scenario) -> None:
    """The steady state a fault starts from: refuse to break an unhealthy deployment."""
    scenario.judge_all(scenario.steady_state())
