"""The engine behind the shipped steps, on a deployment that is not the lab.

Each test writes a feature and a target into a temporary project and runs pytest there with
the project's real plugins and step library (pytester). The target is generic: a stand-in
entrypoint on loopback and command faults that touch a flag file, so what a fault did can be
checked on disk. Asserted: faults are capabilities the target provides (a declared command
fault runs under a neutral name); a scenario whose faults, roles or APIs the target lacks is
skipped before anything starts, with one line; faults need the opt-in whatever the tags say;
every kind of scenario records its verdicts; an interrupted run is never a pass.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = [
    "gameday.pytest_plugin",
    "chaos.pytest_plugin",
    "steps.deployment",
    "steps.data",
    "steps.faults",
    "steps.load",
]

GAME_DAY = """\
@resilience @destructive
Feature: a game day on a deployment the harness never saw
  Scenario: The database fails over through the target's own runbook
    Given the deployment is healthy
    And a steady load of 20 requests per second on "/health"
    When 1 seconds pass
    And the database fails over
    And the fault lasts 1 seconds
    Then "/health" answered at least 99% of requests during the fault

  Scenario: A writer straight to a database the target does not have
    Given a steady load of 20 requests per second on "/health"
    And a writer committing 20 rows per second to the database
    When the database fails over
    Then no acknowledged write is lost

  Scenario: A fault the target does not provide
    Given a steady load of 20 requests per second on "/health"
    When the cache master crashes
    Then "/health" answered at least 99% of requests during the fault
"""

ACCEPTANCE = """\
@acceptance
Feature: acceptance on a stand-in
  Scenario: The entrypoint answers its health check
    When I request the health path through the entrypoint
    Then it answers 200
"""

UNTAGGED = """\
Feature: a fault in a feature somebody forgot to tag
  Scenario: Untagged, and destructive all the same
    When the database fails over
"""


def _target(tmp: Path, entrypoint: str, flag: Path, *, allow: bool = False) -> Path:
    q = shlex.quote(str(flag))
    text = f"""\
name: stranger
provider: generic
allow_destructive: {"true" if allow else "false"}
entrypoint:
  url: {entrypoint}
app:
  orders: null
  sessions: null
  rate_limit: null
  product_path: null
faults:
  database-failover:
    inject: touch {q}
    heal: rm -f {q}
    check: test -f {q}
    timeout_sec: 10
"""
    path = tmp / "stranger.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path: Path) -> pytest.Pytester:
    pytester.makeini((ROOT / "pytest.ini").read_text())
    pytester.makeconftest(f"pytest_plugins = {PLUGINS!r}\n")
    pytester.mkdir("features")
    return pytester


def _feature(project: pytest.Pytester, name: str, text: str) -> None:
    (project.path / "features" / f"{name}.feature").write_text(text)


def _verdicts(reports: Path) -> list[dict[str, object]]:
    (run,) = list(reports.iterdir())
    data = json.loads((run / "verdicts.json").read_text())
    verdicts: list[dict[str, object]] = data["verdicts"]
    return verdicts


def test_a_declared_command_fault_is_the_database_failover_of_a_generic_target(
    project: pytest.Pytester, entrypoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = tmp_path / "reports"
    monkeypatch.setenv("GAMEDAY_REPORTS_DIR", str(reports))
    monkeypatch.setenv("GAMEDAY_STATE_DIR", str(tmp_path / "state"))
    flag = tmp_path / "failed-over"
    target = _target(tmp_path, entrypoint, flag)
    _feature(project, "game_day", GAME_DAY)
    result = project.runpytest("features/", "--target", str(target), "--allow-destructive", "-rs")
    result.assert_outcomes(passed=1, skipped=2)
    # Skipped before they started, each with the one line that says what is missing.
    result.stdout.fnmatch_lines_random(
        [
            "*target 'stranger' has no database role (declare database: writer_url)*",
            "*target 'stranger' provides no 'cache-crash': declare it under faults: "
            "(docs/resilience.md)*",
        ]
    )
    assert not flag.exists(), "the declared fault heals at the end of its scenario"
    verdicts = _verdicts(reports)
    assert [v["check"] for v in verdicts] == [
        "entrypoint_healthy",
        "availability",
        "rate_kept",  # the probe's own record of its schedule, kept at the scenario's end
    ], verdicts
    (run,) = list(reports.iterdir())
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in history if r.get("kind") == "fault"]
    assert phases == ["inject-start", "inject-end", "heal-start", "heal-end"]
    # The skipped scenarios started no probe: every sample belongs to the scenario that ran.
    starts = [r for r in history if r.get("name") == "scenario-start"]
    assert len(starts) == 1


def test_without_the_opt_in_a_fault_is_refused_whatever_the_tags_say(
    project: pytest.Pytester, entrypoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAMEDAY_STATE_DIR", str(tmp_path / "state"))
    flag = tmp_path / "failed-over"
    _feature(project, "untagged", UNTAGGED)
    result = project.runpytest("features/", "--target", str(_target(tmp_path, entrypoint, flag)))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*refusing to inject a fault into *stranger.yaml*"])
    assert not flag.exists(), "nothing was injected"
    assert not list((tmp_path / "state").glob("journal-*")), "nothing was journaled"


def test_acceptance_scenarios_record_their_verdicts(
    project: pytest.Pytester, entrypoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = tmp_path / "reports"
    monkeypatch.setenv("GAMEDAY_REPORTS_DIR", str(reports))
    _feature(project, "acceptance", ACCEPTANCE)
    target = _target(tmp_path, entrypoint, tmp_path / "flag")
    project.runpytest("features/", "--target", str(target)).assert_outcomes(passed=1)
    verdicts = _verdicts(reports)
    assert [(v["check"], v["ok"]) for v in verdicts] == [("entrypoint_healthy", True)]


def test_the_plan_says_what_runs_and_why_the_rest_is_skipped(
    project: pytest.Pytester, entrypoint: str, tmp_path: Path
) -> None:
    _feature(project, "game_day", GAME_DAY)
    plan = tmp_path / "plan.jsonl"
    target = _target(tmp_path, "http://127.0.0.1:9", tmp_path / "flag")  # never reached
    project.runpytest("features/", "--target", str(target), "--gameday-plan", str(plan))
    rows = {r["title"]: r for r in map(json.loads, plan.read_text().splitlines())}
    assert rows["The database fails over through the target's own runbook"]["reason"] == (
        f"destructive scenario: pass --allow-destructive or set allow_destructive: true in {target}"
    )
    assert rows["A fault the target does not provide"]["reason"].startswith(
        "target 'stranger' provides no 'cache-crash'"
    )
    assert not (tmp_path / "flag").exists()


HELD = """\
@resilience @destructive
Feature: a fault held long enough to be interrupted
  Scenario: A long hold
    Given a steady load of 10 requests per second on "/health"
    When the database fails over
    And the fault lasts 60 seconds
    Then "/health" answered at least 99% of requests during the fault
