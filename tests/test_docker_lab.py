"""The lab in Docker mode: its programs as compose-labelled containers on a real engine, and
the resilience scenarios run against `targets/docker-lab.yaml`, on the Docker fault path.

Ports 17650-17692 (base port 17650), away from the shared lab on 17400.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lab import configs, control, docker_runtime, health
from lab.layout import LOOPBACK, SERVERS, LabLayout
from lab.target import DOCKER_BASE_PORT, render_docker_target
from lab.wait import poll_until
from tests.podman import PodmanUnavailable, ensure_podman

ROOT = Path(__file__).resolve().parent.parent
# On the host's network and without monitoring, as `lab up --runtime docker` makes it: read
# before the lab exists, the layout would otherwise take the zones' addresses and the monitoring
# of a supervisord lab.
LAYOUT = replace(
    LabLayout.from_env(
        base_port=DOCKER_BASE_PORT, state_dir=f"/tmp/gameday-lab-{DOCKER_BASE_PORT}"
    ),
    network=LOOPBACK,
    network_note=control.DOCKER_NETWORK_NOTE,
    monitoring=False,  # the Docker lab runs without its own monitoring (control.monitored)
)
SCENARIOS = [
    "features/resilience/server_loss.feature",
    "features/resilience/database_failover.feature",
]
SELECTED = "first_server or database_failover_under_load"


def test_committed_docker_lab_target_is_the_rendered_layout() -> None:
    assert (ROOT / "targets" / "docker-lab.yaml").read_text() == render_docker_target(LAYOUT)


@pytest.fixture(scope="module")
def docker_lab() -> Iterator[LabLayout]:
    """The lab on port 17650 in Docker mode; brought down after, if this module started it."""
    try:
        ensure_podman()
    except PodmanUnavailable as exc:
        pytest.skip(f"no Docker Engine API: {exc}")
    started = not control.is_running(LAYOUT)
    try:
        control.up(LAYOUT, runtime="docker")
        yield LAYOUT
    finally:
        if started:
            control.down(LAYOUT)


def _containers(layout: LabLayout) -> dict[str, dict[str, Any]]:
    """program -> the engine's own inspect data."""
    with docker_runtime.engine(layout).client() as client:
        found = client.containers.list(
            all=True, filters={"label": [f"{docker_runtime.LAB_LABEL}={layout.base_port}"]}
        )
        return {c.labels[docker_runtime.COMPOSE_SERVICE]: c.attrs for c in found}


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.long
def test_every_program_is_a_running_container_of_its_hosts_project(docker_lab: LabLayout) -> None:
    containers = _containers(docker_lab)
    projects = {
        name: c["Config"]["Labels"][docker_runtime.COMPOSE_PROJECT]
        for name, c in containers.items()
    }
    for s in SERVERS:
        for program in (s.backend_program, s.postgres_program, s.redis_program, s.sentinel_program):
            assert projects[program] == f"gameday-lab-{DOCKER_BASE_PORT}-{s.name}"
    for program in ("haproxy", "monitor", "sentinel3"):
        assert projects[program] == f"gameday-lab-{DOCKER_BASE_PORT}-control"
    assert {c["State"]["Status"] for c in containers.values()} == {"running"}
    assert all(c.healthy for c in health.components(docker_lab))


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.long
def test_each_container_competes_for_the_cpu_as_its_own_processes(docker_lab: LabLayout) -> None:
    """The kernel's view: every container's cgroup sits under the root of the cpu hierarchy,
    weighed as docker_runtime says, not all under one podman parent sharing a single weight
    (on a busy machine that starved the whole lab, and pg_auto_failover never failed over)."""
    kinds = {p.name: p.kind for p in configs.programs(docker_lab)}
    checked = 0
    for program, attrs in _containers(docker_lab).items():
        lines = Path(f"/proc/{attrs['State']['Pid']}/cgroup").read_text().splitlines()
        cpu = [line.split(":", 2)[2] for line in lines if "cpu" in line.split(":")[1].split(",")]
        if not cpu:
            pytest.skip("no cgroup v1 cpu controller here: CPU weights are not cpu.shares")
        assert cpu[0] == f"/libpod-{attrs['Id']}", (program, cpu[0])
        shares = int(Path(f"/sys/fs/cgroup/cpu{cpu[0]}/cpu.shares").read_text())
        expected = docker_runtime.CPU_SHARES.get(kinds[program], docker_runtime.CPU_SHARES_DEFAULT)
        assert shares == expected, (program, shares)
        checked += 1
    assert checked == len(kinds)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.long
