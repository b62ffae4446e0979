"""Acceptance checks of an AWS deployment's configuration: the seed's promises (Multi-AZ,
encryption, 7 days of backups, nothing public, one NAT per zone) as pure functions over the
records of `gameday.aws_facts`. Each failure names the resource and the value found.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from gameday.aws_facts import (
    AsgFacts,
    BackupObject,
    CacheFacts,
    NetworkFacts,
    RdsFacts,
    TargetFacts,
)
from gameday.verdict import Verdict, failed, passed

# -- RDS -------------------------------------------------------------------------------------


def rds_multi_az(db: RdsFacts) -> Verdict:
    name = "rds_multi_az"
    if db.multi_az:
        return passed(name, f"RDS {db.id} is Multi-AZ (primary in {db.zone})")
    return failed(name, f"RDS {db.id} has MultiAZ=false: a zone loss is an outage")


def rds_encrypted(db: RdsFacts) -> Verdict:
    name = "rds_encrypted"
    if db.encrypted:
        return passed(name, f"RDS {db.id} storage is encrypted")
    return failed(name, f"RDS {db.id} has StorageEncrypted=false")


def rds_backups_kept(db: RdsFacts, min_days: int) -> Verdict:
    name = "rds_backups_kept"
    days = db.backup_retention_days
    if days >= min_days:
        return passed(name, f"RDS {db.id} keeps backups {days} days (>= {min_days})",
                      days=days)  # fmt: skip
    return failed(name, f"RDS {db.id} keeps backups {days} days, fewer than {min_days}", days=days)


def rds_not_public(db: RdsFacts) -> Verdict:
    name = "rds_not_public"
    if not db.public:
        return passed(name, f"RDS {db.id} is not publicly accessible")
    return failed(name, f"RDS {db.id} has PubliclyAccessible=true")


def rds_engine(db: RdsFacts, engine: str, version_prefix: str | None) -> Verdict:
    name = "rds_engine"
    found = f"{db.engine} {db.engine_version}"
    wanted = f"{engine} {version_prefix}" if version_prefix else engine
    version_ok = version_prefix is None or (
        db.engine_version == version_prefix or db.engine_version.startswith(f"{version_prefix}.")
    )
    if db.engine == engine and version_ok:
        return passed(name, f"RDS {db.id} runs {found} as declared ({wanted})")
    return failed(name, f"RDS {db.id} runs {found}, the target declares {wanted}")


# -- network ---------------------------------------------------------------------------------


def subnets_in_zones(net: NetworkFacts, min_zones: int = 2) -> Verdict:
    name = "subnets_in_zones"
    zones = sorted({s.zone for s in net.subnets})
    if len(zones) >= min_zones:
        return passed(name, f"VPC {net.vpc_id} has subnets in {len(zones)} zones: "
                            f"{', '.join(zones)}")  # fmt: skip
    return failed(
        name,
        f"VPC {net.vpc_id} has subnets in {len(zones)} zone(s) ({', '.join(zones) or 'none'}), "
        f"fewer than {min_zones}",
    )


def _public_subnets(net: NetworkFacts, holders: Iterable[str]) -> set[str]:
    """Subnets that must be public: those of the load balancer and of the NAT gateways."""
    return set(holders) | set(net.nat_subnets.values())


def public_subnets_via_igw(net: NetworkFacts, lb_subnets: Sequence[str]) -> Verdict:
    """The subnets holding the load balancer and the NATs send 0.0.0.0/0 to an IGW."""
    name = "public_subnets_via_igw"
    problems = []
    public = sorted(_public_subnets(net, lb_subnets))
    for subnet in public:
        table = net.route_table_of(subnet)
        goes = table.default_route if table else None
        if goes not in net.internet_gateways:
            where = f"via {table.id} " if table else ""
            problems.append(
                f"public subnet {subnet} routes 0.0.0.0/0 {where}to {goes or 'nowhere'}"
            )
    if problems:
        return failed(name, "; ".join(problems))
    return passed(name, f"{len(public)} public subnets route 0.0.0.0/0 to an internet gateway")


def private_routes_via_own_zone_nat(net: NetworkFacts, lb_subnets: Sequence[str]) -> Verdict:
    """Every private subnet's default route goes to the NAT gateway of its own zone: a zone's
    outage then takes no other zone's outbound traffic with it."""
    name = "private_routes_via_own_zone_nat"
    public = _public_subnets(net, lb_subnets)
    problems = []
    private = [s for s in net.subnets if s.id not in public]
    for subnet in private:
        table = net.route_table_of(subnet.id)
        goes = table.default_route if table else None
        via = f"via {table.id} " if table else ""
        if goes is None:
            problems.append(f"private subnet {subnet.id} ({subnet.zone}) has no 0.0.0.0/0 route")
        elif goes in net.internet_gateways:
            problems.append(
                f"private subnet {subnet.id} ({subnet.zone}) routes 0.0.0.0/0 {via}to internet "
                f"gateway {goes}: it is public"
            )
        elif goes not in net.nat_zones:
            problems.append(
                f"private subnet {subnet.id} ({subnet.zone}) routes 0.0.0.0/0 {via}to {goes}, "
                "not a NAT gateway"
            )
        elif net.nat_zones[goes] != subnet.zone:
            problems.append(
                f"private subnet {subnet.id} ({subnet.zone}) routes 0.0.0.0/0 {via}to {goes} "
                f"in {net.nat_zones[goes]}"
            )
    if problems:
        return failed(name, "; ".join(problems))
    return passed(name, f"{len(private)} private subnets route through the NAT of their zone")


