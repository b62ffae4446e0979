"""Start, stop, inspect and repair the foreign deployment: a second system under test that
shares nothing with the lab's choices.

    nginx          entrypoint :B+0 (round robin, passive health: a refused or timed-out
                   backend is skipped and rested 3 s), stub_status :B+1 at /nginx_status,
                   and a TCP endpoint :B+22 for the Redis primary (stream module)
    node-1, node-2 the notes service (tests/foreign/backend.py) :B+2, :B+3, each under a
                   small supervisor that restarts it 2 s after it dies, unless held down
    pg-a, pg-b     PostgreSQL 15 :B+10, :B+11, plain asynchronous streaming replication
                   (initdb, pg_basebackup -R), scram passwords over TCP; no failover
                   manager: promotion is a script (faults.py)
    redis-a, -b    Redis :B+20, :B+21, master and `replicaof` replica, no Sentinel

B is $GAMEDAY_FOREIGN_BASE_PORT, else $GAMEDAY_LAB_BASE_PORT + 100 (the lab takes its block
and tests/test_lab.py the next 50), else 17500. Everything lives in /tmp/gameday-foreign-B:
data, configs, logs, the pid of every process we started (with its start time, so a
recycled pid is never signalled), and `state.json`, which says who is primary: the faults
write it before they promote, so a heal in a new process knows what the deployment should
look like.

How backends find the primary: libpq's multi-host connection string with
`target_session_attrs=read-write` (both nodes listed; only the primary accepts). How clients
find the Redis master: the nginx TCP endpoint, which a failover repoints (config rewritten,
nginx reloaded).

The database password comes from $FOREIGN_DB_PASSWORD (default: a canary value the tests
look for in every output); it is kept in the folder (mode 0600) for the supervisors and the
replication passfile, never in a config file or a command line.

PostgreSQL refuses to run as root: its programs run as the `postgres` user when we are root.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")
ROOT = Path(__file__).resolve().parents[2]
PASSWORD_VAR = "FOREIGN_DB_PASSWORD"
# Looks like a leaked credential on purpose: the tests grep every output for it.
CANARY_PASSWORD = "gdcanary-Q7m2X9vK4pLw"
NODES = ("node-1", "node-2")
PG_NODES = ("pg-a", "pg-b")
REDIS_NODES = ("redis-a", "redis-b")
ZONES = {"node-1": "a", "node-2": "b"}
PORT_BLOCK = 50
RESTART_DELAY_SEC = 2.0
POLL_SEC = 0.2
# spawn()'s launcher: the program in the background as a session leader (setsid does not fork
# there: the background child leads no process group), its output to the log (stderr), its pid
# on stdout. `$!` is the program's own pid.
_DETACH = 'setsid "$@" >&2 </dev/null & echo $!'
# How long a standby (restarted, rewound) may take to replay what its primary writes now
# before it is given up for a fresh base backup. Generous: it is a few seconds when it works.
FOLLOW_SEC = 30.0


class DeploymentError(Exception):
    """The deployment cannot be brought to the state asked for. `str()` is one line."""


# -- where things are ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    base_port: int

    @classmethod
    def from_env(cls, base_port: int | None = None) -> Layout:
        if base_port is None:
            own = os.environ.get("GAMEDAY_FOREIGN_BASE_PORT", "").strip()
            lab = os.environ.get("GAMEDAY_LAB_BASE_PORT", "").strip()
            try:
                base_port = int(own) if own else (int(lab) + 100 if lab else 17500)
            except ValueError:
                raise DeploymentError(
                    f"GAMEDAY_FOREIGN_BASE_PORT={own!r} / GAMEDAY_LAB_BASE_PORT={lab!r} "
                    "is not a port number"
                ) from None
        if not 1024 < base_port < 65535 - PORT_BLOCK:
            raise DeploymentError(f"base port {base_port} is outside 1025..{65535 - PORT_BLOCK}")
        return cls(base_port)

    @property
    def marker(self) -> str:
        """In the command line of every process we start: how `down` finds leftovers."""
        return f"gameday-foreign-{self.base_port}"

    @property
    def folder(self) -> Path:
        return Path("/tmp") / self.marker

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"

    @property
    def pg_sock(self) -> Path:
        return self.folder / "pgsock"

    @property
    def state_file(self) -> Path:
        return self.folder / "state.json"

    @property
    def secret_file(self) -> Path:
        return self.run_dir / "db-password"

    @property
    def passfile(self) -> Path:
        return self.folder / "pgpass"

    @property
    def entry_port(self) -> int:
        return self.base_port

    @property
    def status_port(self) -> int:
        return self.base_port + 1

    @property
    def cache_port(self) -> int:
        return self.base_port + 22

    def node_port(self, node: str) -> int:
        return self.base_port + 2 + NODES.index(node)

    def pg_port(self, node: str) -> int:
        return self.base_port + 10 + PG_NODES.index(node)

    def redis_port(self, node: str) -> int:
        return self.base_port + 20 + REDIS_NODES.index(node)

    def pg_data(self, node: str) -> Path:
        return self.folder / node / "data"

    @property
    def entry_url(self) -> str:
        return f"http://127.0.0.1:{self.entry_port}"

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}/nginx_status"

    def node_url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.node_port(node)}"


def other(names: tuple[str, str], name: str) -> str:
    return names[1] if name == names[0] else names[0]


# -- state: who is primary -------------------------------------------------------------------


@dataclass
class State:
    pg_primary: str = PG_NODES[0]
    redis_master: str = REDIS_NODES[0]


def load_state(layout: Layout) -> State:
    try:
        raw = json.loads(layout.state_file.read_text())
    except FileNotFoundError:
        return State()
    return State(pg_primary=raw["pg_primary"], redis_master=raw["redis_master"])


def save_state(layout: Layout, state: State) -> None:
    """Atomically and durably: a heal after a kill -9 reads it."""
    tmp = layout.state_file.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump({"pg_primary": state.pg_primary, "redis_master": state.redis_master}, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(layout.state_file)


def password(layout: Layout) -> str:
    try:
        return layout.secret_file.read_text().strip()
    except FileNotFoundError:
        return os.environ.get(PASSWORD_VAR) or CANARY_PASSWORD


# -- processes -------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) of a process, None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw.rpartition(")")[2].split()
    return fields[0], fields[19]


def _pid_file(layout: Layout, name: str) -> Path:
    return layout.run_dir / f"{name}.pid"


def record_pid(layout: Layout, name: str, pid: int) -> None:
    stat = _proc_stat(pid)
    if stat is None:
        return
    tmp = _pid_file(layout, name).with_suffix(".tmp")
    tmp.write_text(f"{pid} {stat[1]}\n")
    tmp.replace(_pid_file(layout, name))


def pid_of(layout: Layout, name: str) -> int | None:
    """The live process recorded under `name`, or None (dead, a zombie, or a recycled pid)."""
    try:
        pid_text, started = _pid_file(layout, name).read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    stat = _proc_stat(int(pid_text))
    if stat is None or stat[1] != started or stat[0] in ("Z", "X"):
        return None
    return int(pid_text)


def _pg_user() -> dict[str, Any]:
    """Popen arguments that run a program as `postgres` when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _chown_pg(*paths: Path) -> None:
    if os.geteuid() == 0:
        for path in paths:
            shutil.chown(path, "postgres", "postgres")


