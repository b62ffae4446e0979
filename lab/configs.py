"""Config files of the lab's real services, rendered from a `LabLayout`.

HAProxy and supervisord configs are rewritten on every `lab up` (they are pure functions of the
layout). Redis and Sentinel configs are written once: both rewrite their own files at run time
(Sentinel records the current master, `replicaof` moves after a failover), and rewriting them on
a restart would undo a failover the lab has lived through.
"""

from __future__ import annotations

import os
import pwd
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lab.layout import (
    CONTROL_GROUP,
    DB_NAME,
    MONITORING_GROUP,
    OUTSIDE_GROUP,
    PG_BIN,
    PROJECT_ROOT,
    REDIS_MASTER_NAME,
    SERVERS,
    LabLayout,
    LabServer,
)
from lab.monitoring import monitoring_programs

# Health checks every 500 ms and two failures to mark a server down: the load balancer
# notices a dead server in about a second, fast enough for a game day to measure.
CHECK_INTER_MS = 500
CHECK_FALL = 2
CHECK_RISE = 2
SENTINEL_DOWN_AFTER_MS = 2000
# pg_auto_failover's monitor: probe nodes every second and call one unhealthy after 3 s, so
# an unplanned failover in the lab takes seconds (the defaults, 5 s and 20 s, suit WANs).
MONITOR_SETTINGS = {
    "pgautofailover.health_check_period": "1000",
    "pgautofailover.health_check_timeout": "1000",
    "pgautofailover.health_check_max_retries": "1",
    "pgautofailover.health_check_retry_delay": "500",
    "pgautofailover.node_considered_unhealthy_timeout": "3000",
    # How long the monitor waits for an unreachable primary to demote itself before it
    # promotes the standby (a split-brain guard, 30 s by default): a lab node that is killed
    # is really gone.
    "pgautofailover.primary_demote_timeout": "5000",
}
SENTINEL_FAILOVER_TIMEOUT_MS = 10000


STATIC_PATH = "/lb/static"


def haproxy_cfg(layout: LabLayout) -> str:
    servers = "\n".join(
        f"    server {s.name} {layout.server_host(s)}:{layout.backend_port(s)} check"
        for s in SERVERS
    )
    redis_servers = "\n".join(
        f"    server {s.redis_program} {layout.server_host(s)}:{layout.redis_port(s)} check"
        for s in SERVERS
    )
    public = layout.public_host
    check = f"inter {CHECK_INTER_MS}ms fall {CHECK_FALL} rise {CHECK_RISE}"
    return f"""# Rendered by gameday's lab from its layout; `gameday lab up` overwrites edits.
global
    maxconn 4096
    stats socket {layout.haproxy_socket} mode 600 level admin
    log stdout format raw local0 notice

defaults
    mode http
    log global
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    retries 2
    # Every retry goes to another server: a server whose network went dark (a zone lost)
    # costs one connect timeout, not three, before the request reaches a live one.
    option redispatch 1

frontend web
    bind {public}:{layout.http_port}
    # Answered by HAProxy itself, never a backend: the ceiling of a load generator's rate
    # (bench/locust_vs_wrk.py), with no application cost in the way.
    http-request return status 200 content-type text/plain string static if {{ path {STATIC_PATH} }}
    default_backend servers

backend servers
    balance roundrobin
    # A backend that dies mid-request: resend the request to the other server, as a
    # production HAProxy in front of stateless backends does; never a POST, which the dead
    # server may have applied already.
    retry-on conn-failure empty-response response-timeout
    http-request disable-l7-retry if METH_POST
    # A fresh connection to the server for every request: a request sent on a pooled one to a
    # server whose zone went dark waits out `timeout server` (30 s); a new one fails its
    # connect in 1 s and is redispatched (above) to the live server.
    option http-server-close
    option httpchk GET /health
    http-check expect status 200
    default-server {check}
{servers}

frontend stats
    bind {public}:{layout.stats_port}
    # HAProxy's own Prometheus endpoint (built in: USE_PROMEX), scraped by the lab's Prometheus.
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
    stats refresh 5s
    stats show-legends

# The cache's stable primary endpoint: only the node that says role:master is UP, so clients
# follow a Sentinel failover without knowing about Sentinel (as ElastiCache's primary endpoint).
listen redis-primary
    mode tcp
    bind {public}:{layout.redis_endpoint_port}
    timeout client 5m
    timeout server 5m
    option tcp-check
    tcp-check connect
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    tcp-check send info\\ replication\\r\\n
    tcp-check expect string role:master
    tcp-check send QUIT\\r\\n
    tcp-check expect string +OK
    default-server {check} on-marked-down shutdown-sessions
{redis_servers}
"""


