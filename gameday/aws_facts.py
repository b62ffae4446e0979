"""What the AWS APIs say about a deployment, as plain records for the pure checks.

Each function reads one service (Describe/List/Get calls only, nothing is changed) and returns
frozen dataclasses; `gameday.checks.aws` judges them. Keeping the two apart lets every check be
tested on hand-built records as well as on moto's answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gameday.aws import client
from gameday.target import Aws

WORLD = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class RdsFacts:
    id: str
    status: str
    multi_az: bool
    encrypted: bool
    backup_retention_days: int
    public: bool
    engine: str
    engine_version: str
    zone: str


@dataclass(frozen=True)
class Subnet:
    id: str
    zone: str


@dataclass(frozen=True)
class RouteTable:
    id: str
    main: bool
    subnet_ids: tuple[str, ...]
    # Where 0.0.0.0/0 goes: a NAT id, an IGW id, another target's id, or None.
    default_route: str | None


@dataclass(frozen=True)
class WorldRule:
    """An ingress rule of a security group that admits the whole internet."""

    group_id: str
    protocol: str  # "tcp", "-1" (all)...
    from_port: int | None
    to_port: int | None
    cidr: str

    def shown(self) -> str:
        """The rule in words: tcp 5432, tcp 5400-5500, all traffic."""
        if self.protocol == "-1" or self.from_port is None:
            return "all traffic"
        if self.from_port == self.to_port:
            return f"{self.protocol} {self.from_port}"
        return f"{self.protocol} {self.from_port}-{self.to_port}"

    def opens(self, port: int) -> bool:
        if self.protocol == "-1" or self.from_port is None or self.to_port is None:
            return True
        return self.from_port <= port <= self.to_port


@dataclass(frozen=True)
class NetworkFacts:
    vpc_id: str
    subnets: tuple[Subnet, ...]
    route_tables: tuple[RouteTable, ...]
    nat_zones: dict[str, str]  # NAT id -> zone of its subnet
    nat_subnets: dict[str, str]  # NAT id -> its subnet
    internet_gateways: tuple[str, ...]
    world_rules: tuple[WorldRule, ...]

    def route_table_of(self, subnet_id: str) -> RouteTable | None:
        """The table a subnet uses: its explicit association, else the VPC's main table."""
        for table in self.route_tables:
            if subnet_id in table.subnet_ids:
                return table
        return next((t for t in self.route_tables if t.main), None)


@dataclass(frozen=True)
class TargetFacts:
    id: str
    zone: str
    state: str  # healthy, unhealthy, draining, unused...
    reason: str = ""


@dataclass(frozen=True)
class AsgFacts:
    name: str
    min_size: int
    zones: tuple[str, ...]
    instance_zones: tuple[str, ...]  # one entry per InService instance


@dataclass(frozen=True)
class CacheFacts:
    id: str
    automatic_failover: str
    multi_az: str
    transit_encryption: bool
    at_rest_encryption: bool


@dataclass(frozen=True)
class BackupObject:
    key: str
    size: int
    last_modified: datetime


def _default_route(routes: Iterable[dict[str, Any]]) -> str | None:
    for route in routes:
        if route.get("DestinationCidrBlock") == "0.0.0.0/0":
            for key in ("NatGatewayId", "GatewayId", "TransitGatewayId", "InstanceId",
                        "NetworkInterfaceId", "VpcPeeringConnectionId"):  # fmt: skip
                if route.get(key):
                    return str(route[key])
            return "unknown"
    return None


def rds(aws: Aws) -> RdsFacts:
    if aws.database is None or aws.database.instance_id is None:
        raise ValueError("aws.database.instance_id is not set")
    db = client(aws, "rds").describe_db_instances(DBInstanceIdentifier=aws.database.instance_id)[
        "DBInstances"
    ][0]
    return RdsFacts(
        id=db["DBInstanceIdentifier"],
        status=db.get("DBInstanceStatus", ""),
        multi_az=bool(db.get("MultiAZ")),
        encrypted=bool(db.get("StorageEncrypted")),
        backup_retention_days=int(db.get("BackupRetentionPeriod", 0)),
        public=bool(db.get("PubliclyAccessible")),
        engine=db.get("Engine", ""),
        engine_version=db.get("EngineVersion", ""),
        zone=db.get("AvailabilityZone", ""),
    )


