"""Docker hosts, against a real Docker Engine API (podman's service, see tests/podman.py).

Every assertion about a fault reads the engine's own state (`inspect`): containers really
exited, paused or killed, and running (healthy) again after heal. Ports: 17600-17699.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaos.base import FaultError, FaultRefused
from chaos.docker.engine import COMPOSE_PROJECT as COMPOSE
from chaos.docker.engine import Member, start_order, wait_down
from chaos.journal import Journal
from chaos.registry import fault_class
from chaos.runner import FaultSession, inject
from gameday.checks.cache import writes_survive_restart
from gameday.clock import Clock
from gameday.probes.cache_keys import keys_present, write_keys
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
        for c in client.containers.list(all=True, filters={"label": [f"{COMPOSE}={proj}"]}):
            c.remove(force=True)


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
    [
        "unix:///tmp/gameday-podman-nowhere/docker.sock",
        "tcp://127.0.0.1:17699",
        # Through the system's ssh client; nothing listens there.
        "ssh://nobody@127.0.0.1:17698",
    ],
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


# -- the cache: the seed's persistence claim, checked by a restart ---------------------------

PERSISTENCE = {
    # The seed: AOF, fsync every second ("at most 1 s of writes lost").
    "seed": (17610, ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]),
    # No AOF and no snapshot: a restart loses everything.
    "none": (17611, ["--appendonly", "no", "--save", ""]),
}


@docker_only
@pytest.mark.usefixtures("journal_dir")
@pytest.mark.parametrize(("config", "survives"), [("seed", True), ("none", False)])
def test_cache_restart_checks_the_persistence_the_redis_runs_with(
    tmp_path: Path, podman_engine: Podman, config: str, survives: bool
) -> None:
    port, args = PERSISTENCE[config]
    proj = f"gd-{os.getpid()}-cache-{config}"
    container = podman_engine.run(
        name=f"{proj}-redis-1", project=proj, service="redis",
        command=["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--dir", "/tmp", *args],
        healthcheck=["/usr/bin/redis-cli", "-p", str(port), "ping"],
    )  # fmt: skip
    try:
        path = write_target(
            tmp_path, {"server1": podman_engine.address}, {"server1": proj},
            server1={"cache_service": "redis", "health_timeout_sec": 30},
        )  # fmt: skip
        target = load_target(str(path))
        url = f"redis://127.0.0.1:{port}/0"
        assert poll_until(lambda: _pings(url), timeout=30)
        clock = Clock()
        writes = write_keys(url, seconds=2.0, clock=clock)
        pid_before = state(podman_engine, container.id)["Pid"]

        fault = fault_class("cache-restart", "docker")(target, {"mode": "kill"})
        with FaultSession(log=lambda _: None, signals=False) as session:
            restart_at = clock.now()
            session.inject(fault, journal=Journal(target), run_id="r", history=None,
                           clock=clock, dry_run=False)  # fmt: skip
        # Really restarted by the engine: a new process, running again.
        after = state(podman_engine, container.id)
        assert after["Status"] == "running" and after["Pid"] != pid_before
        verdict = writes_survive_restart(
            writes, keys_present(url, [w.key for w in writes]), restart_at=restart_at
        )
        print(f"persistence {config}: {verdict.message}")
        assert verdict.ok is survives, verdict.message
        # Enough writes older than a second to be evidence (about 200 when the machine is
        # quiet; 73 were seen with the other core busy).
        assert verdict.measured["owed"] > 20
    finally:
        container.remove(force=True)


def _pings(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


# -- the database: the seed's manual failover ------------------------------------------------

PG_PORTS = {"server1": 17620, "server2": 17621}
PG_BIN = "/usr/lib/postgresql/15/bin"


def _as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True)


@dataclass
class PgPair:
    target: Target
    primary: Any  # the containers, as the engine returned them
    replica: Any
    url: dict[str, str]


@pytest.fixture
def pg_pair(tmp_path: Path, podman_engine: Podman) -> Iterator[PgPair]:
    """A PostgreSQL primary (server1) and its streaming replica (server2), each a container."""
    import psycopg

    data = Path(tempfile.mkdtemp(prefix="gameday-pg-", dir="/tmp"))
    containers: list[Any] = []
    try:
        os.chmod(data, 0o755)
        primary, replica = data / "primary", data / "replica"
        for d in (primary, replica):
            d.mkdir(mode=0o700)
            shutil.chown(d, "postgres", "postgres")
        _as_postgres(f"{PG_BIN}/initdb", "-D", str(primary), "-A", "trust", "-U", "postgres")
        projects = {s: f"gd-{os.getpid()}-pg-{s}" for s in PG_PORTS}

        def run_pg(server: str, pgdata: Path) -> Any:
            return podman_engine.run(
                name=f"{projects[server]}-postgres-1", project=projects[server],
                service="postgres", user="postgres", binds={str(pgdata): "/var/lib/pg"},
                env={"PGDATA": "/var/lib/pg"},
                command=["postgres", "-D", "/var/lib/pg", "-p", str(PG_PORTS[server]),
                         "-k", "", "-c", "listen_addresses=127.0.0.1"],
            )  # fmt: skip

        containers.append(run_pg("server1", primary))
        url = {s: f"postgresql://postgres@127.0.0.1:{p}/postgres" for s, p in PG_PORTS.items()}
        assert poll_until(lambda: _pg_answers(url["server1"]), timeout=30)
        _as_postgres(f"{PG_BIN}/pg_basebackup", "-d", url["server1"], "-D", str(replica), "-R")
        containers.append(run_pg("server2", replica))
        assert poll_until(lambda: _pg_answers(url["server2"]), timeout=30)
        with psycopg.connect(url["server2"]) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)

        database = {"database": {"service": "postgres"}, "stop_timeout_sec": 5}
        path = write_target(
            tmp_path, {s: podman_engine.address for s in PG_PORTS}, projects,
            server1=database, server2=database,
        )  # fmt: skip
        yield PgPair(load_target(str(path)), containers[0], containers[1], url)
    finally:
        for c in containers:
            c.remove(force=True)
        shutil.rmtree(data, ignore_errors=True)


def _in_recovery(url: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    assert row is not None
    return bool(row[0])


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_database_failover_promotes_the_replica_container(
    pg_pair: PgPair, podman_engine: Podman
) -> None:
    import psycopg

    target, url = pg_pair.target, pg_pair.url
    fault = fault_class("database-failover", "docker")(target, {})
    assert not fault.in_effect()
    journal = Journal(target)
    with FaultSession(log=lambda _: None, signals=False) as session:
        t0 = time.monotonic()
        session.inject(fault, journal=journal, run_id="r", history=None, clock=Clock(),
                       dry_run=False)  # fmt: skip
        print(f"database-failover: stop + promote took {time.monotonic() - t0:.2f} s")
        # The engine: the primary's container stopped. PostgreSQL: the replica is primary.
        assert state(podman_engine, pg_pair.primary.id)["Status"] == "exited"
        with psycopg.connect(url["server2"], autocommit=True) as conn:
            assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            conn.execute("CREATE TABLE promoted_ok (x int)")
        [entry] = journal.pending()
        assert entry.params["primary_server"] == "server1"
        assert entry.params["replica_server"] == "server2"
        assert entry.params["promoted"] == "yes"
        assert "stays stopped" in entry.params["not_undone"]
    # Heal leaves the old primary stopped (no second primary) and the new one primary.
    assert state(podman_engine, pg_pair.primary.id)["Status"] == "exited"
    assert state(podman_engine, pg_pair.replica.id)["Status"] == "running"
    assert fault.in_effect()  # one-way, and it says so
    assert journal.pending() == []
    # The next failover is refused: there is no replica left to promote.
    with pytest.raises(FaultRefused, match="one database primary and one replica"):
        fault_class("database-failover", "docker")(target, {}).preflight()


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_a_failover_whose_promotion_never_happened_heals_back_to_the_old_primary(
    pg_pair: PgPair, podman_engine: Podman
) -> None:
    """The run dies (or the promotion fails) after the primary's container stopped and before
    the replica was promoted: heal must not leave the deployment without a primary."""
    cls = fault_class("database-failover", "docker")
    fault = cls(pg_pair.target, {})
    fault.preflight()
    primary, replica = fault._pair()  # type: ignore[attr-defined]
    fault.remember(
        primary_server=primary.server.name, primary_container=primary.container_id,
        replica_server=replica.server.name, replica_container=replica.container_id,
    )  # fmt: skip
    pg_pair.primary.stop(timeout=5)
    assert state(podman_engine, pg_pair.primary.id)["Status"] == "exited"
    assert _in_recovery(pg_pair.url["server2"])  # nobody promoted it

    # What `gameday heal` does: a new fault from the journal's record.
    cls.from_undo(pg_pair.target, fault.undo_params()).heal()
    assert state(podman_engine, pg_pair.primary.id)["Status"] == "running"
    assert poll_until(lambda: _pg_answers(pg_pair.url["server1"]), timeout=30)
    assert not _in_recovery(pg_pair.url["server1"])  # the old primary is the primary again
    assert _in_recovery(pg_pair.url["server2"])
    assert not cls.from_undo(pg_pair.target, fault.undo_params()).in_effect()


def _with_automatic_failover(pair: PgPair, tmp_path: Path) -> Target:
    """The pair's target, its databases declaring a failover manager (`failover: automatic`).

    No manager runs here: the tests play its part, or show what heal does without it.
    """
    raw = yaml.safe_load((tmp_path / "target.yaml").read_text())
    for server in raw["servers"]:
        server["docker"]["database"]["failover"] = "automatic"
    path = tmp_path / "automatic.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_target(str(path))


def _crashed_mid_failover(target: Target, pair: PgPair) -> Any:
    """database-crash as far as its SIGKILL, journaled as inject journals it; the manager's
    part (promoting the replica) is left to the test."""
    cls = fault_class("database-crash", "docker")
    fault = cls(target, {})
    fault.preflight()
    primary, replica = fault._pair()  # type: ignore[attr-defined]
    fault.remember(
        primary_server=primary.server.name, primary_container=primary.container_id,
        replica_server=replica.server.name, replica_container=replica.container_id,
    )  # fmt: skip
    pair.primary.kill()
    wait_down(pair.primary)
    return cls.from_undo(target, fault.undo_params())  # what `gameday heal` works from


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_an_automatic_failover_that_never_happened_heals_back_to_the_old_primary(
    pg_pair: PgPair, podman_engine: Podman, tmp_path: Path
) -> None:
    """The failover manager never promoted the replica (pg_auto_failover will not promote a
    standby it does not trust): heal starts the old primary, which carries on as the primary,
    instead of waiting for a promotion that cannot come."""
    target = _with_automatic_failover(pg_pair, tmp_path)
    fault = _crashed_mid_failover(target, pg_pair)
    assert _in_recovery(pg_pair.url["server2"])  # nobody promoted it
    assert fault.in_effect()

    fault.heal()
    assert state(podman_engine, pg_pair.primary.id)["Status"] == "running"
    assert poll_until(lambda: _pg_answers(pg_pair.url["server1"]), timeout=30)
    assert not _in_recovery(pg_pair.url["server1"])
    assert _in_recovery(pg_pair.url["server2"])
    assert not fault.in_effect()


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_an_automatic_heal_the_manager_never_finishes_says_why_in_one_line(
    pg_pair: PgPair, podman_engine: Podman, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manager promoted the replica but never makes the old primary its replica (here:
    there is no manager to rewind it): heal gives up at its bound and names both states."""
    import chaos.docker.postgres

    target = _with_automatic_failover(pg_pair, tmp_path)
    fault = _crashed_mid_failover(target, pg_pair)
    promote = pg_pair.replica.exec_run(
        ["pg_ctl", "promote", "-w", "-D", "/var/lib/pg"], user="postgres"
    )
    assert promote.exit_code == 0, promote.output
    monkeypatch.setattr(chaos.docker.postgres, "FAILOVER_TIMEOUT_SEC", 5.0)

    with pytest.raises(FaultError) as failed:
        fault.heal()
    message = str(failed.value)
    assert "\n" not in message
    assert "did not make the database a primary and a replica again within 5 s" in message
    # Both containers named, each with what its control file says: two primaries.
    assert f"{pg_pair.primary.name} in production" in message
    assert f"{pg_pair.replica.name} in production" in message
    # And what the old primary's container said last, often why it is stuck.
    assert f"{pg_pair.primary.name} last logged: " in message
    assert fault.in_effect()


