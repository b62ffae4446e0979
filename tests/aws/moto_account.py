"""A CloudMart-shaped AWS account on moto's server, and a target file that points at it.

Used by the fixtures in conftest.py and by the subprocesses some tests start (a run to kill).
moto's default account is 123456789012; the target says so unless a test asks otherwise.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from gameday.target import Target, load_target

REGION = "ap-northeast-2"
ZONE_A, ZONE_C = f"{REGION}a", f"{REGION}c"
MOTO_ACCOUNT = "123456789012"
MOTO_AMI = "ami-03cf127a"
BACKUP_BUCKET = "cloudmart-backup"
BACKUP_PREFIX = "server1/"
ALARMS = ["InstanceDown", "PostgreSQLDown", "RedisDown"]
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@dataclass
class Account:
    """The ids of what `build_account` made."""

    url: str
    vpc: str = ""
    subnets: dict[str, str] = field(default_factory=dict)  # "public-a" -> subnet id
    igw: str = ""
    nats: dict[str, str] = field(default_factory=dict)  # zone -> nat id
    private_tables: dict[str, str] = field(default_factory=dict)  # zone -> rtb id
    public_table: str = ""
    security_groups: dict[str, str] = field(default_factory=dict)
    instances: dict[str, list[str]] = field(default_factory=dict)  # zone -> instance ids
    asg: str = "cloudmart-asg"
    alb: str = ""
    target_group: str = ""
    db: str = "cloudmart-db"
    cache: str = "cloudmart-redis"

    clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        # Made once per account: creating a boto3 client costs tens of milliseconds.
        if service not in self.clients:
            self.clients[service] = boto3.client(service, region_name=REGION, endpoint_url=self.url)
        return self.clients[service]


def build_account(url: str) -> Account:
    """The seed's production shape, as far as moto models it."""
    # A busy machine makes moto slow to reset: wait for it rather than fail the setup.
    httpx.post(f"{url}/moto-api/reset", timeout=60).raise_for_status()
    acc = Account(url=url)
    ec2 = acc.client("ec2")
    acc.vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    for name, cidr, zone in (
        ("public-a", "10.0.1.0/24", ZONE_A),
        ("public-c", "10.0.2.0/24", ZONE_C),
        ("private-a", "10.0.11.0/24", ZONE_A),
        ("private-c", "10.0.12.0/24", ZONE_C),
    ):
        acc.subnets[name] = ec2.create_subnet(VpcId=acc.vpc, CidrBlock=cidr, AvailabilityZone=zone)[
            "Subnet"
        ]["SubnetId"]
    acc.igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=acc.igw, VpcId=acc.vpc)
    acc.public_table = ec2.create_route_table(VpcId=acc.vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(
        RouteTableId=acc.public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=acc.igw
    )
    for letter, zone in (("a", ZONE_A), ("c", ZONE_C)):
        ec2.associate_route_table(
            RouteTableId=acc.public_table, SubnetId=acc.subnets[f"public-{letter}"]
        )
        eip = ec2.allocate_address(Domain="vpc")["AllocationId"]
        nat = ec2.create_nat_gateway(SubnetId=acc.subnets[f"public-{letter}"], AllocationId=eip)
        acc.nats[zone] = nat["NatGateway"]["NatGatewayId"]
        rtb = ec2.create_route_table(VpcId=acc.vpc)["RouteTable"]["RouteTableId"]
        ec2.create_route(
            RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=acc.nats[zone]
        )
        ec2.associate_route_table(RouteTableId=rtb, SubnetId=acc.subnets[f"private-{letter}"])
        acc.private_tables[zone] = rtb

    def sg(name: str) -> str:
        gid = ec2.create_security_group(GroupName=name, Description=name, VpcId=acc.vpc)
        return str(gid["GroupId"])

    acc.security_groups = {n: sg(n) for n in ("alb", "backend", "db", "cache")}
    ec2.authorize_security_group_ingress(
        GroupId=acc.security_groups["alb"],
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )  # fmt: skip
    for role, port in (("db", 5432), ("cache", 6379)):
        ec2.authorize_security_group_ingress(
            GroupId=acc.security_groups[role],
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": port, "ToPort": port,
                            "UserIdGroupPairs": [{"GroupId": acc.security_groups["backend"]}]}],
        )  # fmt: skip

    # Backends: an ASG of 2 over the private subnets, behind an ALB target group.
    # One of moto's built-in AMIs (asking DescribeImages for one costs a second per test).
    image = MOTO_AMI
    ec2.create_launch_template(
        LaunchTemplateName="cloudmart-backend",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro",
                            "SecurityGroupIds": [acc.security_groups["backend"]]},
    )  # fmt: skip
    elb = acc.client("elbv2")
    acc.alb = elb.create_load_balancer(
        Name="cloudmart-alb",
        Subnets=[acc.subnets["public-a"], acc.subnets["public-c"]],
        SecurityGroups=[acc.security_groups["alb"]],
    )["LoadBalancers"][0]["LoadBalancerArn"]
    acc.target_group = elb.create_target_group(
        Name="cloudmart-backend", Protocol="HTTP", Port=8080, VpcId=acc.vpc, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    # moto's ASG launches every instance into its first subnet: start one backend per zone
    # ourselves and attach both, so the group spans the two zones as the seed's does.
    for letter, zone in (("a", ZONE_A), ("c", ZONE_C)):
        run = ec2.run_instances(
            LaunchTemplate={"LaunchTemplateName": "cloudmart-backend"}, MinCount=1, MaxCount=1,
            SubnetId=acc.subnets[f"private-{letter}"],
            TagSpecifications=[{"ResourceType": "instance",
                                "Tags": [{"Key": "Role", "Value": "backend"}]}],
        )  # fmt: skip
        acc.instances[zone] = [i["InstanceId"] for i in run["Instances"]]
    asg = acc.client("autoscaling")
    asg.create_auto_scaling_group(
        AutoScalingGroupName=acc.asg,
        LaunchTemplate={"LaunchTemplateName": "cloudmart-backend", "Version": "$Latest"},
        MinSize=0, MaxSize=10, DesiredCapacity=0,
        VPCZoneIdentifier=f"{acc.subnets['private-a']},{acc.subnets['private-c']}",
        TargetGroupARNs=[acc.target_group],
    )  # fmt: skip
    asg.attach_instances(
        AutoScalingGroupName=acc.asg, InstanceIds=[i for ids in acc.instances.values() for i in ids]
    )
    asg.update_auto_scaling_group(AutoScalingGroupName=acc.asg, MinSize=2)

    rds = acc.client("rds")
    rds.create_db_subnet_group(
        DBSubnetGroupName="cloudmart-db",
        DBSubnetGroupDescription="private",
        SubnetIds=[acc.subnets["private-a"], acc.subnets["private-c"]],
    )
    rds.create_db_instance(
        DBInstanceIdentifier=acc.db, Engine="postgres", EngineVersion="15.4",
        DBInstanceClass="db.t3.micro", AllocatedStorage=20, StorageType="gp3",
        MasterUsername="cloudmart", MasterUserPassword="not-a-secret-1",
        MultiAZ=True, StorageEncrypted=True, BackupRetentionPeriod=7,
        PubliclyAccessible=False, AvailabilityZone=ZONE_A, DBSubnetGroupName="cloudmart-db",
        VpcSecurityGroupIds=[acc.security_groups["db"]],
    )  # fmt: skip

    ec = acc.client("elasticache")
    ec.create_replication_group(
        ReplicationGroupId=acc.cache, ReplicationGroupDescription="cloudmart cache",
        Engine="redis", EngineVersion="7.0", CacheNodeType="cache.t3.micro",
        NumCacheClusters=2, AutomaticFailoverEnabled=True, MultiAZEnabled=True,
        TransitEncryptionEnabled=True, AtRestEncryptionEnabled=True,
    )  # fmt: skip

    s3 = acc.client("s3")
    s3.create_bucket(Bucket=BACKUP_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=BACKUP_BUCKET, Key=f"{BACKUP_PREFIX}old.tar.gz", Body=b"x" * 100)
    s3.put_object(Bucket=BACKUP_BUCKET, Key=f"{BACKUP_PREFIX}latest.tar.gz", Body=b"y" * 1000)

    cw = acc.client("cloudwatch")
    for alarm in ALARMS:
        cw.put_metric_alarm(
            AlarmName=alarm, MetricName="StatusCheckFailed", Namespace="AWS/EC2",
            Statistic="Maximum", Period=60, EvaluationPeriods=1, Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )  # fmt: skip
    return acc


def target_dict(acc: Account, *, account_id: str | None = MOTO_ACCOUNT) -> dict[str, Any]:
    aws: dict[str, Any] = {
        "region": REGION,
        "endpoint_url": acc.url,
        "vpc_id": acc.vpc,
        "load_balancer_arn": acc.alb,
        "target_group_arns": [acc.target_group],
        "autoscaling_group": acc.asg,
        "zones": {
            zone: {
                "nat_gateway_id": acc.nats[zone],
                "private_route_table_ids": [acc.private_tables[zone]],
            }
            for zone in (ZONE_A, ZONE_C)
        },
        "database": {"instance_id": acc.db, "engine": "postgres", "engine_version": "15"},
        "cache": {"replication_group_id": acc.cache},
        "backups": {"bucket": BACKUP_BUCKET, "prefix": BACKUP_PREFIX, "interval_hours": 1},
        "alarms": ALARMS,
    }
    if account_id is not None:
        aws["account_id"] = account_id
    return {
        "name": "moto-cloudmart",
        "provider": "aws",
        # moto answers its own dashboard path: the entrypoint check of a feature run passes.
        # moto stands in for the ALB and is no system under test: one Python process serving
        # the health probe (20/s), the egress probes' route-table reads and the faults' calls.
        # On a busy machine (make test's parallel sessions, load 5 - 9) it left 10 of 156
        # probes unanswered after the default 2 s, failing a 99% check that is about the
        # scenario's wiring here, not about moto's latency: it gets 10 s.
        "entrypoint": {"url": acc.url, "health_path": "/moto-api/", "timeout_sec": 10},
        "servers": [{"name": "backend-a", "zone": ZONE_A}, {"name": "backend-c", "zone": ZONE_C}],
        "aws": aws,
    }


def write_target(path: Path, data: dict[str, Any]) -> Target:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_target(str(path))


def ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
