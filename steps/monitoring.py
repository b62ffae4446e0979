"""Steps about the deployment's monitoring: the alert fires, reaches its receiver, resolves;
no alert fires in the steady state; an unexpected alert stops the game day.

The alerts are read from the target's `monitoring:` role (Alertmanager, or CloudWatch alarms
on AWS) by the engine (gameday/monitoring.py), which puts every state change on the run's
timeline; each step waits (bounded) and judges those marks.
"""

from __future__ import annotations

import pytest
from pytest_bdd import given, parsers, then

from chaos.scenario import ScenarioFaults
from gameday.checks import monitoring as mc
from gameday.monitoring import ScenarioAlerts
from gameday.needs import Monitoring, needs
from gameday.scenario import Scenario
from gameday.verdict import Verdict


@pytest.fixture
def alerts(scenario: Scenario) -> ScenarioAlerts:
    """The scenario's alerts, watched from the first step that asks until its end."""
    return ScenarioAlerts(scenario)


@given("no alert is firing")
@needs(Monitoring())
def no_alert_firing(scenario: Scenario, alerts: ScenarioAlerts) -> None:
    scenario.judge(alerts.quiet())


@given(parsers.parse('the game day stops if alert "{name}" fires'))
@needs(Monitoring("alerts", arg="name"))
def stops_on_alert(faults: ScenarioFaults, alerts: ScenarioAlerts, name: str) -> None:
    faults.stop_when(alerts.stop_condition(names=[name]))


@given("the game day stops if any critical alert fires")
@needs(Monitoring("alertmanager"))
def stops_on_critical(faults: ScenarioFaults, alerts: ScenarioAlerts) -> None:
    faults.stop_when(alerts.stop_condition(critical_except=[]))


@given(parsers.parse('the game day stops if a critical alert other than "{name}" fires'))
@needs(Monitoring("alertmanager"))
def stops_on_other_critical(faults: ScenarioFaults, alerts: ScenarioAlerts, name: str) -> None:
    faults.stop_when(alerts.stop_condition(critical_except=[name]))


@then(
    parsers.parse('the alert "{name}" fires within {seconds:g} seconds'),
    target_fixture="detection",
)
@needs(Monitoring("alerts", arg="name"))
def alert_fires(scenario: Scenario, alerts: ScenarioAlerts, name: str, seconds: float) -> Verdict:
    return judged(scenario, alerts.fired(name, seconds))


@then("it reaches the receiver")
@needs(Monitoring("receiver"))
def reaches_receiver(scenario: Scenario, alerts: ScenarioAlerts, detection: Verdict) -> None:
    scenario.judge(alerts.delivered(detection))


@then(parsers.parse("it reaches the receiver within {seconds:g} seconds"))
@needs(Monitoring("receiver"))
def reaches_receiver_within(
    scenario: Scenario, alerts: ScenarioAlerts, detection: Verdict, seconds: float
) -> None:
    scenario.judge(alerts.delivered(detection, seconds))


@then(parsers.parse("it resolves within {seconds:g} seconds after the heal"))
def resolves_after_heal(
    scenario: Scenario,
    faults: ScenarioFaults,
    alerts: ScenarioAlerts,
    detection: Verdict,
    seconds: float,
) -> None:
    scenario.judge(alerts.resolved(detection, seconds, heal=faults.heal_now))


@then(parsers.parse("the time to detect is under {seconds:g} seconds"))
def detected_in_time(scenario: Scenario, detection: Verdict, seconds: float) -> None:
    scenario.judge(mc.time_to_detect_under(detection, seconds))


@then("no alert fires during the steady state")
@needs(Monitoring())
def no_alert_in_steady_state(scenario: Scenario, alerts: ScenarioAlerts) -> None:
    scenario.judge(alerts.silent())


@then(parsers.parse('no alert other than "{name}" fires during the steady state'))
@needs(Monitoring())
def only_alert_in_steady_state(scenario: Scenario, alerts: ScenarioAlerts, name: str) -> None:
    scenario.judge(alerts.silent(allowed=[name]))


@then(parsers.parse('the game day is stopped within {seconds:g} second of "{name}" arriving'))
@then(parsers.parse('the game day is stopped within {seconds:g} seconds of "{name}" arriving'))
def stopped_by_alert(scenario: Scenario, alerts: ScenarioAlerts, name: str, seconds: float) -> None:
    scenario.judge(alerts.stopped(name, seconds), of_the_stop=True)


def judged(scenario: Scenario, verdict: Verdict) -> Verdict:
    """Judge the verdict and hand it on to the steps that follow ("it reaches...")."""
    scenario.judge(verdict)
    return verdict
