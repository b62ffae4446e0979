"""Start, stop and inspect the lab: a CloudMart-shaped deployment on this machine.

supervisord runs every process, grouped by "host" (`server1`, `server2`, `control`), so a
whole server can later be stopped as a unit. `up` starts programs in dependency order and waits
for each stage to be healthy; `down` stops supervisord, then every process of the lab that is
still alive (`lab_processes`: found without supervisord, which may have been killed), and only
then removes the lab's folder. `up` after a crash of supervisord stops its orphans and starts
the lab again on its folder. `up` and `down` hold a lock per port block, so two of them never
run at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lab import configs, docker_runtime, health, monitoring, network
from lab.layout import (
    DB_NAME,
    DB_USER,
    LOOPBACK,
    MONITORING_GROUP,
    MONITORING_PROGRAMS,
    NETWORK_FILE,
    OUTSIDE_GROUP,
    PG_BIN,
    SERVER_DISK_MB,
    SERVERS,
    LabLayout,
)
from lab.wait import poll_until

# Not GAMEDAY_LAB_DIR: a user may export that in the shell that runs the harness itself.
MARKER_ENV = "GAMEDAY_LAB_MEMBER"
REQUIRED_BINARIES = {
    "haproxy": "/usr/sbin/haproxy",
    "redis-server": "/usr/bin/redis-server",
    "redis-sentinel": "/usr/bin/redis-sentinel",
    "pg_autoctl": "/usr/bin/pg_autoctl",
    "postgres": str(PG_BIN / "postgres"),
}
STAGE_TIMEOUT_SEC = 60.0
POLL_SEC = 0.2
# supervisord's stopwaitsecs: how long a program may take to stop before it is killed.
STOP_WAIT_SEC = 15.0
KILL_WAIT_SEC = 5.0
# How long a second `lab up`/`down` waits for the first (a cold `up` takes 30-90 s on a busy
# machine), and how often it says whom it waits for.
LOCK_WAIT_SEC = 600.0
LOCK_NOTE_SEC = 15.0
WAL_SENDER_TIMEOUT = "5s"
MAX_CONNECTIONS = 300
DOCKER_NETWORK_NOTE = "the Docker lab's containers share the host's network"

Progress = Callable[[str], None]


class LabError(Exception):
    """A lab operation failed; the message is one line naming the component and its log."""


def _quiet(_: str) -> None:
    pass


# -- supervisor ----------------------------------------------------------------------------


def _rpc(layout: LabLayout) -> Any:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{layout.supervisor_socket}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)


def _pidfile_pid(layout: LabLayout) -> int | None:
    try:
        return int(layout.supervisor_pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def supervisor_pid(layout: LabLayout) -> int | None:
    """The pid of the lab's supervisord if it is alive.

    A SIGKILLed supervisord leaves its pid file behind, and pids are reused (pid_max may be
    32768): the process must also carry the lab's marker to count.
    """
    pid = _pidfile_pid(layout)
    if pid is None or not _carries_marker(pid, layout):
        return None
    return pid


def _docker(layout: LabLayout) -> bool:
    return docker_runtime.runtime_of(layout) == "docker"


def is_running(layout: LabLayout) -> bool:
    if _docker(layout):
        return docker_runtime.is_running(layout)
    return supervisor_pid(layout) is not None


def processes(layout: LabLayout) -> dict[str, dict[str, Any]]:
    """supervisor's view: program name -> its process info (statename, pid, group)."""
    if _docker(layout):
        return docker_runtime.processes(layout)
    return {p["name"]: p for p in _rpc(layout).supervisor.getAllProcessInfo()}


