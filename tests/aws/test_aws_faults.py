"""EC2, RDS, ElastiCache and whole-zone faults, and the account guard, against moto's server.

Asserts on the state moto reports afterwards (instances stopped then running, the RDS primary
in the other zone), not on which calls were made. Two things moto cannot do are stood in
for, and each test says how: moto's RDS reboot does not fail over (its backend is patched, in
this process, to move the primary after a short `rebooting`), and moto does not implement
ElastiCache `test_failover` (that client is a botocore Stubber).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from chaos.aws import elasticache as ec_mod
from chaos.aws.ec2 import StopServer
from chaos.aws.elasticache import CacheFailover
from chaos.aws.nat import DisableNat
from chaos.aws.rds import DatabaseFailover, failover_events
from chaos.aws.zone import ZoneOutage
from chaos.base import FaultError, FaultRefused
from chaos.journal import Journal
from chaos.registry import fault_class
from chaos.runner import inject
from gameday.clock import Clock
from gameday.target import Target, load_target
from tests.aws.moto_account import ZONE_A, ZONE_C, Account, target_dict, write_target

pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("journal_dir")]


def states(acc: Account) -> dict[str, str]:
    """Zone -> the state of its backend ("running", "stopped")."""
    ec2 = acc.client("ec2")
    out = {}
    for zone, ids in acc.instances.items():
        found = ec2.describe_instances(InstanceIds=ids)["Reservations"][0]["Instances"]
        out[zone] = ",".join(i["State"]["Name"] for i in found)
    return out


def rds_state(acc: Account) -> tuple[str, str]:
    db = acc.client("rds").describe_db_instances(DBInstanceIdentifier=acc.db)["DBInstances"][0]
    return db["DBInstanceStatus"], db["AvailabilityZone"]


@pytest.mark.parametrize(
    ("name", "cls"),
    [("stop-server", StopServer), ("database-failover", DatabaseFailover),
     ("cache-failover", CacheFailover), ("zone-outage", ZoneOutage),
     ("disable-nat", DisableNat)],
)  # fmt: skip
def test_registered_for_aws_under_neutral_names(name: str, cls: type) -> None:
    assert fault_class(name, "aws") is cls


# -- the account guard -------------------------------------------------------------------------


def test_guard_refuses_another_account(account: Account, tmp_path: Path) -> None:
    target = write_target(tmp_path / "t.yaml", target_dict(account, account_id="210987654321"))
    for fault in (StopServer(target, {"zone": "a"}), DisableNat(target, {"zone": "a"}),
                  DatabaseFailover(target, {}), ZoneOutage(target, {"zone": "a"})):  # fmt: skip
        with pytest.raises(FaultRefused) as err:
            fault.preflight()
        assert str(err.value) == (
            f"{target.source}: the credentials in use are for AWS account 123456789012, but "
            "the target says aws.account_id 210987654321: refusing to change anything"
        )
    assert states(account) == {ZONE_A: "running", ZONE_C: "running"}


def test_guard_refuses_when_the_target_has_no_account_id(account: Account, tmp_path: Path) -> None:
    target = write_target(tmp_path / "t.yaml", target_dict(account, account_id=None))
    with pytest.raises(FaultRefused, match=r"aws.account_id is not set: destructive steps need"):
        StopServer(target, {"zone": "a"}).preflight()


def test_guard_also_stops_a_heal_in_the_wrong_account(account: Account, tmp_path: Path) -> None:
    right = write_target(tmp_path / "right.yaml", target_dict(account))
    fault = DisableNat(right, {"zone": "a"})
    fault.preflight()
    fault.inject()
    wrong = write_target(tmp_path / "wrong.yaml", target_dict(account, account_id="210987654321"))
    rebuilt = DisableNat.from_undo(wrong, fault.undo_params())
    with pytest.raises(FaultRefused, match="account 123456789012"):
        rebuilt.heal()
    assert rebuilt.in_effect()  # nothing was written


# -- EC2 -------------------------------------------------------------------------------------


def test_stop_a_zone_then_heal_starts_it(account: Account, aws_target: Target) -> None:
    fault = StopServer(aws_target, {"zone": "a", "mode": "graceful"})
    fault.preflight()  # includes a DryRun=True stop: nothing may change
    assert states(account) == {ZONE_A: "running", ZONE_C: "running"}

    fault.inject()
    assert states(account) == {ZONE_A: "stopped", ZONE_C: "running"}
    assert fault.undo_params()["instances"] == ",".join(account.instances[ZONE_A])
    assert fault.in_effect()

    fault.heal()
    assert states(account) == {ZONE_A: "running", ZONE_C: "running"}
    assert not fault.in_effect()
    fault.heal()  # idempotent


def test_a_server_maps_to_its_zone_or_to_its_declared_instance(
    account: Account, tmp_path: Path
) -> None:
    data = target_dict(account)
    target = write_target(tmp_path / "t.yaml", data)
    by_zone = StopServer(target, {"server": "backend-c", "mode": "kill"})
    by_zone.preflight()
    by_zone.inject()
    assert states(account) == {ZONE_A: "running", ZONE_C: "stopped"}
    by_zone.heal()

    data["aws"]["server_instances"] = {"backend-a": account.instances[ZONE_A][0]}
    declared = StopServer(write_target(tmp_path / "t2.yaml", data), {"server": "backend-a"})
    declared.preflight()
    declared.inject()
    assert states(account) == {ZONE_A: "stopped", ZONE_C: "running"}
    declared.heal()
    assert states(account) == {ZONE_A: "running", ZONE_C: "running"}


def test_stop_refuses_an_unknown_server_and_a_stopped_instance(
    account: Account, aws_target: Target
) -> None:
    with pytest.raises(FaultRefused, match=r"no server 'server9' \(servers: backend-a, backend-c"):
        StopServer(aws_target, {"server": "server9"}).preflight()
    account.client("ec2").stop_instances(InstanceIds=account.instances[ZONE_C])
    with pytest.raises(FaultRefused, match=r"not every instance is running: i-\w+ stopped"):
        StopServer(aws_target, {"zone": "c"}).preflight()


def test_heal_leaves_an_instance_the_asg_terminated(account: Account, aws_target: Target) -> None:
    fault = StopServer(aws_target, {"zone": "a"})
    fault.preflight()
    fault.inject()
    account.client("ec2").terminate_instances(InstanceIds=account.instances[ZONE_A])
    fault.heal()  # nothing left to start: not an error
    assert states(account)[ZONE_A] == "terminated"


def test_heal_starts_the_rest_when_an_instance_is_gone_from_ec2(
    account: Account, aws_target: Target
) -> None:
    """Real EC2 forgets a terminated instance after about an hour; asked by id, it then fails the
    whole call (InvalidInstanceID.NotFound), as moto does at once. Heal must still start the
    others, or the journal entry could never be healed."""
    fault = StopServer(aws_target, {"zone": "a"})
    fault.preflight()
    fault.inject()
    assert states(account)[ZONE_A] == "stopped"
    gone = "i-0123456789abcdef0"  # an id this account never had
    rebuilt = StopServer.from_undo(
        aws_target, {**fault.undo_params(), "instances": f"{fault.params['instances']},{gone}"}
    )
    rebuilt.heal()
    assert states(account)[ZONE_A] == "running"


def test_dry_run_stops_nothing(account: Account, aws_target: Target) -> None:
    active = inject(
        StopServer(aws_target, {"zone": "a"}), journal=Journal(aws_target), run_id="dry",
        history=None, clock=Clock(), dry_run=True, log=lambda _: None,
    )  # fmt: skip
    active.heal()
    assert states(account) == {ZONE_A: "running", ZONE_C: "running"}
    assert Journal(aws_target).pending() == []


# -- RDS -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("rds_fails_over")
def test_database_failover_waits_for_the_other_zone_and_records_aws_events(
    account: Account, aws_target: Target
) -> None:
    assert rds_state(account) == ("available", ZONE_A)
    fault = DatabaseFailover(aws_target, {})
    fault.preflight()
    fault.inject()
    assert rds_state(account) == ("available", ZONE_C)
    names = [o.name for o in fault.observations]
    assert names[0] == "primary-moved"
    assert fault.observations[0].detail == {"from": ZONE_A, "to": ZONE_C}
    assert names[1:] == ["aws-failover-started", "aws-failover-completed"]
    assert fault.undo_params() == {"zone_before": ZONE_A}
    fault.heal()  # nothing to undo: returns once available
    assert not fault.in_effect()


def test_database_failover_says_when_the_primary_did_not_move(
    account: Account, aws_target: Target
) -> None:
    # moto as it is: the reboot "succeeds" and the instance stays in its zone.
    fault = DatabaseFailover(aws_target, {"timeout_sec": "0.5"})
    fault.preflight()
    with pytest.raises(FaultError) as err:
        fault.inject()
    assert str(err.value) == (
        f"database failover: after 0.5 s {account.db} is available in {ZONE_A}: the primary "
        f"did not move from {ZONE_A}"
    )


def test_database_failover_refuses_a_single_az_instance(
    account: Account, aws_target: Target
) -> None:
    account.client("rds").modify_db_instance(
        DBInstanceIdentifier=account.db, MultiAZ=False, ApplyImmediately=True
    )
    with pytest.raises(FaultRefused, match="is not Multi-AZ: a reboot would be an outage"):
        DatabaseFailover(aws_target, {}).preflight()


def test_failover_events_keeps_only_failover_messages_in_time_order() -> None:
    t0, t1 = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC)
    events = [
        {"Message": "Multi-AZ instance failover completed.", "Date": t1},
        {"Message": "DB instance restarted", "Date": t0},
        {"Message": "Multi-AZ instance failover started.", "Date": t0},
    ]
    seen = failover_events(events)
    assert [(o.name, o.wall) for o in seen] == [
        ("aws-failover-started", t0.timestamp()), ("aws-failover-completed", t1.timestamp()),
    ]  # fmt: skip


# -- ElastiCache: test_failover through botocore's Stubber (moto answers it with a 500) ------


def group(primary: str, status: str = "available") -> dict[str, Any]:
    members = [
        {"CacheClusterId": f"cloudmart-redis-00{n}", "CurrentRole": role,
         "PreferredAvailabilityZone": zone}
        for n, zone in ((1, ZONE_A), (2, ZONE_C))
        for role in [("primary" if f"cloudmart-redis-00{n}" == primary else "replica")]
    ]  # fmt: skip
    return {"ReplicationGroups": [{
        "ReplicationGroupId": "cloudmart-redis", "Status": status, "AutomaticFailover": "enabled",
        "NodeGroups": [{"NodeGroupId": "0001", "NodeGroupMembers": members}],
    }]}  # fmt: skip


def test_cache_failover_through_a_stubbed_elasticache(
    account: Account, aws_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ElastiCache `test_failover` is not implemented by moto: this test stubs the ElastiCache
    client with botocore's Stubber (the STS account guard still asks moto). The stubbed answers
    go primary 001 -> modifying -> available with 002 primary, as AWS reports a failover."""
    client = ec_mod.CacheFailover(aws_target, {}).client("elasticache")
    stub = Stubber(client)
    by_id = {"ReplicationGroupId": "cloudmart-redis"}
    stub.add_response("describe_replication_groups", group("cloudmart-redis-001"), by_id)  # pre
    stub.add_response("describe_replication_groups", group("cloudmart-redis-001"), by_id)  # before
    stub.add_response(
        "test_failover",
        {"ReplicationGroup": {"ReplicationGroupId": "cloudmart-redis"}},
        {"ReplicationGroupId": "cloudmart-redis", "NodeGroupId": "0001"},
    )
    stub.add_response(
        "describe_replication_groups", group("cloudmart-redis-001", "modifying"), by_id
    )
    stub.add_response("describe_replication_groups", group("cloudmart-redis-002"), by_id)
    stub.add_response(
        "describe_events",
        {"Events": [{"SourceIdentifier": "cloudmart-redis",
                     "Message": "Failover to replica node cloudmart-redis-002 completed",
                     "Date": datetime.now(UTC)}]},
    )  # fmt: skip
    stub.add_response("describe_replication_groups", group("cloudmart-redis-002"), by_id)  # heal
    stub.activate()
    fault = CacheFailover(aws_target, {})
    real = fault.client
    monkeypatch.setattr(
        fault, "client", lambda service: client if service == "elasticache" else real(service)
    )
    fault.preflight()
    fault.inject()
    fault.heal()
    stub.assert_no_pending_responses()
    moved = fault.observations[0]
    assert (moved.name, moved.detail["from"], moved.detail["to"]) == (
        "primary-moved", "cloudmart-redis-001", "cloudmart-redis-002",
    )  # fmt: skip
    assert fault.observations[1].detail["message"].startswith("Failover to replica node")


