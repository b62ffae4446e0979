"""CloudWatch alarms as the monitoring of an AWS target, on moto's account: during the AWS
database failover, the alarm named for PostgreSQLDown goes to ALARM and back to OK, and the
monitoring steps judge its state history from CloudWatch's own answers.

moto stores alarms and their states but evaluates no metric: the test stands in for
CloudWatch's evaluation, setting the alarm's state (`set_alarm_state`, the API AWS documents
for testing alarms) while the fault is in the undo journal, and back once it is healed. moto
has no DescribeAlarmHistory: the delivery evidence (alarm actions run) is tested with
botocore's Stubber.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from botocore.stub import Stubber

from chaos.journal import Journal
from chaos.registry import registered
from gameday.monitoring import CloudWatchAlarms
from gameday.target import Target, load_target
from lab.wait import poll_until
from tests.aws.moto_account import Account, target_dict

registered()  # every fault module imported before pytester's inline runs (see test_aws_scenarios)
pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("journal_dir")]
ROOT = Path(__file__).resolve().parents[2]

FEATURE = """\
@resilience @destructive @aws @monitoring
Feature: The database's alarm during an RDS failover
  Scenario: PostgreSQLDown fires during the failover and clears after it
    Given no alert is firing
    When the database fails over
    Then the alert "PostgreSQLDown" fires within 30 seconds
    And it resolves within 30 seconds after the heal

  Scenario: An alarm that never fires fails the step
    Given no alert is firing
    When the database fails over
    Then the alert "RedisDown" fires within 3 seconds
"""


@pytest.fixture
def monitored_target(account: Account, tmp_path: Path) -> Path:
    data = target_dict(account)
    data["monitoring"] = {
        "cloudwatch_alarms": {"PostgreSQLDown": "PostgreSQLDown", "RedisDown": "RedisDown"}
    }
    path = tmp_path / "aws-monitored.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def cloudwatch_evaluates(account: Account, monitored_target: Path) -> Iterator[None]:
    """CloudWatch's evaluation, stood in for: PostgreSQLDown in ALARM while a fault is pending
    in the target's undo journal, OK again once it is healed."""
    target = load_target(str(monitored_target))
    cw = account.client("cloudwatch")
    stop = threading.Event()

    def evaluate() -> None:
        state = "OK"
        while not stop.wait(0.2):
            pending = bool(Journal(target).pending())
            wanted = "ALARM" if pending else "OK"
            if wanted != state:
                cw.set_alarm_state(
                    AlarmName="PostgreSQLDown",
                    StateValue=wanted,
                    StateReason=f"test: fault pending={pending}",
                )
                state = wanted

    thread = threading.Thread(target=evaluate, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=5)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeini((ROOT / "pytest.ini").read_text())
    pytester.makeconftest(
        'pytest_plugins = ["gameday.pytest_plugin", "chaos.pytest_plugin", "steps.faults", '
        '"steps.monitoring"]\n'
    )
    pytester.mkdir("features")
    (pytester.path / "features" / "alarms.feature").write_text(FEATURE)
    monkeypatch.setenv("GAMEDAY_REPORTS_DIR", str(pytester.path / "reports"))
    return pytester


@pytest.mark.usefixtures("rds_fails_over", "cloudwatch_evaluates")
def test_the_alarm_state_history_during_an_rds_failover_is_judged(
    project: pytest.Pytester, monitored_target: Path, account: Account
) -> None:
    result = project.runpytest(
        "features/", "--target", str(monitored_target), "--allow-destructive", "-rs"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*RedisDown did not fire within 3 s of the fault*"])
    [history] = (project.path / "reports").glob("*/history.jsonl")
    text = history.read_text()
    assert '"name":"alert-firing"' in text and '"alert":"PostgreSQLDown"' in text
    assert '"name":"alert-resolved"' in text
    # Back to OK once healed: the stand-in evaluator sees the empty journal on its next poll
    # (0.2 s, longer on a busy machine), which may come after the run has returned.
    cw = account.client("cloudwatch")

    def state() -> str:
        alarm = cw.describe_alarms(AlarmNames=["PostgreSQLDown"])
        return str(alarm["MetricAlarms"][0]["StateValue"])

    poll_until(lambda: state() == "OK", timeout=30)
    assert state() == "OK"


def test_a_step_needing_an_alarm_the_target_does_not_name_is_skipped(
    project: pytest.Pytester, monitored_target: Path
) -> None:
    (project.path / "features" / "alarms.feature").write_text(
        FEATURE.replace('"RedisDown" fires within 3', '"InstanceDown" fires within 3')
    )
    result = project.runpytest("features/", "--target", str(monitored_target), "-rs", "--dry-run")
    result.stdout.fnmatch_lines(
        [
            "*target 'moto-cloudmart' names no CloudWatch alarm for 'InstanceDown' "
            "(monitoring.cloudwatch_alarms)*"
        ]
    )


def test_alarm_states_and_actions_are_read_from_cloudwatchs_answers(
    aws_env: dict[str, str], tmp_path: Path
) -> None:
    raw = {
        "name": "t",
        "provider": "aws",
        "entrypoint": {"url": "http://127.0.0.1:9"},
        "aws": {"region": "ap-northeast-2"},
        "monitoring": {"cloudwatch_alarms": {"PostgreSQLDown": "db-down"}},
    }
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    target: Target = load_target(str(path))
    source = CloudWatchAlarms(target)
    client = source._cloudwatch()
    changed = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with Stubber(client) as stub:
        stub.add_response(
            "describe_alarms",
            {
                "MetricAlarms": [
                    {
                        "AlarmName": "db-down",
                        "StateValue": "ALARM",
                        "StateUpdatedTimestamp": changed,
                    }
                ]
            },
            {"AlarmNames": ["db-down"]},
        )
        stub.add_response(
            "describe_alarm_history",
            {
                "AlarmHistoryItems": [
                    {
                        "AlarmName": "db-down",
                        "Timestamp": changed,
                        "HistoryItemType": "Action",
                        "HistorySummary": "Successfully executed action arn:aws:sns:...:pager",
                    }
                ]
            },
            {"AlarmName": "db-down", "HistoryItemType": "Action", "MaxRecords": 20},
        )
        [alert] = source.firing()
        actions = source.actions_since(changed.timestamp() - 1)
    assert (alert.name, alert.starts_at) == ("PostgreSQLDown", changed.timestamp())
    assert actions == [
        ("db-down", changed.timestamp(), "Successfully executed action arn:aws:sns:...:pager")
    ]
