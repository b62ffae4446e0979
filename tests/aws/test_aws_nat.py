"""The NAT fault against moto's server: routes gone, then exactly those back; refusals; a run
killed in the middle healed by `gameday heal`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.aws.nat import DisableNat, default_route
from chaos.base import FaultError, FaultRefused
from chaos.journal import Journal
from chaos.registry import fault_class
from chaos.runner import inject
from gameday.clock import Clock
from gameday.target import Target
from lab.wait import poll_until
from tests.aws.moto_account import ZONE_A, ZONE_C, Account, target_dict, write_target

pytestmark = [pytest.mark.aws, pytest.mark.usefixtures("journal_dir")]
ROOT = Path(__file__).resolve().parents[2]


def default_routes(acc: Account) -> dict[str, str | None]:
    """Private route table id -> where its 0.0.0.0/0 goes (None: no default route)."""
    tables = acc.client("ec2").describe_route_tables(
        RouteTableIds=list(acc.private_tables.values())
    )["RouteTables"]
    out: dict[str, str | None] = {}
    for t in tables:
        route = default_route(t)
        out[t["RouteTableId"]] = route.get("NatGatewayId") if route else None
    return out


def test_registered_under_the_neutral_name() -> None:
    assert fault_class("disable-nat", "aws") is DisableNat


def test_disable_then_heal_puts_back_exactly_the_removed_route(
    account: Account, aws_target: Target
) -> None:
    a, c = account.private_tables[ZONE_A], account.private_tables[ZONE_C]
    before = default_routes(account)
    assert before == {a: account.nats[ZONE_A], c: account.nats[ZONE_C]}
    fault = DisableNat(aws_target, {"zone": "a"})
    fault.preflight()
    assert not fault.in_effect()

    fault.inject()

    assert default_routes(account) == {a: None, c: account.nats[ZONE_C]}  # zone c untouched
    assert fault.undo_params() == {
        "zone": "a", "nat_gateway_id": account.nats[ZONE_A], "route_tables": a,
    }  # fmt: skip
    assert fault.in_effect()

    fault.heal()
    assert default_routes(account) == before
    assert not fault.in_effect()
    fault.heal()  # idempotent
    assert default_routes(account) == before


def test_every_route_table_using_the_nat_is_disabled(account: Account, aws_target: Target) -> None:
    ec2 = account.client("ec2")
    extra = ec2.create_route_table(VpcId=account.vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(
        RouteTableId=extra, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=account.nats[ZONE_C]
    )
    fault = DisableNat(aws_target, {"zone": ZONE_C})
    fault.preflight()
    fault.inject()
    assert sorted(fault.params["route_tables"].split(",")) == sorted(
        [extra, account.private_tables[ZONE_C]]
    )
    tables = ec2.describe_route_tables(RouteTableIds=[extra])["RouteTables"]
    assert default_route(tables[0]) is None
    fault.heal()
    tables = ec2.describe_route_tables(RouteTableIds=[extra])["RouteTables"]
    assert default_route(tables[0])["NatGatewayId"] == account.nats[ZONE_C]  # type: ignore[index]


def test_refuses_when_the_route_is_not_where_the_target_says(
    account: Account, tmp_path: Path
) -> None:
    # The seed's mistake worth catching: zone a's private table goes through zone c's NAT.
    ec2 = account.client("ec2")
    ec2.replace_route(
        RouteTableId=account.private_tables[ZONE_A],
        DestinationCidrBlock="0.0.0.0/0",
        NatGatewayId=account.nats[ZONE_C],
    )
    target = write_target(tmp_path / "t.yaml", target_dict(account))
    with pytest.raises(FaultRefused) as err:
        DisableNat(target, {"zone": "a"}).preflight()
    assert str(err.value) == (
        f"NAT disabled: route table {account.private_tables[ZONE_A]} sends 0.0.0.0/0 to "
        f"{account.nats[ZONE_C]}, not to {account.nats[ZONE_A]} as the target says"
    )


def test_refuses_a_nat_declared_in_the_wrong_zone(account: Account, tmp_path: Path) -> None:
    data = target_dict(account)
    zones = data["aws"]["zones"]
    zones[ZONE_A]["nat_gateway_id"], zones[ZONE_C]["nat_gateway_id"] = (
        zones[ZONE_C]["nat_gateway_id"], zones[ZONE_A]["nat_gateway_id"],
    )  # fmt: skip
    target = write_target(tmp_path / "t.yaml", data)
    with pytest.raises(FaultRefused, match=f"is in {ZONE_C}, not in {ZONE_A} as the target says"):
        DisableNat(target, {"zone": "a"}).preflight()


def test_refuses_an_unknown_zone(aws_target: Target) -> None:
    with pytest.raises(FaultRefused, match=r"aws.zones has no zone 'b'"):
        DisableNat(aws_target, {"zone": "b"}).preflight()


def test_heal_does_not_overwrite_a_route_someone_else_changed(
    account: Account, aws_target: Target
) -> None:
    fault = DisableNat(aws_target, {"zone": "a"})
    fault.preflight()
    fault.inject()
    rtb = account.private_tables[ZONE_A]
    account.client("ec2").create_route(
        RouteTableId=rtb, DestinationCidrBlock="0.0.0.0/0", GatewayId=account.igw
    )
    with pytest.raises(FaultError, match=f"{rtb} now sends 0.0.0.0/0 to {account.igw}"):
        fault.heal()


def test_dry_run_changes_nothing(account: Account, aws_target: Target) -> None:
    before = default_routes(account)
    active = inject(
        DisableNat(aws_target, {"zone": "a"}), journal=Journal(aws_target), run_id="dry",
        history=None, clock=Clock(), dry_run=True, log=lambda _: None,
    )  # fmt: skip
    active.heal()
    assert default_routes(account) == before
    assert Journal(aws_target).pending() == []


VICTIM = """
import sys, time
from chaos.aws.nat import DisableNat
from chaos.journal import Journal
from chaos.runner import inject
from gameday.clock import Clock
from gameday.target import load_target

target = load_target(sys.argv[1])
inject(DisableNat(target, {"zone": "a"}), journal=Journal(target), run_id="victim",
       history=None, clock=Clock(), dry_run=False, log=print)
print("injected", flush=True)
time.sleep(600)
"""


def test_kill_9_mid_fault_then_gameday_heal_puts_the_routes_back(
    account: Account, target_path: Path, journal_dir: Path
) -> None:
    before = default_routes(account)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, str(target_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert victim.stdout is not None
        assert victim.stdout.readline().strip() == "injected"
        assert default_routes(account)[account.private_tables[ZONE_A]] is None
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert default_routes(account)[account.private_tables[ZONE_A]] is None  # still broken

    healed = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "heal", "--target", str(target_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "healed 1 fault(s) of target moto-cloudmart" in healed.stdout
    assert poll_until(lambda: default_routes(account) == before, timeout=5)
