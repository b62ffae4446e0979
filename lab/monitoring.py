"""The lab's monitoring, as the seed's monitoring host runs it: Prometheus, Alertmanager, and
on each server a node-exporter, a PostgreSQL exporter and a Redis exporter; HAProxy's own
Prometheus endpoint on the control host.

Two profiles of the same six alert rules:
- `seed`: the seed's `alerts.yml` verbatim (15 s scrape, 30 s rule evaluation, `for: 1m`,
  `for: 5m` and a 5-minute CPU rate for the resource rules), and its Alertmanager timings
  (group_wait 10 s). Proven once, by a slow test, next to the lab's own stack.
- `lab`: the same rules, expressions and labels, with short timings (1 s scrape and
  evaluation, `for: 5s`, a 10 s CPU rate) so that scenarios do not wait minutes.
  `lab_rules()` derives it from the verbatim text, so the two can only differ in timings.

Alertmanager routes everything to a webhook receiver the harness runs during a scenario
(`LabLayout.receiver_address`); nothing listens there in between, and Alertmanager retries.

The servers' CPU and memory are read from lab/hostview.py (the servers share this machine,
whose totals say nothing about one server); their disk is their own tmpfs, read by the real
node-exporter through a mount table listing only that disk.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from lab.layout import (
    LOOPBACK_HOST,
    MONITORING_GROUP,
    SERVERS,
    LabLayout,
    LabServer,
)

PROMETHEUS = "/usr/bin/prometheus"
# How soon the lab's Prometheus sends an alert to Alertmanager again (Prometheus's default: 1m).
# Not 1s: a firing alert is sent with endsAt 4 x this ahead, and a Prometheus that a busy
# machine delays past that would see Alertmanager resolve the alert on its own (flapping).
LAB_RESEND_DELAY = "5s"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
POSTGRES_EXPORTER = "/usr/bin/prometheus-postgres-exporter"
REDIS_EXPORTER = "/usr/bin/prometheus-redis-exporter"
BINARIES = {
    "prometheus": PROMETHEUS,
    "prometheus-alertmanager": ALERTMANAGER,
    "prometheus-node-exporter": NODE_EXPORTER,
    "prometheus-postgres-exporter": POSTGRES_EXPORTER,
    "prometheus-redis-exporter": REDIS_EXPORTER,
}
RECEIVER_NAME = "gameday"
RECEIVER_PATH = "/alertmanager"

# The seed's alerts.yml, word for word (docs/monitoring.md says where it comes from).
SEED_RULES_FILE = Path(__file__).resolve().parent / "seed-alerts.yml"
SEED_RULES = SEED_RULES_FILE.read_text(encoding="utf-8")
SEED_ALERTS = (
    "InstanceDown",
    "HighCPUUsage",
    "HighMemoryUsage",
    "HighDiskUsage",
    "PostgreSQLDown",
    "RedisDown",
)


@dataclass(frozen=True)
class Profile:
    """The timings of one monitoring profile (seconds)."""

    name: str
    scrape_sec: float
    evaluation_sec: float
    group_wait_sec: float
    group_interval_sec: float
    #: the PostgreSQL exporter's scrapes: it takes about a second to answer pg_up 0 when its
    #: database is down, so a 1 s scrape timeout would report the exporter down instead
    database_scrape_sec: float


SEED = Profile("seed", scrape_sec=15, evaluation_sec=15, group_wait_sec=10,
               group_interval_sec=10, database_scrape_sec=15)  # fmt: skip
# 1 s scrapes and evaluations: an alert's state is at most ~2 s behind the metric it reads.
LAB = Profile("lab", scrape_sec=1, evaluation_sec=1, group_wait_sec=1, group_interval_sec=1,
              database_scrape_sec=3)  # fmt: skip
# The lab profile's short timings, in place of the seed's (see lab_rules).
LAB_FOR = "5s"
LAB_RATE_WINDOW = "10s"
LAB_RULE_INTERVAL = "1s"


def lab_rules() -> str:
    """The seed's rules with the lab's timings: every `for:` 5 s, the CPU rate over 10 s, the
    group evaluated every second. Expressions, labels and annotations stay word for word."""
    text = re.sub(r"for: (1m|5m)\n", f"for: {LAB_FOR}\n", SEED_RULES)
    text = text.replace("[5m]", f"[{LAB_RATE_WINDOW}]")
    return text.replace("interval: 30s\n", f"interval: {LAB_RULE_INTERVAL}\n")


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _jobs(jobs: dict[str, list[tuple[list[str], dict[str, str]]]], every: dict[str, float]) -> str:
    out = ""
    for name, configs in jobs.items():
        out += f"  - job_name: '{name}'\n"
        if name in every:
            seconds = _duration(every[name])
            out += f"    scrape_interval: {seconds}\n    scrape_timeout: {seconds}\n"
        out += "    static_configs:\n"
        for targets, labels in configs:
            listed = ", ".join(f"'{t}'" for t in targets)
            out += f"      - targets: [{listed}]\n"
            if labels:
                out += "        labels:\n"
                out += "".join(f"          {k}: '{v}'\n" for k, v in labels.items())
    return out


def prometheus_yml(
    layout: LabLayout, profile: Profile, *, ports: tuple[int, int], host: str = LOOPBACK_HOST
) -> str:
    """prometheus.yml in the seed's shape: one `-node` job per server (node-exporter and the
    server's CPU/memory view), the PostgreSQL and Redis exporters, HAProxy's endpoint.

    Every target is scraped at the address the layout gives its host (a server's zone
    address with zone networks); `host` is where this Prometheus and its Alertmanager
    listen (the lab's own: the monitoring host's address; the seed test's: 127.0.0.1)."""
    prometheus_port, alertmanager_port = ports
    rules = layout.monitoring_dir / f"alerts-{profile.name}.yml"
    jobs: dict[str, list[tuple[list[str], dict[str, str]]]] = {
        "prometheus": [([f"{host}:{prometheus_port}"], {})]
    }
    for s in SERVERS:
        labels = {"server": s.name, "az": f"az-{s.zone}"}
        where = layout.server_host(s)
        node = [f"{where}:{layout.node_exporter_port(s)}", f"{where}:{layout.hostview_port(s)}"]
        jobs[f"{s.name}-node"] = [(node, labels)]
    for s in SERVERS:
        labels = {"server": s.name, "az": f"az-{s.zone}"}
        pg, redis = layout.pg_exporter_port(s), layout.redis_exporter_port(s)
        where = layout.server_host(s)
        jobs.setdefault("postgres", []).append(([f"{where}:{pg}"], labels))
        jobs.setdefault("redis", []).append(([f"{where}:{redis}"], labels))
    haproxy = f"{layout.public_host}:{layout.stats_port}"
    jobs["haproxy"] = [([haproxy], {"server": "control"})]
    every = {}
    if profile.database_scrape_sec != profile.scrape_sec:
        every["postgres"] = profile.database_scrape_sec
    return f"""# Rendered by gameday's lab ({profile.name} profile); `lab up` overwrites edits.
global:
  scrape_interval: {_duration(profile.scrape_sec)}
  evaluation_interval: {_duration(profile.evaluation_sec)}
  scrape_timeout: {_duration(min(profile.scrape_sec, 10))}

alerting:
  alertmanagers:
    - static_configs:
        - targets: ['{host}:{alertmanager_port}']

rule_files:
  - '{rules}'

scrape_configs:
{_jobs(jobs, every)}"""


def alertmanager_yml(profile: Profile, receiver: str) -> str:
    """The seed's route (group_by alertname, cluster, service; 12 h repeat), sending to the
    harness's webhook at `receiver` (host:port), resolved alerts included."""
    return f"""# Rendered by gameday's lab ({profile.name} profile); `lab up` overwrites edits.
global:
  resolve_timeout: 5m

route:
  group_by: ['alertname', 'cluster', 'service']
  group_wait: {_duration(profile.group_wait_sec)}
  group_interval: {_duration(profile.group_interval_sec)}
  repeat_interval: 12h
  receiver: '{RECEIVER_NAME}'

receivers:
  # The harness runs this webhook during a scenario (docs/monitoring.md has Slack and
  # e-mail receivers for a real deployment).
  - name: '{RECEIVER_NAME}'
    webhook_configs:
      - url: 'http://{receiver}{RECEIVER_PATH}'
        send_resolved: true
"""


def disk_mounts(layout: LabLayout, server: LabServer) -> str:
    """The mount table server's node-exporter reads (`--path.procfs`, `1/mounts`): its own
    disk only, so that it reports that filesystem and not this machine's others. Size and
    free space are the real statfs of the tmpfs."""
    return f"{layout.disk_device(server)} {layout.server_disk(server)} tmpfs rw 0 0\n"


def node_procfs(layout: LabLayout, server: LabServer) -> str:
    return str(layout.server_dir(server) / "proc")


def write_configs(layout: LabLayout) -> None:
    """Prometheus's and Alertmanager's configs and rules (both profiles' rules: the seed's
    are what the slow test loads), and each server's mount table for node-exporter."""
    folder = layout.monitoring_dir
    for sub in ("prometheus", "alertmanager"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "alerts-seed.yml").write_text(SEED_RULES)
    (folder / "alerts-lab.yml").write_text(lab_rules())
    ports = (layout.prometheus_port, layout.alertmanager_port)
    yml = prometheus_yml(layout, LAB, ports=ports, host=layout.monitoring_host)
    (folder / "prometheus.yml").write_text(yml)
    (folder / "alertmanager.yml").write_text(alertmanager_yml(LAB, layout.receiver_address))
    for s in SERVERS:
        proc = layout.server_dir(s) / "proc" / "1"
        proc.mkdir(parents=True, exist_ok=True)
        (proc / "mounts").write_text(disk_mounts(layout, s) if disk_mounted(layout, s) else "")
        layout.server_faults_dir(s).mkdir(parents=True, exist_ok=True)
        layout.server_disk(s).mkdir(parents=True, exist_ok=True)


def prometheus_command(
    layout: LabLayout,
    config: str,
    data: str,
    port: int,
    *,
    host: str = LOOPBACK_HOST,
    resend_delay: str | None = None,
) -> str:
    """Prometheus's command line; `resend_delay` None keeps Prometheus's own (1m, the seed's)."""
    resend = [f"--rules.alert.resend-delay={resend_delay}"] if resend_delay else []
    return shlex.join([
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address={host}:{port}",
        # A few hours are plenty for a lab; keeps the folder small.
        "--storage.tsdb.retention.time=6h",
        "--web.enable-lifecycle",
        *resend,
    ])  # fmt: skip


def alertmanager_command(config: str, data: str, port: int, host: str = LOOPBACK_HOST) -> str:
    return shlex.join([
        ALERTMANAGER,
        f"--config.file={config}",
        f"--storage.path={data}",
        f"--web.listen-address={host}:{port}",
        # No cluster: its gossip port would listen on 0.0.0.0:9094 by default.
        "--cluster.listen-address=",
    ])  # fmt: skip


@dataclass(frozen=True)
class MonitoringProgram:
    """A monitoring process: lab.configs turns these into its Program records."""

    group: str
    name: str
    command: str
    port: int
    kind: str
    env: tuple[tuple[str, str], ...] = ()
    priority: int = 700


def monitoring_programs(layout: LabLayout, python: str) -> list[MonitoringProgram]:
    folder = layout.monitoring_dir
    out = [
        MonitoringProgram(
            MONITORING_GROUP, "prometheus",
            # The lab profile's resend delay: an alert's resolution that does not reach
            # Alertmanager (seen after a server's heal) is sent again seconds later, not a
            # minute later (the lab's InstanceDown then stayed firing 60 s past its target).
            prometheus_command(layout, str(folder / "prometheus.yml"),
                               str(folder / "prometheus"), layout.prometheus_port,
                               host=layout.monitoring_host, resend_delay=LAB_RESEND_DELAY),
            layout.prometheus_port, "prometheus",
        ),
        MonitoringProgram(
            MONITORING_GROUP, "alertmanager",
            alertmanager_command(str(folder / "alertmanager.yml"), str(folder / "alertmanager"),
                                 layout.alertmanager_port, layout.monitoring_host),
            layout.alertmanager_port, "alertmanager",
        ),
    ]  # fmt: skip
    for s in SERVERS:
        # In the server's zone, on its address (lab.configs enters the namespace): a zone
        # lost takes its exporters' answers along, as a host lost would.
        where = layout.server_host(s)
        node = [
            NODE_EXPORTER,
            f"--web.listen-address={where}:{layout.node_exporter_port(s)}",
            # Only the server's disk: its CPU and memory come from its hostview (below).
            "--collector.disable-defaults",
            "--collector.filesystem",
            f"--path.procfs={node_procfs(layout, s)}",
        ]
        hostview = [
            python, "-m", "lab.hostview",
            "--server", s.name,
            "--host", where,
            "--port", str(layout.hostview_port(s)),
            "--state-dir", str(layout.state_dir),
            "--base-port", str(layout.base_port),
        ]  # fmt: skip
        pg_url = f"postgresql://postgres@{where}:{layout.pg_port(s)}/postgres?sslmode=disable"
        pg = [POSTGRES_EXPORTER, f"--web.listen-address={where}:{layout.pg_exporter_port(s)}"]
        redis = [
            REDIS_EXPORTER,
            "-redis.addr", f"redis://{where}:{layout.redis_port(s)}",
            "-web.listen-address", f"{where}:{layout.redis_exporter_port(s)}",
        ]  # fmt: skip
        out += [
            MonitoringProgram(s.name, s.node_exporter_program, shlex.join(node),
                              layout.node_exporter_port(s), "node-exporter"),
            MonitoringProgram(s.name, s.hostview_program, shlex.join(hostview),
                              layout.hostview_port(s), "hostview"),
            MonitoringProgram(s.name, s.pg_exporter_program, shlex.join(pg),
                              layout.pg_exporter_port(s), "pg-exporter",
                              env=(("DATA_SOURCE_NAME", pg_url),)),
            MonitoringProgram(s.name, s.redis_exporter_program, shlex.join(redis),
                              layout.redis_exporter_port(s), "redis-exporter"),
        ]  # fmt: skip
    return out


def reload(layout: LabLayout) -> None:
    """Make a running Prometheus and Alertmanager read their configs again (`lab up` on a
    running lab rewrites them); one that is not running yet reads them when it starts."""
    import contextlib
    import urllib.request

    for url in (layout.prometheus_url, layout.alertmanager_url):
        with contextlib.suppress(OSError):
            request = urllib.request.Request(f"{url}/-/reload", method="POST")
            urllib.request.urlopen(request, timeout=5).close()


# -- each server's own disk -------------------------------------------------------------------


def disk_mounted(layout: LabLayout, server: LabServer) -> bool:
    """Is the server's disk its own filesystem (the tmpfs `mount_disks` makes)?"""
    disk = layout.server_disk(server)
    try:
        return os.stat(disk).st_dev != os.stat(disk.parent).st_dev
    except OSError:
        return False


def can_mount() -> bool:
    return os.geteuid() == 0
