"""Scheduled game days against the real lab: the shipped plan, a holder killed by SIGKILL, the
kill switch during a lab fault, a slower failover (pg_auto_failover's timeouts raised for a
run) flagged as a regression while an unchanged lab is not, and drills (people restore in
time; nobody does and the drill heals at its deadline).

Every test leaves the lab healthy and its undo journal empty."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from chaos.journal import Journal
from gameday.ledger import Ledger, RunRecord
from gameday.target import load_target
from lab import control
from lab.configs import MONITOR_SETTINGS
from lab.layout import LabLayout
from tests.conftest import lab_healthy, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
GAMEDAY = [sys.executable, "-m", "gameday.cli"]
UNHEALTHY = "pgautofailover.node_considered_unhealthy_timeout"


@pytest.fixture
def ledger_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ledger and an undo journal of the test's own, for it and the runs it starts."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    monkeypatch.setenv("GAMEDAY_LEDGER_URL", url)
    monkeypatch.setenv("GAMEDAY_STATE_DIR", str(tmp_path / "state"))
    return url


@pytest.fixture
def lab(running_lab: LabLayout) -> Iterator[LabLayout]:
    yield running_lab
    control.up(running_lab)  # whatever happened, the next test finds a healthy lab
    assert Journal(load_target("lab")).pending() == []


def gameday(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GAMEDAY, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*GAMEDAY, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def kill_run(proc: subprocess.Popen[str]) -> None:
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    for pid in [*map(int, children), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def rows(url: str, **filters: str) -> list[RunRecord]:
    with Ledger.open(url) as ledger:
        return ledger.records(**filters)  # type: ignore[arg-type]


def plan(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def backend1_down(layout: LabLayout) -> bool:
    return bool(control.processes(layout)["backend1"]["statename"] != "RUNNING")


SERVER1_KILLED = """\
target: lab
features: [features/resilience/server_loss.feature]
scenarios: [Losing the first server keeps the health path answering and moves traffic]
"""


def test_the_shipped_lab_plan_runs_and_records_every_scenario(
    lab: LabLayout, ledger_url: str
) -> None:
    out = gameday("run", "lab-smoke")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert "game day lab-smoke on lab: PASSED (3 of 3 scenario(s) passed)" in out.stdout
    records = {r.title: r for r in rows(ledger_url)}
    kill = records["A crashed backend process is restarted without users noticing much"]
    assert kill.outcome == "passed" and kill.plan == "lab-smoke"
    assert kill.target_key == f"lab 127.0.0.1:{lab.base_port}"
    assert kill.metrics["availability"] >= 99.0 and "time_to_recover" in kill.metrics
    assert {"p50", "p95", "p99"} <= set(kill.metrics)
    assert kill.harness_revision not in ("", "unknown")
    assert Path(kill.report).exists()
    assert records["Every backend server is in rotation"].outcome == "passed"


def test_a_killed_run_is_healed_by_the_next_which_a_pause_heals_and_stops(
    lab: LabLayout, ledger_url: str, tmp_path: Path
) -> None:
    """One lab fault after another (one test: the lab's faults are the slow part):
    a run SIGKILLed while server1 is down leaves its lease and its fault; the next run takes
    the lease over and heals that fault before it injects its own; a pause during that second
    fault heals it and stops the run, which fails naming the pause."""
    server1 = plan(tmp_path, "server1", SERVER1_KILLED)
    victim = start("run", server1)
    nxt: subprocess.Popen[str] | None = None
    try:
        # (or the run ended early: a plan refused as bad input fails here at once)
        wait_until(
            "server1 killed by the run",
            lambda: backend1_down(lab) or victim.poll() is not None,
            timeout=120,
        )
        assert backend1_down(lab), victim.communicate(timeout=30)[0][-3000:]
        kill_run(victim)
        victim.communicate(timeout=30)
        (left,) = Journal(load_target("lab")).pending()
        assert backend1_down(lab)
        # Not refused: its holder is dead.
        nxt = start("run", server1)

        def own_fault() -> bool:
            entries = Journal(load_target("lab")).pending()
            return any(e.run_id != left.run_id for e in entries) or nxt.poll() is not None

        wait_until("the next run's own fault", own_fault, timeout=180)
        assert nxt.poll() is None, nxt.communicate(timeout=30)[0][-3000:]
        paused = gameday("pause", "--target", "lab", "--reason", "real incident", "--by", "oncall")
        assert paused.returncode == 0, paused.stderr
        out, _ = nxt.communicate(timeout=300)
    finally:
        for proc in (victim, nxt):
            if proc is not None and proc.poll() is None:
                kill_run(proc)
        gameday("resume", "--target", "lab")
    took = out.index("took over the lease of a game day that died holding it")
    healed = out.index("healed 1 fault(s) an earlier run left behind")
    assert took < healed < out.index("injected:")
    assert nxt.returncode == 1, out[-3000:]
    assert "target lab is paused by oncall" in out and "real incident" in out
    assert lab_healthy(lab) and Journal(load_target("lab")).pending() == []
    (record,) = rows(ledger_url)  # the killed run recorded nothing
    assert record.outcome == "aborted" and "paused by oncall" in record.message


# -- regressions on the lab ---------------------------------------------------------------------

CRASH = """\
target: lab
features: [features/resilience/database_failover.feature]
scenarios: [An unplanned primary crash recovers within a minute and loses nothing]
regression:
  min_runs: 2
  tolerances: {time_to_recover: "50% + 1"}
"""


def set_unhealthy_timeout(layout: LabLayout, ms: int) -> None:
    with psycopg.connect(layout.monitor_admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"ALTER SYSTEM SET {UNHEALTHY} = {int(ms)}")
        conn.execute("SELECT pg_reload_conf()")


@pytest.mark.long
def test_a_slower_failover_is_flagged_and_an_unchanged_lab_is_not(
    lab: LabLayout, ledger_url: str, tmp_path: Path
) -> None:
    crash = plan(tmp_path, "crash", CRASH)
    for _ in range(3):  # two to learn from, a third unchanged one to judge
        out = gameday("run", crash)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
        assert "REGRESSION" not in out.stderr
    usual = [r.metrics["time_to_recover"] for r in rows(ledger_url)]
    # The monitor now waits 15 s (not 3 s) before it calls the crashed primary unhealthy;
    # the fault's heal (the lab's `up`) puts the lab's own setting back. (Much longer, and the
    # writer's reconnections fill the new primary's connection slots: the run then fails
    # instead of regressing.)
    set_unhealthy_timeout(lab, 15000)
    try:
        slow = gameday("run", crash)
    finally:
        set_unhealthy_timeout(lab, int(MONITOR_SETTINGS[UNHEALTHY]))
    assert slow.returncode == 1, slow.stdout[-3000:] + slow.stderr
    line = next(x for x in slow.stderr.splitlines() if "REGRESSION" in x)
    assert "An unplanned primary crash recovers within a minute and loses nothing: time to " \
        "recover" in line and "of the last 3 runs (tolerance +50 % +1)" in line  # fmt: skip
    records = rows(ledger_url)
    assert [r.regression is None for r in records] == [True, True, True, False]
    assert records[-1].metrics["time_to_recover"] > max(usual) + 5
    assert records[-1].outcome == "passed"  # within its 60 s: it passed, and it regressed


# -- drills ---------------------------------------------------------------------------------


DRILL = """\
target: lab
features: [features/acceptance/entrypoint.feature]
allow_destructive: true
drill:
  fault: stop-server
  params: {{server: server1, mode: kill}}
  deadline_sec: {deadline}
  probe_rate: 10
"""


def test_a_drill_measures_people_who_detect_and_restore(
    lab: LabLayout, ledger_url: str, tmp_path: Path
) -> None:
    drill = start("run", plan(tmp_path, "drill", DRILL.format(deadline=600)), "--drill")
    try:
        wait_until("server1 killed by the drill", lambda: backend1_down(lab), timeout=120)
        time.sleep(2)
        ack = gameday("ack", "--target", "lab", "--by", "oncall", "--note", "paged")
        assert ack.returncode == 0, ack.stderr
        time.sleep(2)
        assert drill.poll() is None  # detected, not restored: the drill goes on
        control.up(lab)  # the people restore the service with the lab's runbook
        out, _ = drill.communicate(timeout=300)
    finally:
        if drill.poll() is None:
            kill_run(drill)
    assert drill.returncode == 0, out[-3000:]
    assert "drill: detected after" in out and "(acknowledged by oncall)" in out
    (record,) = rows(ledger_url)
    assert record.kind == "drill" and record.outcome == "passed"
    m = record.metrics
    assert 2 <= m["time_to_detect"] < m["time_to_restore"]
    assert 0 <= m["time_to_mitigate"] <= m["time_to_restore"]
    assert lab_healthy(lab)


def test_a_drill_nobody_handles_is_healed_at_its_deadline_and_fails(
    lab: LabLayout, ledger_url: str, tmp_path: Path
) -> None:
    out = gameday("run", plan(tmp_path, "drill", DRILL.format(deadline=15)), "--drill")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr
    assert "not restored within the deadline of 15 s: healed automatically" in out.stdout
    (record,) = rows(ledger_url)
    assert record.outcome == "failed" and "time_to_restore" not in record.metrics
    assert "time_to_detect" not in record.metrics  # nobody acknowledged
    assert lab_healthy(lab) and Journal(load_target("lab")).pending() == []


def test_a_drill_is_refused_while_a_game_day_holds_the_lab(
    lab: LabLayout, ledger_url: str, tmp_path: Path
) -> None:
    with Ledger.open(ledger_url) as ledger:
        lease, _ = ledger.acquire(load_target("lab"), plan="someone-else")
        try:
            out = gameday("run", plan(tmp_path, "drill", DRILL.format(deadline=15)), "--drill")
        finally:
            ledger.release(lease)
    assert out.returncode == 3
    assert "refused: target lab is held by another game day" in out.stderr
    assert "plan someone-else" in out.stderr
    assert lab_healthy(lab)