def spawn(
    layout: Layout,
    name: str,
    argv: list[str],
    *,
    log: Path,
    as_postgres: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> int:
    """Start a long-running program in a session of its own (a Ctrl-C or the death of
    whoever started it does not reach it), detached, and record its pid before returning.

    Detached: a shell starts it in the background and exits, so its parent is init, which
    reaps it when it dies. A child of ours would stay a zombie until we waited for it, and the
    pytest process that starts the deployment waits for nothing while a feature run lasts:
    PostgreSQL takes a zombie's pid in a lock file for a live postmaster and refuses to start
    (`lock file ".s.PGSQL.N.lock" already exists`) after a crash fault killed it."""
    with log.open("ab") as out:
        shell = subprocess.run(
            ["/bin/sh", "-c", _DETACH, "detach", *argv], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=out, cwd=cwd or layout.folder,
            env={**os.environ, **(env or {})}, start_new_session=True, timeout=60,
            **(_pg_user() if as_postgres else {}),
        )  # fmt: skip
    try:
        pid = int(shell.stdout.strip())
    except ValueError:
        program = Path(argv[0]).name
        raise DeploymentError(f"{name}: could not start {program}: {_tail(log)}") from None
    record_pid(layout, name, pid)
    return pid


def run_checked(argv: list[str], *, as_postgres: bool = False, timeout: float = 120) -> str:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        cwd="/", **(_pg_user() if as_postgres else {}),
    )  # fmt: skip
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or ["(no output)"]
        raise DeploymentError(f"{Path(argv[0]).name} exited {proc.returncode}: {lines[-1]}")
    return str(proc.stdout)


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> None:
    """The one polling loop: `ready` raising counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except Exception:
            pass
        if time.monotonic() >= deadline:
            raise DeploymentError(f"{what}: not after {timeout:g} s")
        time.sleep(POLL_SEC)


def _gone(pid: int, started: tuple[str, str] | None) -> bool:
    stat = _proc_stat(pid)
    return stat is None or stat[0] in ("Z", "X") or (started is not None and stat[1] != started[1])


def stop_process(pid: int, sig: int, *, timeout: float = 30, group: bool = False) -> None:
    """Send `sig`, wait for the end, SIGKILL (its group too) after `timeout`."""
    started = _proc_stat(pid)
    if started is None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group and os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while not _gone(pid, started):
        if time.monotonic() >= deadline:
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.05)


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(text[-lines:]) if text else "(empty log)"


def _fatal(log: Path, since: int) -> str:
    """Why a PostgreSQL start failed: the last FATAL or PANIC line it logged (its last line,
    "database system is shut down", says nothing), else its last line."""
    try:
        with log.open("rb") as f:
            f.seek(since)
            lines = f.read().decode(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    fatal = [line for line in lines if "FATAL:" in line or "PANIC:" in line]
    return (fatal or lines or ["(empty log)"])[-1].strip()


# -- HTTP ------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def node_healthy(layout: Layout, node: str) -> bool:
    try:
        return http_get(layout.node_url(node) + "/healthz", timeout=1.0)[0] == 200
    except OSError:
        return False


# -- PostgreSQL ------------------------------------------------------------------------------


def pg_connect(layout: Layout, node: str, dbname: str = "postgres") -> Any:
    """A superuser connection over the deployment's private Unix socket (trust there)."""
    import psycopg

    return psycopg.connect(
        host=str(layout.pg_sock), port=layout.pg_port(node), user="postgres", dbname=dbname,
        autocommit=True, connect_timeout=3,
    )  # fmt: skip


