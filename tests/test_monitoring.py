"""The monitoring engine without a lab: Alertmanager's answers parsed, the webhook receiver
over real HTTP, the watch turning state changes into marks, stop conditions, the monitoring
role of a target, the lab's rules (the seed's verbatim, the lab profile differing only in
timings, both checked by promtool and the seed's timing proven with `promtool test rules`),
the lab's ports and the servers' CPU meter."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from gameday.clock import Clock
from gameday.history import (
    MARK_ALERT_DELIVERED,
    MARK_ALERT_FIRING,
    MARK_ALERT_RESOLVED,
    Mark,
    Record,
)
from gameday.monitoring import (
    Alert,
    AlertStop,
    AlertWatch,
    MonitoringError,
    Receiver,
    alert_from_alertmanager,
    parse_time,
)
from gameday.needs import Monitoring
from gameday.target import Target, TargetError, _parse_target
from lab import configs
from lab import monitoring as labmon
from lab.hostview import (
    CLOCK_TICKS,
    PAGE_BYTES,
    PSS_REFRESH_SEC,
    CpuMeter,
    ProcStat,
    pss_stale,
    read_stat,
)
from lab.layout import PORT_BLOCK, LabLayout
from tests.conftest import generic_target

API_ITEM = {
    "labels": {
        "alertname": "PostgreSQLDown",
        "severity": "critical",
        "instance": "x:1",
        "server": "server1",
        "job": "postgres",
    },
    "fingerprint": "abc123",
    "startsAt": "2026-12-02T02:13:05.123456789Z",
    "endsAt": "2026-12-02T02:17:05.123Z",
    "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_alertmanager_times_and_alerts_are_parsed() -> None:
    assert parse_time("2026-12-02T02:13:05.123456789Z") == pytest.approx(1796177585.123456)
    assert parse_time("0001-01-01T00:00:00Z") is None  # Go's zero time: no time
    alert = alert_from_alertmanager(API_ITEM)
    assert (alert.name, alert.severity, alert.fingerprint, alert.state) == (
        "PostgreSQLDown",
        "critical",
        "abc123",
        "active",
    )
    assert alert.detail()["server"] == "server1"
    silenced = alert_from_alertmanager({**API_ITEM, "status": {"state": "suppressed"}})
    assert silenced.state == "suppressed"
    # A webhook's alert says "firing" where the API has an object.
    hooked = alert_from_alertmanager({**API_ITEM, "status": "firing"})
    assert hooked.state == "active" and hooked.starts_at == alert.starts_at


class Scripted:
    """An alert source whose answers the test sets (the real Alertmanager is in the lab
    tests); `fail` makes it unreadable."""

    poll_sec = 0.05

    def __init__(self) -> None:
        self.now: list[Alert] = []
        self.fail = False

    def firing(self) -> list[Alert]:
        if self.fail:
            raise MonitoringError("Alertmanager at http://x: ConnectError: refused")
        return list(self.now)

    def describe(self) -> str:
        return "scripted"


def lab_like_target(listen: str | None = None) -> Target:
    monitoring = "monitoring:\n  alertmanager_url: http://127.0.0.1:9\n"
    if listen:
        monitoring += f"  receiver:\n    listen: {listen}\n"
    return _parse_target(
        "name: t\nprovider: generic\nentrypoint: {url: 'http://127.0.0.1:9'}\n" + monitoring,
        "t.yaml",
    )


def wait(ready, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.02)


def test_the_watch_marks_firing_delivered_and_resolved_and_feeds_stop_conditions() -> None:
    records: list[Record] = []
    source = Scripted()
    listen = f"127.0.0.1:{free_port()}"
    watch = AlertWatch(lab_like_target(listen), clock=Clock(), record=records.append, source=source)
    watch.start()
    try:
        assert watch.firing() == [] and records == []
        pg = alert_from_alertmanager(API_ITEM)
        source.now = [pg]
        wait(lambda: any(isinstance(r, Mark) and r.name == MARK_ALERT_FIRING for r in records))
        stop = AlertStop(watch, names=["PostgreSQLDown"])
        assert stop.check() == 'alert "PostgreSQLDown" fired (critical, server1)'
        assert AlertStop(watch, names=["RedisDown"]).check() is None
        assert AlertStop(watch, critical_except=[]).check() is not None
        assert AlertStop(watch, critical_except=["PostgreSQLDown"]).check() is None

        # Alertmanager's webhook, over real HTTP, as it posts a resolved notification.
        payload = {
            "version": "4",
            "status": "resolved",
            "alerts": [{**API_ITEM, "status": "resolved"}],
        }
        httpx.post(f"http://{listen}/alertmanager", json=payload, timeout=5).raise_for_status()
        source.now = []
        wait(lambda: any(isinstance(r, Mark) and r.name == MARK_ALERT_RESOLVED for r in records))
        assert stop.check() is None
    finally:
        watch.stop()
    names = [r.name for r in records if isinstance(r, Mark)]
    assert names == [MARK_ALERT_FIRING, MARK_ALERT_DELIVERED, MARK_ALERT_RESOLVED]
    delivered = next(r for r in records if isinstance(r, Mark) and r.name == MARK_ALERT_DELIVERED)
    assert delivered.detail["status"] == "resolved" and delivered.detail["via"] == "receiver"
    # The port is free again: the receiver stopped with the watch (the next scenario's
    # receiver listens there).
    again = Receiver(listen, lambda status, alert: None)
    again.start()
    again.stop()


def test_a_notification_is_the_first_sighting_when_it_beats_the_poll() -> None:
    records: list[Record] = []
    watch = AlertWatch(lab_like_target(), clock=Clock(), record=records.append, source=Scripted())
    watch._delivered("firing", alert_from_alertmanager(API_ITEM))
    assert [r.name for r in records if isinstance(r, Mark)] == [
        MARK_ALERT_FIRING,
        MARK_ALERT_DELIVERED,
    ]
    assert records[0].detail["via"] == "receiver"  # type: ignore[union-attr]


def test_silenced_alerts_do_not_stop_a_game_day_and_an_unreadable_monitoring_is_said() -> None:
    source = Scripted()
    watch = AlertWatch(lab_like_target(), clock=Clock(), record=lambda r: None, source=source)
    source.now = [alert_from_alertmanager({**API_ITEM, "status": {"state": "suppressed"}})]
    watch.poll()
    assert AlertStop(watch, names=["PostgreSQLDown"]).check() is None
    source.fail = True
    watch.poll()
    assert watch.error == "Alertmanager at http://x: ConnectError: refused"


def test_a_busy_receiver_port_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MonitoringError) as info:
            Receiver(f"127.0.0.1:{port}", lambda status, alert: None).start()
    assert str(info.value) == (
        f"cannot run the alert receiver on 127.0.0.1:{port} (monitoring.receiver.listen): "
        "Address already in use"
    )


# -- the monitoring role of a target ----------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line"),
    [
        (
            "monitoring: {prometheus_url: 'http://p:9090'}",
            "t.yaml: monitoring: give alertmanager_url (Prometheus/Alertmanager) or "
            "cloudwatch_alarms (AWS)",
        ),
        (
            "monitoring: {alertmanager_url: 'ftp://a'}",
            "t.yaml: monitoring.alertmanager_url: 'ftp://a' is not a URL with scheme http or https",
        ),
        (
            "monitoring: {alertmanager_url: 'http://a:9093', receiver: {listen: 'nope'}}",
            "t.yaml: monitoring.receiver.listen: 'nope' is not host:port",
        ),
        (
            "monitoring: {alertmanager_url: 'http://a:9093', receiver: {listen: 'a:1', "
            "integration: slack}}",
            "t.yaml: monitoring.receiver: give exactly one of listen (host:port) or integration",
        ),
        (
            "monitoring: {cloudwatch_alarms: {PostgreSQLDown: db-down}}",
            "t.yaml: monitoring.cloudwatch_alarms: CloudWatch is read through the aws section "
            "(region, account); add aws:",
        ),
        (
            "stress: {max_percent: 100}",
            "t.yaml: stress.max_percent: Input should be less than 100, got 100",
        ),
    ],
)
def test_a_bad_monitoring_role_is_one_line(section: str, line: str) -> None:
    text = f"name: t\nprovider: generic\nentrypoint: {{url: 'http://127.0.0.1:9'}}\n{section}\n"
    with pytest.raises(TargetError) as info:
        _parse_target(text, "t.yaml")
    assert str(info.value) == line


def test_monitoring_needs_say_what_to_declare() -> None:
    bare = _parse_target("name: t\nprovider: generic\nentrypoint: {url: 'http://x:1'}\n", "t")
    assert Monitoring().why_not(bare, {}) == (
        "target 't' has no monitoring role (declare monitoring: alertmanager_url, or "
        "cloudwatch_alarms on AWS; docs/monitoring.md)"
    )
    no_receiver = lab_like_target()
    assert Monitoring().why_not(no_receiver, {}) is None
    assert "declares no monitoring.receiver" in str(Monitoring("receiver").why_not(no_receiver, {}))
    assert Monitoring("receiver").why_not(lab_like_target("127.0.0.1:5"), {}) is None
    aws = _parse_target(
        "name: t\nprovider: aws\nentrypoint: {url: 'http://x:1'}\naws: {region: ap-northeast-2}\n"
        "monitoring: {cloudwatch_alarms: {PostgreSQLDown: db-down}}\n",
        "t",
    )
    need = Monitoring("alerts", arg="name")
    assert need.why_not(aws, {"name": "PostgreSQLDown"}) is None
    assert need.why_not(aws, {"name": "RedisDown"}) == (
        "target 't' names no CloudWatch alarm for 'RedisDown' (monitoring.cloudwatch_alarms)"
    )
    assert "no monitoring.alertmanager_url" in str(Monitoring("alertmanager").why_not(aws, {}))


# -- the lab's rules and ports ------------------------------------------------------------------


CPU_EXPR = (
    'expr: 100 - (avg by(instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{window}])) '
    "* 100) > 80"
)


def test_the_lab_profile_differs_from_the_seeds_rules_only_in_timings() -> None:
    seed, lab = labmon.SEED_RULES.splitlines(), labmon.lab_rules().splitlines()
    changed = [line for line in difflib.ndiff(seed, lab) if line.startswith(("- ", "+ "))]
    removed = sorted(line[2:].strip() for line in changed if line.startswith("- "))
    added = sorted(line[2:].strip() for line in changed if line.startswith("+ "))
    assert removed == sorted(
        ["interval: 30s", *["for: 1m"] * 3, *["for: 5m"] * 3, CPU_EXPR.format(window="5m")]
    )
    assert added == sorted(["interval: 1s", *["for: 5s"] * 6, CPU_EXPR.format(window="10s")])
    assert all(f"- alert: {name}" in labmon.SEED_RULES for name in labmon.SEED_ALERTS)


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="no promtool")


@needs_promtool
def test_both_profiles_rules_and_the_lab_configs_are_valid_for_prometheus(tmp_path: Path) -> None:
    layout = LabLayout.from_env(base_port=30000, state_dir=str(tmp_path / "lab"))
    labmon.write_configs(layout)
    rules = [layout.monitoring_dir / "alerts-seed.yml", layout.monitoring_dir / "alerts-lab.yml"]
    done = subprocess.run(
        ["promtool", "check", "rules", *map(str, rules)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = subprocess.run(
        ["promtool", "check", "config", str(layout.monitoring_dir / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr
    amtool = shutil.which("amtool")
    if amtool:
        am_config = str(layout.monitoring_dir / "alertmanager.yml")
        am = subprocess.run(
            [amtool, "check-config", am_config], capture_output=True, text=True, check=False
        )
        assert am.returncode == 0, am.stdout + am.stderr


SEED_TIMING_TEST = """
rule_files: [{rules}]
evaluation_interval: 30s
tests:
  - interval: 15s
    input_series:
      # down from minute 1 on
      - series: 'up{{job="server1-node", instance="n1:9100"}}'
        values: '1 1 1 1 0x20'
      - series: 'pg_up{{instance="p1:9187"}}'
        values: '1 1 1 1 0x20'
      # idle 10 % of the time from the start: 90 % busy
      - series: 'node_cpu_seconds_total{{cpu="0", mode="idle", instance="h1:9100"}}'
        values: '0+1.5x60'
      - series: 'node_memory_MemTotal_bytes{{instance="h1:9100"}}'
        values: '100x60'
      - series: 'node_memory_MemAvailable_bytes{{instance="h1:9100"}}'
        values: '10x60'
    alert_rule_test:
      # Down at 1m: pending, not firing, for a minute...
      - eval_time: 1m30s
        alertname: InstanceDown
        exp_alerts: []
      - eval_time: 1m30s
        alertname: PostgreSQLDown
        exp_alerts: []
      # ...and firing once a minute has passed (for: 1m).
      - eval_time: 2m30s
        alertname: PostgreSQLDown
        exp_alerts:
          - exp_labels: {{severity: critical, instance: "p1:9187"}}
            exp_annotations:
              summary: "PostgreSQL down on p1:9187"
              description: "PostgreSQL has been down for more than 1 minute."
      # 90 % busy and 90 % of memory used from the start: not yet after 4 minutes (for: 5m)...
      - eval_time: 4m
        alertname: HighMemoryUsage
        exp_alerts: []
      # ...firing once five minutes have passed.
      - eval_time: 5m30s
        alertname: HighMemoryUsage
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "h1:9100"}}
            exp_annotations:
              summary: "High memory usage on h1:9100"
              description: "Memory usage is above 80% for 5 minutes."
      - eval_time: 5m30s
        alertname: HighCPUUsage
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "h1:9100"}}
            exp_annotations:
              summary: "High CPU usage on h1:9100"
              description: "CPU usage is above 80% for 5 minutes."
