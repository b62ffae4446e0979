"""The gameday target that describes a lab, rendered from its layout.

`targets/lab.yaml` is this text for the default base port (a test keeps the two equal);
`gameday lab target --base-port N` prints the one for another port block.
`targets/docker-lab.yaml` is the lab in Docker mode on port 17650 (`--runtime docker`): the
same endpoints, with `provider: docker` and each server's engine and compose project.
"""

from __future__ import annotations

from dataclasses import replace

from lab.configs import CHECK_FALL, CHECK_INTER_MS
from lab.layout import (
    CONTROL_GROUP,
    LOOPBACK,
    REDIS_MASTER_NAME,
    SERVER_CPUS,
    SERVER_DISK_MB,
    SERVER_MEMORY_MB,
    SERVERS,
    LabLayout,
    LabServer,
)

DOCKER_BASE_PORT = 17650

LAB_MAX_USERS = 200
LAB_MAX_RPS = 1000


def render_target(layout: LabLayout) -> str:
    servers = "".join(
        f"  - name: {s.name}\n    zone: {s.zone}\n"
        f"    url: http://{layout.server_host(s)}:{layout.backend_port(s)}\n"
        for s in SERVERS
    )
    if layout.namespaced:
        network = "  network: namespaces\n"
    else:
        network = f"  network: loopback\n  network_note: {_quoted(layout.network_note)}\n"
    head = LAB_HEAD.format(port=layout.base_port) + network
    monitoring = _monitoring(layout) if layout.monitoring else ""
    return _render(layout, head, servers) + _egress(layout) + monitoring


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _egress(layout: LabLayout) -> str:
    """How the harness asks each zone about the internet: from inside the zone's namespace."""
    if layout.outside_url is None:
        return ""
    zones = "".join(
        f"    {s.zone}:\n      netns: {layout.net.netns_path(s.zone)}\n" for s in SERVERS
    )
    return f"""# Each zone's way out: the harness enters the zone's network namespace and calls the
# lab's internet service, which answers with the address it sees (the zone's NAT).
egress:
  via: netns
  url: {layout.outside_url}
  zones:
{zones}"""


def _monitoring(layout: LabLayout) -> str:
    return f"""# Prometheus and Alertmanager of the lab (lab profile: 1 s scrape, `for: 5s`) on the
# monitoring host; the harness runs the webhook receiver Alertmanager sends to, during a
# scenario, on the machine's own address on the lab's network.
monitoring:
  prometheus_url: {layout.prometheus_url}
  alertmanager_url: {layout.alertmanager_url}
  receiver:
    listen: {layout.receiver_address}
# What the resource faults may take: a lab server owns {SERVER_CPUS} CPU, {SERVER_MEMORY_MB} MiB
# of memory and a {SERVER_DISK_MB} MiB disk of its own.
stress:
  max_cpu_workers: {SERVER_CPUS}
  max_memory_mb: {SERVER_MEMORY_MB}
  max_disk_mb: {SERVER_DISK_MB}
  max_percent: 95
  max_seconds: 600
"""


def render_docker_target(layout: LabLayout) -> str:
    """The same lab, seen as Docker hosts (`gameday lab up --runtime docker`)."""
    from lab.docker_runtime import engine, project

    # Containers share the host's network: the Docker lab is on 127.0.0.1 whoever runs it.
    layout = replace(layout, network=LOOPBACK, network_note="")
    address = engine(layout).address

    def order(s: LabServer) -> str:
        return ", ".join(
            (s.postgres_program, s.redis_program, s.sentinel_program, s.backend_program)
        )

    servers = "".join(
        f"""  - name: {s.name}
    zone: {s.zone}
    url: http://{layout.server_host(s)}:{layout.backend_port(s)}
    docker:
      engine: {address}
      project: {project(layout, s.name)}
      start_order: [{order(s)}]
      database:
        service: {s.postgres_program}
        pgdata: {layout.pgdata(s.pg_node_name)}
        user: postgres
        failover: automatic   # pg_auto_failover promotes, and rejoins the old primary
      cache_service: {s.redis_program}
      cache_port: {layout.redis_port(s)}
      backend_service: {s.backend_program}
      stop_timeout_sec: 15
      health_timeout_sec: 120
"""
        for s in SERVERS
    )
    return _render(layout, DOCKER_HEAD.format(port=layout.base_port), servers)


LAB_HEAD = """# The embedded lab: a real CloudMart on this machine (`gameday lab up`).
# Rendered by lab/target.py from the lab's layout (base port {port}); regenerate
# with `gameday lab target --base-port N` rather than editing by hand.
name: lab
provider: lab
description: HAProxy, backends in zones a/b, a NAT per zone, PostgreSQL (pg_auto_failover), Redis
# The lab exists to be broken: destructive scenarios may run against it without a flag.
allow_destructive: true
lab:
  base_port: {port}
"""

DOCKER_HEAD = """# The embedded lab in Docker mode: every program in a container on a Docker Engine
# API, grouped by compose-style project labels (`gameday lab up --runtime docker
# --base-port {port}`). Faults go through the Docker Engine API (chaos/docker.py).
# Rendered by lab/target.py from the lab's layout; regenerate with
# `gameday lab target --runtime docker --base-port N` rather than editing by hand.
name: docker-lab
provider: docker
description: the lab's programs as containers, servers as compose projects, on podman
# The lab exists to be broken: destructive scenarios may run against it without a flag.
allow_destructive: true
"""


def _render(layout: LabLayout, head: str, servers: str) -> str:
    groups = [*(s.name for s in SERVERS), CONTROL_GROUP]
    sentinels = "".join(
        f"    - {layout.host_of(g)}:{p}\n"
        for g, p in zip(groups, layout.sentinel_ports(), strict=True)
    )
    nodes = "".join(f"    - {layout.server_host(s)}:{layout.redis_port(s)}\n" for s in SERVERS)
    detection = CHECK_INTER_MS * (CHECK_FALL + 1) / 1000
    return f"""{head}entrypoint:
  url: {layout.entrypoint_url}
  health_path: /health
  served_by_header: X-Served-By
load_balancer:
  kind: haproxy
  stats_url: {layout.stats_url}
  backend: servers
  detection_sec: {detection}
database:
  # libpq multi-host URLs: the writer finds the primary, the reader prefers the standby.
  writer_url: {layout.db_writer_url}
  reader_url: {layout.db_reader_url}
  synchronous: true
  max_replica_lag_sec: 5
  replica_read_within_sec: 2
cache:
  # HAProxy's TCP endpoint that follows the Redis master (what ElastiCache calls the
  # primary endpoint).
  url: {layout.redis_url}
  sentinels:
{sentinels}  master_name: {REDIS_MASTER_NAME}
  # Every Redis node, each asked for writes during a partition (split brain shows as two).
  nodes:
{nodes}  persistence:
    appendonly: true
    appendfsync: everysec
    rdb: true
servers:
{servers}# The most load the harness may put on the lab (a few processes sharing its cores).
load:
  max_users: {LAB_MAX_USERS}
  max_rps: {LAB_MAX_RPS}
"""
