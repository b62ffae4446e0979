"""Fixtures of the AWS tests: moto's server (real HTTP on loopback) for the session, a fresh
CloudMart-shaped account for each test, and a target file pointing at it (`aws.endpoint_url`).
Credentials are fake and the region fixed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gameday.target import Target, load_target
from tests.aws.moto_account import (
    FAKE_ENV,
    ZONE_A,
    ZONE_C,
    Account,
    build_account,
    target_dict,
    write_target,
)


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


@pytest.fixture
def rds_fails_over(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's RDS reboot changes nothing; make it behave like a Multi-AZ failover: `rebooting`
    for 0.3 s, then `available` in the other zone, with AWS's two failover events. moto's
    server runs in this process, so its backend is patched here."""
    from moto.rds import models

    events = {
        "TEST_FAILOVER_STARTED": {"Categories": ["failover"],
                                  "Message": "Multi-AZ instance failover started."},
        "TEST_FAILOVER_COMPLETED": {"Categories": ["failover"],
                                    "Message": "Multi-AZ instance failover completed."},
    }  # fmt: skip
    for key, value in events.items():
        monkeypatch.setitem(models.Event.EVENT_MAP, key, value)
    timers: list[threading.Timer] = []

    def reboot(self: Any, db_instance_identifier: str) -> Any:
        db = self.describe_db_instances(db_instance_identifier)[0]
        db.status = "rebooting"
        db.add_event("TEST_FAILOVER_STARTED")

        def done() -> None:
            db.availability_zone = ZONE_C if db.availability_zone == ZONE_A else ZONE_A
            db.status = "available"
            db.add_event("TEST_FAILOVER_COMPLETED")

        timers.append(threading.Timer(0.3, done))
        timers[-1].start()
        return db

    monkeypatch.setattr(models.RDSBackend, "reboot_db_instance", reboot)
    yield
    for timer in timers:
        timer.cancel()
