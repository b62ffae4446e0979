"""`gameday run` and the ledger plugin with real processes, a real HTTP entrypoint and real
command faults (no lab): one game day per target (two processes racing; a holder killed by
SIGKILL on this machine and on "another machine"), the kill switch before and during a run,
exit codes, regressions, history."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.journal import Journal
from gameday.history import read_history
from gameday.ledger import Ledger
from gameday.target import load_target
from tests.gameday_project import GAMEDAY, Project, running_project

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    with running_project(tmp_path / "proj") as project:
        yield project


def fake(project: Project) -> object:
    return load_target(str(project.folder / "targets/fake.yaml"))


def pending(project: Project) -> list[object]:
    os.environ["GAMEDAY_STATE_DIR"] = project.env["GAMEDAY_STATE_DIR"]
    try:
        return list(Journal(load_target(str(project.folder / "targets/fake.yaml"))).pending())
    finally:
        del os.environ["GAMEDAY_STATE_DIR"]


def wait_for(what: str, ready: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not true after {timeout:.0f} s")


def kill_run(proc: subprocess.Popen[str]) -> None:
    """SIGKILL a `gameday run` and the pytest under it (the lease holder) at once."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    for pid in [*map(int, children), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def records(project: Project) -> list[object]:
    with Ledger.open(project.ledger_url) as ledger:
        return list(ledger.records())


def hold_plan(project: Project, seconds: float, name: str = "hold", extra: str = "") -> str:
    text = (project.folder / "features/hold.feature").read_text()
    project.write(f"features/{name}.feature", text.replace("2 seconds", f"{seconds:g} seconds"))
    project.write(f"gamedays/{name}.yaml", f"target: targets/fake.yaml\nfeatures: "
                  f"[features/{name}.feature]\n{extra}")  # fmt: skip
    return name


# -- one game day per target ------------------------------------------------------------------


