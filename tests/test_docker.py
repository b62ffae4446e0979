"""Docker hosts, against a real Docker Engine API (podman's service, see tests/podman.py).

Every assertion about a fault reads the engine's own state (`inspect`): containers really
exited, paused or killed, and running (healthy) again after heal. Ports: 17600-17699.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.base import FaultRefused, fault_class
from chaos.docker import Member, start_order
from chaos.journal import Journal
from chaos.runner import FaultSession, inject
from gameday.clock import Clock
from gameday.target import Target, load_target
from lab.wait import poll_until
from tests.podman import Podman

ROOT = Path(__file__).resolve().parent.parent
docker_only = pytest.mark.docker

REDIS_PORT = {"server1": 17600, "server2": 17601}
WEB_PORT = {"server1": 17602, "server2": 17603}


def write_target(
    tmp_path: Path, engines: dict[str, str], projects: dict[str, str], **extra: Any
) -> Path:
    servers = []
    for i, (name, engine) in enumerate(engines.items()):
        docker: dict[str, Any] = {"engine": engine, "project": projects[name]}
        docker.update(extra.get(name, {}))
        servers.append({"name": name, "zone": "ab"[i], "docker": docker})
    raw = {
        "name": f"docker-test-{tmp_path.name}",
        "provider": "docker",
        "allow_destructive": True,
        "entrypoint": {"url": "http://127.0.0.1:9"},
        "servers": servers,
    }
    path = tmp_path / "target.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def state(podman: Podman, name: str) -> dict[str, Any]:
    """The engine's own view of a container (what `docker inspect` shows)."""
    with podman.client() as client:
        attrs: dict[str, Any] = client.api.inspect_container(name)["State"]
        return attrs


def statuses(podman: Podman, names: list[str]) -> dict[str, str]:
    return {n: state(podman, n)["Status"] for n in names}