def pg_query(layout: Layout, node: str, query: str, params: tuple[object, ...] = ()) -> list[Any]:
    with pg_connect(layout, node) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def pg_role(layout: Layout, node: str) -> str:
    """primary, standby or down."""
    if pid_of(layout, node) is None:
        return "down"
    try:
        in_recovery = pg_query(layout, node, "SELECT pg_is_in_recovery()")[0][0]
    except Exception:
        return "down"
    return "standby" if in_recovery else "primary"


def replication(layout: Layout, primary: str) -> dict[str, tuple[str, str]]:
    """application_name -> (state, sync_state), as the primary sees its standbys."""
    rows = pg_query(
        layout, primary, "SELECT application_name, state, sync_state FROM pg_stat_replication"
    )
    return {name: (state, sync) for name, state, sync in rows}


def database_pair(layout: Layout) -> tuple[bool, str]:
    """Is there the pair the deployment promises: the state's primary up and writable, the
    other node streaming from it? (False, why) otherwise."""
    primary = load_state(layout).pg_primary
    standby = other(PG_NODES, primary)
    if pg_role(layout, primary) != "primary":
        return False, f"{primary} should be primary but is {pg_role(layout, primary)}"
    if pg_role(layout, standby) != "standby":
        return False, f"{standby} should be a standby but is {pg_role(layout, standby)}"
    try:
        seen = replication(layout, primary).get(standby)
    except Exception as exc:
        return False, f"cannot read replication on {primary}: {exc}"
    if seen is None or seen[0] != "streaming":
        return False, f"{standby} is not streaming from {primary} ({seen})"
    return True, f"{primary} primary, {standby} streaming ({seen[1]})"


def _pg_conf(layout: Layout, node: str) -> str:
    return "\n".join([
        "# written by tests/foreign/deployment.py",
        "listen_addresses = '127.0.0.1'",
        f"port = {layout.pg_port(node)}",
        f"unix_socket_directories = '{layout.pg_sock}'",
        f"cluster_name = '{layout.marker}-{node}'",  # in every process title: `down` finds it
        "max_connections = 60",
        "shared_buffers = 32MB",
        "password_encryption = 'scram-sha-256'",
        "wal_level = replica",
        "max_wal_senders = 5",
        "wal_keep_size = '512MB'",  # a rewound old primary catches up from here
        "wal_log_hints = on",
        "hot_standby = on",
        "synchronous_standby_names = ''",  # asynchronous on purpose
        "wal_receiver_status_interval = 1s",
        "log_min_messages = warning",
        "",
    ])  # fmt: skip


_PG_HBA = """\
# written by tests/foreign/deployment.py: trust only on the private socket, passwords on TCP
local   all             all                         trust
local   replication     all                         trust
host    replication     replicator  127.0.0.1/32    scram-sha-256
host    all             all         127.0.0.1/32    scram-sha-256
"""


def _write_pg_config(layout: Layout, node: str, *, primary: str | None) -> None:
    """The node's own settings, and for a standby what it streams from. Rewritten after
    every pg_basebackup and pg_rewind, which copy the source's files."""
    data = layout.pg_data(node)
    files = {"postgresql.conf": _pg_conf(layout, node), "pg_hba.conf": _PG_HBA}
    if primary is None:
        files["postgresql.auto.conf"] = "# no standby settings: a primary\n"
    else:
        files["postgresql.auto.conf"] = (
            f"primary_conninfo = 'host=127.0.0.1 port={layout.pg_port(primary)} "
            f"user=replicator passfile={layout.passfile} application_name={node}'\n"
        )
    for name, text in files.items():
        (data / name).write_text(text)
        _chown_pg(data / name)
    signal_file = data / "standby.signal"
    if primary is None:
        signal_file.unlink(missing_ok=True)
    else:
        signal_file.touch()
        _chown_pg(signal_file)


def start_pg(layout: Layout, node: str, timeout: float = 60) -> None:
    if pid_of(layout, node) is not None:
        return
    data = layout.pg_data(node)
    _clear_stale_locks(layout, node)
    log = layout.folder / node / "postgres.log"
    since = log.stat().st_size if log.exists() else 0
    pid = spawn(layout, node, [str(PG_BIN / "postgres"), "-D", str(data)], log=log,
                as_postgres=True)  # fmt: skip

    def ready() -> bool:
        if _proc_stat(pid) is None or pid_of(layout, node) is None:
            raise DeploymentError(f"{node} exited at start: {_fatal(log, since)}")
        with pg_connect(layout, node):
            return True

    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except DeploymentError:
            raise
        except Exception:
            pass
        if time.monotonic() >= deadline:
            raise DeploymentError(f"{node} does not accept connections after {timeout:g} s: "
                                  f"{_tail(log)}")  # fmt: skip
        time.sleep(POLL_SEC)


