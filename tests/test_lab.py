"""The lab's lifecycle, on real services: up, idempotent up, status, failures named, down."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import configs, control, health
from lab.layout import LabLayout

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
# A block of its own, next to the shared lab's (whatever block $GAMEDAY_LAB_BASE_PORT names),
# so these tests never disturb it.
OWN_BASE_PORT = LabLayout.from_env().base_port + 50


@pytest.fixture
def own_layout(tmp_path_factory: pytest.TempPathFactory) -> LabLayout:
    # Not under pytest's tmp_path: the postgres user must be able to reach the folder.
    layout = LabLayout.from_env(
        base_port=OWN_BASE_PORT, state_dir=f"/tmp/gameday-test-lab-{os.getpid()}"
    )
    yield layout
    control.down(layout)


def leftovers(layout: LabLayout) -> list[str]:
    found = [f"port {p}" for p in layout.all_ports() if health.port_open(p)]
    found += [f"pid {p}" for p in control._marked_pids(layout)]
    if layout.state_dir.exists():
        found.append(f"folder {layout.state_dir}")
    return found


def test_up_status_idempotent_up_and_down_leave_nothing(own_layout: LabLayout) -> None:
    elapsed = control.up(own_layout)
    table, healthy = control.status_table(own_layout)
    assert healthy, table
    for name in ("haproxy", "postgres1", "postgres2", "redis1", "redis2", "sentinel3", "backend2"):
        assert name in table
    assert "primary" in table and "secondary" in table and "master" in table

    # Grouped by host, so that a fault can stop "server1" as a unit.
    groups: dict[str, set[str]] = {}
    for info in control.processes(own_layout).values():
        groups.setdefault(info["group"], set()).add(info["name"])
    assert groups == {
        "control": {"haproxy", "monitor", "sentinel3"},
        "server1": {"backend1", "postgres1", "redis1", "sentinel1"},
        "server2": {"backend2", "postgres2", "redis2", "sentinel2"},
    }
    if os.geteuid() == 0:  # PostgreSQL refuses root: the lab runs it as `postgres`
        owners = {
            Path(f"/proc/{pid}").stat().st_uid
            for pid in control._marked_pids(own_layout)
            if b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        }
        assert owners == {pwd.getpwnam("postgres").pw_uid}

    started = time.monotonic()
    control.up(own_layout)  # a second up only checks
    assert time.monotonic() - started < elapsed

    status = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "lab", "status", "--base-port", str(OWN_BASE_PORT)],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "GAMEDAY_LAB_DIR": str(own_layout.state_dir)},
    )  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr

    control.down(own_layout)
    assert leftovers(own_layout) == []


def test_busy_port_is_refused_before_anything_starts(own_layout: LabLayout) -> None:
    with socket.socket() as sock:
        # The previous test's connections may leave the port in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", own_layout.redis_endpoint_port))
        sock.listen()
        with pytest.raises(control.LabError) as info:
            control.up(own_layout)
    assert f"ports {own_layout.redis_endpoint_port} are already in use" in str(info.value)
    assert not own_layout.state_dir.exists()


def test_failed_component_is_named_with_its_log(
    own_layout: LabLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(configs, "haproxy_cfg", lambda layout: "this is not haproxy syntax\n")
    with pytest.raises(control.LabError) as info:
        control.up(own_layout)
    message = str(info.value)
    assert "haproxy" in message
    assert str(own_layout.log_dir / "haproxy.log") in message


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [(["lab", "target", "--base-port", "80"], {},
      "gameday: lab base port 80 (--base-port) is outside 1025..65485"),
     (["lab", "status"], {"GAMEDAY_LAB_BASE_PORT": "abc"},
      "gameday: GAMEDAY_LAB_BASE_PORT='abc' is not a port number")],
)  # fmt: skip
def test_a_bad_base_port_is_bad_input_in_one_line(
    argv: list[str], env: dict[str, str], line: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gameday.cli", *argv], env={**os.environ, **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == line and proc.stdout == ""
