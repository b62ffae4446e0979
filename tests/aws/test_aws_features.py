"""`pytest features/acceptance/aws_conformance.feature --target FILE` against moto's account:
all pass on the seed's shape; on a wrong account the scenarios fail naming what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.moto_account import ZONE_A, ZONE_C, Account

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