def _lock_files(layout: Layout, node: str) -> list[Path]:
    return [layout.pg_data(node) / "postmaster.pid",
            layout.pg_sock / f".s.PGSQL.{layout.pg_port(node)}.lock"]  # fmt: skip


def _clear_stale_locks(layout: Layout, node: str) -> None:
    """Before a postmaster or pg_rewind starts on the node: kill what is left of a postmaster
    that died (a backend outlives a SIGKILL of its postmaster for a moment) and delete the
    lock files whose pid is dead or a zombie. PostgreSQL deletes a dead pid's lock itself, but
    takes a zombie (a killed postmaster its parent has not reaped yet, init included: it reaps
    within about 2 s here) for a live postmaster. A live pid's lock stays: its postmaster is
    running, and the start says so."""
    if pid_of(layout, node) is not None:
        return
    for pid in pg_processes(layout, node):
        stop_process(pid, signal.SIGKILL, timeout=10)
    for lock in _lock_files(layout, node):
        try:
            holder = int(lock.read_text().split("\n", 1)[0].strip())
        except (FileNotFoundError, ValueError):
            continue
        stat = _proc_stat(holder)
        if stat is None or stat[0] in ("Z", "X"):
            lock.unlink(missing_ok=True)


def stop_pg(layout: Layout, node: str) -> None:
    """Fast shutdown (SIGINT): sessions are ended, WAL is flushed and sent to the standbys
    (the shutdown checkpoint included) before the postmaster exits."""
    pid = pid_of(layout, node)
    if pid is not None:
        stop_process(pid, signal.SIGINT, timeout=60)
    for pid in pg_processes(layout, node):  # only if the SIGKILL fallback left children
        stop_process(pid, signal.SIGKILL, timeout=10)


def pg_processes(layout: Layout, node: str) -> list[int]:
    """The node's postmaster and its children. Each child calls setsid(), so the process
    group does not hold them: they are found by the cluster name in their titles."""
    title = f"postgres: {layout.marker}-{node}:".encode()
    found = [pid for pid in [pid_of(layout, node)] if pid is not None]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().startswith(title):
                    found.append(int(entry.name))
    return found


def kill_pg(layout: Layout, node: str) -> None:
    """SIGKILL of the postmaster and every one of its processes at once: the host is gone.
    (The postmaster alone would let a backend in the middle of a commit answer its client.)"""
    postmaster = pid_of(layout, node)
    pids = pg_processes(layout, node)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if postmaster is not None:
        stop_process(postmaster, signal.SIGKILL, timeout=10)
    for pid in pg_processes(layout, node):  # a child forked in between
        stop_process(pid, signal.SIGKILL, timeout=10)


def resume_stopped(layout: Layout, node: str) -> None:
    """SIGCONT to any process of the node that a fault paused (a walsender, for lag) and
    could not resume because it was cut short."""
    for pid in pg_processes(layout, node):
        stat = _proc_stat(pid)
        if stat and stat[0] == "T":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def promote(layout: Layout, node: str) -> None:
    if pg_role(layout, node) == "standby":
        pg_query(layout, node, "SELECT pg_promote(true, 60)")
    wait_for(f"{node} accepts writes after promotion",
             lambda: pg_role(layout, node) == "primary", 60)  # fmt: skip


def _init_primary(layout: Layout, node: str) -> None:
    from psycopg import sql

    data = layout.pg_data(node)
    data.parent.mkdir(parents=True, exist_ok=True)
    _chown_pg(data.parent)
    run_checked(
        [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
         "--auth-host=scram-sha-256", "--data-checksums", "-E", "UTF8", "--no-locale"],
        as_postgres=True,
    )  # fmt: skip
    _write_pg_config(layout, node, primary=None)
    start_pg(layout, node)
    secret = password(layout)
    with pg_connect(layout, node) as conn:
        for role, extra in (("replicator", "REPLICATION"), ("notes", "")):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                    sql.Identifier(role), sql.SQL(extra), sql.Literal(secret)
                )
            )
        conn.execute("GRANT pg_monitor TO notes")  # to read pg_stat_replication
        conn.execute("CREATE DATABASE notes OWNER notes")
    with pg_connect(layout, node, dbname="notes") as conn:
        conn.execute("SET ROLE notes")
        conn.execute(
            "CREATE TABLE notes (id text PRIMARY KEY, text text NOT NULL, node text, "
            "created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz)"
        )


def _cluster_state(layout: Layout, node: str) -> str:
    """pg_controldata's "Database cluster state" of the node's data ("" when unreadable)."""
    try:
        out = run_checked([str(PG_BIN / "pg_controldata"), "-D", str(layout.pg_data(node))],
                          as_postgres=True, timeout=60)  # fmt: skip
    except (DeploymentError, subprocess.TimeoutExpired):
        return ""
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Database cluster state":
            return value.strip()
    return ""