def start_programs(layout: LabLayout, names: Iterable[str]) -> None:
    if _docker(layout):
        docker_runtime.start_programs(layout, list(names))
        return
    rpc = _rpc(layout)
    for name in names:
        group = _group_of(name)
        try:
            rpc.supervisor.startProcess(f"{group}:{name}", False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise LabError(
                    f"{name}: supervisor refused to start it: {fault.faultString}"
                ) from None


def stop_programs(layout: LabLayout, names: Iterable[str], *, wait: bool = True) -> None:
    if _docker(layout):
        docker_runtime.stop_programs(layout, list(names), wait=wait)
        return
    rpc = _rpc(layout)
    for name in names:
        try:
            rpc.supervisor.stopProcess(f"{_group_of(name)}:{name}", wait)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise


def signal_program(layout: LabLayout, name: str, sig: str) -> None:
    """Send a signal to the program's process group (as a crash would hit a whole host)."""
    if _docker(layout):
        docker_runtime.signal_program(layout, name, sig)
        return
    _rpc(layout).supervisor.signalProcess(f"{_group_of(name)}:{name}", sig)


def _group_of(name: str) -> str:
    if name == "outside":
        return OUTSIDE_GROUP
    for s in SERVERS:
        own = (s.backend_program, s.postgres_program, s.redis_program, s.sentinel_program)
        if name in own + s.exporter_programs:
            return s.name
    if name in MONITORING_PROGRAMS:
        return MONITORING_GROUP
    return "control"


def log_path(layout: LabLayout, name: str) -> Path:
    return layout.log_dir / f"{name}.log"


# -- waiting -------------------------------------------------------------------------------


def _wait_for(
    layout: LabLayout,
    what: str,
    ready: Callable[[], bool],
    programs: Iterable[str],
    timeout: float = STAGE_TIMEOUT_SEC,
) -> None:
    """Poll `ready` until it is true; on timeout name the programs and their logs."""
    names = list(programs)
    last_error = ""

    def ready_or_fatal() -> bool:
        nonlocal last_error
        try:
            if ready():
                return True
        except Exception as exc:  # a service that is still starting answers with errors
            last_error = f" (last error: {type(exc).__name__}: {str(exc).splitlines()[0][:100]})"
        _raise_if_fatal(layout, names)
        return False

    if poll_until(ready_or_fatal, timeout=timeout, interval=POLL_SEC):
        return
    logs = ", ".join(str(log_path(layout, n)) for n in names)
    raise LabError(f"{what} not ready after {timeout:.0f} s{last_error}; see {logs}")


def _raise_if_fatal(layout: LabLayout, programs: Iterable[str]) -> None:
    info = processes(layout)
    for name in programs:
        state = info.get(name, {}).get("statename")
        if state in ("FATAL", "BACKOFF"):
            raise LabError(f"{name} failed to start ({state}); see {log_path(layout, name)}")


# -- lifecycle -----------------------------------------------------------------------------


def monitored(layout: LabLayout, runtime: str | None = None) -> bool:
    """Does this lab run its monitoring? Only under supervisord: a server's CPU and memory
    view (lab/hostview.py) reads the server's processes, which containers hide."""
    runtime = runtime or docker_runtime.runtime_of(layout)
    return layout.monitoring and runtime != "docker"


def preflight(layout: LabLayout, runtime: str = "supervisor") -> None:
    """Refuse early, in one line, when the machine cannot run the lab."""
    binaries = dict(REQUIRED_BINARIES)
    if monitored(layout, runtime):
        binaries.update(monitoring.BINARIES)
    for name, path in binaries.items():
        if not Path(path).exists():
            raise LabError(f"{name} is not installed ({path} missing); run `make setup` first")
    if runtime == "docker" and shutil.which("podman") is None:
        raise LabError("podman is not installed (the Docker mode's engine); run `make setup`")
    if is_running(layout):
        current = docker_runtime.runtime_of(layout)
        if current != runtime:
            raise LabError(
                f"the lab on port {layout.base_port} already runs on {current}; "
                f"`gameday lab down --base-port {layout.base_port}` first"
            )
        return
    if layout.namespaced:
        # The lab's own processes are gone (or stopped by `_recover`): what is left that
        # could be in the way is a route to the lab's range that is not the lab's.
        foreign = network.foreign_routes(layout.net)
        if foreign:
            raise LabError(
                f"the lab's range {layout.net.lab_range} is already routed on this machine "
                f"({foreign[0]}); remove that route or pick another block with --base-port / "
                "GAMEDAY_LAB_BASE_PORT"
            )
        return
    busy = [p for p in layout.all_ports() if health.port_open(p)]
    if busy:
        raise LabError(
            f"ports {', '.join(map(str, busy))} are already in use on 127.0.0.1; stop what uses "
            "them or pick another block with --base-port / GAMEDAY_LAB_BASE_PORT"
        )


def _write_configs(layout: LabLayout, runtime: str = "supervisor") -> None:
    for folder in (layout.state_dir, layout.log_dir, layout.redis_dir, layout.pg_dir):
        folder.mkdir(parents=True, exist_ok=True)
    (layout.state_dir / docker_runtime.RUNTIME_FILE).write_text(runtime + "\n")
    (layout.state_dir / NETWORK_FILE).write_text(f"{layout.network}\n{layout.network_note}\n")
    (layout.pg_dir / "sockets").mkdir(exist_ok=True)
    layout.pg_runtime_dir.mkdir(mode=0o700, exist_ok=True)
    # The postgres user (when we are root) must be able to walk to its folders.
    layout.state_dir.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(layout.pg_dir, "postgres", "postgres")
        for sub in layout.pg_dir.iterdir():
            shutil.chown(sub, "postgres", "postgres")
    (layout.state_dir / "haproxy.cfg").write_text(configs.haproxy_cfg(layout))
    layout.supervisor_conf.write_text(configs.supervisord_conf(layout))
    for s in SERVERS:
        folder = layout.redis_dir / s.redis_program
        folder.mkdir(exist_ok=True)
        conf = layout.redis_dir / f"{s.redis_program}.conf"
        if not conf.exists():
            conf.write_text(configs.redis_conf(layout, s))
    for i, port in enumerate(layout.sentinel_ports(), start=1):
        conf = Path(configs.sentinel_conf_path(layout, i))
        if not conf.exists():
            conf.write_text(configs.sentinel_conf(layout, port, configs.sentinel_group(i)))
    if monitored(layout, runtime):
        mount_disks(layout)
        monitoring.write_configs(layout)


def mount_disks(layout: LabLayout) -> None:
    """Give each server a data disk of its own: a tmpfs of SERVER_DISK_MB (root only).

    Without it (not root, or mounts refused) the servers have no disk of their own: the
    disk-fill fault refuses and node-exporter reports no filesystem for them.
    """
    if not monitoring.can_mount():
        return
    for s in SERVERS:
        disk = layout.server_disk(s)
        disk.mkdir(parents=True, exist_ok=True)
        if monitoring.disk_mounted(layout, s):
            continue
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SERVER_DISK_MB}m,mode=0755",
             layout.disk_device(s), str(disk)],
            capture_output=True, check=False, timeout=30,
        )  # fmt: skip