def test_cache_failover_refuses_a_group_without_a_replica(
    account: Account, aws_target: Target
) -> None:
    # moto's replication group has one member in its node group: nothing to fail over to.
    with pytest.raises(FaultRefused, match=r"node group 0001 of cloudmart-redis has no primary"):
        CacheFailover(aws_target, {}).preflight()


# -- the whole zone --------------------------------------------------------------------------


@pytest.mark.usefixtures("rds_fails_over")
def test_zone_outage_takes_every_part_down_and_heals_each(
    account: Account, aws_target: Target
) -> None:
    journal = Journal(aws_target)
    active = inject(
        ZoneOutage(aws_target, {"zone": "a"}), journal=journal, run_id="zone", history=None,
        clock=Clock(), dry_run=False, log=lambda _: None,
    )  # fmt: skip
    rtb_a = account.private_tables[ZONE_A]
    ec2 = account.client("ec2")
    routes = ec2.describe_route_tables(RouteTableIds=[rtb_a])["RouteTables"][0]["Routes"]
    assert [r for r in routes if r["DestinationCidrBlock"] == "0.0.0.0/0"] == []
    assert states(account) == {ZONE_A: "stopped", ZONE_C: "running"}
    assert rds_state(account) == ("available", ZONE_C)
    # The cache's primary (moto puts it in us-east-1a) is not in the zone: left out.
    [entry] = journal.pending()
    assert entry.params["parts"] == "nat,ec2,rds"
    assert entry.params["nat.route_tables"] == rtb_a

    # Healed from the journal alone, as `gameday heal` would after a crash.
    rebuilt = ZoneOutage.from_undo(aws_target, entry.params)
    rebuilt.heal()
    active.heal()
    assert states(account) == {ZONE_A: "running", ZONE_C: "running"}
    routes = ec2.describe_route_tables(RouteTableIds=[rtb_a])["RouteTables"][0]["Routes"]
    assert [r["NatGatewayId"] for r in routes if r["DestinationCidrBlock"] == "0.0.0.0/0"] == [
        account.nats[ZONE_A]
    ]
    assert journal.pending() == []