def redis_conf(layout: LabLayout, server: LabServer) -> str:
    primary = SERVERS[0]
    master = f"{layout.server_host(primary)} {layout.redis_port(primary)}"
    replicaof = "" if server == primary else f"replicaof {master}\n"
    folder = layout.redis_dir / server.redis_program
    # Persistence as in the seed: RDB snapshots plus AOF fsynced every second
    # ("at most 1 s of writes lost"), 256 MB with LRU eviction.
    return f"""bind {layout.server_host(server)}
port {layout.redis_port(server)}
daemonize no
protected-mode no
dir {folder}
save 900 1
save 300 10
save 60 10000
appendonly yes
appendfsync everysec
maxmemory 256mb
maxmemory-policy allkeys-lru
replica-read-only yes
{replicaof}"""


def sentinel_conf(layout: LabLayout, port: int, group: str) -> str:
    master = f"{layout.server_host(SERVERS[0])} {layout.redis_port(SERVERS[0])}"
    return f"""bind {layout.host_of(group)}
port {port}
daemonize no
protected-mode no
dir {layout.redis_dir}
sentinel resolve-hostnames no
sentinel monitor {REDIS_MASTER_NAME} {master} 2
sentinel down-after-milliseconds {REDIS_MASTER_NAME} {SENTINEL_DOWN_AFTER_MS}
sentinel failover-timeout {REDIS_MASTER_NAME} {SENTINEL_FAILOVER_TIMEOUT_MS}
sentinel parallel-syncs {REDIS_MASTER_NAME} 1
"""


def sentinel_conf_path(layout: LabLayout, index: int) -> str:
    return str(layout.redis_dir / f"sentinel{index}.conf")


def sentinel_group(index: int) -> str:
    """The host of Sentinel `index` (1-based): one per server, the third on the public side."""
    return SERVERS[index - 1].name if index <= len(SERVERS) else CONTROL_GROUP


def _pg_user() -> str | None:
    """PostgreSQL refuses to run as root: the Debian package's `postgres` user runs it then."""
    return "postgres" if os.geteuid() == 0 else None


def pg_node_command(layout: LabLayout, server: LabServer) -> str:
    """Create the node on first start, run it afterwards (pg_autoctl keeps its own state)."""
    pgdata = layout.pgdata(server.pg_node_name)
    create = [
        "pg_autoctl", "create", "postgres",
        "--pgdata", str(pgdata),
        "--pgport", str(layout.pg_port(server)),
        "--hostname", layout.server_host(server),
        # pg_autoctl's default is '*' (every address, IPv4 and IPv6) with trust auth.
        "--listen", layout.server_host(server),
        "--name", server.pg_node_name,
        "--dbname", DB_NAME,
        "--auth", "trust",
        "--ssl-self-signed",
        "--monitor", f"{layout.monitor_url}?sslmode=require",
        "--run",
    ]  # fmt: skip
    return _create_or_run(layout, pgdata, create)


def pg_monitor_command(layout: LabLayout) -> str:
    pgdata = layout.pgdata("monitor")
    create = [
        "pg_autoctl", "create", "monitor",
        "--pgdata", str(pgdata),
        "--pgport", str(layout.monitor_port),
        "--hostname", layout.public_host,
        # Not in `create monitor --help`, but honoured (postgresql.listen_addresses).
        "--listen", layout.public_host,
        "--auth", "trust",
        "--ssl-self-signed",
        "--run",
    ]  # fmt: skip
    return _create_or_run(layout, pgdata, create)


def _create_or_run(layout: LabLayout, pgdata: Path, create: list[str]) -> str:
    """A shell line that runs an existing node and creates (or resumes creating) a new one.

    pg_autoctl keeps `<XDG_DATA_HOME>/pg_autoctl/<pgdata>/pg_autoctl.state` once a data node is
    registered and an `.init` file while its creation is under way (create is re-entrant). A
    monitor keeps no state file, only its config.
    """
    rel = str(pgdata).lstrip("/")
    state = layout.pg_dir / "xdg-data" / "pg_autoctl" / rel
    cfg = layout.pg_dir / "xdg-config" / "pg_autoctl" / rel / "pg_autoctl.cfg"
    run = ["pg_autoctl", "run", "--pgdata", str(pgdata)]
    if create[2] == "monitor":
        created = f"[ -f {shlex.quote(str(cfg))} ]"
    else:
        q = shlex.quote(str(state))
        created = f"[ -f {q}/pg_autoctl.state ] && [ ! -f {q}/pg_autoctl.init ]"
    script = f"if {created}; then exec {shlex.join(run)}; else exec {shlex.join(create)}; fi"
    return f"/bin/sh -c {shlex.quote(script)}"