def unmount_disks(layout: LabLayout) -> None:
    """Before the folder goes: a mounted tmpfs cannot be removed (and would stay mounted)."""
    for s in SERVERS:
        if monitoring.disk_mounted(layout, s):
            disk = str(layout.server_disk(s))
            done = subprocess.run(["umount", disk], capture_output=True, check=False, timeout=30)
            if done.returncode != 0:  # still busy: detach it now, the kernel frees it later
                subprocess.run(["umount", "-l", disk], capture_output=True, check=False,
                               timeout=30)  # fmt: skip


def _reload(layout: LabLayout) -> None:
    """supervisord reads the rendered config again. A new group (the monitoring host, for a
    lab started before it existed) is added; a group whose programs changed cannot be changed
    under its running programs: that lab must go down first."""
    rpc = _rpc(layout)
    [[added, changed, removed]] = rpc.supervisor.reloadConfig()
    for group in added:
        rpc.supervisor.addProcessGroup(group)
    # A group "changed" whose programs are the same ones (a command line rendered a little
    # differently) runs on as it is, as supervisord leaves it until its next start; one whose
    # programs differ cannot be healed or waited for by name.
    running = {(p["group"], p["name"]) for p in rpc.supervisor.getAllProcessInfo()}
    rendered = {(p.group, p.name) for p in configs.programs(layout)}
    differ = [
        g for g in changed + removed
        if {n for grp, n in running if grp == g} != {n for grp, n in rendered if grp == g}
    ]  # fmt: skip
    if differ:
        raise LabError(
            f"the lab on port {layout.base_port} runs other programs than this gameday renders "
            f"(changed: {', '.join(differ)}; an older version, or "
            "GAMEDAY_LAB_MONITORING switched): `gameday lab down`, then `gameday lab up`"
        )


def _start_supervisord(layout: LabLayout) -> None:
    if is_running(layout):
        _reload(layout)
        return
    env = dict(os.environ, **{MARKER_ENV: str(layout.state_dir)})
    supervisord = Path(sys.executable).with_name("supervisord")
    subprocess.run(
        [str(supervisord), "-c", str(layout.supervisor_conf)],
        env=env,
        check=True,
        cwd=layout.state_dir,
    )

    def answering() -> bool:
        if layout.supervisor_socket.exists() and is_running(layout):
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                return bool(_rpc(layout).supervisor.getState()["statename"] == "RUNNING")
        return False

    if poll_until(answering, timeout=10, interval=POLL_SEC):
        return
    raise LabError(f"supervisord did not start; see {layout.log_dir / 'supervisord.log'}")