def network(aws: Aws) -> NetworkFacts:
    if aws.vpc_id is None:
        raise ValueError("aws.vpc_id is not set")
    ec2 = client(aws, "ec2")
    in_vpc = [{"Name": "vpc-id", "Values": [aws.vpc_id]}]
    subnets = tuple(
        Subnet(s["SubnetId"], s["AvailabilityZone"])
        for s in ec2.describe_subnets(Filters=in_vpc)["Subnets"]
    )
    zone_of = {s.id: s.zone for s in subnets}
    tables = tuple(
        RouteTable(
            id=t["RouteTableId"],
            main=any(a.get("Main") for a in t.get("Associations", [])),
            subnet_ids=tuple(a["SubnetId"] for a in t.get("Associations", []) if a.get("SubnetId")),
            default_route=_default_route(t.get("Routes", [])),
        )
        for t in ec2.describe_route_tables(Filters=in_vpc)["RouteTables"]
    )
    nats = [
        n for n in ec2.describe_nat_gateways(Filters=in_vpc)["NatGateways"]
        if n.get("State") not in ("deleted", "deleting")
    ]  # fmt: skip
    igws = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [aws.vpc_id]}]
    )["InternetGateways"]
    rules = []
    for group in ec2.describe_security_groups(Filters=in_vpc)["SecurityGroups"]:
        for perm in group.get("IpPermissions", []):
            cidrs = [r["CidrIp"] for r in perm.get("IpRanges", [])]
            cidrs += [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
            for cidr in cidrs:
                if cidr in WORLD:
                    rules.append(
                        WorldRule(group["GroupId"], str(perm.get("IpProtocol")),
                                  perm.get("FromPort"), perm.get("ToPort"), cidr)
                    )  # fmt: skip
    return NetworkFacts(
        vpc_id=aws.vpc_id,
        subnets=subnets,
        route_tables=tables,
        nat_zones={n["NatGatewayId"]: zone_of.get(n["SubnetId"], "?") for n in nats},
        nat_subnets={n["NatGatewayId"]: n["SubnetId"] for n in nats},
        internet_gateways=tuple(g["InternetGatewayId"] for g in igws),
        world_rules=tuple(rules),
    )


def load_balancer_subnets(aws: Aws) -> tuple[str, ...]:
    if aws.load_balancer_arn is None:
        return ()
    lbs = client(aws, "elbv2").describe_load_balancers(LoadBalancerArns=[aws.load_balancer_arn])
    return tuple(z["SubnetId"] for z in lbs["LoadBalancers"][0].get("AvailabilityZones", []))


def targets(aws: Aws) -> tuple[TargetFacts, ...]:
    """Every target of the target groups, with the zone of its instance."""
    elb = client(aws, "elbv2")
    health = [
        d
        for arn in aws.target_group_arns
        for d in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    ]
    ids = sorted({d["Target"]["Id"] for d in health if d["Target"]["Id"].startswith("i-")})
    zones: dict[str, str] = {}
    if ids:
        reservations = client(aws, "ec2").describe_instances(InstanceIds=ids)["Reservations"]
        for r in reservations:
            for i in r["Instances"]:
                zones[i["InstanceId"]] = i["Placement"]["AvailabilityZone"]
    return tuple(
        TargetFacts(
            id=d["Target"]["Id"],
            zone=d["Target"].get("AvailabilityZone") or zones.get(d["Target"]["Id"], "?"),
            state=d["TargetHealth"]["State"],
            reason=d["TargetHealth"].get("Reason", ""),
        )
        for d in health
    )


def autoscaling_group(aws: Aws) -> AsgFacts:
    if aws.autoscaling_group is None:
        raise ValueError("aws.autoscaling_group is not set")
    groups = client(aws, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[aws.autoscaling_group]
    )["AutoScalingGroups"]
    if not groups:
        raise ValueError(f"auto scaling group {aws.autoscaling_group} not found")
    g = groups[0]
    return AsgFacts(
        name=g["AutoScalingGroupName"],
        min_size=int(g["MinSize"]),
        zones=tuple(sorted(g.get("AvailabilityZones", []))),
        instance_zones=tuple(
            i["AvailabilityZone"] for i in g["Instances"] if i.get("LifecycleState") == "InService"
        ),
    )


def cache(aws: Aws) -> CacheFacts:
    if aws.cache is None:
        raise ValueError("aws.cache is not set")
    g = client(aws, "elasticache").describe_replication_groups(
        ReplicationGroupId=aws.cache.replication_group_id
    )["ReplicationGroups"][0]
    return CacheFacts(
        id=g["ReplicationGroupId"],
        automatic_failover=str(g.get("AutomaticFailover", "disabled")),
        multi_az=str(g.get("MultiAZ", "disabled")),
        transit_encryption=bool(g.get("TransitEncryptionEnabled")),
        at_rest_encryption=bool(g.get("AtRestEncryptionEnabled")),
    )


def backups(aws: Aws) -> tuple[BackupObject, ...]:
    if aws.backups is None:
        raise ValueError("aws.backups is not set")
    pages = (
        client(aws, "s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=aws.backups.bucket, Prefix=aws.backups.prefix)
    )
    return tuple(
        BackupObject(o["Key"], int(o["Size"]), o["LastModified"])
        for page in pages
        for o in page.get("Contents", [])
    )


def alarm_names(aws: Aws, names: list[str]) -> set[str]:
    """Which of `names` exist as CloudWatch alarms (metric or composite)."""
    found: set[str] = set()
    cw = client(aws, "cloudwatch")
    # DescribeAlarms takes at most 100 names a call.
    for start in range(0, len(names), 100):
        answer = cw.describe_alarms(
            AlarmNames=names[start : start + 100], AlarmTypes=["MetricAlarm", "CompositeAlarm"]
        )
        found.update(a["AlarmName"] for a in answer.get("MetricAlarms", []))
        found.update(a["AlarmName"] for a in answer.get("CompositeAlarms", []))
    return found
