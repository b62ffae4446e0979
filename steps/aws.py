"""Steps of the AWS acceptance features: read the deployment through the AWS APIs (nothing
is changed) and judge it with the pure checks of `gameday.checks.aws`.

Every step needs the target's `aws:` section and skips, saying so, without it (the lab and the
Docker targets have none); a step about a resource the section does not name skips too.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pytest_bdd import parsers, then, when

from gameday import aws_facts as facts
from gameday.checks import aws as checks
from gameday.needs import Aws as AwsNeed
from gameday.needs import needs
from gameday.scenario import Scenario
from gameday.target import Aws, Target


@pytest.fixture
def aws(target: Target) -> Aws:
    """The target's AWS resources (every scenario here needs them: skipped without)."""
    if target.aws is None:
        pytest.skip(f"target {target.name!r} has no aws section")
    return target.aws


# -- RDS -------------------------------------------------------------------------------------


@when("I read the RDS instance", target_fixture="rds_facts")
@needs(AwsNeed("database.instance_id"))
def read_rds(aws: Aws) -> facts.RdsFacts:
    return facts.rds(aws)


@then("the RDS instance is Multi-AZ")
def rds_multi_az(scenario: Scenario, rds_facts: facts.RdsFacts) -> None:
    scenario.judge(checks.rds_multi_az(rds_facts))


@then("its storage is encrypted")
def rds_encrypted(scenario: Scenario, rds_facts: facts.RdsFacts) -> None:
    scenario.judge(checks.rds_encrypted(rds_facts))


@then("it keeps its backups as long as the target says")
def rds_backups(scenario: Scenario, aws: Aws, rds_facts: facts.RdsFacts) -> None:
    assert aws.database is not None
    scenario.judge(checks.rds_backups_kept(rds_facts, aws.database.min_backup_retention_days))


@then("it is not publicly accessible")
def rds_private(scenario: Scenario, rds_facts: facts.RdsFacts) -> None:
    scenario.judge(checks.rds_not_public(rds_facts))


@then("it runs the engine the target declares")
def rds_engine(scenario: Scenario, aws: Aws, rds_facts: facts.RdsFacts) -> None:
    assert aws.database is not None
    scenario.judge(checks.rds_engine(rds_facts, aws.database.engine, aws.database.engine_version))


# -- network ---------------------------------------------------------------------------------


@when("I read the VPC", target_fixture="network_facts")
@needs(AwsNeed("vpc_id"))
def read_network(aws: Aws) -> facts.NetworkFacts:
    return facts.network(aws)


@pytest.fixture
def lb_subnets(aws: Aws) -> tuple[str, ...]:
    return facts.load_balancer_subnets(aws)


@then(parsers.parse("it has subnets in at least {zones:d} zones"))
def subnets_in_zones(scenario: Scenario, network_facts: facts.NetworkFacts, zones: int) -> None:
    scenario.judge(checks.subnets_in_zones(network_facts, zones))


@then("the public subnets route to an internet gateway")
def public_via_igw(
    scenario: Scenario, network_facts: facts.NetworkFacts, lb_subnets: tuple[str, ...]
) -> None:
    scenario.judge(checks.public_subnets_via_igw(network_facts, lb_subnets))


@then("each private subnet routes through the NAT of its own zone")
def private_via_own_nat(
    scenario: Scenario, network_facts: facts.NetworkFacts, lb_subnets: tuple[str, ...]
) -> None:
    scenario.judge(checks.private_routes_via_own_zone_nat(network_facts, lb_subnets))


@then("no security group opens the database or cache port to the internet")
def ports_closed(scenario: Scenario, aws: Aws, network_facts: facts.NetworkFacts) -> None:
    ports = {
        "database": aws.database.port if aws.database else 5432,
        "cache": aws.cache.port if aws.cache else 6379,
    }
    scenario.judge(checks.ports_closed_to_world(network_facts, ports))


# -- load balancer and auto scaling ------------------------------------------------------------


@when("I read the load balancer's targets", target_fixture="target_facts")
@needs(AwsNeed("target_group_arns"))
def read_targets(aws: Aws) -> tuple[facts.TargetFacts, ...]:
    return facts.targets(aws)


@then("every target is healthy")
def targets_healthy(scenario: Scenario, target_facts: tuple[facts.TargetFacts, ...]) -> None:
    scenario.judge(checks.targets_healthy(target_facts))


@then(parsers.parse("healthy targets are in at least {zones:d} zones"))
def targets_in_zones(
    scenario: Scenario, target_facts: tuple[facts.TargetFacts, ...], zones: int
) -> None:
    scenario.judge(checks.targets_in_zones(target_facts, zones))


@when("I read the auto scaling group", target_fixture="asg_facts")
@needs(AwsNeed("autoscaling_group"))
def read_asg(aws: Aws) -> facts.AsgFacts:
    return facts.autoscaling_group(aws)


@then(parsers.parse("its minimum is at least {size:d} instances over at least {zones:d} zones"))
def asg_spread(scenario: Scenario, asg_facts: facts.AsgFacts, size: int, zones: int) -> None:
    scenario.judge(checks.asg_spread(asg_facts, size, zones))


# -- ElastiCache -------------------------------------------------------------------------------


@when("I read the ElastiCache replication group", target_fixture="cache_facts")
@needs(AwsNeed("cache"))
def read_cache(aws: Aws) -> facts.CacheFacts:
    return facts.cache(aws)


@then("automatic failover and Multi-AZ are on")
def cache_failover_ready(scenario: Scenario, cache_facts: facts.CacheFacts) -> None:
    scenario.judge(checks.cache_failover_ready(cache_facts))


@then("it is encrypted in transit and at rest")
def cache_encrypted(scenario: Scenario, cache_facts: facts.CacheFacts) -> None:
    scenario.judge(checks.cache_encrypted(cache_facts))


# -- backups and alarms ------------------------------------------------------------------------


@when("I list the backups", target_fixture="backup_objects")
@needs(AwsNeed("backups"))
def list_backups(aws: Aws) -> tuple[facts.BackupObject, ...]:
    return facts.backups(aws)


@then("the newest backup is younger than its interval plus slack and not empty")
def backup_fresh(
    scenario: Scenario, aws: Aws, backup_objects: tuple[facts.BackupObject, ...]
) -> None:
    b = aws.backups
    assert b is not None
    scenario.judge(
        checks.backup_fresh(
            backup_objects,
            bucket=b.bucket,
            prefix=b.prefix,
            now=datetime.now(UTC),
            interval_hours=b.interval_hours,
            slack_hours=b.slack_hours,
        )
    )


@then("every alarm the target names exists in CloudWatch")
@needs(AwsNeed("alarms"))
def alarms_exist(scenario: Scenario, aws: Aws) -> None:
    scenario.judge(checks.alarms_exist(aws.alarms, facts.alarm_names(aws, aws.alarms)))