def pg_environment(layout: LabLayout) -> dict[str, str]:
    return {
        "PATH": f"{PG_BIN}:/usr/bin:/bin",
        "XDG_CONFIG_HOME": str(layout.pg_dir / "xdg-config"),
        "XDG_DATA_HOME": str(layout.pg_dir / "xdg-data"),
        "HOME": str(layout.pg_dir),
        # pid files: /tmp/pg_autoctl/<pgdata>/ otherwise, left behind by every lab.
        "XDG_RUNTIME_DIR": str(layout.pg_runtime_dir),
        # pg_autoctl's own knob for unix_socket_directories: keeps sockets inside the lab and
        # works for a non-root user who cannot write /var/run/postgresql.
        "PG_REGRESS_SOCK_DIR": str(layout.pg_dir / "sockets"),
        "PGHOST": str(layout.pg_dir / "sockets"),
    }


def _env(env: dict[str, str]) -> str:
    # supervisor's environment= syntax: KEY="value",KEY2="value2"
    return ",".join(f'{k}="{v}"' for k, v in env.items())


@dataclass(frozen=True)
class Program:
    """One process of the lab, whatever runs it (supervisord, or a container of its own)."""

    group: str  # the "host": server1, server2, control (or outside, the internet)
    name: str
    command: str  # a command line (shlex syntax)
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    stopsignal: str = "TERM"
    priority: int = 500
    directory: Path | None = None
    autorestart: bool = True
    port: int | None = None  # what it listens on, for a container's healthcheck
    # haproxy, postgres, redis, sentinel, backend, outside; monitoring: prometheus,
    # alertmanager, node-exporter, hostview, pg-exporter, redis-exporter
    kind: str = ""


def in_place(layout: LabLayout, p: Program) -> tuple[str, str | None]:
    """The program's command and user as supervisord runs it: entering the namespace of its
    host first, when the lab has zone networks.

    nsenter needs root to enter, so it is the one that drops to the program's user (numeric
    ids: util-linux's nsenter takes no names); supervisord then starts it as root.
    """
    netns = layout.netns_of(p.group)
    if netns is None:
        return p.command, p.user
    enter = ["/usr/bin/nsenter", f"--net={layout.net.netns_path(layout.place_of(p.group))}"]
    if p.user:
        account = pwd.getpwnam(p.user)
        enter += [f"--setgid={account.pw_gid}", f"--setuid={account.pw_uid}"]
    return f"{shlex.join(enter)} -- {p.command}", None


def _program(layout: LabLayout, p: Program) -> str:
    command, user = in_place(layout, p)
    lines = [
        f"[program:{p.name}]",
        f"command={command}",
        # The state folder by default: the postgres user may not be able to enter a clone
        # under someone's home, and only the app needs the project root.
        f"directory={p.directory or layout.state_dir}",
        # autostart is off: `lab up` starts programs in dependency order and waits for each.
        "autostart=false",
        f"autorestart={'true' if p.autorestart else 'false'}",
        "startsecs=1",
        "startretries=5",
        f"stopsignal={p.stopsignal}",
        "stopwaitsecs=15",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        f"stdout_logfile={layout.log_dir / (p.name + '.log')}",
        "stdout_logfile_maxbytes=20MB",
        "stdout_logfile_backups=1",
        f"priority={p.priority}",
    ]
    if user:
        lines.append(f"user={user}")
    if p.env:
        lines.append(f"environment={_env(p.env)}")
    return "\n".join(lines) + "\n"


def lab_python() -> str:
    """The interpreter the lab's Python programs run with, named the same however gameday was
    started (`.venv/bin/gameday` runs python3, `.venv/bin/python -m ...` python): the rendered
    config must not change with it, or a heal from another process finds the lab "changed"."""
    if sys.prefix != sys.base_prefix:  # a venv: it always has bin/python
        venv_python = Path(sys.prefix) / "bin" / "python"
        if venv_python.exists():
            return str(venv_python)
    return sys.executable


