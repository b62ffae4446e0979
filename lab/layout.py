"""Where every part of the lab lives: ports, addresses, folders, servers and zones.

One `LabLayout` value is the single source of truth for the lab. The configs, the supervisor
programs, `lab status` and the generated `targets/lab.yaml` are all derived from it, so a
changed base port moves everything together.

Its `network` says where the programs listen. `namespaces`: each zone is a network namespace
with an address range of its own and a NAT to an "outside" namespace (lab/netplan.py), the
load balancer and the monitor on a public side. `loopback`: everything on 127.0.0.1, when the
machine cannot make namespaces (not root: `network_note` says why). A lab keeps the network it
was started with until `lab down` (recorded in its folder).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab.netplan import OUTSIDE, PUBLIC, NetPlan

DEFAULT_BASE_PORT = 17400
# Ports are offsets into a block of this size starting at the base port.
PORT_BLOCK = 50
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DB_NAME = "cloudmart"
DB_USER = "cloudmart"
REDIS_MASTER_NAME = "cloudmart"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# What each lab "server" owns, as a host of its own would: one CPU, 1 GiB of memory and a
# 64 MiB data disk. The lab's servers share this machine, so the monitoring reads these
# envelopes (lab/hostview.py, the server's own tmpfs) rather than the machine's totals.
SERVER_CPUS = 1
SERVER_MEMORY_MB = 1024
SERVER_DISK_MB = 64
# "0" (or "off"): a lab without Prometheus, Alertmanager and the exporters (lighter; the
# monitoring scenarios then skip). Read once, when a layout is made.
MONITORING_ENV = "GAMEDAY_LAB_MONITORING"


@dataclass(frozen=True)
class LabServer:
    """One of the lab's two "hosts": a backend, a database node, a Redis and a sentinel."""

    name: str
    zone: str
    index: int  # 1 or 2

    @property
    def backend_program(self) -> str:
        return f"backend{self.index}"

    @property
    def postgres_program(self) -> str:
        return f"postgres{self.index}"

    @property
    def redis_program(self) -> str:
        return f"redis{self.index}"

    @property
    def sentinel_program(self) -> str:
        return f"sentinel{self.index}"

    @property
    def pg_node_name(self) -> str:
        return f"node_{self.index}"

    # The server's exporters live (and die) with it, as on the seed's hosts.
    @property
    def node_exporter_program(self) -> str:
        return f"node-exporter{self.index}"

    @property
    def hostview_program(self) -> str:
        return f"hostview{self.index}"

    @property
    def pg_exporter_program(self) -> str:
        return f"pg-exporter{self.index}"

    @property
    def redis_exporter_program(self) -> str:
        return f"redis-exporter{self.index}"

    @property
    def exporter_programs(self) -> tuple[str, ...]:
        return (
            self.node_exporter_program,
            self.hostview_program,
            self.pg_exporter_program,
            self.redis_exporter_program,
        )


SERVERS = (LabServer("server1", "a", 1), LabServer("server2", "b", 2))
CONTROL_GROUP = "control"  # the load balancer host: HAProxy, the pg monitor, the third sentinel
OUTSIDE_GROUP = "outside"  # the internet: the service that tells callers their address
NAMESPACES, LOOPBACK = "namespaces", "loopback"
NETWORK_ENV = "GAMEDAY_LAB_NETWORK"
# In the lab's folder: the network it was started with (first line) and why (second).
NETWORK_FILE = "network"
LOOPBACK_HOST = "127.0.0.1"
# The seed's monitoring host: Prometheus and Alertmanager.
MONITORING_GROUP = "monitoring"
MONITORING_PROGRAMS = ("prometheus", "alertmanager")


class LayoutError(ValueError):
    """A lab layout that cannot be: a base port out of range or not a number (bad input)."""


def default_state_dir(base_port: int) -> Path:
    """Where the lab on `base_port` keeps its state unless told otherwise (GAMEDAY_LAB_DIR)."""
    return Path(f"/tmp/gameday-lab-{base_port}")


