"""The `aws:` section of a target: validation in one line, and the example documents it all."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from gameday.target import Aws, TargetError, load_target

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "targets" / "aws.example.yaml"
BASE = "name: t\nprovider: aws\nentrypoint:\n  url: http://127.0.0.1:9\naws:\n"


def fields(model: type[BaseModel]) -> set[str]:
    """Every field name of a model and of the models it contains."""
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
            for inner in (arg, *getattr(arg, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    names |= fields(inner)
    return names


def test_the_example_documents_every_field_of_the_aws_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOUDMART_DB_PASSWORD", "x")
    monkeypatch.setenv("CLOUDMART_REDIS_AUTH_TOKEN", "y")
    target = load_target(str(EXAMPLE))
    assert target.aws is not None and target.aws.account_id == "111122223333"
    text = EXAMPLE.read_text()
    missing = sorted(f for f in fields(Aws) if f"{f}:" not in text)
    assert missing == []
    assert {"nat_gateway_id", "private_route_table_ids", "min_backup_retention_days"} <= fields(
        Aws
    )  # the walk really reaches the nested models


@pytest.mark.parametrize(
    ("aws", "expected"),
    [
        ("  account_id: '123'\n", "aws.region: required but missing"),
        ("  region: seoul\n", "aws.region: 'seoul' is not an AWS region name"),
        ("  region: ap-northeast-2\n  account_id: '12345'\n",
         "aws.account_id: '12345' is not a 12-digit AWS account id"),
        ("  region: ap-northeast-2\n  zones:\n    ap-northeast-2a:\n      nat_gateway_id: igw-1\n",
         "aws.zones.ap-northeast-2a.nat_gateway_id: 'igw-1' does not start with nat-"),
        ("  region: ap-northeast-2\n  database:\n    engine: postgres\n",
         "aws.database: give exactly one of instance_id or aurora_cluster_id"),
        ("  region: ap-northeast-2\n  endpoint_url: localhost:5000\n",
         "aws.endpoint_url: 'localhost:5000' is not a URL with scheme http or https"),
        ("  region: ap-northeast-2\n  backups:\n    bucket: b-1\n    interval_hours: 0\n",
         "aws.backups.interval_hours: Input should be greater than 0"),
        ("  region: ap-northeast-2\n  nat: x\n", "aws.nat: unknown key"),
    ],
)  # fmt: skip
def test_a_broken_aws_section_is_one_line_naming_file_and_field(
    tmp_path: Path, aws: str, expected: str
) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(BASE + aws)
    with pytest.raises(TargetError) as err:
        load_target(str(path))
    message = str(err.value)
    assert message.split(": ", 1)[0].endswith("x.yaml")
    assert message.split(": ", 1)[1].startswith(expected), message
    assert "\n" not in message


def test_gameday_target_check_shows_the_aws_section(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gameday.cli import main

    monkeypatch.setenv("CLOUDMART_DB_PASSWORD", "x")
    monkeypatch.setenv("CLOUDMART_REDIS_AUTH_TOKEN", "y")
    assert main(["target", "check", str(EXAMPLE)]) == 0
    assert (
        "  aws: account 111122223333, region ap-northeast-2; "
        "zones: ap-northeast-2a, ap-northeast-2c"
    ) in capsys.readouterr().out.splitlines()