def _pg_answers(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


# -- the scenarios' own words, run by pytest-bdd against the engine --------------------------

FEATURE = """\
@resilience @destructive
Feature: Docker faults in the scenarios' words
  Scenario: A stopped server is started again
    When server "server1" stops
    And the fault lasts 1 seconds

  Scenario: A Redis restart keeps writes older than a second
    Given keys written to the cache for 2 seconds
    When the cache restarts
    Then every cache write acknowledged more than 1 second before the restart survived
"""


@docker_only
@pytest.mark.usefixtures("journal_dir")
@pytest.mark.parametrize(("config", "survives"), [("seed", True), ("none", False)])
def test_scenarios_run_the_docker_faults_end_to_end(
    pytester: pytest.Pytester, podman_engine: Podman, entrypoint: str, config: str, survives: bool
) -> None:
    port = {"seed": 17612, "none": 17613}[config]
    proj = f"gd-{os.getpid()}-bdd-{config}"
    redis_args = PERSISTENCE[config][1]
    containers = [
        podman_engine.run(
            name=f"{proj}-redis-1", project=proj, service="redis",
            command=["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                     "--dir", "/tmp", *redis_args],
            healthcheck=["/usr/bin/redis-cli", "-p", str(port), "ping"],
        ),
        podman_engine.run(
            name=f"{proj}-web-1", project=proj, service="web",
            depends_on="redis:service_started:false",
            command=["/bin/httpd", "-f", "-p", f"127.0.0.1:{port + 10}", "-h", "/tmp"],
        ),
    ]  # fmt: skip
    try:
        assert poll_until(lambda: _pings(f"redis://127.0.0.1:{port}/0"), timeout=30)
        pytester.makeini((ROOT / "pytest.ini").read_text())
        pytester.makeconftest((ROOT / "conftest.py").read_text().replace('"pytester",', ""))
        pytester.mkdir("features")
        (pytester.path / "features" / "docker.feature").write_text(FEATURE)
        raw = {
            "name": f"bdd-{config}",
            "provider": "docker",
            "entrypoint": {"url": entrypoint},
            "cache": {"url": f"redis://127.0.0.1:{port}/0"},
            "servers": [{"name": "server1", "zone": "a", "docker": {
                "engine": podman_engine.address, "project": proj, "cache_service": "redis",
                "stop_timeout_sec": 2, "health_timeout_sec": 30,
            }}],
        }  # fmt: skip
        (pytester.path / "t.yaml").write_text(yaml.safe_dump(raw))

        # A process of its own: the fault registry is filled once per interpreter.
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GAMEDAY_REPORTS_DIR", str(pytester.path / "reports"))
            result = pytester.runpytest_subprocess(
                "features/", "--target", "t.yaml", "--allow-destructive"
            )

        outcome = {"passed": 2} if survives else {"passed": 1, "failed": 1}
        result.assert_outcomes(**outcome)
        if not survives:
            result.stdout.fnmatch_lines(
                ["*writes acknowledged more than 1 s before the restart are missing*"]
            )
        [history] = (pytester.path / "reports").glob("*/history.jsonl")
        events = [json.loads(line) for line in history.read_text().splitlines()]
        actions = [e["detail"].get("action") for e in events if e.get("phase") == "inject-start"]
        assert actions == [
            f"stop every container of server server1 (compose project {proj} on "
            f"{podman_engine.address})",
            f"kill and start the redis container of server server1 (on {podman_engine.address})",
        ]
        assert [e["phase"] for e in events if e.get("kind") == "fault"].count("heal-end") == 2
        # Healed: the engine shows both containers running again.
        assert statuses(podman_engine, [c.name for c in containers]) == {
            c.name: "running" for c in containers
        }
    finally:
        for c in containers:
            c.remove(force=True)


# -- engine addresses other than the socket ---------------------------------------------------


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_a_tcp_engine_address_works_the_same(
    tmp_path: Path, podman_engine: Podman, project: dict[str, str]
) -> None:
    with podman_engine.tcp_service(17649) as address:
        path = write_target(
            tmp_path, {"server1": address}, {"server1": project["project"]},
            server1={"stop_timeout_sec": 2},
        )  # fmt: skip
        target = load_target(str(path))
        fault = fault_class("stop-service", "docker")(
            target, {"server": "server1", "service": "web", "mode": "kill"}
        )
        with FaultSession(log=lambda _: None, signals=False) as session:
            session.inject(fault, journal=Journal(target), run_id="r", history=None,
                           clock=Clock(), dry_run=False)  # fmt: skip
            assert state(podman_engine, project["web"])["Status"] == "exited"
        assert state(podman_engine, project["web"])["Status"] == "running"


@pytest.mark.usefixtures("journal_dir")
def test_a_missing_tls_file_is_refused_before_connecting(tmp_path: Path) -> None:
    path = write_target(
        tmp_path, {"server1": "tcp://192.0.2.1:2376"}, {"server1": "cloudmart"},
        server1={"tls": {"ca": str(tmp_path / "ca.pem"), "cert": "c", "key": "k"}},
    )  # fmt: skip
    fault = fault_class("stop-server", "docker")(load_target(str(path)), {"server": "server1"})
    with pytest.raises(FaultRefused) as err:
        fault.preflight()
    assert str(err.value) == (
        f"server server1: Docker engine at tcp://192.0.2.1:2376: TLS ca file "
        f"{tmp_path / 'ca.pem'} does not exist"
    )


@docker_only
@pytest.mark.usefixtures("journal_dir")
def test_heal_names_containers_removed_meanwhile_and_starts_the_others(
    tmp_path: Path, podman_engine: Podman, project: dict[str, str]
) -> None:
    target = project_target(tmp_path, podman_engine, project["project"])
    fault = fault_class("stop-server", "docker")(target, {"server": "server1", "mode": "kill"})
    fault.on_remember = lambda _: None
    fault.inject()
    with podman_engine.client() as client:
        client.containers.get(project["web"]).remove(force=True)
    with pytest.raises(FaultError, match=r"containers gone from .* not started: .*web-1$"):
        fault.heal()
    assert state(podman_engine, project["redis"])["Status"] == "running"
