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
from gameday.target import Aws, Target
from gameday.verdict import Verdict


@pytest.fixture
def aws(target: Target) -> Aws:
    """The target's AWS resources; skips the scenario when the target has none."""
    if target.aws is None:
        pytest.skip(f"target {target.name!r} has no aws section")
    return target.aws


def _need(value: object, field: str) -> None:
    if not value:
        pytest.skip(f"the target's aws section does not set {field}")


def _ok(verdict: Verdict) -> None:
    assert verdict.ok, verdict.message


# -- RDS -------------------------------------------------------------------------------------


@when("I read the RDS instance", target_fixture="rds_facts")
def read_rds(aws: Aws) -> facts.RdsFacts:
    _need(aws.database and aws.database.instance_id, "database.instance_id")
    return facts.rds(aws)


@then("the RDS instance is Multi-AZ")
def rds_multi_az(rds_facts: facts.RdsFacts) -> None:
    _ok(checks.rds_multi_az(rds_facts))


@then("its storage is encrypted")
def rds_encrypted(rds_facts: facts.RdsFacts) -> None:
    _ok(checks.rds_encrypted(rds_facts))


@then("it keeps its backups as long as the target says")
def rds_backups(aws: Aws, rds_facts: facts.RdsFacts) -> None:
    assert aws.database is not None
    _ok(checks.rds_backups_kept(rds_facts, aws.database.min_backup_retention_days))


@then("it is not publicly accessible")
def rds_private(rds_facts: facts.RdsFacts) -> None:
    _ok(checks.rds_not_public(rds_facts))


@then("it runs the engine the target declares")
def rds_engine(aws: Aws, rds_facts: facts.RdsFacts) -> None:
    assert aws.database is not None
    _ok(checks.rds_engine(rds_facts, aws.database.engine, aws.database.engine_version))


# -- network ---------------------------------------------------------------------------------


@when("I read the VPC", target_fixture="network_facts")
def read_network(aws: Aws) -> facts.NetworkFacts:
    _need(aws.vpc_id, "vpc_id")
    return facts.network(aws)


@pytest.fixture
def lb_subnets(aws: Aws) -> tuple[str, ...]:
    return facts.load_balancer_subnets(aws)


@then(parsers.parse("it has subnets in at least {zones:d} zones"))
def subnets_in_zones(network_facts: facts.NetworkFacts, zones: int) -> None:
    _ok(checks.subnets_in_zones(network_facts, zones))


@then("the public subnets route to an internet gateway")
def public_via_igw(network_facts: facts.NetworkFacts, lb_subnets: tuple[str, ...]) -> None:
    _ok(checks.public_subnets_via_igw(network_facts, lb_subnets))


@then("each private subnet routes through the NAT of its own zone")
def private_via_own_nat(network_facts: facts.NetworkFacts, lb_subnets: tuple[str, ...]) -> None:
    _ok(checks.private_routes_via_own_zone_nat(network_facts, lb_subnets))


@then("no security group opens the database or cache port to the internet")
def ports_closed(aws: Aws, network_facts: facts.NetworkFacts) -> None:
    ports = {
        "database": aws.database.port if aws.database else 5432,
        "cache": aws.cache.port if aws.cache else 6379,
    }
    _ok(checks.ports_closed_to_world(network_facts, ports))


# -- load balancer and auto scaling ------------------------------------------------------------


@when("I read the load balancer's targets", target_fixture="target_facts")
def read_targets(aws: Aws) -> tuple[facts.TargetFacts, ...]:
    _need(aws.target_group_arns, "target_group_arns")
    return facts.targets(aws)


@then("every target is healthy")
def targets_healthy(target_facts: tuple[facts.TargetFacts, ...]) -> None:
    _ok(checks.targets_healthy(target_facts))


@then(parsers.parse("healthy targets are in at least {zones:d} zones"))
def targets_in_zones(target_facts: tuple[facts.TargetFacts, ...], zones: int) -> None:
    _ok(checks.targets_in_zones(target_facts, zones))


@when("I read the auto scaling group", target_fixture="asg_facts")
def read_asg(aws: Aws) -> facts.AsgFacts:
    _need(aws.autoscaling_group, "autoscaling_group")
    return facts.autoscaling_group(aws)


@then(parsers.parse("its minimum is at least {size:d} instances over at least {zones:d} zones"))
def asg_spread(asg_facts: facts.AsgFacts, size: int, zones: int) -> None:
    _ok(checks.asg_spread(asg_facts, size, zones))


# -- ElastiCache -------------------------------------------------------------------------------


@when("I read the ElastiCache replication group", target_fixture="cache_facts")
def read_cache(aws: Aws) -> facts.CacheFacts:
    _need(aws.cache, "cache")
    return facts.cache(aws)


@then("automatic failover and Multi-AZ are on")
def cache_failover_ready(cache_facts: facts.CacheFacts) -> None:
    _ok(checks.cache_failover_ready(cache_facts))


@then("it is encrypted in transit and at rest")
def cache_encrypted(cache_facts: facts.CacheFacts) -> None:
    _ok(checks.cache_encrypted(cache_facts))


# -- backups and alarms ------------------------------------------------------------------------


@when("I list the backups", target_fixture="backup_objects")
def list_backups(aws: Aws) -> tuple[facts.BackupObject, ...]:
    _need(aws.backups, "backups")
    return facts.backups(aws)


@then("the newest backup is younger than its interval plus slack and not empty")
def backup_fresh(aws: Aws, backup_objects: tuple[facts.BackupObject, ...]) -> None:
    b = aws.backups
    assert b is not None
    _ok(
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
def alarms_exist(aws: Aws) -> None:
    _need(aws.alarms, "alarms")
    _ok(checks.alarms_exist(aws.alarms, facts.alarm_names(aws, aws.alarms)))