def ports_closed_to_world(net: NetworkFacts, ports: dict[str, int]) -> Verdict:
    """No security group admits 0.0.0.0/0 (or ::/0) on the database or cache port."""
    name = "ports_closed_to_world"
    problems = [
        f"security group {r.group_id} opens {role} port {port} to {r.cidr} ({r.shown()})"
        for role, port in ports.items()
        for r in net.world_rules
        if r.opens(port)
    ]
    if problems:
        return failed(name, "; ".join(problems))
    shown = ", ".join(f"{role} {port}" for role, port in ports.items())
    return passed(name, f"no security group of {net.vpc_id} opens {shown} to the internet")


# -- load balancer and backends ----------------------------------------------------------------


def targets_healthy(targets: Sequence[TargetFacts]) -> Verdict:
    name = "targets_healthy"
    if not targets:
        return failed(name, "the target groups have no targets")
    bad = [t for t in targets if t.state != "healthy"]
    if bad:
        shown = "; ".join(
            f"{t.id} ({t.zone}) is {t.state}" + (f": {t.reason}" if t.reason else "") for t in bad
        )
        return failed(name, f"{len(bad)} of {len(targets)} targets not healthy: {shown}")
    return passed(name, f"all {len(targets)} targets are healthy")


def targets_in_zones(targets: Sequence[TargetFacts], min_zones: int = 2) -> Verdict:
    name = "targets_in_zones"
    per_zone = Counter(t.zone for t in targets if t.state == "healthy")
    shown = ", ".join(f"{z}={n}" for z, n in sorted(per_zone.items())) or "none"
    if len(per_zone) >= min_zones:
        return passed(name, f"healthy targets in {len(per_zone)} zones ({shown})")
    return failed(
        name, f"healthy targets in {len(per_zone)} zone(s) ({shown}), fewer than {min_zones}"
    )


def asg_spread(asg: AsgFacts, min_size: int = 2, min_zones: int = 2) -> Verdict:
    name = "asg_spread"
    problems = []
    if asg.min_size < min_size:
        problems.append(f"MinSize is {asg.min_size}, fewer than {min_size}")
    if len(asg.zones) < min_zones:
        problems.append(f"spans {len(asg.zones)} zone(s) ({', '.join(asg.zones)})")
    running = sorted(set(asg.instance_zones))
    if len(running) < min_zones:
        problems.append(f"has in-service instances in {', '.join(running) or 'no zone'} only")
    if problems:
        return failed(name, f"auto scaling group {asg.name}: " + "; ".join(problems))
    return passed(
        name, f"auto scaling group {asg.name}: MinSize {asg.min_size} over {', '.join(asg.zones)}"
    )


# -- ElastiCache -------------------------------------------------------------------------------


def cache_failover_ready(c: CacheFacts) -> Verdict:
    name = "cache_failover_ready"
    problems = []
    if c.automatic_failover != "enabled":
        problems.append(f"AutomaticFailover is {c.automatic_failover}")
    if c.multi_az != "enabled":
        problems.append(f"MultiAZ is {c.multi_az}")
    if problems:
        return failed(name, f"ElastiCache {c.id}: " + "; ".join(problems))
    return passed(name, f"ElastiCache {c.id}: automatic failover and Multi-AZ enabled")


def cache_encrypted(c: CacheFacts) -> Verdict:
    name = "cache_encrypted"
    problems = []
    if not c.transit_encryption:
        problems.append("TransitEncryptionEnabled is false")
    if not c.at_rest_encryption:
        problems.append("AtRestEncryptionEnabled is false")
    if problems:
        return failed(name, f"ElastiCache {c.id}: " + "; ".join(problems))
    return passed(name, f"ElastiCache {c.id}: encrypted in transit and at rest")


# -- backups and alarms ------------------------------------------------------------------------


def backup_fresh(
    objects: Sequence[BackupObject],
    *,
    bucket: str,
    prefix: str,
    now: datetime,
    interval_hours: float,
    slack_hours: float,
) -> Verdict:
    """The newest object under the backup prefix is younger than the interval plus slack and
    not empty."""
    name = "backup_fresh"
    if not objects:
        return failed(name, f"no backup under s3://{bucket}/{prefix}")
    newest = max(objects, key=lambda o: o.last_modified)
    age = now - newest.last_modified
    limit = timedelta(hours=interval_hours + slack_hours)
    hours = age.total_seconds() / 3600
    if age > limit:
        return failed(
            name,
            f"the newest backup s3://{bucket}/{newest.key} is {hours:.1f} h old, "
            f"more than {interval_hours:g} h + {slack_hours:g} h",
            age_hours=hours,
        )
    if newest.size == 0:
        return failed(name, f"the newest backup s3://{bucket}/{newest.key} is empty (0 bytes)")
    shown = f"s3://{bucket}/{newest.key}"
    return passed(
        name,
        f"the newest backup {shown} is {hours:.1f} h old, {newest.size} bytes",
        age_hours=hours,
    )


def alarms_exist(expected: Sequence[str], found: set[str]) -> Verdict:
    name = "alarms_exist"
    missing = [a for a in expected if a not in found]
    if missing:
        return failed(name, f"CloudWatch has no alarm named {', '.join(missing)}")
    return passed(name, f"all {len(expected)} alarms exist: {', '.join(expected)}")
