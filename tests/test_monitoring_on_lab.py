"""The monitoring steps on the real lab, where they must fail: a rule removed from Prometheus,
a receiver Alertmanager does not send to, an alert that never resolves (a declared command
fault whose heal leaves the disk full), an alert during the steady state; a stop condition
that fails the scenario naming the alert; the resource faults healed after a SIGKILL of the
run, refused past the target's limits and on the harness's own disk.

Every test leaves the lab healthy and quiet (its rules put back, its faults healed).
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chaos.base import FaultRefused
from chaos.lab_resources import CpuStress, DiskFill, MemoryPressure, autogroup_nice
from gameday.target import _parse_target, load_target
from lab import control, monitoring
from lab.layout import SERVERS, LabLayout, LabServer
from tests.conftest import lab_healthy, lab_target_text, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
SERVER1 = SERVERS[0]


def root_plugins() -> list[str]:
    """The plugins the repository's conftest.py loads, for a feature outside the repository."""
    tree = ast.parse((ROOT / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets
        ):
            return [p for p in ast.literal_eval(node.value) if p != "pytester"]
    raise AssertionError("conftest.py declares no pytest_plugins")


def run_feature(
    folder: Path, text: str, target: Path | str = "lab", *extra: str
) -> subprocess.Popen[str]:
    """pytest on one feature file written to `folder`, as its own session (the run's
    reports go to `folder`)."""
    feature = folder / "check.feature"
    feature.write_text(text)
    args = ["-c", str(ROOT / "pytest.ini"), "--rootdir", str(folder)]
    for plugin in root_plugins():
        args += ["-p", plugin]
    env = {**os.environ, "GAMEDAY_REPORTS_DIR": str(folder / "reports")}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args,
         str(feature), "--target", str(target), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env=env,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def quiet(layout: LabLayout, timeout: float = 180) -> None:
    """No alert fires on the lab (the next test starts from a steady state)."""

    def nothing_fires() -> bool:
        answer = httpx.get(f"{layout.alertmanager_url}/api/v2/alerts", timeout=2)
        return answer.json() == []

    wait_until("the lab's alerts to resolve", nothing_fires, timeout=timeout)


@pytest.fixture
def lab(running_lab: LabLayout) -> Iterator[LabLayout]:
    if not control.monitored(running_lab):
        pytest.skip("the lab runs without monitoring")
    quiet(running_lab)
    yield running_lab
    wait_until("the lab healthy again", lambda: lab_healthy(running_lab), timeout=180)
    quiet(running_lab)


HEADER = """Feature: check
  Scenario: check
    Given the deployment is healthy
    And no alert is firing
"""


@contextlib.contextmanager
def rules_without(layout: LabLayout, alert: str) -> Iterator[None]:
    """The lab's Prometheus without the rule `alert` (as if someone deleted it), put back."""
    rules = layout.monitoring_dir / "alerts-lab.yml"
    original = rules.read_text()
    blocks = original.split("\n\n")
    kept = [b for b in blocks if f"- alert: {alert}\n" not in b]
    assert len(kept) == len(blocks) - 1
    rules.write_text("\n\n".join(kept))
    monitoring.reload(layout)
    try:
        yield
    finally:
        rules.write_text(original)
        monitoring.reload(layout)


@pytest.mark.long  # the pure check fails this history in test_checks_monitoring
def test_a_removed_rule_fails_fires_and_the_fault_still_heals(
    lab: LabLayout, tmp_path: Path
) -> None:
    with rules_without(lab, "HighDiskUsage"):
        proc = run_feature(tmp_path, HEADER + (
            "    When the disk of the first server is filled to 90%\n"
            '    Then the alert "HighDiskUsage" fires within 20 seconds\n'
        ))  # fmt: skip
        out = finish(proc)
    assert proc.returncode == 1, out[-3000:]
    assert "HighDiskUsage did not fire within 20 s of the fault (no alert fired)" in out
    assert not (lab.server_disk(SERVER1) / "gameday-fill").exists()


@pytest.mark.long  # the pure check fails this history in test_checks_monitoring
def test_a_receiver_alertmanager_does_not_send_to_fails_reaches_the_receiver(
    lab: LabLayout, tmp_path: Path
) -> None:
    # The target says the pager is on another port than the one Alertmanager sends to.
    wrong = lab.base_port + 9
    target = tmp_path / "lab-wrong-receiver.yaml"
    target.write_text(
        lab_target_text().replace(
            f"listen: {lab.receiver_address}", f"listen: {lab.harness_host}:{wrong}"
        )
    )
    proc = run_feature(tmp_path, HEADER + (
        "    When the disk of the first server is filled to 90%\n"
        '    Then the alert "HighDiskUsage" fires within 60 seconds\n'
        "    And it reaches the receiver within 15 seconds\n"
    ), target)  # fmt: skip
    out = finish(proc)
    assert proc.returncode == 1, out[-3000:]
    assert "HighDiskUsage did not reach the receiver within 15 s of firing (it received nothing)" \
        in out  # fmt: skip


@pytest.mark.long  # the pure check fails this history in test_checks_monitoring
def test_an_alert_that_never_resolves_fails_resolves(lab: LabLayout, tmp_path: Path) -> None:
    # The deployment's own runbook (a declared command fault, which wins over the lab's
    # built-in disk-fill) whose "heal" leaves the disk full.
    leftover = lab.server_disk(SERVER1) / "leftover"
    target = tmp_path / "lab-bad-heal.yaml"
    target.write_text(lab_target_text() + (
        "faults:\n"
        "  disk-fill:\n"
        f"    inject: fallocate -l 60M {leftover}\n"
        "    heal: 'true'\n"
        "    label: runbook disk fill\n"
    ))  # fmt: skip
    try:
        proc = run_feature(tmp_path, HEADER + (
            "    When the disk of the first server is filled to 90%\n"
            '    Then the alert "HighDiskUsage" fires within 60 seconds\n'
            "    And it resolves within 15 seconds after the heal\n"
        ), target)  # fmt: skip
        out = finish(proc)
    finally:
        leftover.unlink(missing_ok=True)
    assert proc.returncode == 1, out[-3000:]
    assert "HighDiskUsage (server1) had not resolved 15 s after the heal began" in out


@pytest.mark.long  # the pure check fails this history in test_checks_monitoring
def test_an_alert_in_the_steady_state_fails_silence(lab: LabLayout, tmp_path: Path) -> None:
    proc = run_feature(tmp_path, HEADER + (
        "    When 45 seconds pass\n"
        "    Then no alert fires during the steady state\n"
    ))  # fmt: skip
    # Something outside the scenario loads server2 while it holds its steady state.
    stress = CpuStress(load_target("lab"), {"server": "server2", "seconds": "120"})
    timer = threading.Timer(10, stress.inject)
    timer.start()
    try:
        out = finish(proc)
    finally:
        timer.join()
        stress.heal()
    assert proc.returncode == 1, out[-3000:]
    assert re.search(r"1 alert\(s\) fired during the steady state \([\d.]+ s\): HighCPUUsage", out)


@pytest.mark.long  # the pure check fails this history in test_checks_monitoring
def test_a_stop_condition_heals_within_a_second_and_fails_the_scenario_naming_the_alert(
    lab: LabLayout, tmp_path: Path
) -> None:
    proc = run_feature(tmp_path, HEADER + (
        '    And the game day stops if alert "HighDiskUsage" fires\n'
        "    When the disk of the first server is filled to 90%\n"
        # Held long enough for the alert to fire and the stop to come first (it fires ~6 s
        # after the fill on the lab); the Then-step alone could judge the alert before the
        # watchdog's abort, and pass.
        "    And 30 seconds pass\n"
        '    Then the alert "HighDiskUsage" fires within 60 seconds\n'
    ))  # fmt: skip
    out = finish(proc)
    assert proc.returncode == 1, out[-3000:]
    assert 'disk filled was healed early: alert "HighDiskUsage" fired (warning, server1)' in out
    assert not (lab.server_disk(SERVER1) / "gameday-fill").exists()


# -- the resource faults themselves ------------------------------------------------------------


def stress_ng(layout: LabLayout) -> list[int]:
    marker = f"--temp-path {layout.server_faults_dir(SERVER1)}"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in entry.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("step", "in_effect"),
    [("the CPU of the first server is stressed", lambda lab: bool(stress_ng(lab))),
     ("the memory of the first server is filled to 90%", lambda lab: bool(stress_ng(lab))),
     ("the disk of the first server is filled to 90%",
      lambda lab: (lab.server_disk(SERVER1) / "gameday-fill").exists())],
)  # fmt: skip
def test_a_resource_fault_left_by_a_killed_run_is_healed_by_gameday_heal(
    lab: LabLayout, tmp_path: Path, step: str, in_effect: object
) -> None:
    supervisord = control.supervisor_pid(lab)
    assert supervisord is not None
    nice_before = autogroup_nice(supervisord)
    proc = run_feature(tmp_path, HEADER + f"    When {step}\n    And 120 seconds pass\n")
    assert proc.stdout is not None
    for line in proc.stdout:
        if "gameday: injected:" in line:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert in_effect(lab)  # type: ignore[operator]
    healed = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "heal", "--target", "lab"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert healed.returncode == 0, healed.stdout + healed.stderr
    assert "healed:" in healed.stdout
    assert not in_effect(lab)  # type: ignore[operator]
    assert stress_ng(lab) == []
    assert autogroup_nice(supervisord) == nice_before


