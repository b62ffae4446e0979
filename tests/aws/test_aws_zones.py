"""The shipped NAT and zone features against moto's CloudMart account: the zones' egress is
judged from their route tables (moto has no traffic to send), and every verdict says so; the
NAT's routes are removed and put back by the AWS faults, and a shared NAT fails the check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.aws.moto_account import ZONE_A, ZONE_C, Account, target_dict, write_target

pytestmark = [pytest.mark.aws, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
FEATURES = ["features/resilience/nat.feature", "features/resilience/zone_loss.feature"]
JUDGED = "(judged from the zone's route tables, not traffic)"


def zones_target(account: Account, tmp_path: Path) -> Path:
    data: dict[str, Any] = target_dict(account)
    # moto runs no backend, database or cache: the scenarios needing them skip, saying so.
    del data["servers"]
    data["app"] = {"product_path": None, "orders": None, "sessions": None, "rate_limit": None}
    # ElastiCache's test_failover is not in moto (a 500): keep the zone outage to its NAT,
    # instances and RDS.
    del data["aws"]["cache"]
    data["egress"] = {"via": "routes"}
    path = tmp_path / "moto-zones.yaml"
    write_target(path, data)
    return path


def run(target: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], list[Any]]:
    env = {
        **os.environ,
        "GAMEDAY_REPORTS_DIR": str(tmp_path / "reports"),
        "GAMEDAY_STATE_DIR": str(tmp_path / "state"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *FEATURES, "--target", str(target),
         "--allow-destructive", "-p", "no:cacheprovider", "-q", "-rs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    found = list((tmp_path / "reports").glob("*/verdicts.json"))
    verdicts = json.loads(found[0].read_text())["verdicts"] if found else []
    return result, verdicts


@pytest.mark.usefixtures("rds_fails_over")
def test_the_nat_and_zone_features_pass_on_moto_judging_egress_from_the_routes(
    account: Account, tmp_path: Path
) -> None:
    result, verdicts = run(zones_target(account, tmp_path), tmp_path)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    # The NAT scenario and the zone outage judged by egress; the one with writers skipped.
    assert "2 passed, 1 skipped" in out, out[-2000:]
    assert "declares no app.orders API" in out
    egress = {v["check"]: v for v in verdicts if v["check"].startswith(("egress", "own_nat"))}
    assert {"own_nat_per_zone", "egress_lost", "egress_kept", "egress_back"} <= set(egress)
    assert all(JUDGED in v["message"] for v in egress.values()), egress
    nats = {account.nats[ZONE_A], account.nats[ZONE_C]}
    assert all(v["ok"] for v in egress.values()), egress
    assert "zone a lost egress" in egress["egress_lost"]["message"]
    assert "zone c never lost egress" in egress["egress_kept"]["message"]
    # The route tables point at the NATs again once healed.
    ec2 = account.client("ec2")
    for zone in (ZONE_A, ZONE_C):
        table = ec2.describe_route_tables(RouteTableIds=[account.private_tables[zone]])
        routes = table["RouteTables"][0]["Routes"]
        assert {r.get("NatGatewayId") for r in routes} & nats == {account.nats[zone]}


def test_one_nat_for_both_zones_fails_the_nat_feature_on_moto(
    account: Account, tmp_path: Path
) -> None:
    account.client("ec2").replace_route(
        RouteTableId=account.private_tables[ZONE_C], DestinationCidrBlock="0.0.0.0/0",
        NatGatewayId=account.nats[ZONE_A],
    )  # fmt: skip
    target = zones_target(account, tmp_path)
    env = {**os.environ, "GAMEDAY_REPORTS_DIR": str(tmp_path / "reports"),
           "GAMEDAY_STATE_DIR": str(tmp_path / "state")}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "pytest", FEATURES[0], "--target", str(target),
         "--allow-destructive", "-p", "no:cacheprovider", "-q", "--tb=line"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:]
    assert "zones a and c both leave through" in result.stdout