def _data_kind(layout: Layout, node: str) -> str:
    """What the node's data directory holds, which decides how it becomes a standby:
    none         nothing usable: a base backup
    interrupted  a rewind or base backup was cut short: a base backup
    standby      a standby's data (running, stopped or crashed), or a base backup or rewind
                 that never started: start it as a standby, as it is. Never pg_rewind it: a
                 crashed standby's single-user crash recovery (pg_rewind's first step) writes
                 checkpoint records of its own on the primary's timeline, pg_rewind then sees
                 the same timeline and rewinds nothing, and the standby can never replay the
                 primary's WAL at those addresses ("invalid record length" forever)
    primary      an old primary (shut down, or crashed in production): pg_rewind, which finds
                 where its timeline left the new primary's"""
    data = layout.pg_data(node)
    if _rebuild_marker(layout, node).exists():
        return "interrupted"
    if not (data / "PG_VERSION").exists() or not (data / "global" / "pg_control").exists():
        return "none"
    if (data / "backup_label").exists():
        return "standby"
    state = _cluster_state(layout, node)
    if state in ("in archive recovery", "shut down in recovery"):
        return "standby"
    if state in ("shut down", "in production", "in crash recovery", "shutting down"):
        return "primary"
    return "none"


def _rebuild_marker(layout: Layout, node: str) -> Path:
    """Present while pg_rewind or pg_basebackup works on the node: a heal killed half way
    (its timeout, a SIGKILL) leaves data that no start can trust."""
    return layout.folder / node / "rebuilding"


def _lsn(text: object) -> int:
    high, _, low = str(text).partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def follows(layout: Layout, standby: str, primary: str, timeout: float) -> bool:
    """Does `standby` stream from `primary` and replay what the primary writes from now on?
    A WAL record (a logical message, no table touched) is written on the primary past
    everything the standby has replayed, and the standby must replay it. A standby that
    cannot stream (WAL it needs was recycled) or cannot replay (its WAL diverged) never does.
    "Past" matters: a diverged standby's own checkpoint records may end after an idle
    primary's newest record, and a standby is never legitimately ahead of its primary, so
    the primary switches to a new WAL segment until its record ends later."""
    try:
        seen = pg_query(layout, standby, "SELECT pg_last_wal_replay_lsn()")[0][0]
        replayed_before = _lsn(seen) if seen else 0
        for _ in range(8):
            probe = _lsn(
                pg_query(
                    layout, primary,
                    "SELECT pg_logical_emit_message(false, 'gameday-foreign', 'follow')",
                )[0][0]
            )  # fmt: skip
            if probe > replayed_before:
                break
            pg_query(layout, primary, "SELECT pg_switch_wal()")
        else:
            return False  # several segments ahead of its primary: it diverged
    except Exception:
        return False

    def replayed() -> bool:
        if replication(layout, primary).get(standby, ("", ""))[0] != "streaming":
            return False
        return _lsn(pg_query(layout, standby, "SELECT pg_last_wal_replay_lsn()")[0][0]) >= probe

    try:
        wait_for(f"{standby} replays {primary}'s WAL", replayed, timeout)
    except DeploymentError:
        return False
    return True


def _pg_rewind(layout: Layout, node: str, primary: str) -> bool:
    data = layout.pg_data(node)
    # Single-user crash recovery (pg_rewind's first step on a crashed primary) refuses
    # standby mode, and a dead postmaster's lock (a zombie's pid) would stop it.
    (data / "standby.signal").unlink(missing_ok=True)
    _clear_stale_locks(layout, node)
    try:
        run_checked(
            [str(PG_BIN / "pg_rewind"), "--target-pgdata", str(data), "--source-server",
             f"host={layout.pg_sock} port={layout.pg_port(primary)} user=postgres "
             "dbname=postgres"],
            as_postgres=True, timeout=300,
        )  # fmt: skip
    except (DeploymentError, subprocess.TimeoutExpired) as exc:
        print(f"{node}: pg_rewind failed ({exc})", flush=True)
        return False
    print(f"{node}: rewound onto {primary} (pg_rewind)", flush=True)
    return True


def _pg_basebackup(layout: Layout, node: str, primary: str) -> None:
    """A fresh copy of the primary, made beside the old data and swapped in once complete."""
    data = layout.pg_data(node)
    fresh = data.with_name("data.new")
    shutil.rmtree(fresh, ignore_errors=True)
    data.parent.mkdir(parents=True, exist_ok=True)
    _chown_pg(data.parent)
    run_checked(
        [str(PG_BIN / "pg_basebackup"), "-D", str(fresh), "-R", "-X", "stream", "-c", "fast",
         "-d", f"host=127.0.0.1 port={layout.pg_port(primary)} user=replicator "
         f"passfile={layout.passfile}"],
        as_postgres=True, timeout=300,
    )  # fmt: skip
    shutil.rmtree(data, ignore_errors=True)
    fresh.rename(data)


def _start_standby(layout: Layout, node: str, primary: str) -> None:
    _write_pg_config(layout, node, primary=primary)
    _rebuild_marker(layout, node).unlink(missing_ok=True)
    start_pg(layout, node)