# -- Aurora: moto implements failover_db_cluster, so this one runs on moto as it is ----------


def test_aurora_failover_moves_the_writer(account: Account, tmp_path: Path) -> None:
    rds = account.client("rds")
    rds.create_db_cluster(
        DBClusterIdentifier="cloudmart-aurora", Engine="aurora-postgresql",
        MasterUsername="cloudmart", MasterUserPassword="not-a-secret-3",
    )  # fmt: skip
    for n in (1, 2):
        rds.create_db_instance(
            DBInstanceIdentifier=f"cloudmart-aurora-{n}", DBClusterIdentifier="cloudmart-aurora",
            Engine="aurora-postgresql", DBInstanceClass="db.t3.medium",
        )  # fmt: skip

    def writer() -> str:
        members = rds.describe_db_clusters(DBClusterIdentifier="cloudmart-aurora")["DBClusters"][0][
            "DBClusterMembers"
        ]
        return next(m["DBInstanceIdentifier"] for m in members if m["IsClusterWriter"])

    data = target_dict(account)
    data["aws"]["database"] = {"aurora_cluster_id": "cloudmart-aurora"}
    target = write_target(tmp_path / "t.yaml", data)
    before = writer()
    fault = DatabaseFailover(target, {})
    assert fault.describe() == "fail over the Aurora cluster cloudmart-aurora to another instance"
    fault.preflight()
    fault.inject()
    assert writer() != before
    assert fault.undo_params() == {"writer_before": before}
    assert fault.observations[0].detail == {"from": before, "to": writer()}
    fault.heal()
    assert not fault.in_effect()