"""


def _interrupt_while_held(
    project: pytest.Pytester, target: Path, flag: Path, tmp_path: Path, sig: signal.Signals
) -> str:
    """Run the project's features as a user would, send `sig` once the fault is in effect,
    and return the output of a run that ended as pytest's "interrupted" (exit 2)."""
    reports = tmp_path / "reports"
    env = {
        **os.environ,
        "GAMEDAY_REPORTS_DIR": str(reports),
        "GAMEDAY_STATE_DIR": str(tmp_path / "state"),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "features/", "--target",
         str(target)],
        cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the fault never came"
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, out[-2000:]
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_heals_reports_and_never_says_pass(
    project: pytest.Pytester,
    entrypoint: str,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    reports, flag = tmp_path / "reports", tmp_path / "failed-over"
    _feature(project, "held", HELD)
    target = _target(tmp_path, entrypoint, flag, allow=True)
    out = _interrupt_while_held(project, target, flag, tmp_path, sig)  # pytest's "interrupted"
    assert not flag.exists(), "the fault healed on the way out"
    (run,) = list(reports.iterdir())
    assert f"gameday: report: {run / 'report.html'}" in out
    assert "Traceback" not in out and "is closed" not in out, out[-2000:]
    suite = ET.parse(run / "junit.xml").getroot()
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("1", "1", "0")
    error = suite.find("testcase/error")
    assert error is not None and "interrupted" in (error.get("message") or "")
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in history if r.get("kind") == "fault"]
    assert phases == ["inject-start", "inject-end", "heal-start", "heal-end"]


def test_an_interrupted_run_whose_heal_fails_still_writes_its_report(
    project: pytest.Pytester, entrypoint: str, tmp_path: Path
) -> None:
    """The heal runs in pytest's own session teardown after an interrupt; when it fails there,
    the report, junit.xml and the run's end must still be written, and the fault stays in
    the journal for `gameday heal`."""
    reports, flag = tmp_path / "reports", tmp_path / "failed-over"
    _feature(project, "held", HELD)
    target = _target(tmp_path, entrypoint, flag, allow=True)
    target.write_text(target.read_text().replace(f"heal: rm -f {flag}", "heal: 'false'"))
    out = _interrupt_while_held(project, target, flag, tmp_path, signal.SIGINT)
    assert "gameday: the teardown failed: " in out and "heal `false` exited 1" in out, out[-2000:]
    (run,) = list(reports.iterdir())
    assert f"gameday: report: {run / 'report.html'}" in out
    suite = ET.parse(run / "junit.xml").getroot()
    assert suite.get("errors") == "1"
    history = (run / "history.jsonl").read_text()
    assert '"name":"heal-failed"' in history
    assert flag.exists(), "the failing heal left the fault: the journal keeps it"
    (journal,) = list((tmp_path / "state").glob("journal-*.jsonl"))
    assert '"state":"healed"' not in journal.read_text()
