"""Docker resource faults against a real Docker Engine API (podman's service, see
tests/podman.py): stress-ng really runs inside the server's container (read back with `ps`
inside it), a disk file really fills its /tmp, and heal removes them, including from the
undo journal in a fresh fault object (what `gameday heal` does after a SIGKILL). The
containers listen on no port.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.base import FaultRefused
from chaos.docker.engine import COMPOSE_PROJECT
from chaos.registry import fault_class
from gameday.target import Target, load_target
from tests.podman import Podman

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def server(podman_engine: Podman, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """server1's project: one "backend" container that sleeps, with a 16 MiB tmpfs at /data
    (a disk of its own to fill)."""
    proj = f"gd-res-{os.getpid()}-{request.node.name[-20:]}".replace("[", "-").replace("]", "")
    proj = "".join(c if c.isalnum() or c in "-_" else "-" for c in proj)
    name = f"{proj}-backend-1"
    with podman_engine.client() as client:
        from lab.podman import IMAGE, host_volumes, ulimits

        client.containers.run(
            IMAGE, ["sleep", "600"], name=name, detach=True, network_mode="host",
            labels={COMPOSE_PROJECT: proj, "com.docker.compose.service": "backend"},
            volumes=host_volumes(), ulimits=ulimits(), tmpfs={"/data": "size=16m"},
            environment={"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"},
        )  # fmt: skip
    yield {"project": proj, "container": name}
    with podman_engine.client() as client:
        for c in client.containers.list(all=True, filters={"label": [f"{COMPOSE_PROJECT}={proj}"]}):
            c.remove(force=True)


def target(tmp_path: Path, podman: Podman, proj: str, **stress: Any) -> Target:
    raw = {
        "name": "docker-res",
        "provider": "docker",
        "entrypoint": {"url": "http://127.0.0.1:9"},
        "servers": [{"name": "server1", "zone": "a", "docker": {
            "engine": podman.address, "project": proj, "backend_service": "backend"}}],
        "stress": {"max_disk_mb": 64, "max_memory_mb": 256, **stress},
    }  # fmt: skip
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_target(str(path))


def inside(podman: Podman, name: str, script: str) -> str:
    with podman.client() as client:
        result = client.containers.get(name).exec_run(["sh", "-c", script])
        return (result.output or b"").decode()


def stress_running(podman: Podman, name: str) -> bool:
    return "stress-ng" in inside(
        podman, name, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '"
    )


def test_cpu_stress_runs_inside_the_container_and_heals_from_the_journal(
    podman_engine: Podman, server: dict[str, str], tmp_path: Path
) -> None:
    t = target(tmp_path, podman_engine, server["project"])
    fault = fault_class("cpu-stress", "docker")(t, {"server": "server1", "seconds": "60"})
    fault.preflight()
    fault.inject()
    try:
        assert stress_running(podman_engine, server["container"])
        assert fault.in_effect()
        # What the journal kept is enough for another process to heal it.
        again = fault_class("cpu-stress", "docker").from_undo(t, fault.undo_params())
        assert again.params["container"] == fault.params["container"]
        again.heal()
        assert not stress_running(podman_engine, server["container"])
        assert not again.in_effect()
    finally:
        fault.heal()  # idempotent: nothing left


def test_memory_pressure_is_bounded_by_the_target(
    podman_engine: Podman, server: dict[str, str], tmp_path: Path
) -> None:
    # This machine's memory at 90 % is gigabytes away: more than 256 MiB, refused, nothing run.
    t = target(tmp_path, podman_engine, server["project"])
    fault = fault_class("memory-pressure", "docker")(t, {"server": "server1", "percent": "90"})
    fault.preflight()
    with pytest.raises(
        FaultRefused, match=r"MiB needed to reach 90 %, stress.max_memory_mb is 256"
    ):
        fault.inject()
    assert not stress_running(podman_engine, server["container"])


def test_disk_fill_fills_its_own_filesystem_and_refuses_a_big_one(
    podman_engine: Podman, server: dict[str, str], tmp_path: Path
) -> None:
    t = target(tmp_path, podman_engine, server["project"])
    fill = fault_class("disk-fill", "docker")(t, {"server": "server1", "path": "/data"})
    fill.preflight()
    fill.inject()
    try:
        df = inside(podman_engine, server["container"], "df -Pk /data | tail -n 1").split()
        assert int(df[2]) / int(df[1]) >= 0.89, df
        fresh = fault_class("disk-fill", "docker").from_undo(t, fill.undo_params())
        assert fresh.in_effect()
        fresh.heal()
        assert inside(podman_engine, server["container"], "ls /data").strip() == ""
    finally:
        fill.heal()
    # The container's / is this machine's disk (overlay on it): far more than 64 MiB to fill.
    big = fault_class("disk-fill", "docker")(t, {"server": "server1", "path": "/"})
    with pytest.raises(FaultRefused, match=r"disk|stress.max_disk_mb is 64"):
        big.inject()


def test_a_container_without_stress_ng_is_refused_in_one_line(
    podman_engine: Podman, server: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = target(tmp_path, podman_engine, server["project"])
    fault = fault_class("cpu-stress", "docker")(t, {"server": "server1"})
    monkeypatch.setattr(type(fault), "_exec", lambda self, c, script: (127, "")
                        if "stress-ng" in script else (0, ""))  # fmt: skip
    with pytest.raises(FaultRefused) as info:
        fault.preflight()
    assert str(info.value) == (
        f"CPU stressed: stress-ng is not installed in container {server['container']} "
        "(declare a command fault cpu-stress for this server: docs/monitoring.md)"
    )