def programs(layout: LabLayout) -> list[Program]:
    """Every process of the lab, grouped by host."""
    pg_user = _pg_user()
    pg_env = pg_environment(layout)
    python = lab_python()
    out = [
        Program(
            CONTROL_GROUP, "haproxy",
            f"/usr/sbin/haproxy -W -db -f {layout.state_dir / 'haproxy.cfg'}",
            priority=100, kind="haproxy",
        ),
        # pg_autoctl stops its postgres with a fast shutdown on SIGINT.
        Program(
            CONTROL_GROUP, "monitor", pg_monitor_command(layout),
            user=pg_user, env=pg_env, stopsignal="INT", priority=200,
            port=layout.monitor_port, kind="postgres",
        ),
        Program(
            CONTROL_GROUP, "sentinel3",
            f"/usr/bin/redis-sentinel {sentinel_conf_path(layout, 3)}", priority=400,
            port=layout.sentinel_ports()[2], kind="sentinel",
        ),
    ]  # fmt: skip
    if layout.outside_url is not None:
        outside = [
            python, "-m", "lab.outside",
            "--host", layout.host_of(OUTSIDE_GROUP), "--port", str(layout.outside_port),
        ]  # fmt: skip
        out.append(Program(
            OUTSIDE_GROUP, "outside", shlex.join(outside), priority=100,
            directory=PROJECT_ROOT, port=layout.outside_port, kind="outside",
        ))  # fmt: skip
    for s in SERVERS:
        # No autorestart: pg_autoctl already restarts its own postgres, and a node whose
        # keeper died is the "host lost" fault, which must stay down until healed.
        out.append(Program(
            s.name, s.postgres_program, pg_node_command(layout, s),
            user=pg_user, env=pg_env, stopsignal="INT", priority=300, autorestart=False,
            port=layout.pg_port(s), kind="postgres",
        ))  # fmt: skip
        out.append(Program(
            s.name, s.redis_program,
            f"/usr/bin/redis-server {layout.redis_dir / (s.redis_program + '.conf')}",
            priority=300, port=layout.redis_port(s), kind="redis",
        ))  # fmt: skip
        out.append(Program(
            s.name, s.sentinel_program,
            f"/usr/bin/redis-sentinel {sentinel_conf_path(layout, s.index)}", priority=400,
            port=layout.sentinel_ports()[s.index - 1], kind="sentinel",
        ))  # fmt: skip
        app = [
            python, "-m", "lab.app",
            "--server-name", s.name,
            "--zone", s.zone,
            "--host", layout.server_host(s),
            "--port", str(layout.backend_port(s)),
            "--db-write-url", layout.db_writer_url,
            "--db-read-url", layout.db_reader_url,
            "--redis-url", layout.redis_url,
        ]  # fmt: skip
        if layout.outside_url is not None:
            app += ["--egress-url", layout.outside_url]
        out.append(Program(
            s.name, s.backend_program, shlex.join(app), priority=600, directory=PROJECT_ROOT,
            port=layout.backend_port(s), kind="backend",
        ))  # fmt: skip
    if layout.monitoring:
        for m in monitoring_programs(layout, python):
            out.append(Program(
                m.group, m.name, m.command, env=dict(m.env), priority=m.priority,
                port=m.port, kind=m.kind,
                # hostview imports the lab: it runs from the project root like the backend.
                directory=PROJECT_ROOT if m.kind == "hostview" else None,
            ))  # fmt: skip
    return out


def group_of(layout: LabLayout, name: str) -> str:
    """The host (supervisor group) a program belongs to."""
    for p in programs(layout):
        if p.name == name:
            return p.group
    return CONTROL_GROUP


def supervisord_conf(layout: LabLayout) -> str:
    progs = programs(layout)
    groups: dict[str, list[str]] = {CONTROL_GROUP: [], **{s.name: [] for s in SERVERS}}
    if layout.outside_url is not None:
        groups[OUTSIDE_GROUP] = []
    if layout.monitoring:
        groups[MONITORING_GROUP] = []
    for p in progs:
        groups[p.group].append(p.name)
    rendered = [_program(layout, p) for p in progs]

    group_sections = "".join(
        f"[group:{g}]\nprograms={','.join(names)}\n\n" for g, names in groups.items()
    )
    return (
        "; Rendered by gameday's lab from its layout.\n"
        "[unix_http_server]\n"
        f"file={layout.supervisor_socket}\n"
        "chmod=0700\n\n"
        "[supervisord]\n"
        f"logfile={layout.log_dir / 'supervisord.log'}\n"
        f"pidfile={layout.supervisor_pidfile}\n"
        f"childlogdir={layout.log_dir}\n"
        "logfile_maxbytes=10MB\n"
        "logfile_backups=1\n"
        "nodaemon=false\n"
        "minfds=1024\n\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
        "[supervisorctl]\n"
        f"serverurl=unix://{layout.supervisor_socket}\n\n"
        + "\n".join(rendered)
        + "\n"
        + group_sections
    )