def test_a_sigkilled_database_container_leaves_no_lock_for_its_next_start(
    docker_lab: LabLayout,
) -> None:
    """A SIGKILLed postmaster leaves its socket's lock file naming its pid. In the lab's folder
    it outlived the container, the restarted container reused that pid for another process,
    and the next postmaster refused to start ("lock file ... already exists"): pg_autoctl
    then waited for it for good and the crashed primary never rejoined. Such files must live
    and die with the container (its fresh /tmp)."""
    primary = health.pg_primary(docker_lab)
    assert primary is not None
    [standby] = [s for s in SERVERS if s != primary]
    port = docker_lab.pg_port(standby)
    with docker_runtime.engine(docker_lab).client() as client:
        container = client.containers.get(
            docker_runtime.container_name(docker_lab, standby.postgres_program)
        )
        assert container.exec_run(["test", "-S", f"/tmp/.s.PGSQL.{port}"]).exit_code == 0
        container.kill()

        def exited() -> bool:
            container.reload()
            return bool(container.status == "exited")

        assert poll_until(exited, timeout=30)
        left = sorted(str(p) for p in docker_lab.state_dir.rglob(f".s.PGSQL.{port}*"))
        assert left == [], left
        container.start()
    # And the node comes back as the standby.
    assert poll_until(lambda: _unhealthy(docker_lab) == [], timeout=120), _unhealthy(docker_lab)


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.long
def test_resilience_scenarios_pass_on_the_docker_fault_path(
    docker_lab: LabLayout, tmp_path: Path
) -> None:
    before = _containers(docker_lab)
    t0 = time.time()
    env = {
        **os.environ,
        "GAMEDAY_STATE_DIR": str(tmp_path / "state"),
        "GAMEDAY_REPORTS_DIR": str(tmp_path / "reports"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *SCENARIOS, "--target", "targets/docker-lab.yaml",
         "-k", SELECTED, "-p", "no:cacheprovider"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 passed" in run.stdout

    [history] = (tmp_path / "reports").glob("*/history.jsonl")
    records = [json.loads(line) for line in history.read_text().splitlines()]
    phases = [(r["fault"], r["phase"]) for r in records if r.get("kind") == "fault"]
    assert phases == [
        ("server stopped", "inject-start"), ("server stopped", "inject-end"),
        ("server stopped", "heal-start"), ("server stopped", "heal-end"),
        ("database failover", "inject-start"), ("database failover", "inject-end"),
        ("database failover", "heal-start"), ("database failover", "heal-end"),
    ]  # fmt: skip
    s1 = SERVERS[0]
    server1 = [s1.backend_program, s1.postgres_program, s1.redis_program, s1.sentinel_program]

    # The engine's own record: every container of server1 really stopped during the run and
    # was started again; everything runs and the lab is healthy after the heals.
    after = _containers(docker_lab)
    for program in server1:
        finished = _epoch(after[program]["State"]["FinishedAt"])
        assert finished > t0, (program, after[program]["State"])
        assert after[program]["State"]["StartedAt"] != before[program]["State"]["StartedAt"]
    assert {c["State"]["Status"] for c in after.values()} == {"running"}
    # The lab's own idea of healthy is stricter than a heal's (Sentinel's view of the replica
    # that came back, the monitor's health of the old primary): it may take moments more.
    settled = time.monotonic()
    assert poll_until(lambda: _unhealthy(docker_lab) == [], timeout=60), _unhealthy(docker_lab)
    print(f"lab settled {time.monotonic() - settled:.1f} s after the last heal")


def _unhealthy(layout: LabLayout) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in health.components(layout) if not c.healthy]


def _epoch(stamp: str) -> float:
    from datetime import datetime

    # "2026-11-25T13:56:11.43598421Z": at most microseconds for fromisoformat.
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.long
def test_every_shipped_feature_passes_or_skips_with_its_reason(
    docker_lab: LabLayout, tmp_path: Path
) -> None:
    """`pytest features/ --allow-destructive` on the Docker fault path (issue 10): the lab-only
    steps of old (the primary crashes, a backend is killed, the cache master crashes) run
    through the Docker faults; nothing errs; what cannot run says why."""
    env = {
        **os.environ,
        "GAMEDAY_STATE_DIR": str(tmp_path / "state"),
        "GAMEDAY_REPORTS_DIR": str(tmp_path / "reports"),
    }
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "features/", "--target", "targets/docker-lab.yaml",
         "--allow-destructive", "-p", "no:cacheprovider", "-q", "-rs"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "Traceback" not in out and " error" not in out.splitlines()[-1], out[-2000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    # The zones-on-the-wire scenarios: containers on the host's network have no zone network
    # to cut (docs/lab.md, Docker mode), and the Docker lab declares no egress to probe.
    network = ("declares no egress", "provides no 'zone-outage'", "provides no 'zone-partition'")
    # The monitoring scenarios: the Docker lab runs no Prometheus or Alertmanager of its own.
    network += ("has no monitoring role",)
    assert all(
        "aws section" in s or "load baseline" in s or any(n in s for n in network) for s in skips
    ), skips
    [history] = (tmp_path / "reports").glob("*/history.jsonl")
    records = [json.loads(line) for line in history.read_text().splitlines()]
    injected = [r["fault"] for r in records if r.get("phase") == "inject-start"]
    assert {"database primary crash", "backend killed", "cache master crash"} <= set(injected)
    assert poll_until(lambda: _unhealthy(docker_lab) == [], timeout=60), _unhealthy(docker_lab)