@pytest.fixture
def project(podman_engine: Podman, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """server1's compose project on the engine: redis (with a healthcheck) and a web server
    that depends on it (compose's depends_on label). Returns service -> container name."""
    tag = f"{os.getpid()}-{request.node.name[-40:]}".replace("[", "-").replace("]", "")
    tag = "".join(c if c.isalnum() or c in "-_" else "-" for c in tag)
    proj = f"gd-{tag}"
    names = {"redis": f"{proj}-redis-1", "web": f"{proj}-web-1"}
    port = REDIS_PORT["server1"]
    podman_engine.run(
        name=names["redis"], project=proj, service="redis",
        command=["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no"],
        healthcheck=["/usr/bin/redis-cli", "-p", str(port), "ping"],
    )  # fmt: skip
    podman_engine.run(
        name=names["web"], project=proj, service="web",
        depends_on="redis:service_healthy:false",
        command=["/bin/httpd", "-f", "-p", f"127.0.0.1:{WEB_PORT['server1']}", "-h", "/tmp"],
    )  # fmt: skip
    names["project"] = proj
    yield names
    with podman_engine.client() as client:
        for key in ("redis", "web"):
            client.containers.get(names[key]).remove(force=True)


def project_target(tmp_path: Path, podman: Podman, proj: str) -> Target:
    path = write_target(
        tmp_path, {"server1": podman.address}, {"server1": proj},
        server1={"stop_timeout_sec": 2, "health_timeout_sec": 30},
    )  # fmt: skip
    return load_target(str(path))


# -- without an engine -----------------------------------------------------------------------


def _m(service: str, *depends: str) -> Member:
    return Member(id=service, name=service, service=service, status="running", depends_on=depends)


def test_start_order_follows_depends_on_then_declared_order() -> None:
    items = [_m("web", "backend"), _m("backend", "postgres", "redis"), _m("redis"), _m("postgres")]
    assert [m.service for m in start_order(items, [])] == ["postgres", "redis", "backend", "web"]
    assert [m.service for m in start_order(items, ["redis"])] == [
        "redis", "postgres", "backend", "web",
    ]  # fmt: skip
    plain = [_m("web"), _m("db"), _m("cache")]
    assert [m.service for m in start_order(plain, ["db", "cache", "web"])] == ["db", "cache", "web"]


def test_a_depends_on_cycle_is_refused() -> None:
    with pytest.raises(FaultRefused, match="cycle among: a, b"):
        start_order([_m("a", "b"), _m("b", "a")], [])


def test_registered_for_docker() -> None:
    for name in ("stop-server", "stop-service", "database-failover", "cache-restart"):
        assert fault_class(name, "docker").providers == ("docker",)


# -- against the engine ----------------------------------------------------------------------


@docker_only
@pytest.mark.usefixtures("journal_dir")
@pytest.mark.parametrize(
    "engine",
    ["unix:///tmp/gameday-podman-nowhere/docker.sock", "tcp://127.0.0.1:17699"],
)
def test_an_unreachable_engine_is_refused_in_one_line_before_anything(
    tmp_path: Path, podman_engine: Podman, project: dict[str, str], engine: str
) -> None:
    # server1's containers exist on the real engine; the target points at a wrong address.
    target = load_target(
        str(write_target(tmp_path, {"server1": engine}, {"server1": project["project"]}))
    )
    fault = fault_class("stop-server", "docker")(target, {"server": "server1", "mode": "kill"})
    journal = Journal(target)
    with pytest.raises(FaultRefused) as err:
        inject(fault, journal=journal, run_id="r", history=None, clock=Clock(),
               dry_run=False, log=lambda _: None)  # fmt: skip
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"server server1: Docker engine at {engine} cannot be reached: ")
    assert journal.pending() == [] and not journal.path.exists()
    assert statuses(podman_engine, [project["redis"], project["web"]]) == {
        project["redis"]: "running", project["web"]: "running",
    }  # fmt: skip


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_dry_run_changes_nothing(
    tmp_path: Path, podman_engine: Podman, project: dict[str, str]
) -> None:
    target = project_target(tmp_path, podman_engine, project["project"])
    fault = fault_class("stop-server", "docker")(target, {"server": "server1", "mode": "kill"})
    lines: list[str] = []
    journal = Journal(target)
    with FaultSession(log=lines.append, signals=False) as session:
        session.inject(fault, journal=journal, run_id="r", history=None, clock=Clock(),
                       dry_run=True)  # fmt: skip
        assert statuses(podman_engine, [project["redis"], project["web"]]) == {
            project["redis"]: "running", project["web"]: "running",
        }  # fmt: skip
    assert lines[0] == (
        f"dry run: would kill every container of server server1 (compose project "
        f"{project['project']} on {podman_engine.address})"
    )
    assert not journal.path.exists()
    assert state(podman_engine, project["redis"])["Pid"] > 0