def _rebuild_standby(layout: Layout, node: str, primary: str, *, copy: bool = False) -> None:
    """Make `node` a standby of `primary` that replays its WAL: a standby's data is started as
    it is, an old primary's is rewound (pg_rewind); when either does not follow within
    FOLLOW_SEC, or there is nothing to start from (or `copy`), a fresh base backup."""
    stop_pg(layout, node)
    kind = "copy" if copy else _data_kind(layout, node)
    if kind in ("standby", "primary"):
        marker = _rebuild_marker(layout, node)
        marker.touch()
        usable = kind == "standby" or _pg_rewind(layout, node, primary)
        if usable:
            try:
                _start_standby(layout, node, primary)
            except DeploymentError as exc:
                print(f"{node}: does not start as a standby ({exc})", flush=True)
            else:
                if follows(layout, node, primary, FOLLOW_SEC):
                    return
                print(f"{node}: does not follow {primary} within {FOLLOW_SEC:g} s: "
                      "a fresh base backup", flush=True)  # fmt: skip
            stop_pg(layout, node)
    elif kind == "interrupted":
        print(f"{node}: a rewind or base backup was cut short: a fresh base backup", flush=True)
    layout.pg_data(node).parent.mkdir(parents=True, exist_ok=True)
    _rebuild_marker(layout, node).touch()
    _pg_basebackup(layout, node, primary)
    _start_standby(layout, node, primary)


def repair_database(layout: Layout, timeout: float = 90) -> None:
    """Bring the database to the pair state.json names, from whatever a fault or a crash
    left: start the primary (promote it if a failover was cut short before promoting), and
    make the other node a standby that replays its WAL. Idempotent."""
    state = load_state(layout)
    primary, standby = state.pg_primary, other(PG_NODES, state.pg_primary)
    if not (layout.pg_data(primary) / "PG_VERSION").exists():
        if (layout.pg_data(standby) / "PG_VERSION").exists():
            raise DeploymentError(f"state.json names {primary} primary but it has no data")
        _init_primary(layout, primary)
    start_pg(layout, primary)
    resume_stopped(layout, primary)
    if pg_role(layout, primary) == "standby":
        promote(layout, primary)
    if pg_role(layout, standby) == "standby":
        # Running as a standby: it may follow already (or once told which node is primary).
        _write_pg_config(layout, standby, primary=primary)
        with contextlib.suppress(Exception):
            pg_query(layout, standby, "SELECT pg_reload_conf()")
        if follows(layout, standby, primary, FOLLOW_SEC):
            return
        # It streams nothing it can replay: its data diverged. Only a copy mends that.
        print(f"{standby}: running but not following {primary}: a fresh base backup", flush=True)
        _rebuild_standby(layout, standby, primary, copy=True)
    else:
        _rebuild_standby(layout, standby, primary)
    wait_for(f"{standby} streaming from {primary}", lambda: database_pair(layout)[0], timeout)


# -- Redis -----------------------------------------------------------------------------------


