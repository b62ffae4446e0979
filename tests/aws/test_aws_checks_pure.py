"""The branches of the AWS checks moto's account cannot easily show, on hand-built facts."""

from __future__ import annotations

from gameday.aws_facts import AsgFacts, NetworkFacts, RouteTable, Subnet, WorldRule
from gameday.checks import aws as checks


def net(default_route: str | None, rules: tuple[WorldRule, ...] = ()) -> NetworkFacts:
    return NetworkFacts(
        vpc_id="vpc-1",
        subnets=(Subnet("subnet-pub", "z-a"), Subnet("subnet-priv", "z-a")),
        route_tables=(
            RouteTable("rtb-pub", False, ("subnet-pub",), "igw-1"),
            RouteTable("rtb-main", True, (), default_route),
        ),
        nat_zones={"nat-a": "z-a"},
        nat_subnets={"nat-a": "subnet-pub"},
        internet_gateways=("igw-1",),
        world_rules=rules,
    )


def test_a_private_subnet_uses_the_main_table_when_not_associated() -> None:
    assert checks.private_routes_via_own_zone_nat(net("nat-a"), []).ok
    verdict = checks.private_routes_via_own_zone_nat(net(None), [])
    assert not verdict.ok
    assert verdict.message == "private subnet subnet-priv (z-a) has no 0.0.0.0/0 route"
    verdict = checks.private_routes_via_own_zone_nat(net("pcx-9"), [])
    assert verdict.message == (
        "private subnet subnet-priv (z-a) routes 0.0.0.0/0 via rtb-main to pcx-9, not a NAT gateway"
    )


def test_an_all_traffic_rule_opens_every_port_and_a_narrow_one_does_not() -> None:
    everything = WorldRule("sg-1", "-1", None, None, "::/0")
    web = WorldRule("sg-2", "tcp", 443, 443, "0.0.0.0/0")
    verdict = checks.ports_closed_to_world(net("nat-a", (everything, web)), {"cache": 6379})
    assert not verdict.ok
    assert verdict.message == "security group sg-1 opens cache port 6379 to ::/0 (all traffic)"
    assert checks.ports_closed_to_world(net("nat-a", (web,)), {"cache": 6379}).ok


def test_an_asg_in_one_zone_fails_even_with_enough_instances() -> None:
    asg = AsgFacts("asg", 2, ("z-a",), ("z-a", "z-a"))
    verdict = checks.asg_spread(asg)
    assert not verdict.ok
    assert verdict.message == (
        "auto scaling group asg: spans 1 zone(s) (z-a); has in-service instances in z-a only"
    )


def test_no_targets_at_all_is_not_healthy() -> None:
    verdict = checks.targets_healthy([])
    assert not verdict.ok and verdict.message == "the target groups have no targets"