def test_resource_faults_refuse_past_the_targets_limits_and_on_the_harness_disk(
    lab: LabLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tight = _parse_target(
        lab_target_text().replace("max_seconds: 600", "max_seconds: 60")
        .replace("max_memory_mb: 1024", "max_memory_mb: 100")
        .replace("max_percent: 95", "max_percent: 85"),
        "tight.yaml",
    )  # fmt: skip
    with pytest.raises(FaultRefused, match=r"2 workers, stress.max_cpu_workers is 1"):
        CpuStress(tight, {"server": "server1", "workers": "2"}).preflight()
    with pytest.raises(FaultRefused, match=r"120 s is longer than stress.max_seconds \(60\)"):
        CpuStress(tight, {"server": "server1", "seconds": "120"}).preflight()
    with pytest.raises(FaultRefused, match=r"90 % is beyond stress.max_percent \(85\)"):
        DiskFill(tight, {"server": "server1", "percent": "90"}).preflight()
    memory = MemoryPressure(tight, {"server": "server1", "percent": "80"})
    memory.preflight()
    with pytest.raises(FaultRefused, match=r"MiB needed, stress.max_memory_mb is 100"):
        memory.inject()
    assert stress_ng(lab) == []
    # The history written to the very disk a fault would fill: refused, nothing written.
    monkeypatch.setenv("GAMEDAY_REPORTS_DIR", str(lab.server_disk(SERVER1) / "reports"))
    with pytest.raises(FaultRefused, match="the disk the harness writes its history"):
        DiskFill(load_target("lab"), {"server": "server1"}).preflight()
    assert list(lab.server_disk(SERVER1).iterdir()) == []


def stress_cpu_sec(pid: int) -> float:
    """User and system time of stress-ng and its workers, from /proc."""
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    total = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


def test_the_cpu_stress_is_the_servers_load_and_not_the_others(lab: LabLayout) -> None:
    """Ground truth from /proc: the stress's CPU time lands in server1's counters, not in
    server2's."""

    def cpu(server: LabServer) -> float:
        # At the server's address: its zone's, with zone networks.
        url = f"http://{lab.server_host(server)}:{lab.hostview_port(server)}/metrics"
        found = httpx.get(url, timeout=2).text
        busy = re.findall(r'mode="(?:user|system)"\} ([\d.]+)', found)
        return sum(float(x) for x in busy)

    stress = CpuStress(load_target("lab"), {"server": "server1", "seconds": "60"})
    stress.preflight()
    before = {s.name: cpu(s) for s in SERVERS}
    stress.inject()
    try:
        time.sleep(8)
        used = stress_cpu_sec(int(stress.params["pid"]))
        time.sleep(1.5)  # a sample after the stress's time was read
        grown = {s.name: cpu(s) - before[s.name] for s in SERVERS}
    finally:
        stress.heal()
    assert used > 4, used  # it did get a CPU's worth, most of the time
    assert grown["server1"] >= used, (grown, used)
    assert grown["server2"] < 0.3 * used, (grown, used)