def _network_of(state_dir: Path) -> tuple[str, str]:
    """The network of the lab in `state_dir`: what it was started with, else what this
    machine can give a new one, with the reason when that is loopback."""
    recorded = state_dir / NETWORK_FILE
    try:
        mode, _, note = recorded.read_text().partition("\n")
    except OSError:
        mode, note = "", ""
    if mode.strip() in (NAMESPACES, LOOPBACK):
        return mode.strip(), note.strip()
    if (state_dir / "supervisord.conf").exists():
        # Started by a version that knew no namespaces; it keeps 127.0.0.1 until `lab down`.
        return LOOPBACK, "started on 127.0.0.1 before the lab had zone networks"
    choice = os.environ.get(NETWORK_ENV, "").strip().lower()
    if choice not in ("", NAMESPACES, LOOPBACK):
        raise LayoutError(f"{NETWORK_ENV}={choice!r} is not {NAMESPACES} or {LOOPBACK}")
    from lab.network import unavailable

    why = unavailable()
    if why is None:
        return NAMESPACES, ""
    if choice == NAMESPACES:
        raise LayoutError(f"{NETWORK_ENV}={NAMESPACES}, but this machine cannot: {why}")
    return LOOPBACK, why


@dataclass(frozen=True)
class LabLayout:
    base_port: int
    state_dir: Path
    #: "namespaces" (zones on the wire) or "loopback" (everything on 127.0.0.1)
    network: str = LOOPBACK
    #: why the network is loopback, in a few words ("" with namespaces)
    network_note: str = ""
    #: Prometheus, Alertmanager and the exporters run with the lab ($GAMEDAY_LAB_MONITORING)
    monitoring: bool = True

    @classmethod
    def from_env(cls, base_port: int | None = None, state_dir: str | None = None) -> LabLayout:
        if base_port:
            port, source = base_port, "--base-port"
        else:
            raw = os.environ.get("GAMEDAY_LAB_BASE_PORT", str(DEFAULT_BASE_PORT)).strip()
            source = "GAMEDAY_LAB_BASE_PORT"
            try:
                port = int(raw)
            except ValueError:
                raise LayoutError(f"{source}={raw!r} is not a port number") from None
        if not 1024 < port < 65535 - PORT_BLOCK:
            raise LayoutError(
                f"lab base port {port} ({source}) is outside 1025..{65535 - PORT_BLOCK}"
            )
        folder = Path(state_dir or os.environ.get("GAMEDAY_LAB_DIR") or default_state_dir(port))
        switch = os.environ.get(MONITORING_ENV, "1").strip().lower()
        if switch not in ("0", "off", "false", "no", "1", "on", "true", "yes", ""):
            raise LayoutError(f"{MONITORING_ENV}={switch!r} is not on/off (1 or 0)")
        monitoring = switch not in ("0", "off", "false", "no")
        network, note = _network_of(folder)
        return cls(
            base_port=port,
            state_dir=folder,
            network=network,
            network_note=note,
            monitoring=monitoring,
        )

    # -- network -----------------------------------------------------------------------
    @property
    def namespaced(self) -> bool:
        return self.network == NAMESPACES

    @property
    def net(self) -> NetPlan:
        """Names and addresses of the lab's network (used only when `namespaced`)."""
        return NetPlan(self.base_port)

    def place_of(self, group: str) -> str:
        """Where a host of the lab sits on the network: pub, a zone, or out. The monitoring
        host (Prometheus, Alertmanager) sits on the public side with the control host."""
        if group == OUTSIDE_GROUP:
            return OUTSIDE
        for s in SERVERS:
            if s.name == group:
                return s.zone
        return PUBLIC

    def netns_of(self, group: str) -> str | None:
        """The namespace the programs of host `group` run in; None on loopback."""
        return self.net.netns(self.place_of(group)) if self.namespaced else None

    def host_of(self, group: str) -> str:
        """The address the programs of host `group` listen on."""
        if not self.namespaced:
            return LOOPBACK_HOST
        place = self.place_of(group)
        if place == PUBLIC:
            return self.net.public_address
        if place == OUTSIDE:
            return self.net.outside_service_address
        return self.net.zone_address(place)

    @property
    def public_host(self) -> str:
        return self.host_of(CONTROL_GROUP)

    @property
    def monitoring_host(self) -> str:
        return self.host_of(MONITORING_GROUP)

    def server_host(self, server: LabServer) -> str:
        return self.host_of(server.name)

    @property
    def harness_host(self) -> str:
        """Where the machine itself (the harness, `lab status`) comes from on the network."""
        return self.net.host_address if self.namespaced else LOOPBACK_HOST

    def endpoints(self) -> list[tuple[str, int]]:
        """(address, port) of every service of the lab."""
        out = [
            (self.public_host, p)
            for p in (self.http_port, self.stats_port, self.redis_endpoint_port, self.monitor_port)
        ]
        for s in SERVERS:
            host = self.server_host(s)
            out += [(host, self.backend_port(s)), (host, self.pg_port(s)),
                    (host, self.redis_port(s))]  # fmt: skip
        groups = [SERVERS[0].name, SERVERS[1].name, CONTROL_GROUP]
        out += [(self.host_of(g), p) for g, p in zip(groups, self.sentinel_ports(), strict=True)]
        if self.namespaced:
            out.append((self.host_of(OUTSIDE_GROUP), self.outside_port))
        if self.monitoring:
            out += [(self.monitoring_host, self.prometheus_port),
                    (self.monitoring_host, self.alertmanager_port)]  # fmt: skip
            for s in SERVERS:
                host = self.server_host(s)
                out += [(host, p) for p in self.exporter_ports(s)]
        return out

    # -- ports -------------------------------------------------------------------------
    @property
    def http_port(self) -> int:
        return self.base_port

    @property
    def stats_port(self) -> int:
        return self.base_port + 1

    @property
    def redis_endpoint_port(self) -> int:
        """HAProxy's TCP frontend that always leads to the current Redis master."""
        return self.base_port + 2

    def backend_port(self, server: LabServer) -> int:
        return self.base_port + 9 + server.index

    @property
    def monitor_port(self) -> int:
        return self.base_port + 20

    def pg_port(self, server: LabServer) -> int:
        return self.base_port + 20 + server.index

    def redis_port(self, server: LabServer) -> int:
        return self.base_port + 29 + server.index

    def sentinel_ports(self) -> list[int]:
        return [self.base_port + 40 + i for i in range(3)]

    @property
    def outside_port(self) -> int:
        """The internet's service (namespaces only): answers with the caller's address."""
        return self.base_port + 45

    # Monitoring: the free offsets of the block (43 of 50 were enough; PORT_BLOCK stays 50).
    @property
    def prometheus_port(self) -> int:
        return self.base_port + 3

    @property
    def alertmanager_port(self) -> int:
        return self.base_port + 4

    @property
    def receiver_port(self) -> int:
        """The webhook Alertmanager sends to: the harness listens there during a scenario
        (the lab itself does not), so it is not one of the lab's ports."""
        return self.base_port + 5

    @property
    def seed_ports(self) -> tuple[int, int, int]:
        """Prometheus, Alertmanager and receiver of the seed's verbatim profile (15 s scrape,
        `for: 1m`/`5m`): not run by the lab; the slow test that proves those rules starts
        them next to the lab's, on the same exporters."""
        return (self.base_port + 6, self.base_port + 7, self.base_port + 8)

    def node_exporter_port(self, server: LabServer) -> int:
        return self.base_port + 11 + server.index

    def hostview_port(self, server: LabServer) -> int:
        return self.base_port + 13 + server.index

    def pg_exporter_port(self, server: LabServer) -> int:
        return self.base_port + 22 + server.index

    def redis_exporter_port(self, server: LabServer) -> int:
        return self.base_port + 31 + server.index

    def exporter_ports(self, server: LabServer) -> list[int]:
        """The ports of the server's exporters and hostview (on the server's address)."""
        return [
            self.node_exporter_port(server),
            self.hostview_port(server),
            self.pg_exporter_port(server),
            self.redis_exporter_port(server),
        ]

    def monitoring_ports(self) -> list[int]:
        if not self.monitoring:
            return []
        ports = [self.prometheus_port, self.alertmanager_port]
        for s in SERVERS:
            ports += self.exporter_ports(s)
        return ports

    def all_ports(self) -> list[int]:
        ports = [self.http_port, self.stats_port, self.redis_endpoint_port, self.monitor_port]
        for s in SERVERS:
            ports += [self.backend_port(s), self.pg_port(s), self.redis_port(s)]
        return ports + self.sentinel_ports() + self.monitoring_ports()

    # -- folders -----------------------------------------------------------------------
    @property
    def supervisor_conf(self) -> Path:
        return self.state_dir / "supervisord.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.state_dir / "supervisor.sock"

    @property
    def supervisor_pidfile(self) -> Path:
        return self.state_dir / "supervisord.pid"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def pg_dir(self) -> Path:
        """Owned by the postgres user when the lab runs as root."""
        return self.state_dir / "pg"

    def pgdata(self, name: str) -> Path:
        return self.pg_dir / name

    @property
    def pg_runtime_dir(self) -> Path:
        """pg_autoctl's XDG_RUNTIME_DIR (its pid files): /tmp/pg_autoctl when unset, which
        outlives the lab and is shared by every lab on the machine."""
        return self.pg_dir / "run"

    @property
    def lock_path(self) -> Path:
        """Serializes `lab up` and `lab down` on this port block. Outside the lab's folder,
        which `down` removes, and per port rather than per folder: the ports are what two labs
        would fight over."""
        return Path(f"/tmp/gameday-lab-{self.base_port}.lock")

    @property
    def haproxy_socket(self) -> Path:
        return self.state_dir / "haproxy.sock"

    @property
    def redis_dir(self) -> Path:
        return self.state_dir / "redis"

    @property
    def monitoring_dir(self) -> Path:
        """Prometheus's and Alertmanager's configs and data."""
        return self.state_dir / "monitoring"

    def server_dir(self, server: LabServer) -> Path:
        """What belongs to the server as a host: its disk, its view for node-exporter, the
        pid files of the resource faults running on it."""
        return self.state_dir / server.name

    def server_disk(self, server: LabServer) -> Path:
        """The server's data disk: a tmpfs of SERVER_DISK_MB of its own (mounted by `up`
        when the lab runs as root), so filling it fills no disk anybody else writes to."""
        return self.server_dir(server) / "disk"

    def server_faults_dir(self, server: LabServer) -> Path:
        return self.server_dir(server) / "faults"

    def disk_device(self, server: LabServer) -> str:
        """The tmpfs's source name: says whose it is in `mount` and in node-exporter."""
        return f"gameday-lab-{self.base_port}-{server.name}"

    # -- endpoints ---------------------------------------------------------------------
    @property
    def entrypoint_url(self) -> str:
        return f"http://{self.public_host}:{self.http_port}"

    @property
    def stats_url(self) -> str:
        return f"http://{self.public_host}:{self.stats_port}/stats"

    @property
    def monitor_url(self) -> str:
        return f"postgres://autoctl_node@{self.public_host}:{self.monitor_port}/pg_auto_failover"

    @property
    def monitor_admin_url(self) -> str:
        """The monitor's database as its superuser: what `lab status` and the lab's faults ask."""
        return f"postgresql://postgres@{self.public_host}:{self.monitor_port}/pg_auto_failover"

    def _pg_hosts(self) -> str:
        return ",".join(f"{self.server_host(s)}:{self.pg_port(s)}" for s in SERVERS)

    @property
    def db_writer_url(self) -> str:
        return (
            f"postgresql://{DB_USER}@{self._pg_hosts()}/{DB_NAME}"
            "?target_session_attrs=read-write&connect_timeout=2"
        )

    @property
    def db_reader_url(self) -> str:
        return (
            f"postgresql://{DB_USER}@{self._pg_hosts()}/{DB_NAME}"
            "?target_session_attrs=prefer-standby&connect_timeout=2"
        )

    def db_node_url(self, server: LabServer, dbname: str = DB_NAME) -> str:
        host = self.server_host(server)
        return f"postgresql://postgres@{host}:{self.pg_port(server)}/{dbname}?connect_timeout=2"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.public_host}:{self.redis_endpoint_port}/0"

    def redis_node_url(self, server: LabServer) -> str:
        return f"redis://{self.server_host(server)}:{self.redis_port(server)}/0"

    @property
    def outside_url(self) -> str | None:
        """The internet's service as a zone calls it; None on loopback (no zones to leave)."""
        if not self.namespaced:
            return None
        return f"http://{self.host_of(OUTSIDE_GROUP)}:{self.outside_port}/"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.monitoring_host}:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://{self.monitoring_host}:{self.alertmanager_port}"

    @property
    def receiver_address(self) -> str:
        """Where the harness's webhook listens: the machine's own address on the lab's
        network, which Alertmanager (on the public side) can reach."""
        return f"{self.harness_host}:{self.receiver_port}"

    def exporter_url(self, server: LabServer, port: int) -> str:
        """A scrape target of the server: its address, as Prometheus reaches it."""
        return f"{self.server_host(server)}:{port}"
