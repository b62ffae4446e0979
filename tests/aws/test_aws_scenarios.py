"""The provider-neutral When-steps drive the AWS faults: a scenario run with pytest-bdd against
moto's account injects through the journal, the Then-step sees the fault, and the scenario's
end heals it. AWS's own failover events land in the run's history as marks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.registry import registered
from tests.aws.moto_account import ZONE_A, Account

# Every fault module imported now, before pytester's inline runs: those drop the modules a run
# imported, and a fault module imported again would register its faults twice.
registered()

pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("journal_dir")]
ROOT = Path(__file__).resolve().parents[2]

STEPS = """
import boto3
from pytest_bdd import parsers, then
from gameday.target import Target

def _ec2(target):
    return boto3.client("ec2", region_name=target.aws.region, endpoint_url=target.aws.endpoint_url)

@then(parsers.parse('the private route table of zone "{zone}" has no default route'))
def no_default_route(target: Target, zone: str) -> None:
    rtb = target.aws.zones[target.aws.region + zone].private_route_table_ids[0]
    table = _ec2(target).describe_route_tables(RouteTableIds=[rtb])["RouteTables"][0]
    assert not [r for r in table["Routes"] if r["DestinationCidrBlock"] == "0.0.0.0/0"]

@then(parsers.parse('the RDS primary is in zone "{zone}"'))
def rds_primary_in(target: Target, zone: str) -> None:
    rds = boto3.client("rds", region_name=target.aws.region, endpoint_url=target.aws.endpoint_url)
    db = rds.describe_db_instances(DBInstanceIdentifier=target.aws.database.instance_id)
    assert db["DBInstances"][0]["AvailabilityZone"] == target.aws.region + zone
"""

FEATURE = """\
@resilience @destructive @aws
Feature: AWS faults through the neutral steps
  Scenario: The NAT of zone a goes away
    When the NAT of zone "a" is disabled
    Then the private route table of zone "a" has no default route

  Scenario: The database fails over
    When the database fails over
    Then the RDS primary is in zone "c"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.makeini((ROOT / "pytest.ini").read_text())
    pytester.makeconftest(
        'pytest_plugins = ["gameday.pytest_plugin", "chaos.pytest_plugin", "steps.faults", '
        '"steps.aws", "aws_steps"]\n'
    )
    pytester.makepyfile(aws_steps=STEPS)
    pytester.mkdir("features")
    (pytester.path / "features" / "aws.feature").write_text(FEATURE)
    # The run's reports go to ./reports of pytester's own temporary folder.
    monkeypatch.setenv("GAMEDAY_REPORTS_DIR", str(pytester.path / "reports"))
    return pytester


def nat_route(acc: Account) -> str | None:
    table = acc.client("ec2").describe_route_tables(RouteTableIds=[acc.private_tables[ZONE_A]])[
        "RouteTables"
    ][0]
    routes = [r for r in table["Routes"] if r["DestinationCidrBlock"] == "0.0.0.0/0"]
    return routes[0].get("NatGatewayId") if routes else None


def history(project: pytest.Pytester) -> list[dict[str, object]]:
    [path] = (project.path / "reports").glob("*/history.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


@pytest.mark.usefixtures("rds_fails_over")
def test_scenarios_inject_through_the_steps_and_heal_at_their_end(
    project: pytest.Pytester, account: Account, target_path: Path
) -> None:
    result = project.runpytest("features/", "--target", str(target_path), "--allow-destructive")
    result.assert_outcomes(passed=2)
    assert nat_route(account) == account.nats[ZONE_A]  # healed when its scenario ended
    records = history(project)
    phases = [(r["fault"], r["phase"]) for r in records if r.get("kind") == "fault"]
    assert ("NAT disabled", "inject-start") in phases and ("NAT disabled", "heal-end") in phases
    marks = {r["name"]: r for r in records if r.get("kind") == "mark"}
    assert marks["primary-moved"]["detail"] == {
        "fault": "database failover", "from": ZONE_A, "to": f"{ZONE_A[:-1]}c",
    }  # fmt: skip
    assert "aws-failover-completed" in marks


def test_dry_run_scenarios_change_nothing(
    project: pytest.Pytester, account: Account, target_path: Path
) -> None:
    result = project.runpytest("features/", "--target", str(target_path), "--dry-run", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*dry run: would remove the 0.0.0.0/0 routes to nat-*"])
    assert nat_route(account) == account.nats[ZONE_A]