"""


@needs_promtool
def test_the_seeds_rules_fire_after_their_for_durations_and_not_before(tmp_path: Path) -> None:
    """The verbatim timings, proven on synthetic series by Prometheus's own rule engine
    (the slow lab test proves them on real exporters)."""
    rules = tmp_path / "alerts.yml"
    rules.write_text(labmon.SEED_RULES)
    test = tmp_path / "test.yml"
    test.write_text(textwrap.dedent(SEED_TIMING_TEST.format(rules=json.dumps(str(rules)))))
    done = subprocess.run(
        ["promtool", "test", "rules", str(test)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # And it can fail: the lab profile's rules fire far sooner, which this test forbids.
    rules.write_text(labmon.lab_rules())
    fast = subprocess.run(
        ["promtool", "test", "rules", str(test)], capture_output=True, text=True, check=False
    )
    assert fast.returncode != 0


def test_the_labs_ports_stay_in_its_block_and_never_collide() -> None:
    layout = LabLayout.from_env(base_port=30000, state_dir="/tmp/x")
    ports = [*layout.all_ports(), layout.receiver_port, *layout.seed_ports]
    assert len(ports) == len(set(ports))
    assert all(30000 <= p < 30000 + PORT_BLOCK for p in ports)
    off = LabLayout(base_port=30000, state_dir=Path("/tmp/x"), monitoring=False)
    assert set(layout.all_ports()) - set(off.all_ports()) == set(layout.monitoring_ports())


# -- a lab server's CPU meter --------------------------------------------------------------------


def test_hostview_reads_pss_again_when_the_processes_move_or_it_is_old() -> None:
    mib = 1 << 20
    read = {1: 10 * mib, 2: 50 * mib}
    assert pss_stale({}, read, 0.0)  # never read
    assert not pss_stale(read, dict(read), 0.5)
    assert not pss_stale(read, {1: 10 * mib + 40 * 4096, 2: 50 * mib - 4096}, 1.9)  # small moves
    assert pss_stale(read, {1: 11 * mib, 2: 50 * mib}, 0.5)  # a process grew by 1 MiB
    assert pss_stale(read, {1: 10 * mib, 2: 49 * mib}, 0.5)  # or shrank
    assert pss_stale(read, {1: 10 * mib}, 0.5)  # one ended
    assert pss_stale(read, {**read, 3: mib}, 0.5)  # a new one (a fault's stress-ng)
    assert pss_stale(read, dict(read), PSS_REFRESH_SEC)


def test_read_stat_gives_a_process_resident_size() -> None:
    stat = read_stat(os.getpid())
    assert stat is not None and stat.pid == os.getpid()
    resident = int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_BYTES
    assert stat.rss > 0 and abs(stat.rss - resident) < 8 * (1 << 20)


def proc(pid: int, user: float, system: float = 0.0, start: int = 10**9) -> ProcStat:
    return ProcStat(pid, 1, start, int(user * CLOCK_TICKS), int(system * CLOCK_TICKS))


def test_the_cpu_meter_counts_the_servers_processes_against_its_cpus() -> None:
    meter = CpuMeter(cpus=1, boot_ticks_now=0)  # every process "started after the meter"
    meter.sample([proc(1, 0.0)], now=0.0)
    meter.sample([proc(1, 0.5, 0.25)], now=1.0)  # 75 % busy over a second
    c = meter.counters()
    assert (c["user"], c["system"], c["idle"]) == pytest.approx((0.5, 0.25, 0.25))
    # A process busier than the server's one CPU (two cores at once) counts as 100 %, never
    # more: the counters only grow and add up to the server's CPU time.
    meter.sample([proc(1, 2.5, 0.25)], now=2.0)
    c = meter.counters()
    assert sum(c.values()) == pytest.approx(2.0)
    assert c["idle"] == pytest.approx(0.25)
    # A process that is gone takes its time along, and nothing goes backwards.
    meter.sample([], now=3.0)
    after = meter.counters()
    assert after["idle"] == pytest.approx(1.25) and after["user"] >= c["user"]


def test_processes_older_than_the_meter_count_only_what_they_use_afterwards() -> None:
    meter = CpuMeter(cpus=1, boot_ticks_now=10**9)
    meter.sample([proc(7, 500.0, start=5)], now=0.0)
    meter.sample([proc(7, 500.1, start=5)], now=1.0)
    assert meter.counters()["user"] == pytest.approx(0.1)


def test_the_lab_renders_the_same_programs_however_python_was_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`.venv/bin/gameday` runs python3, `.venv/bin/python -m ...` python: a heal from either
    must find the running lab unchanged (a changed group was refused, the heal failed)."""
    layout = LabLayout(18700, Path("/tmp/gameday-lab-render-test"), monitoring=True)
    venv_bin = Path(sys.prefix) / "bin"
    rendered = []
    for name in ("python3", "python"):
        monkeypatch.setattr(sys, "executable", str(venv_bin / name))
        rendered.append([(p.group, p.name, p.command) for p in configs.programs(layout)])
    assert rendered[0] == rendered[1]
    assert any(str(venv_bin / "python") + " -m lab.app" in c for _, _, c in rendered[0])