def _ensure_schema(layout: LabLayout) -> bool:
    import psycopg

    from lab.app.schema import ensure_schema

    url = layout.db_writer_url.replace(f"{DB_USER}@", "postgres@")
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_USER,)).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {DB_USER} LOGIN")
        conn.execute(f"GRANT ALL ON DATABASE {DB_NAME} TO {DB_USER}")
        # The acceptance checks read pg_stat_replication, which hides its columns otherwise.
        conn.execute(f"GRANT pg_monitor TO {DB_USER}")
        conn.execute(f"GRANT ALL ON SCHEMA public TO {DB_USER}")
        conn.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {DB_USER}")
        conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {DB_USER}"
        )
    ensure_schema(layout.db_writer_url)
    return True


def up(layout: LabLayout, progress: Progress = _quiet, *, runtime: str | None = None) -> float:
    """Start the lab (or what is missing of it) and wait until every part is healthy.

    `runtime`: "supervisor" (processes under supervisord) or "docker" (each program in a
    container, see lab/docker_runtime.py); default: what the running lab uses, else supervisor.
    Returns the seconds it took. Idempotent: on a healthy lab it only checks.
    """
    started = time.monotonic()

    def say(msg: str) -> None:
        progress(f"[{time.monotonic() - started:5.1f}s] {msg}")

    if (runtime or docker_runtime.runtime_of(layout)) == "docker" and layout.namespaced:
        layout = replace(layout, network=LOOPBACK, network_note=DOCKER_NETWORK_NOTE)
    with exclusive(layout, "lab up", say):
        _up(layout, say, runtime)
    elapsed = time.monotonic() - started
    say("all components healthy")
    return elapsed


def _recover(layout: LabLayout, say: Progress) -> None:
    """Make a lab whose supervisord is gone startable again, on its folder.

    Its programs may still run (supervisord does not take them along when it is killed) and
    hold every port: they are stopped, not adopted, since no new supervisord could manage them.
    """
    left = lab_processes(layout)
    if left:
        say(
            f"supervisord is gone but {_processes(len(left))} of the lab still run: "
            "stopping them to start the lab again"
        )
        stop_lab_processes(layout, say)
    # pg_autoctl's pid files there name processes that no longer run (or, pids being
    # reused, someone else's); supervisord's socket has nobody behind it.
    shutil.rmtree(layout.pg_runtime_dir, ignore_errors=True)
    layout.supervisor_socket.unlink(missing_ok=True)


def _up(layout: LabLayout, say: Progress, runtime: str | None) -> None:
    if not is_running(layout):
        _recover(layout, say)
    if runtime is None:
        runtime = docker_runtime.runtime_of(layout) if is_running(layout) else "supervisor"
    preflight(layout, runtime)
    _write_configs(layout, runtime)
    if layout.namespaced:
        try:
            network.ensure(layout.net)
        except network.NetworkError as exc:
            raise LabError(f"the lab's network: {exc}") from None
        say(f"network ready: zones in namespaces {layout.net.prefix}*, {layout.net.lab_range}")
    else:
        say(f"network: everything on 127.0.0.1 ({layout.network_note})")
    if runtime == "docker":
        docker_runtime.start_engine(layout)
        say(f"container engine running ({docker_runtime.engine(layout).address})")
    else:
        _start_supervisord(layout)
        say(f"supervisord running ({layout.state_dir})")

    s1, s2 = SERVERS
    watched = monitored(layout, runtime)
    first = ["monitor", s1.redis_program, s2.redis_program, "haproxy"]
    start_programs(layout, first + (["outside"] if layout.outside_url else []))
    if watched:
        # The servers' own views first; each exporter once what it reads is up; Prometheus
        # and Alertmanager last, so that their first scrape finds everything up and a lab
        # that is starting raises no alert.
        start_programs(
            layout, [p for s in SERVERS for p in (s.node_exporter_program, s.hostview_program)]
        )
    _wait_for(
        layout, "pg monitor",
        lambda: _open_to_lab(layout, "monitor", layout.monitor_port)
        and health.pg_nodes(layout) is not None,
        ["monitor"],
    )  # fmt: skip
    _tune_monitor(layout)
    say("pg_auto_failover monitor ready")

    registered = {n.name for n in health.pg_nodes(layout)}
    if s2.pg_node_name not in registered:
        # First creation. Node 1 registers first so that it becomes the primary, in zone a
        # as in the seed; node 2 then clones it.
        start_programs(layout, [s1.postgres_program])
        _wait_for(
            layout,
            "database node_1",
            lambda: (
                any(
                    n.name == s1.pg_node_name
                    and n.reported_state in ("single", "primary", "secondary", "wait_primary")
                    for n in health.pg_nodes(layout)
                )
                and _open_to_lab(layout, s1.pg_node_name, layout.pg_port(s1))
            ),
            [s1.postgres_program, "monitor"],
        )
        _checkpoint(layout)
        _restart_for_settings(layout)
    # An existing cluster (roles may have swapped after a failover): start whatever is down.
    start_programs(layout, [s1.postgres_program, s2.postgres_program])
    _wait_for(
        layout,
        "database pair",
        lambda: (
            all(_open_to_lab(layout, s.pg_node_name, layout.pg_port(s)) for s in SERVERS)
            and _pg_settled(layout)
        ),
        [s1.postgres_program, s2.postgres_program],
        timeout=120,
    )
    say("database primary + synchronous standby ready")
    # Retried: right after a heal the primary may still be full of connections a probe held
    # while its writes waited for the standby (it lets them go within seconds).
    _wait_for(
        layout, "schema and products",
        lambda: _ensure_schema(layout),
        [s1.postgres_program, s2.postgres_program],
    )  # fmt: skip
    say("schema and products in place")

    start_programs(layout, [s.sentinel_program for s in SERVERS] + ["sentinel3"])
    start_programs(layout, [s.backend_program for s in SERVERS])
    if watched:
        start_programs(
            layout,
            [p for s in SERVERS for p in (s.pg_exporter_program, s.redis_exporter_program)],
        )
        _wait_for(
            layout,
            "exporters",
            lambda: all(
                c.healthy
                for c in health.monitoring_components(layout)
                if c.name not in MONITORING_PROGRAMS
            ),
            [p for s in SERVERS for p in s.exporter_programs],
        )
        start_programs(layout, list(MONITORING_PROGRAMS))
        monitoring.reload(layout)
        say("exporters ready; Prometheus and Alertmanager starting")
    programs = [p["name"] for p in processes(layout).values()]
    _wait_for(
        layout,
        "lab",
        lambda: all(c.healthy for c in health.components(layout)),
        programs,
    )