def test_two_runs_racing_one_wins_the_other_exits_3_naming_it(project: Project) -> None:
    plan = hold_plan(project, 6, "long")
    procs = [project.popen([*GAMEDAY, "run", plan]) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    loser = outs[[p.returncode for p in procs].index(3)]
    assert "refused: target fake is held by another game day: host " in loser
    assert ", pid " in loser and ", run " in loser and ", since 20" in loser
    assert "injected:" not in loser
    rows = records(project)
    assert len(rows) == 1 and rows[0].outcome == "passed"  # type: ignore[attr-defined]


def test_two_pytest_sessions_racing_one_wins(project: Project) -> None:
    hold_plan(project, 6, "long")
    cmd = project.pytest_cmd("features/long.feature", "--target", "targets/fake.yaml")
    procs = [project.popen(cmd) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert sorted(p.returncode for p in procs) == [0, 3], outs
    loser = outs[[p.returncode for p in procs].index(3)]
    assert "refused: target fake is held by another game day: host" in loser


def test_a_holder_killed_here_is_taken_over_at_once_and_its_fault_healed_first(
    project: Project,
) -> None:
    plan = hold_plan(project, 60, "long")
    victim = project.popen([*GAMEDAY, "run", plan])
    try:
        wait_for("the fault in effect", lambda: project.marker.exists())
        kill_run(victim)
        victim.communicate(timeout=30)
        assert project.marker.exists() and pending(project)  # killed: nothing healed
        nxt = project.gameday("run", hold_plan(project, 1, "short"))
        out = nxt.stdout
        assert nxt.returncode == 0, out[-3000:] + nxt.stderr
        took = out.index("took over the lease of a game day that died holding it")
        healed = out.index("healed 1 fault(s) an earlier run left behind")
        assert took < healed < out.index("injected:")
        assert not project.marker.exists() and pending(project) == []
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to fake another machine's boot id")
def test_a_holder_killed_on_another_machine_holds_until_its_lease_expires(
    project: Project,
) -> None:
    """The holder's boot id is another machine's (a bind mount in its own mount namespace),
    so its pid means nothing here: the next run must wait for the lease to expire."""
    boot = project.write("fake-boot-id", "another-machine-boot-id\n")
    plan = hold_plan(project, 120, "long", "lease_ttl_sec: 20\n")
    script = (f"mount --bind {boot} /proc/sys/kernel/random/boot_id && exec {sys.executable} -m "
              f"gameday.cli run {plan}")  # fmt: skip
    victim = project.popen(["unshare", "--mount", "sh", "-c", script])
    try:
        wait_for("the fault in effect", lambda: project.marker.exists())
        kill_run(victim)
        victim.communicate(timeout=30)
        short = hold_plan(project, 1, "short")
        refused = project.gameday("run", short)
        assert refused.returncode == 3, refused.stdout[-2000:] + refused.stderr
        assert "refused: target fake is held by another game day" in refused.stderr
        assert "expires in" in refused.stderr
        assert project.marker.exists()  # nothing healed, nothing injected by the refused run
        with Ledger.open(project.ledger_url) as ledger:
            lease = ledger.lease(fake(project))  # type: ignore[arg-type]
            assert lease is not None
            wait_for("the lease to expire", lambda: ledger.now() > lease.expires_at, 60)
        nxt = project.gameday("run", short)
        assert nxt.returncode == 0, nxt.stdout[-3000:] + nxt.stderr
        assert "took over the lease of a game day that died holding it" in nxt.stdout
        assert "expired" in nxt.stdout
        assert nxt.stdout.index("healed 1 fault(s) an earlier run left behind") < \
            nxt.stdout.index("injected:")  # fmt: skip
        assert not project.marker.exists() and pending(project) == []
        with Ledger.open(project.ledger_url) as ledger:
            events = ledger.events(fake(project), kind="lease-taken-over")  # type: ignore[arg-type]
        assert len(events) == 1 and events[0].detail.startswith("expired: ")
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)


def test_a_session_started_by_the_holder_is_part_of_its_game_day(project: Project) -> None:
    """`make test` holds the lab's lease while the harness's tests run pytest on the lab:
    those sessions carry the holder's token and run under its lease; others are refused."""
    from gameday.ledger import LEASE_TOKEN_ENV

    cmd = project.pytest_cmd("features/hold.feature", "--target", "targets/fake.yaml")
    with Ledger.open(project.ledger_url) as ledger:
        lease, _ = ledger.acquire(fake(project), plan="make-test")  # type: ignore[arg-type]
        stranger = subprocess.run(cmd, cwd=project.folder, env=project.env, capture_output=True,
                                  text=True, timeout=180)  # fmt: skip
        assert stranger.returncode == 3, stranger.stdout[-2000:]
        env = {**project.env, LEASE_TOKEN_ENV: lease.token}
        child = subprocess.run(cmd, cwd=project.folder, capture_output=True, text=True, env=env,
                               timeout=180)  # fmt: skip
        assert child.returncode == 0, child.stdout[-2000:]
        assert "part of the game day of run (starting)" in child.stdout
        held = ledger.lease(fake(project))  # type: ignore[arg-type]
        assert held is not None and held.token == lease.token  # not released by the child
        ledger.release(lease)
    assert len(records(project)) == 1 and not project.marker.exists()


# -- the kill switch ----------------------------------------------------------------------------

TWICE_FEATURE = """\
@resilience @destructive
Feature: twice
  Scenario: A marker fault held when the target is paused
    When the fault "marker" is injected
    And the fault lasts 8 seconds

  Scenario: A marker fault after the pause
    When the fault "marker" is injected
    And the fault lasts 1 seconds
"""


def test_a_pause_heals_a_session_without_a_keeper_and_its_next_fault_is_refused(
    project: Project,
) -> None:
    """The engine's own gate and abort condition (chaos.gates), without the lease keeper that
    stops a holder's session: a session run under the holder's lease (as `make test` runs
    pytest on the lab) heals its fault when the target is paused, and its next fault is
    refused by the injection gate, naming the pause: nothing is injected again."""
    from gameday.ledger import LEASE_TOKEN_ENV

    project.write("features/twice.feature", TWICE_FEATURE)
    cmd = project.pytest_cmd("features/twice.feature", "--target", "targets/fake.yaml")
    target = fake(project)
    with Ledger.open(project.ledger_url) as ledger:
        lease, _ = ledger.acquire(target, plan="make-test")  # type: ignore[arg-type]
        child = project.popen(cmd, **{LEASE_TOKEN_ENV: lease.token})
        try:
            wait_for("the fault in effect", lambda: project.marker.exists())
            paused_at = time.monotonic()
            ledger.pause(target, reason="incident 9", by="carol")  # type: ignore[arg-type]
            wait_for("the fault healed", lambda: not project.marker.exists(), timeout=30)
            print(f"healed {time.monotonic() - paused_at:.2f} s after the pause")
            out, _ = child.communicate(timeout=120)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGKILL)
        ledger.resume(target, by="carol")  # type: ignore[arg-type]
        ledger.release(lease)
    assert child.returncode == 1, out[-3000:]
    assert "part of the game day of run" in out  # no keeper of its own
    assert "marker: target fake is paused by carol" in out and "incident 9" in out
    assert not project.marker.exists() and pending(project) == []
    first, second = records(project)
    assert second.outcome == "failed" and "paused by carol" in second.message  # type: ignore[attr-defined]
    history = read_history(Path(first.report).parent / "history.jsonl")  # type: ignore[attr-defined]
    events = [(e.phase, e.detail.get("reason", "")) for e in history.fault_events]
    # one fault injected in the whole session; its watchdog healed it, naming the pause
    assert [p for p, _ in events].count("inject-start") == 1, events
    (abort,) = [reason for phase, reason in events if phase == "abort"]
    assert "paused by carol" in abort and "incident 9" in abort
    assert events[-1][0] == "heal-end"