def test_only_the_lab_profiles_prometheus_resends_alerts_within_seconds() -> None:
    """The lab's Prometheus resends every 5 s (a lost resolution is not left for a minute);
    the seed's keeps Prometheus's own minute, as the deployment runs it."""
    layout = LabLayout(18700, Path("/tmp/gameday-lab-render-test"), monitoring=True)
    lab_prometheus = next(
        p.command for p in labmon.monitoring_programs(layout, "python") if p.name == "prometheus"
    )
    assert "--rules.alert.resend-delay=5s" in lab_prometheus
    seed = labmon.prometheus_command(layout, "p.yml", "data", 18706)
    assert "resend-delay" not in seed


def test_cloudwatch_actions_are_placed_by_todays_wall_clock_not_the_runs_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gameday.monitoring as gm

    monkeypatch.setattr(gm, "CLOUDWATCH_POLL_SEC", 0.02)
    # The run's clock was anchored 100 s ago, when the wall clock read 13 s less than it
    # would now (it was stepped since, as NTP does): CloudWatch's times are today's wall clock.
    clock = Clock(wall_anchor=time.time() - 113, monotonic_anchor=time.monotonic() - 100)
    ran_at = time.time() - 2  # CloudWatch ran the alarm's action 2 s ago

    class Alarms(gm.CloudWatchAlarms):
        poll_sec = 0.02

        def __init__(self) -> None:
            self.purposes = {"db-down": "PostgreSQLDown"}

        def firing(self) -> list[Alert]:
            return []

        def actions_since(self, since_wall: float) -> list[tuple[str, float, str]]:
            return [("db-down", ran_at, "sent to the pager")] if ran_at >= since_wall else []

    marks: list[Record] = []
    watch = AlertWatch(generic_target("cw"), clock=clock, record=marks.append, source=Alarms())
    watch.started_at = clock.now() - 10  # the watch began before the action
    watch._spawn(watch._run_actions, "alarm actions")
    deadline = time.monotonic() + 30
    while not marks and time.monotonic() < deadline:
        time.sleep(0.02)
    watch.stop()
    (mark,) = marks
    assert isinstance(mark, Mark) and mark.name == MARK_ALERT_DELIVERED
    # 2 s before now on the run's clock (the step would have put it 13 s later)
    assert abs(mark.at - (clock.now() - 2)) < 5