HBA_MARK = "# gameday lab: its network (the harness on the host, the servers in the zones)"


def _open_to_lab(layout: LabLayout, pgdata: str, port: int) -> bool:
    """Let the lab's whole range in (trust, as 127.0.0.1 is): the harness on the host and the
    servers in the zones connect from addresses pg_autoctl's own rules do not name (it adds
    one for each node and the monitor, and for the monitor's own subnet). True once done.

    Through the unix socket, which no network namespace stands in front of. pg_autoctl keeps
    the lines (it only appends its own), and a standby's base backup copies them.
    """
    if not layout.namespaced:
        return True
    import psycopg

    hba = layout.pgdata(pgdata) / "pg_hba.conf"
    try:
        text = hba.read_text()
    except OSError:
        return False  # not created yet
    if HBA_MARK in text:
        return True
    lab = layout.net.lab_range
    lines = [HBA_MARK, f"host all all {lab} trust", f"host replication all {lab} trust"]
    sockets = str(layout.pg_dir / "sockets")
    try:
        with psycopg.connect(host=sockets, port=port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=2) as conn:  # fmt: skip
            gap = "" if text.endswith("\n") else "\n"
            with hba.open("a") as f:
                f.write(gap + "\n".join(lines) + "\n")
            conn.execute("SELECT pg_reload_conf()")
    except psycopg.OperationalError:
        return False  # not answering yet: the wait asks again
    return True


def _tune_monitor(layout: LabLayout) -> None:
    import psycopg

    with psycopg.connect(layout.monitor_admin_url, autocommit=True, connect_timeout=2) as conn:
        for name, value in configs.MONITOR_SETTINGS.items():
            conn.execute(f"ALTER SYSTEM SET {name} = {int(value)}")
        conn.execute("SELECT pg_reload_conf()")