def test_a_paused_target_refuses_runs_naming_the_reason_and_who(project: Project) -> None:
    out = project.gameday("pause", "--target", "targets/fake.yaml", "--reason",
                          "incident 7: payments", "--by", "alice")  # fmt: skip
    assert out.returncode == 0 and "paused: target fake" in out.stdout
    run = project.gameday("run", "hold")
    assert run.returncode == 3
    assert "refused: target fake is paused by alice since" in run.stderr
    assert "incident 7: payments" in run.stderr
    direct = subprocess.run(
        project.pytest_cmd("features/hold.feature", "--target", "targets/fake.yaml"),
        cwd=project.folder, env=project.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert direct.returncode == 3, direct.stdout[-2000:]
    assert "target fake is paused by alice" in direct.stdout
    # A dry run injects nothing: it still says what it would do, and that it would be refused.
    dry = subprocess.run(
        project.pytest_cmd("features/hold.feature", "--target", "targets/fake.yaml", "--dry-run"),
        cwd=project.folder, env=project.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stdout[-2000:]
    assert "dry run: would " in dry.stdout, dry.stdout[-2000:]
    assert "a real run would be refused now: target fake is paused by alice" in dry.stdout
    assert not project.marker.exists() and records(project) == []
    out = project.gameday("resume", "--target", "targets/fake.yaml", "--by", "bob")
    assert "resumed: target fake (paused by alice" in out.stdout
    assert project.gameday("run", "hold").returncode == 0


@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["terminal", "nohup"])
def test_a_pause_stops_a_running_game_day_which_heals_and_fails_naming_it(
    project: Project, ignore_sigint: bool
) -> None:
    """Also when the run was started with SIGINT ignored (nohup, a background job): the
    session left it ignored, and is stopped by SIGTERM instead."""
    plan = hold_plan(project, 120, "long")
    run = project.popen([*GAMEDAY, "run", plan], ignore_sigint=ignore_sigint)
    try:
        wait_for("the fault in effect", lambda: project.marker.exists())
        paused = project.gameday("pause", "--target", "targets/fake.yaml", "--reason",
                                 "checkout errors", "--by", "alice")  # fmt: skip
        assert "a game day is running on it" in paused.stdout
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 1, out[-3000:]
    assert "target fake is paused by alice" in out and "checkout errors" in out
    assert "healing and stopping" in out
    assert not project.marker.exists() and pending(project) == []
    (row,) = records(project)
    assert row.outcome == "aborted"  # type: ignore[attr-defined]
    assert "paused by alice" in row.message  # type: ignore[attr-defined]
    # the heal is in the run's history: it stopped long before the 120 s it asked for
    history = read_history(Path(row.report).parent / "history.jsonl")  # type: ignore[attr-defined]
    phases = [e.phase for e in history.fault_events]
    assert phases[:2] == ["inject-start", "inject-end"] and phases[-1] == "heal-end"
    assert "game day long on fake: ABORTED" in out


# -- outcomes and regressions -------------------------------------------------------------------

OUTAGE_PLAN = """\
target: targets/fake.yaml
features: [features/outage.feature]
regression:
  last_runs: 10
  min_runs: 2
  tolerances: {time_to_recover: "100%"}
"""


def test_a_slower_recovery_fails_as_a_regression_and_an_unchanged_one_passes(
    project: Project,
) -> None:
    project.write("gamedays/outage.yaml", OUTAGE_PLAN)
    for _ in range(2):
        out = project.gameday("run", "outage", OUTAGE_SEC="1")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    same = project.gameday("run", "outage", OUTAGE_SEC="1")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr
    assert "REGRESSION" not in same.stderr
    slow = project.gameday("run", "outage", OUTAGE_SEC="5")
    assert slow.returncode == 1, slow.stdout[-3000:] + slow.stderr
    line = next(x for x in slow.stderr.splitlines() if "REGRESSION" in x)
    assert line.startswith("gameday: REGRESSION: A short outage of the entrypoint recovers: time "
                           "to recover 5.")  # fmt: skip
    assert "of the last 3 runs (tolerance +100 %)" in line
    assert "game day outage on fake: REGRESSED" in slow.stdout
    rows = records(project)
    assert [r.regression is not None for r in rows] == [False] * 3 + [True]  # type: ignore[attr-defined]
    # The outage lasts 1 s, then 5 s: each unchanged run recovered after at least 1 s and
    # sooner than the slow one (no tighter bound: the machine is shared).
    recoveries = [r.metrics["time_to_recover"] for r in rows]  # type: ignore[attr-defined]
    assert all(1.0 <= x < recoveries[3] for x in recoveries[:3]), recoveries
    assert recoveries[3] >= 5.0, recoveries
    history = project.gameday("history", "--target", "targets/fake.yaml", "--last", "2", "--html")
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert len([x for x in lines if x.startswith("20") and "A short outage" in x]) == 2
    assert lines[-2].startswith("regression: A short outage of the entrypoint recovers: time")
    assert any("passed REGRESSED" in x for x in lines)
    page = Path(lines[-1].removeprefix("trend page: "))
    assert page.parent == project.folder / "reports" and "time to recover" in page.read_text()


def test_sigterm_to_a_run_heals_and_ends_it_as_aborted(project: Project) -> None:
    run = project.popen([*GAMEDAY, "run", hold_plan(project, 120, "long")])
    try:
        wait_for("the fault in effect", lambda: project.marker.exists())
        run.send_signal(signal.SIGTERM)  # systemd's stop, a CI job cancelled
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            kill_run(run)
    assert run.returncode == 1, out[-3000:]
    assert "game day long on fake: ABORTED" in out and "interrupted" in out
    assert not project.marker.exists() and pending(project) == []
    (row,) = records(project)
    assert row.outcome == "aborted"  # type: ignore[attr-defined]


def test_a_run_past_the_plans_timeout_is_stopped_and_healed(project: Project) -> None:
    out = project.gameday("run", hold_plan(project, 120, "long", "timeout_sec: 15\n"))
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr
    assert "the run took longer than the plan's timeout (15 s)" in out.stderr
    assert not project.marker.exists() and pending(project) == []


def test_a_failing_scenario_exits_1_and_is_recorded(project: Project) -> None:
    project.write("gamedays/wrong.yaml", "target: targets/fake.yaml\nfeatures: "
                  "[features/ok.feature]\n")  # fmt: skip
    out = project.gameday("run", "wrong")
    assert out.returncode == 1, out.stdout[-2000:]
    outcomes = {r.title: r.outcome for r in records(project)}  # type: ignore[attr-defined]
    assert outcomes == {
        "The entrypoint answers its health check": "passed",
        "The entrypoint answers a wrong status": "failed",
    }
    assert "game day wrong on fake: FAILED (1 of 2 scenario(s) passed)" in out.stdout


def test_runs_record_the_harness_and_deployment_revisions(project: Project) -> None:
    for name, how in (("by-command", "{command: 'echo v1.2.3 built today'}"),
                      ("by-url", f"{{url: '{project.url}/version'}}")):  # fmt: skip
        project.write(f"gamedays/{name}.yaml", "target: targets/fake.yaml\nfeatures: "
                      f"[features/ok.feature]\ndeployment_revision: {how}\n")  # fmt: skip
        project.gameday("run", name)
    revisions = {(r.plan, r.deployment_revision) for r in records(project)}  # type: ignore[attr-defined]
    assert revisions == {("by-command", "v1.2.3 built today"), ("by-url", "ok")}
    harness = {r.harness_revision for r in records(project)}  # type: ignore[attr-defined]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert harness == {head}


def test_ack_is_recorded_for_drills(project: Project) -> None:
    out = project.gameday("ack", "--target", "targets/fake.yaml", "--by", "dave", "--note", "seen")
    assert out.returncode == 0 and "acknowledged: target fake by dave" in out.stdout
    with Ledger.open(project.ledger_url) as ledger:
        assert [e.who for e in ledger.events(fake(project), kind="ack")] == ["dave"]  # type: ignore[arg-type]


# -- drills (the lab's drills: tests/test_gamedays_on_lab.py) ----------------------------------

DRILL = """\
target: targets/fake.yaml
features: [features/ok.feature]
allow_destructive: true
drill: {{fault: command, params: {{label: marker file, inject: touch {folder}/broken,
         heal: rm -f {folder}/broken, check: test -e {folder}/broken}}, deadline_sec: {deadline},
         probe_rate: 10}}
"""


def drill_plan(project: Project, deadline: float) -> str:
    project.write("gamedays/drill.yaml", DRILL.format(folder=project.folder, deadline=deadline))
    return "drill"


def test_a_drill_measures_detection_and_restoration_by_people(project: Project) -> None:
    run = project.popen([*GAMEDAY, "run", drill_plan(project, 300), "--drill"])
    try:
        wait_for("the drill's fault in effect", lambda: project.marker.exists())
        time.sleep(1)
        assert project.gameday("ack", "--target", "targets/fake.yaml", "--by", "oncall")\
            .returncode == 0  # fmt: skip
        time.sleep(1)
        project.marker.unlink()  # the people restore it
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            kill_run(run)
    assert run.returncode == 0, out[-3000:]
    assert "detected after" in out and "acknowledged by oncall" in out
    (row,) = records(project)
    assert row.kind == "drill" and row.outcome == "passed"  # type: ignore[attr-defined]
    m = row.metrics  # type: ignore[attr-defined]
    assert 1 <= m["time_to_detect"] < m["time_to_restore"] and m["time_to_mitigate"] == 0
    assert pending(project) == []


def test_a_drill_left_alone_heals_at_its_deadline_and_fails(project: Project) -> None:
    out = project.gameday("run", drill_plan(project, 3), "--drill")
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr
    assert "not restored within the deadline of 3 s: healed automatically" in out.stdout
    assert not project.marker.exists() and pending(project) == []
    (row,) = records(project)
    assert row.outcome == "failed" and "time_to_restore" not in row.metrics  # type: ignore[attr-defined]


def test_a_pause_heals_a_drill_and_stops_it(project: Project) -> None:
    run = project.popen([*GAMEDAY, "run", drill_plan(project, 300), "--drill"])
    try:
        wait_for("the drill's fault in effect", lambda: project.marker.exists())
        project.gameday("pause", "--target", "targets/fake.yaml", "--reason", "stop", "--by", "eve")
        out, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            kill_run(run)
    assert run.returncode == 1, out[-3000:]
    assert "paused by eve" in out and not project.marker.exists() and pending(project) == []
    (row,) = records(project)
    assert row.outcome == "aborted" and "paused by eve" in row.message  # type: ignore[attr-defined]
    refused = project.gameday("run", "drill", "--drill")
    assert refused.returncode == 3 and "paused by eve" in refused.stderr