def redis_client(layout: Layout, port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


def redis_role(layout: Layout, node: str) -> str:
    """master, replica or down."""
    if pid_of(layout, node) is None:
        return "down"
    try:
        info = redis_client(layout, layout.redis_port(node)).info("replication")
    except Exception:
        return "down"
    return "master" if info["role"] == "master" else "replica"


def endpoint_port(layout: Layout) -> int | None:
    """The Redis port the cache endpoint reaches now."""
    try:
        return int(redis_client(layout, layout.cache_port).info("server")["tcp_port"])
    except Exception:
        return None


def cache_pair(layout: Layout) -> tuple[bool, str]:
    master = load_state(layout).redis_master
    replica = other(REDIS_NODES, master)
    if redis_role(layout, master) != "master":
        return False, f"{master} should be master but is {redis_role(layout, master)}"
    if redis_role(layout, replica) != "replica":
        return False, f"{replica} should be a replica but is {redis_role(layout, replica)}"
    info = redis_client(layout, layout.redis_port(master)).info("replication")
    online = [
        v for k, v in info.items()
        if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        and int(v.get("port", 0)) == layout.redis_port(replica)
    ]  # fmt: skip
    if not online:
        return False, f"{replica} is not an online replica of {master}"
    if endpoint_port(layout) != layout.redis_port(master):
        return False, f"the cache endpoint does not reach {master}"
    return True, f"{master} master, {replica} online replica, endpoint -> {master}"


def _redis_conf(layout: Layout, node: str, master: str) -> Path:
    folder = layout.folder / node
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "redis.conf"
    lines = [
        f"port {layout.redis_port(node)}",
        "bind 127.0.0.1",
        "protected-mode no",
        "daemonize no",
        f"dir {folder}",
        f"logfile {folder}/redis.log",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        # The config path in the process title: `down` finds the process by it.
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
    ]
    if node != master:
        lines.append(f"replicaof 127.0.0.1 {layout.redis_port(master)}")
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_redis(layout: Layout, node: str, master: str) -> None:
    if pid_of(layout, node) is not None:
        return
    conf = _redis_conf(layout, node, master)
    spawn(layout, node, ["redis-server", str(conf)], log=layout.folder / node / "stdout.log")
    wait_for(f"{node} answers PING",
             lambda: bool(redis_client(layout, layout.redis_port(node)).ping()), 30)  # fmt: skip


def kill_redis(layout: Layout, node: str) -> None:
    pid = pid_of(layout, node)
    if pid is not None:
        stop_process(pid, signal.SIGKILL, timeout=10)


def stop_redis(layout: Layout, node: str) -> None:
    pid = pid_of(layout, node)
    if pid is not None:
        stop_process(pid, signal.SIGTERM, timeout=30)


def repoint_cache(layout: Layout) -> None:
    """The endpoint follows state.json's master: nginx's config rewritten and reloaded."""
    master = load_state(layout).redis_master
    start_nginx(layout)
    wait_for(f"the cache endpoint reaches {master}",
             lambda: endpoint_port(layout) == layout.redis_port(master), 20)  # fmt: skip


def repair_cache(layout: Layout, timeout: float = 60) -> None:
    """Bring Redis to the pair state.json names: master up and a master, the endpoint on it,
    the other node its online replica. Idempotent."""
    master = load_state(layout).redis_master
    replica = other(REDIS_NODES, master)
    start_redis(layout, master, master)
    if redis_role(layout, master) == "replica":
        redis_client(layout, layout.redis_port(master)).replicaof("NO", "ONE")
    repoint_cache(layout)
    start_redis(layout, replica, master)
    info = redis_client(layout, layout.redis_port(replica)).info("replication")
    if info["role"] != "slave" or int(info.get("master_port", 0)) != layout.redis_port(master):
        redis_client(layout, layout.redis_port(replica)).replicaof(
            "127.0.0.1", layout.redis_port(master)
        )
    wait_for(f"{replica} an online replica of {master}", lambda: cache_pair(layout)[0], timeout)


# -- nginx -----------------------------------------------------------------------------------


def _nginx_conf(layout: Layout) -> str:
    prefix = layout.folder / "nginx"
    master = load_state(layout).redis_master
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    nodes = "\n".join(
        f"        server 127.0.0.1:{layout.node_port(n)} max_fails=1 fail_timeout=3s;"
        for n in NODES
    )
    return f"""# written by tests/foreign/deployment.py
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    # Ground truth for the tests: what nginx answered to each write, whatever the client saw.
    log_format writes '$msec $request_method $uri $status $upstream_addr';
    access_log {prefix}/access.log writes;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # Round robin; passive health: a refused or timed-out backend is skipped and rested.
    # Answers (a 503 from a node whose database fails over) are passed on, not retried, so
    # they do not take a healthy node out.
    upstream notes_nodes {{
{nodes}
    }}
    server {{
        listen 127.0.0.1:{layout.entry_port};
        location / {{
            proxy_pass http://notes_nodes;
            proxy_connect_timeout 1s;
            proxy_read_timeout 15s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
        }}
    }}
    server {{
        listen 127.0.0.1:{layout.status_port};
        location = /nginx_status {{ stub_status; }}
    }}
}}
stream {{
    upstream cache_primary {{ server 127.0.0.1:{layout.redis_port(master)}; }}
    server {{
        listen 127.0.0.1:{layout.cache_port};
        proxy_pass cache_primary;
        proxy_connect_timeout 1s;
    }}
}}
"""


def start_nginx(layout: Layout) -> None:
    """Start nginx, or reload it (SIGHUP) with a config rewritten from state.json."""
    prefix = layout.folder / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(_nginx_conf(layout))
    argv = ["nginx", "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]
    run_checked([*argv, "-t", "-q"])
    pid = pid_of(layout, "nginx")
    if pid is not None:
        os.kill(pid, signal.SIGHUP)
        return
    spawn(layout, "nginx", argv, log=prefix / "stdout.log")
    wait_for("nginx's status page answers",
             lambda: http_get(layout.status_url)[0] == 200, 20)  # fmt: skip


# -- backends and their supervisors ----------------------------------------------------------


def held_file(layout: Layout, node: str) -> Path:
    return layout.run_dir / f"{node}.held"


def start_supervisor(layout: Layout, node: str) -> None:
    if pid_of(layout, f"{node}-supervisor") is not None:
        return
    spawn(
        layout, f"{node}-supervisor",
        [sys.executable, "-m", "tests.foreign", "supervise", node,
         "--base-port", str(layout.base_port), "--tag", layout.marker],
        log=layout.folder / f"{node}.log", cwd=ROOT,
    )  # fmt: skip


def supervise(layout: Layout, node: str) -> None:
    """The supervisor's loop (its own process): run the backend, restart it
    RESTART_DELAY_SEC after it dies unless the node is held down, end it on SIGTERM."""
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    env = {PASSWORD_VAR: password(layout)}
    while not stopping:
        if held_file(layout, node).exists():
            time.sleep(POLL_SEC)
            continue
        with (layout.folder / f"{node}.log").open("ab") as out:
            child = subprocess.Popen(
                [sys.executable, "-m", "tests.foreign.backend", "--name", node,
                 "--port", str(layout.node_port(node)),
                 "--db-ports", ",".join(str(layout.pg_port(p)) for p in PG_NODES),
                 "--tag", layout.marker],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                env={**os.environ, **env},
            )  # fmt: skip
        record_pid(layout, node, child.pid)
        while child.poll() is None and not stopping:
            time.sleep(0.1)
        if stopping:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            break
        deadline = time.monotonic() + RESTART_DELAY_SEC
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.1)


def served_by(layout: Layout, node: str) -> bool:
    """Does a request to the entrypoint reach `node` now? (One of a few, round robin.)"""
    return http_get(layout.entry_url + "/healthz", timeout=2.0)[1].get("X-Node") == node


def ensure_backend(layout: Layout, node: str, timeout: float = 60) -> None:
    """The node's backend running and back in nginx's rotation. Its own /healthz is not
    enough: nginx's passive health rests a node that refused a request for fail_timeout
    (3 s) after it answers again, and a heal that returns then hands the next game day a
    deployment whose entrypoint never reaches that node."""
    held_file(layout, node).unlink(missing_ok=True)
    start_supervisor(layout, node)
    wait_for(f"{node} answers /healthz", lambda: node_healthy(layout, node), timeout)
    wait_for(f"nginx sends requests to {node} again", lambda: served_by(layout, node), timeout)


# -- the whole deployment --------------------------------------------------------------------


def status(layout: Layout) -> list[tuple[str, bool, str]]:
    """(component, healthy, what was seen) for each part."""
    rows: list[tuple[str, bool, str]] = []
    try:
        code, headers, _ = http_get(layout.entry_url + "/healthz")
        rows.append(("entrypoint", code == 200, f"{code} from {headers.get('X-Node')}"))
    except OSError as exc:
        rows.append(("entrypoint", False, str(exc)))
    try:
        code, _, body = http_get(layout.status_url)
        rows.append(("nginx status", code == 200, body.decode().splitlines()[0]))
    except OSError as exc:
        rows.append(("nginx status", False, str(exc)))
    for node in NODES:
        ok = node_healthy(layout, node)
        held = " (held down)" if held_file(layout, node).exists() else ""
        rows.append((node, ok, f"pid {pid_of(layout, node)}{held}"))
    for name, check in (("database", database_pair), ("cache", cache_pair)):
        try:
            ok, why = check(layout)
        except Exception as exc:
            ok, why = False, str(exc)
        rows.append((name, ok, why))
    return rows


def healthy(layout: Layout) -> bool:
    return all(ok for _, ok, _ in status(layout))


def up(layout: Layout, timeout: float = 120) -> None:
    """Start what is missing and repair what is broken; idempotent."""
    for folder in (layout.folder, layout.run_dir):
        folder.mkdir(parents=True, exist_ok=True)
    layout.pg_sock.mkdir(exist_ok=True)
    _chown_pg(layout.pg_sock)
    if not layout.secret_file.exists():
        fd = os.open(layout.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(os.environ.get(PASSWORD_VAR) or CANARY_PASSWORD)
    if not layout.passfile.exists():
        fd = os.open(layout.passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"127.0.0.1:*:*:replicator:{password(layout)}\n")
        _chown_pg(layout.passfile)
    if not layout.state_file.exists():
        save_state(layout, State())
    repair_database(layout)
    repair_cache(layout)  # starts nginx too: it is the cache's endpoint
    for node in NODES:
        ensure_backend(layout, node)
    start_nginx(layout)
    wait_for("the deployment is healthy", lambda: healthy(layout), timeout)


def _our_processes(layout: Layout) -> list[int]:
    """Every process whose command line names this deployment, but not us or our callers."""
    spared = {os.getpid()}
    pid = os.getppid()
    while pid > 1:
        spared.add(pid)
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
        pid = int(stat.rpartition(")")[2].split()[1]) if stat else 1
    found = []
    marker = layout.marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in spared:
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def down(layout: Layout) -> None:
    """Stop everything and delete the folder; works from the pid files alone (after a kill -9
    of whoever started it) and then sweeps any process that names the deployment."""
    if layout.folder.exists():
        # Supervisors first, or they restart what we stop.
        for node in NODES:
            pid = pid_of(layout, f"{node}-supervisor")
            if pid is not None:
                stop_process(pid, signal.SIGTERM, timeout=15)
        for node in NODES:
            pid = pid_of(layout, node)
            if pid is not None:
                stop_process(pid, signal.SIGTERM, timeout=10)
        pid = pid_of(layout, "nginx")
        if pid is not None:
            stop_process(pid, signal.SIGQUIT, timeout=15, group=True)
        for node in REDIS_NODES:
            stop_redis(layout, node)
        for node in PG_NODES:
            stop_pg(layout, node)
    for pid in _our_processes(layout):
        stop_process(pid, signal.SIGKILL, timeout=10, group=True)
    shutil.rmtree(layout.folder, ignore_errors=True)
    if layout.folder.exists():
        raise DeploymentError(f"{layout.folder} could not be removed")
    left = _our_processes(layout)
    if left:
        raise DeploymentError(f"processes still running after down: {left}")


@contextlib.contextmanager
def running(layout: Layout) -> Iterator[Layout]:
    """The deployment up for the block and down after it, whatever happened."""
    try:
        up(layout)
        yield layout
    finally:
        down(layout)