def _checkpoint(layout: LabLayout) -> None:
    """Flush node 1 before the standby's base backup.

    pg_basebackup asks for a *spread* checkpoint; right after CREATE DATABASE there are
    thousands of dirty buffers and it then waits minutes. An immediate CHECKPOINT first makes
    the spread one instant. A shorter checkpoint_timeout bounds later rebuilds the same way.

    The settings go to postgresql.auto.conf, which the base backup copies to node 2 too.
    wal_sender_timeout: a standby cut off by a partition holds every synchronous commit until
    its walsender gives up on it (30 s as pg_autoctl sets it); 5 s, as the monitor's other
    timeouts are short in the lab. max_connections (needs the restart that follows): while
    commits wait, a writer at a fixed rate holds a connection per write in flight (the
    harness's ledger writer keeps up to rate x timeout of them), on top of the backends'
    pools; PostgreSQL's 100 run out.
    """
    import psycopg

    with psycopg.connect(layout.db_node_url(SERVERS[0], "postgres"), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET checkpoint_timeout = '60s'")
        conn.execute(f"ALTER SYSTEM SET wal_sender_timeout = '{WAL_SENDER_TIMEOUT}'")
        conn.execute(f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS}")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("CHECKPOINT")


def _restart_for_settings(layout: LabLayout) -> None:
    """Restart node 1's postgres (before any standby clones it) so that settings needing a
    restart apply: a fast shutdown of its postmaster, which its pg_autoctl starts again."""
    import psycopg

    server = SERVERS[0]
    if _docker(layout):
        # The pid file names a pid of the container's own namespace: signalled from the host
        # it would hit whatever host process has that number. The container (pg_autoctl and
        # its postgres, the only node yet) is restarted instead.
        stop_programs(layout, [server.postgres_program])
        start_programs(layout, [server.postgres_program])
    else:
        pidfile = layout.pgdata(server.pg_node_name) / "postmaster.pid"
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)

    def restarted() -> bool:
        # Over TCP, as _checkpoint just did: a Docker node's unix socket is in its container.
        with psycopg.connect(layout.db_node_url(server, "postgres"), connect_timeout=2) as conn:
            row = conn.execute("SHOW max_connections").fetchone()
        return row is not None and int(row[0]) == MAX_CONNECTIONS

    _wait_for(layout, "database node_1 restarted", restarted, [server.postgres_program])