@docker_only
@pytest.mark.usefixtures("journal_dir")
@pytest.mark.parametrize(
    ("mode", "status", "exit_codes"),
    # graceful: redis exits 0 on SIGTERM; busybox httpd as PID 1 ignores SIGTERM, so the
    # engine SIGKILLs it (137) after the server's stop_timeout_sec, as Docker does.
    [("graceful", "exited", (0, 137)), ("kill", "exited", (137, 137)), ("pause", "paused", (0, 0))],
)
def test_stop_server_for_real_and_heal_in_dependency_order(
    tmp_path: Path,
    podman_engine: Podman,
    project: dict[str, str],
    mode: str,
    status: str,
    exit_codes: tuple[int, int],
) -> None:
    target = project_target(tmp_path, podman_engine, project["project"])
    names = [project["redis"], project["web"]]
    before = {n: state(podman_engine, n)["StartedAt"] for n in names}
    fault = fault_class("stop-server", "docker")(target, {"server": "server1", "mode": mode})
    journal = Journal(target)
    with FaultSession(log=lambda _: None, signals=False) as session:
        active = session.inject(fault, journal=journal, run_id="r", history=None,
                                clock=Clock(), dry_run=False)  # fmt: skip
        # The engine's own state: both containers stopped (killed: 137) or frozen.
        for n, exit_code in zip(names, exit_codes, strict=True):
            s = state(podman_engine, n)
            assert (s["Status"], s["ExitCode"]) == (status, exit_code), n
        assert fault.in_effect()
        [entry] = journal.pending()
        assert {c for c in entry.params["containers"].split('"') if c in names} == set(names)
        t0 = time.monotonic()
        active.heal()
        heal_sec = time.monotonic() - t0
    print(f"stop-server {mode}: heal took {heal_sec:.2f} s")
    after = {n: state(podman_engine, n) for n in names}
    assert {n: s["Status"] for n, s in after.items()} == dict.fromkeys(names, "running")
    assert not fault.in_effect()
    assert journal.pending() == []
    if mode != "pause":
        # Started again (new StartedAt), redis (the dependency) before web.
        assert all(after[n]["StartedAt"] != before[n] for n in names)
        assert after[project["redis"]]["StartedAt"] < after[project["web"]]["StartedAt"]


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_stop_service_stops_only_that_service(
    tmp_path: Path, podman_engine: Podman, project: dict[str, str]
) -> None:
    target = project_target(tmp_path, podman_engine, project["project"])
    fault = fault_class("stop-service", "docker")(
        target, {"server": "server1", "service": "redis", "mode": "graceful"}
    )
    with FaultSession(log=lambda _: None, signals=False) as session:
        session.inject(fault, journal=Journal(target), run_id="r", history=None,
                       clock=Clock(), dry_run=False)  # fmt: skip
        assert statuses(podman_engine, [project["redis"], project["web"]]) == {
            project["redis"]: "exited", project["web"]: "running",
        }  # fmt: skip
    assert state(podman_engine, project["redis"])["Status"] == "running"


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_a_server_already_down_is_refused_not_broken_further(
    tmp_path: Path, podman_engine: Podman, project: dict[str, str]
) -> None:
    target = project_target(tmp_path, podman_engine, project["project"])
    with podman_engine.client() as client:
        client.containers.get(project["web"]).stop(timeout=2)
    fault = fault_class("stop-server", "docker")(target, {"server": "server1", "mode": "kill"})
    with pytest.raises(FaultRefused, match=r"not every container is running.*web-1 \(exited\)"):
        fault.preflight()
    assert state(podman_engine, project["redis"])["Status"] == "running"


@docker_only
def test_kill_9_mid_fault_then_gameday_heal_starts_the_containers(
    tmp_path: Path, podman_engine: Podman, project: dict[str, str], journal_dir: Path
) -> None:
    target = project_target(tmp_path, podman_engine, project["project"])
    path = tmp_path / "target.yaml"
    names = [project["redis"], project["web"]]
    ready = tmp_path / "ready"
    env = {**os.environ, "GAMEDAY_STATE_DIR": str(journal_dir), "PYTHONPATH": str(ROOT)}
    victim = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "docker_victim.py"), str(path), "server1",
         str(ready)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert poll_until(lambda: ready.exists() or victim.poll() is not None, timeout=60)
        assert ready.exists(), victim.communicate()[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=10)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    # The run is gone; its fault is not: the engine says both containers are stopped.
    assert statuses(podman_engine, names) == dict.fromkeys(names, "exited")
    assert len(Journal(target).pending()) == 1

    t0 = time.monotonic()
    healed = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "gameday"), "heal", "--target", str(path)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    print(f"gameday heal after kill -9: {time.monotonic() - t0:.2f} s")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "healed 1 fault(s)" in healed.stdout
    assert statuses(podman_engine, names) == dict.fromkeys(names, "running")
    assert Journal(target).pending() == []