def test_zone_outage_leaves_out_a_primary_in_another_zone(
    account: Account, aws_target: Target
) -> None:
    fault = ZoneOutage(aws_target, {"zone": "c"})
    fault.preflight()
    assert fault.describe() == "take zone c down: nat, ec2"
    fault.inject()
    assert states(account) == {ZONE_A: "running", ZONE_C: "stopped"}
    assert rds_state(account) == ("available", ZONE_A)  # the primary was not in zone c
    fault.heal()
    assert states(account) == {ZONE_A: "running", ZONE_C: "running"}


def test_a_target_without_aws_section_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("name: p\nprovider: aws\nentrypoint:\n  url: http://127.0.0.1:9\n")
    target = load_target(str(path))
    for fault in (DisableNat(target, {"zone": "a"}), StopServer(target, {"zone": "a"}),
                  DatabaseFailover(target, {}), CacheFailover(target, {})):  # fmt: skip
        with pytest.raises(FaultRefused) as err:
            fault.preflight()
        assert str(err.value).endswith("plain.yaml: aws: required but missing")


def test_stop_with_asg_replacement_measures_the_return_of_capacity(
    account: Account, aws_target: Target
) -> None:
    """moto's ASG does not replace a stopped instance by itself (no health checks run): a
    thread plays the ASG, 0.3 s after the stop, with TerminateInstanceInAutoScalingGroup
    without decrementing the desired capacity, which makes moto launch a replacement."""
    asg = account.client("autoscaling")
    stopped = account.instances[ZONE_A][0]

    def replace_when_stopped() -> None:
        ec2 = account.client("ec2")
        for _ in range(100):
            state = ec2.describe_instances(InstanceIds=[stopped])["Reservations"][0]
            if state["Instances"][0]["State"]["Name"] == "stopped":
                break
            time.sleep(0.05)
        time.sleep(0.3)
        asg.terminate_instance_in_auto_scaling_group(
            InstanceId=stopped, ShouldDecrementDesiredCapacity=False
        )

    player = threading.Thread(target=replace_when_stopped)
    player.start()
    fault = StopServer(aws_target, {"zone": "a", "replace": "asg", "timeout_sec": "10"})
    fault.preflight()
    fault.inject()
    player.join()
    [returned] = fault.observations
    assert returned.name == "capacity-returned"
    assert 0.3 <= float(returned.detail["after_sec"]) < 10
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[account.asg])
    in_service = {i["InstanceId"] for i in group["AutoScalingGroups"][0]["Instances"]}
    assert returned.detail["replacements"] in in_service and stopped not in in_service
    fault.heal()  # the stopped instance was terminated by the "ASG": nothing to start
    assert states(account)[ZONE_A] == "terminated"


def test_stop_with_asg_replacement_fails_when_capacity_does_not_return(
    account: Account, aws_target: Target
) -> None:
    fault = StopServer(aws_target, {"zone": "a", "replace": "asg", "timeout_sec": "0.5"})
    fault.preflight()
    with pytest.raises(FaultError, match="auto scaling group cloudmart-asg back to 2 in-service"):
        fault.inject()
    fault.heal()
    assert states(account) == {ZONE_A: "running", ZONE_C: "running"}


def test_guard_refuses_when_sts_cannot_be_asked(account: Account, tmp_path: Path) -> None:
    data = target_dict(account)
    data["aws"]["endpoint_url"] = "http://127.0.0.1:9"  # nothing listens there
    target = write_target(tmp_path / "t.yaml", data)
    with pytest.raises(FaultRefused) as err:
        DisableNat(target, {"zone": "a"}).preflight()
    assert "cannot tell which AWS account the credentials belong to" in str(err.value)
    assert "\n" not in str(err.value)
