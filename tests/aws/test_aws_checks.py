"""The AWS acceptance checks on moto's CloudMart account: each passes on the good account and
fails, naming the resource and the value found, once the account is made wrong."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gameday import aws_facts as facts
from gameday.checks import aws as checks
from gameday.target import Aws, Target
from gameday.verdict import Verdict
from tests.aws.moto_account import (
    ALARMS,
    BACKUP_BUCKET,
    BACKUP_PREFIX,
    ZONE_A,
    ZONE_C,
    Account,
    target_dict,
    write_target,
)

pytestmark = pytest.mark.aws


@pytest.fixture
def aws(aws_target: Target) -> Aws:
    assert aws_target.aws is not None
    return aws_target.aws


def lb_subnets(aws: Aws) -> tuple[str, ...]:
    return facts.load_balancer_subnets(aws)


# -- RDS -------------------------------------------------------------------------------------


def test_rds_checks_pass_on_the_seed_shape(aws: Aws) -> None:
    db = facts.rds(aws)
    for verdict in (checks.rds_multi_az(db), checks.rds_encrypted(db),
                    checks.rds_backups_kept(db, 7), checks.rds_not_public(db),
                    checks.rds_engine(db, "postgres", "15")):  # fmt: skip
        assert verdict.ok, verdict.message


def test_rds_single_az_public_short_backups_fail(account: Account, aws: Aws) -> None:
    account.client("rds").modify_db_instance(
        DBInstanceIdentifier=account.db, MultiAZ=False, PubliclyAccessible=True,
        BackupRetentionPeriod=1, ApplyImmediately=True,
    )  # fmt: skip
    db = facts.rds(aws)
    assert checks.rds_multi_az(db).message == (
        "RDS cloudmart-db has MultiAZ=false: a zone loss is an outage"
    )
    assert checks.rds_not_public(db).message == "RDS cloudmart-db has PubliclyAccessible=true"
    verdict = checks.rds_backups_kept(db, 7)
    assert not verdict.ok
    assert verdict.message == "RDS cloudmart-db keeps backups 1 days, fewer than 7"
    assert not checks.rds_multi_az(db).ok and not checks.rds_not_public(db).ok


def test_rds_unencrypted_and_other_engine_fail(account: Account, tmp_path: Path) -> None:
    account.client("rds").create_db_instance(
        DBInstanceIdentifier="plain-db", Engine="postgres", EngineVersion="14.9",
        DBInstanceClass="db.t3.micro", AllocatedStorage=20, MasterUsername="u",
        MasterUserPassword="not-a-secret-2", StorageEncrypted=False, MultiAZ=True,
        BackupRetentionPeriod=7,
    )  # fmt: skip
    data = target_dict(account)
    data["aws"]["database"]["instance_id"] = "plain-db"
    target = write_target(tmp_path / "t.yaml", data)
    assert target.aws is not None
    db = facts.rds(target.aws)
    verdict = checks.rds_encrypted(db)
    assert not verdict.ok and verdict.message == "RDS plain-db has StorageEncrypted=false"
    verdict = checks.rds_engine(db, "postgres", "15")
    assert not verdict.ok
    assert verdict.message == "RDS plain-db runs postgres 14.9, the target declares postgres 15"
    assert not checks.rds_engine(db, "mysql", None).ok
    assert not checks.rds_engine(facts.rds(target.aws), "postgres", "1").ok  # not 14 by prefix


# -- network ---------------------------------------------------------------------------------


def test_network_checks_pass_on_the_seed_shape(aws: Aws) -> None:
    net = facts.network(aws)
    ports = {"database": 5432, "cache": 6379}
    verdicts = [
        checks.subnets_in_zones(net),
        checks.public_subnets_via_igw(net, lb_subnets(aws)),
        checks.private_routes_via_own_zone_nat(net, lb_subnets(aws)),
        checks.ports_closed_to_world(net, ports),
    ]
    for verdict in verdicts:
        assert verdict.ok, verdict.message


def test_private_route_through_the_other_zones_nat_fails(account: Account, aws: Aws) -> None:
    rtb = account.private_tables[ZONE_A]
    account.client("ec2").replace_route(
        RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=account.nats[ZONE_C]
    )
    verdict = checks.private_routes_via_own_zone_nat(facts.network(aws), lb_subnets(aws))
    assert not verdict.ok
    assert verdict.message == (
        f"private subnet {account.subnets['private-a']} ({ZONE_A}) routes 0.0.0.0/0 via {rtb} "
        f"to {account.nats[ZONE_C]} in {ZONE_C}"
    )


def test_private_subnet_routed_to_the_internet_gateway_fails(account: Account, aws: Aws) -> None:
    account.client("ec2").replace_route(
        RouteTableId=account.private_tables[ZONE_C], DestinationCidrBlock="0.0.0.0/0",
        GatewayId=account.igw,
    )  # fmt: skip
    verdict = checks.private_routes_via_own_zone_nat(facts.network(aws), lb_subnets(aws))
    assert not verdict.ok
    assert f"to internet gateway {account.igw}: it is public" in verdict.message


def test_public_subnet_without_the_internet_gateway_fails(account: Account, aws: Aws) -> None:
    account.client("ec2").replace_route(
        RouteTableId=account.public_table, DestinationCidrBlock="0.0.0.0/0",
        NatGatewayId=account.nats[ZONE_A],
    )  # fmt: skip
    verdict = checks.public_subnets_via_igw(facts.network(aws), lb_subnets(aws))
    assert not verdict.ok
    assert (
        f"public subnet {account.subnets['public-a']} routes 0.0.0.0/0 via "
        f"{account.public_table} to {account.nats[ZONE_A]}"
    ) in verdict.message


def test_subnets_in_one_zone_fail(account: Account, tmp_path: Path) -> None:
    ec2 = account.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24", AvailabilityZone=ZONE_A)
    data = target_dict(account)
    data["aws"]["vpc_id"] = vpc
    target = write_target(tmp_path / "t.yaml", data)
    assert target.aws is not None
    verdict = checks.subnets_in_zones(facts.network(target.aws))
    assert not verdict.ok
    assert verdict.message == f"VPC {vpc} has subnets in 1 zone(s) ({ZONE_A}), fewer than 2"


def test_database_port_open_to_the_world_fails(account: Account, aws: Aws) -> None:
    sg = account.security_groups["db"]
    account.client("ec2").authorize_security_group_ingress(
        GroupId=sg, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 5400, "ToPort": 5500,
                                    "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )  # fmt: skip
    verdict = checks.ports_closed_to_world(facts.network(aws), {"database": 5432, "cache": 6379})
    assert not verdict.ok
    assert verdict.message == (
        f"security group {sg} opens database port 5432 to 0.0.0.0/0 (tcp 5400-5500)"
    )


# -- ALB and ASG -----------------------------------------------------------------------------


def test_alb_and_asg_checks_pass_on_the_seed_shape(aws: Aws) -> None:
    targets = facts.targets(aws)
    assert sorted(t.zone for t in targets) == [ZONE_A, ZONE_C]
    for verdict in (checks.targets_healthy(targets), checks.targets_in_zones(targets),
                    checks.asg_spread(facts.autoscaling_group(aws))):  # fmt: skip
        assert verdict.ok, verdict.message


def test_targets_in_one_zone_fail(account: Account, aws: Aws) -> None:
    account.client("elbv2").deregister_targets(
        TargetGroupArn=account.target_group, Targets=[{"Id": account.instances[ZONE_C][0]}]
    )
    verdict = checks.targets_in_zones(facts.targets(aws))
    assert not verdict.ok
    assert verdict.message == f"healthy targets in 1 zone(s) ({ZONE_A}=1), fewer than 2"


def test_an_unhealthy_target_fails(account: Account, aws: Aws) -> None:
    account.client("ec2").stop_instances(InstanceIds=account.instances[ZONE_A])
    targets = facts.targets(aws)
    verdict = checks.targets_healthy(targets)
    assert not verdict.ok, [t.state for t in targets]
    assert verdict.message.startswith(
        f"1 of 2 targets not healthy: {account.instances[ZONE_A][0]} ({ZONE_A}) is "
    )


def test_a_small_asg_fails(account: Account, aws: Aws) -> None:
    account.client("autoscaling").update_auto_scaling_group(
        AutoScalingGroupName=account.asg, MinSize=1
    )
    verdict = checks.asg_spread(facts.autoscaling_group(aws))
    assert not verdict.ok
    assert verdict.message == "auto scaling group cloudmart-asg: MinSize is 1, fewer than 2"


# -- ElastiCache -----------------------------------------------------------------------------


def test_cache_checks_pass_and_fail(account: Account, aws: Aws, tmp_path: Path) -> None:
    good = facts.cache(aws)
    assert checks.cache_failover_ready(good).ok and checks.cache_encrypted(good).ok
    account.client("elasticache").create_replication_group(
        ReplicationGroupId="plain-redis", ReplicationGroupDescription="no failover",
        Engine="redis", CacheNodeType="cache.t3.micro", NumCacheClusters=1,
        AutomaticFailoverEnabled=False,
    )  # fmt: skip
    data = target_dict(account)
    data["aws"]["cache"]["replication_group_id"] = "plain-redis"
    target = write_target(tmp_path / "t.yaml", data)
    assert target.aws is not None
    bad = facts.cache(target.aws)
    verdict = checks.cache_failover_ready(bad)
    assert not verdict.ok
    assert verdict.message == (
        "ElastiCache plain-redis: AutomaticFailover is disabled; MultiAZ is disabled"
    )
    verdict = checks.cache_encrypted(bad)
    assert not verdict.ok
    assert verdict.message == (
        "ElastiCache plain-redis: TransitEncryptionEnabled is false; "
        "AtRestEncryptionEnabled is false"
    )


# -- backups and alarms ------------------------------------------------------------------------


def fresh(aws: Aws, now: datetime) -> Verdict:
    return checks.backup_fresh(
        facts.backups(aws), bucket=BACKUP_BUCKET, prefix=BACKUP_PREFIX, now=now,
        interval_hours=1, slack_hours=1,
    )  # fmt: skip


def test_backup_fresh_passes_on_a_new_backup(aws: Aws) -> None:
    verdict = fresh(aws, datetime.now(UTC))
    assert verdict.ok, verdict.message
    assert "latest.tar.gz" in verdict.message and "1000 bytes" in verdict.message


def test_a_stale_backup_fails(aws: Aws) -> None:
    # moto stamps objects with the time of the upload: judge them 3 hours later.
    verdict = fresh(aws, datetime.now(UTC) + timedelta(hours=3))
    assert not verdict.ok
    assert verdict.message.startswith(f"the newest backup s3://{BACKUP_BUCKET}/{BACKUP_PREFIX}")
    assert "h old, more than 1 h + 1 h" in verdict.message
    assert verdict.measured["age_hours"] > 2.9


def test_an_empty_newest_backup_fails(account: Account, aws: Aws) -> None:
    time.sleep(1.1)  # S3 times have one-second resolution: be newer than the fixture's backup
    account.client("s3").put_object(Bucket=BACKUP_BUCKET, Key=f"{BACKUP_PREFIX}z.tar.gz", Body=b"")
    verdict = fresh(aws, datetime.now(UTC))
    assert not verdict.ok
    assert verdict.message == (
        f"the newest backup s3://{BACKUP_BUCKET}/{BACKUP_PREFIX}z.tar.gz is empty (0 bytes)"
    )


def test_no_backup_at_all_fails(account: Account, tmp_path: Path) -> None:
    data = target_dict(account)
    data["aws"]["backups"]["prefix"] = "server9/"
    target = write_target(tmp_path / "t.yaml", data)
    assert target.aws is not None
    verdict = checks.backup_fresh(
        facts.backups(target.aws), bucket=BACKUP_BUCKET, prefix="server9/",
        now=datetime.now(UTC), interval_hours=1, slack_hours=1,
    )  # fmt: skip
    assert not verdict.ok and verdict.message == f"no backup under s3://{BACKUP_BUCKET}/server9/"


def test_alarms_exist_and_a_missing_one_fails(account: Account, aws: Aws) -> None:
    assert checks.alarms_exist(ALARMS, facts.alarm_names(aws, ALARMS)).ok
    account.client("cloudwatch").delete_alarms(AlarmNames=["RedisDown"])
    verdict = checks.alarms_exist(ALARMS, facts.alarm_names(aws, ALARMS))
    assert not verdict.ok and verdict.message == "CloudWatch has no alarm named RedisDown"