def _pg_settled(layout: LabLayout) -> bool:
    """Primary + secondary, both healthy, and the writer URL really reaches a primary.

    Right after a node dies the monitor still reports it as it last was; the write check
    keeps a heal from calling that settled.
    """
    import psycopg

    nodes = health.pg_nodes(layout)
    states = sorted(n.reported_state for n in nodes if n.reported_state == n.goal_state)
    if states != ["primary", "secondary"] or any(n.health != 1 for n in nodes):
        return False
    # The nodes themselves must agree: a standby that accepts writes, or a primary with no
    # synchronous standby streaming, is not a settled pair whatever the monitor last heard.
    servers = {s.pg_node_name: s for s in SERVERS}
    if any(health.pg_disagreement(layout, servers[n.name], n.reported_state) for n in nodes):
        return False
    url = layout.db_writer_url.replace(f"{DB_USER}@", "postgres@")
    with psycopg.connect(url, autocommit=True, connect_timeout=1) as conn:
        row = conn.execute("SELECT NOT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


# -- the lab's processes, with or without supervisord -------------------------------------


@dataclass(frozen=True)
class LabProcess:
    """One live process of the lab, as /proc shows it."""

    pid: int
    ppid: int
    sid: int  # session id
    start: int  # clock ticks after boot: a later process that reuses the pid has another
    name: str  # the kernel's short name (comm)


def _stat(pid: int) -> LabProcess | None:
    """The process `pid` if it lives (a zombie is dead, only not yet reaped by its parent)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # comm may hold spaces and parentheses: it is whatever lies between the first "(" and
    # the last ")". The fields after it start at field 3 of proc(5).
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return LabProcess(pid, int(fields[1]), int(fields[3]), int(fields[19]), name)


def _process_table() -> dict[int, LabProcess]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            proc = _stat(int(entry.name))
            if proc is not None:
                table[proc.pid] = proc
    return table


def _carries_marker(pid: int, layout: LabLayout) -> bool:
    needle = f"{MARKER_ENV}={layout.state_dir}".encode()
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return needle in env.split(b"\0")


def lab_processes(layout: LabLayout) -> list[LabProcess]:
    """Every live process of this lab (supervisor runtime), whether supervisord lives or not.

    No single record reaches them all, so three are joined:
    - the marker in the environment, which supervisord hands to every program; but Redis and
      Sentinel (process titles) and PostgreSQL's children (`postgres: walwriter`) write their
      titles over that memory, so only about a third of the lab still shows it;
    - supervisord's session: it daemonizes with setsid(), every program it starts inherits its
      pid as session id, and that outlives supervisord (the kernel gives the number to no new
      process while a member lives). A session counts when its leader is gone or is the lab's
      own (marked) supervisord, never a shell's session;
    - parenthood: PostgreSQL's children start sessions of their own but stay children of their
      postmaster.
    """
    table = _process_table()
    me = os.getpid()
    marked = {pid for pid in table if pid != me and _carries_marker(pid, layout)}
    candidates = {table[pid].sid for pid in marked}
    recorded = _pidfile_pid(layout)  # supervisord's pid is its session's id
    if recorded is not None:
        candidates.add(recorded)
    sessions = {
        sid
        for sid in candidates
        if sid not in (0, os.getsid(0)) and (sid not in table or sid in marked)
    }
    members = marked | {pid for pid, proc in table.items() if proc.sid in sessions}
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    # Never this process nor what runs it, whatever they inherited.
    ancestors, pid = set(), me
    while pid in table and pid not in ancestors:
        ancestors.add(pid)
        pid = table[pid].ppid
    return sorted((table[p] for p in members - ancestors), key=lambda p: p.pid)


def _signal(proc: LabProcess, sig: signal.Signals) -> None:
    """Signal exactly this process, never a later one that reuses its pid."""
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:
        return  # gone
    try:
        # The pidfd pins whatever process had the pid when it was opened: check it is ours.
        current = _stat(proc.pid)
        if current is not None and current.start == proc.start:
            signal.pidfd_send_signal(fd, sig)
    except OSError:
        pass  # it ended in between
    finally:
        os.close(fd)


def _processes(n: int) -> str:
    return f"{n} process" if n == 1 else f"{n} processes"


def _alive(proc: LabProcess) -> bool:
    current = _stat(proc.pid)
    return current is not None and current.start == proc.start


def stop_lab_processes(layout: LabLayout, progress: Progress = _quiet) -> None:
    """Stop every process of the lab that runs (what supervisord did not stop, or its orphans).

    The top process of each program gets the signal supervisord would send (pg_autoctl stops
    its postgres on SIGINT, Redis saves on SIGTERM), and takes its children along; whatever
    still lives after STOP_WAIT_SEC is killed. Raises LabError if anything survives that.
    A postmaster whose pg_autoctl is gone gets SIGINT too: a fast shutdown, where SIGTERM's
    smart one would wait for clients that may never leave.
    """
    found = lab_processes(layout)
    if not found:
        return
    tracked = {(p.pid, p.start): p for p in found}

    def remaining() -> list[LabProcess]:
        # Children of a parent that died are re-parented out of reach: remember all ever seen.
        for p in lab_processes(layout):
            tracked.setdefault((p.pid, p.start), p)
        return [p for p in tracked.values() if _alive(p)]

    pids = {p.pid for p in found}
    tops = [p for p in found if p.ppid not in pids]
    progress(f"stopping {_processes(len(found))} of the lab")
    for p in tops:
        _signal(p, signal.SIGINT if p.name in ("pg_autoctl", "postgres") else signal.SIGTERM)
    if poll_until(lambda: not remaining(), timeout=STOP_WAIT_SEC, interval=POLL_SEC):
        return
    left = remaining()
    progress(f"killing {_processes(len(left))} still running after {STOP_WAIT_SEC:.0f} s")
    for p in left:
        _signal(p, signal.SIGKILL)
    if poll_until(lambda: not remaining(), timeout=KILL_WAIT_SEC, interval=POLL_SEC):
        return
    survivors = ", ".join(f"{p.pid} ({p.name})" for p in remaining())
    raise LabError(f"lab processes survived SIGKILL: {survivors}; kept {layout.state_dir}")


def orphans_line(layout: LabLayout) -> str | None:
    """What `lab status` says when supervisord is gone but programs of the lab still run."""
    # While an `up` or `down` holds the lock, processes without supervisord are its work in
    # progress (supervisord starting, programs stopping), not orphans.
    if _docker(layout) or supervisor_pid(layout) is not None or lock_holder(layout):
        return None
    left = lab_processes(layout)
    if not left:
        return None
    return (
        f"supervisord is gone but {_processes(len(left))} of the lab still run; "
        f"`gameday lab down --base-port {layout.base_port}` stops them "
        "(`gameday lab up` stops them and starts the lab again)"
    )


# -- one `up` or `down` at a time per port block -----------------------------------------

# lock path -> nesting depth, per thread: another thread of this process waits like any other
# process would (flock locks belong to an open file, not to a process).
_HELD = threading.local()


def lock_holder(layout: LabLayout) -> str | None:
    """Who holds the lab's lock ("pid 123 (lab up, since 01:02:03)"), or None."""
    try:
        fd = os.open(layout.lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 200).decode(errors="replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive(layout: LabLayout, action: str, say: Progress = _quiet) -> Iterator[None]:
    """Hold the lab's lock (an flock, released by the kernel even on SIGKILL) while inside.

    A second holder waits, says every LOCK_NOTE_SEC whom it waits for, and gives up with a
    LabError after LOCK_WAIT_SEC. Re-entrant within a process (a fault's heal runs `up`).
    """
    path = layout.lock_path
    held: dict[Path, int] = _HELD.__dict__.setdefault("depth", {})
    if path in held:
        held[path] += 1
        try:
            yield
        finally:
            held[path] -= 1
        return
    started = time.monotonic()
    noted = -LOCK_NOTE_SEC
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:  # another user's lock file in /tmp: locking it read-only works
            fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            waited = time.monotonic() - started
            holder = lock_holder(layout) or "another process"
            if waited >= LOCK_WAIT_SEC:
                raise LabError(
                    f"the lab on port {layout.base_port} is busy: {holder} holds {path}; "
                    f"gave up after {LOCK_WAIT_SEC:.0f} s"
                ) from None
            if waited - noted >= LOCK_NOTE_SEC:
                say(f"waiting for {holder} to finish with the lab on port {layout.base_port}")
                noted = waited
            time.sleep(POLL_SEC)
            continue
        # The previous holder removes the file when done: a lock on a removed file guards
        # nothing, so start over unless the path still names the file we locked.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        holder = f"pid {os.getpid()} ({action}, since {time.strftime('%H:%M:%S')})"
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, holder.encode())
        held[path] = 1
        yield
    finally:
        held.pop(path, None)
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: see the inode check above
        os.close(fd)


# -- down ----------------------------------------------------------------------------------


def down(layout: LabLayout, progress: Progress = _quiet) -> None:
    """Stop every process of the lab and remove its folder (only once they are all gone)."""
    with exclusive(layout, "lab down", progress):
        if _docker(layout) or docker_runtime.engine(layout).home.exists():
            progress("removing the lab's containers and stopping its engine")
            docker_runtime.down(layout)
        pid = supervisor_pid(layout)
        if pid is not None:
            progress("stopping supervisord and its programs")
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                _rpc(layout).supervisor.shutdown()
            poll_until(lambda: supervisor_pid(layout) is None, timeout=30, interval=POLL_SEC)
        elif lab_processes(layout):
            progress("supervisord is gone; stopping the lab's processes without it")
        stop_lab_processes(layout, progress)
        unmount_disks(layout)
        _remove_network(layout, progress)
        if layout.state_dir.exists():
            shutil.rmtree(layout.state_dir, ignore_errors=True)
        if not layout.namespaced:
            busy = [p for p in layout.all_ports() if health.port_open(p)]
            if busy:
                raise LabError(f"lab stopped but ports {busy} are still open")
        progress("lab is down")


def _remove_network(layout: LabLayout, progress: Progress) -> None:
    """Remove the lab's namespaces (with every veth, route and rule in them), whatever network
    its layout says: a crashed `up` may have made some before its folder said so."""
    plan = layout.net
    try:
        network.tool("ip")
    except network.NetworkError:
        return  # no iproute2: this machine never gave the lab namespaces
    try:
        if not network.leftovers(plan):
            return
        progress(f"removing the lab's network ({plan.prefix}*)")
        network.remove(plan)
    except network.NetworkError as exc:
        raise LabError(f"the lab's network: {exc}") from None


def sweep(layout: LabLayout, progress: Progress = _quiet) -> list[str]:
    """What `gameday heal` does for a lab that no longer runs (its supervisord killed): stop
    the processes it left and remove its network, keeping its folder (`lab up` starts it again
    on its data). Nothing for a running lab, whose network is its own. Returns what it did."""
    done: list[str] = []
    with exclusive(layout, "heal", progress):
        if is_running(layout):
            return done
        left = lab_processes(layout)
        if left:
            progress(f"the lab's supervisord is gone; stopping the {_processes(len(left))} it left")
            stop_lab_processes(layout, progress)
            done.append(f"stopped {_processes(len(left))} of a dead lab")
        try:
            network_left = network.leftovers(layout.net)
        except network.NetworkError:
            network_left = []  # no iproute2: no namespaces either
        if network_left:
            _remove_network(layout, progress)
            done.append(f"removed the network of a dead lab ({layout.net.prefix}*)")
    return done


def status_table(layout: LabLayout) -> tuple[str, bool]:
    """A printable table of every component, and whether all are healthy."""
    rows = health.components(layout)
    header = ("COMPONENT", "HOST", "ROLE", "PORT", "HEALTH", "DETAIL")
    table = [header] + [
        (c.name, c.group, c.role, str(c.port), "ok" if c.healthy else "FAIL", c.detail)
        for c in rows
    ]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in table
    ]
    return "\n".join(line.rstrip() for line in lines), all(c.healthy for c in rows)
