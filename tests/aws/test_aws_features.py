"""`pytest features/acceptance/aws_conformance.feature --target FILE` against moto's account:
all pass on the seed's shape; on a wrong account the scenarios fail naming what is wrong."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.moto_account import ZONE_A, ZONE_C, Account, target_dict, write_target

pytestmark = [pytest.mark.aws, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
FEATURE = "features/acceptance/aws_conformance.feature"


def run_feature(target_path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GAMEDAY_REPORTS_DIR": str(tmp_path / "reports"),
        "GAMEDAY_STATE_DIR": str(tmp_path / "state"),
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", FEATURE, "--target", str(target_path),
         "-p", "no:cacheprovider", "-q", "--tb=line", "-rs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_conformance_feature_passes_on_the_seed_shape(
    account: Account, target_path: Path, tmp_path: Path
) -> None:
    result = run_feature(target_path, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "7 passed" in result.stdout


def test_the_conformance_feature_fails_on_a_wrong_account(
    account: Account, target_path: Path, tmp_path: Path
) -> None:
    account.client("rds").modify_db_instance(
        DBInstanceIdentifier=account.db, MultiAZ=False, ApplyImmediately=True
    )
    account.client("ec2").replace_route(
        RouteTableId=account.private_tables[ZONE_A], DestinationCidrBlock="0.0.0.0/0",
        NatGatewayId=account.nats[ZONE_C],
    )  # fmt: skip
    account.client("cloudwatch").delete_alarms(AlarmNames=["RedisDown"])
    result = run_feature(target_path, tmp_path)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "3 failed, 4 passed" in result.stdout
    assert "RDS cloudmart-db has MultiAZ=false" in result.stdout
    assert f"to {account.nats[ZONE_C]} in {ZONE_C}" in result.stdout
    assert "CloudWatch has no alarm named RedisDown" in result.stdout


def test_a_target_without_aws_skips_every_scenario_saying_why(
    account: Account, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text(
        f"name: plain\nprovider: generic\nentrypoint:\n  url: {account.url}\n"
        "  health_path: /moto-api/\n"
    )
    result = run_feature(plain, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "7 skipped" in result.stdout
    assert "target 'plain' has no aws section" in result.stdout


@pytest.mark.usefixtures("rds_fails_over")
def test_every_shipped_feature_passes_or_skips_with_its_reason_on_moto(
    account: Account, tmp_path: Path
) -> None:
    """`pytest features/ --allow-destructive` against moto's CloudMart account: no error, no
    failure, every skip with its reason. moto has no real backends, database or cache behind
    its endpoints, so the target declares none (the scenarios needing them say so) and the
    conformance scenarios run against the account itself."""
    data = target_dict(account)
    del data["servers"]
    data["app"] = {"product_path": None, "orders": None, "sessions": None, "rate_limit": None}
    path = tmp_path / "moto-all.yaml"
    write_target(path, data)
    env = {
        **os.environ,
        "GAMEDAY_REPORTS_DIR": str(tmp_path / "reports"),
        "GAMEDAY_STATE_DIR": str(tmp_path / "state"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "features/", "--target", str(path),
         "--allow-destructive", "-p", "no:cacheprovider", "-q", "-rs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "error" not in out.split("short test summary")[-1]
    assert "8 passed" in out, out[-2000:]  # the 7 conformance scenarios and the entrypoint
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skips and all(re.search(r"\.py:\d+: \S", line) for line in skips), skips
    assert "has no database role" in out and "declares no app.orders API" in out
