"""Fixtures of the AWS tests: moto's server (real HTTP on loopback) for the session, a fresh
CloudMart-shaped account for each test, and a target file pointing at it (`aws.endpoint_url`).
Credentials are fake and the region fixed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gameday.target import Target, load_target
from tests.aws.moto_account import FAKE_ENV, Account, build_account, target_dict, write_target


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """moto's server on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request of moto's server: hundreds of lines per test otherwise.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Fake credentials and a fixed region; no profile or config file of the machine's."""
    for key, value in FAKE_ENV.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return dict(FAKE_ENV)


@pytest.fixture
def account(moto_url: str, aws_env: dict[str, str]) -> Account:
    """A fresh CloudMart-shaped account on moto's server."""
    return build_account(moto_url)


@pytest.fixture
def target_path(account: Account, tmp_path: Path) -> Path:
    path = tmp_path / "aws-moto.yaml"
    write_target(path, target_dict(account))
    return path


@pytest.fixture
def aws_target(target_path: Path) -> Target:
    return load_target(str(target_path))


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto settles at once: poll it every 50 ms instead of every 2 s."""
    from chaos.aws.session import AwsFault

    monkeypatch.setattr(AwsFault, "poll_sec", 0.05)
