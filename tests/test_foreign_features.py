"""Issue 10's proof: the shipped features run against a deployment the harness was not built
for (tests/foreign), through a target written from docs/ alone.

- `pytest features/ --target foreign.yaml --allow-destructive` ends with every scenario
  passed or skipped with its reason, no error, no traceback, the database failover passed
  through the declared command faults, and the database password seen nowhere; the one
  failure allowed is the truthful one of an asynchronous database, the unplanned crash losing
  a few writes the crashed primary alone acknowledged (a busy machine lets the standby lag);
- a lossy failover (the primary killed while its asynchronous standby lags) makes "no
  acknowledged write is lost" FAIL, naming lost ids that nginx answered 200/201 for and that
  a direct query on the new primary confirms missing.

Both run pytest in a subprocess, as a user would, against the session's foreign deployment.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.foreign import deployment as d
from tests.foreign.fixture import foreign, healthy_foreign
from tests.foreign.target import target_text

pytestmark = pytest.mark.slow
__all__ = ["foreign", "healthy_foreign"]  # fixtures, imported to be found
ROOT = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_SEC = 1800  # every shipped feature, fault waits included
LAG_SEC = 2  # the standby misses this much of the primary's last writes

LOSSY_FEATURE = """\
@resilience @destructive
Feature: A lossy failover
  The standby is asynchronous and lagging when the primary crashes: acknowledged writes are
  lost, and the loss check must say which.

  Scenario: The primary crashes while its asynchronous standby lags
    Given the deployment is healthy
    And a writer placing 10 orders per second through the entrypoint
    When 3 seconds pass
    And the database primary crashes
    Then writes succeed again within 60 seconds
    And no acknowledged write is lost
"""


def root_plugins() -> list[str]:
    """The plugins the repository's conftest.py loads, for a feature outside the repository."""
    tree = ast.parse((ROOT / "conftest.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytest_plugins" for t in node.targets
        ):
            return [p for p in ast.literal_eval(node.value) if p != "pytester"]
    raise AssertionError("conftest.py declares no pytest_plugins")


def run_pytest(args: list[str], tmp_path: Path, layout: d.Layout) -> tuple[int, str]:
    env = {
        **os.environ,
        d.PASSWORD_VAR: d.password(layout),
        "GAMEDAY_STATE_DIR": str(tmp_path / "state"),
        "GAMEDAY_REPORTS_DIR": str(tmp_path / "reports"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=RUN_TIMEOUT_SEC)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # gameday heals on SIGTERM
        out, _ = proc.communicate(timeout=300)
        pytest.fail(f"pytest did not end within {RUN_TIMEOUT_SEC} s:\n{out[-4000:]}")
    return proc.returncode, out


def junit_cases(junit: Path) -> dict[str, tuple[str, str]]:
    """name -> (outcome, message): passed, skipped, failure or error."""
    cases: dict[str, tuple[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("skipped", "failure", "error"):
                outcome = child.tag
                message = f"{child.get('message') or ''}\n{child.text or ''}".strip()
        cases[f"{case.get('classname')}::{case.get('name')}"] = (outcome, message)
    return cases


# The one truthful failure the shipped features may have here: the deployment replicates
# asynchronously, so a crash of its primary can lose the last writes that primary
# acknowledged (a few, at 20 writes/s) before the standby received them. Anything else failing
# in the crash scenario, or writes lost that another node acknowledged, is a defect.
ASYNC_CRASH_LOSS = re.compile(
    r"ledger: (\d+) of \d+ acknowledged writes lost: [^;]*(?:; \d+ writes of unknown outcome:"
    r" [^;]*)?; the lost ones were sent [\d.]+-[\d.]+ s into the run and acknowledged by"
    r" (\S+) \1; the kept ones by "
)
ASYNC_CRASH_MAX_LOST = 20  # one second of the scenario's writer


def _async_crash_loss(name: str, message: str) -> bool:
    if "unplanned_primary_crash" not in name.lower().replace(" ", "_"):
        return False
    found = ASYNC_CRASH_LOSS.search(message)
    return found is not None and int(found[1]) <= ASYNC_CRASH_MAX_LOST


def secret_seen(folder: Path, secret: str) -> list[str]:
    return [
        str(path)
        for path in folder.rglob("*")
        if path.is_file() and secret.encode() in path.read_bytes()
    ]


def test_shipped_features_pass_or_skip_truthfully(
    healthy_foreign: d.Layout, tmp_path: Path
) -> None:
    layout = healthy_foreign
    target = tmp_path / "foreign.yaml"
    target.write_text(target_text(layout))
    junit = tmp_path / "junit.xml"
    code, out = run_pytest(
        ["features/", "--target", str(target), "--allow-destructive", "--junitxml", str(junit)],
        tmp_path, layout,
    )  # fmt: skip
    tail = out[-6000:]
    assert "Traceback" not in out, tail
    cases = junit_cases(junit)
    assert cases, tail
    failed = {n: o for n, o in cases.items() if o[0] not in ("passed", "skipped")}
    bad = {n: o for n, o in failed.items() if not _async_crash_loss(n, o[1])}
    assert not bad, bad
    assert code == (1 if failed else 0), f"exit {code}:\n{tail}"
    unexplained = [n for n, (o, why) in cases.items() if o == "skipped" and not why.strip()]
    assert not unexplained, unexplained
    failover = [
        o for n, o in cases.items() if "database_failover_under_load" in n.lower().replace(" ", "_")
    ]
    assert failover == [("passed", "")], (failover, sorted(cases))
    secret = d.password(layout)
    assert secret not in out
    assert secret_seen(tmp_path / "reports", secret) == []
    assert d.healthy(layout), d.status(layout)


def _writes_since(access_log: Path, offset: int) -> tuple[set[str], set[str]]:
    """(every note id PUT through nginx, those nginx answered 200/201) since `offset`."""
    put: set[str] = set()
    acked: set[str] = set()
    with access_log.open("rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "PUT" and parts[2].startswith("/v1/notes/"):
                note = parts[2].removeprefix("/v1/notes/")
                put.add(note)
                if parts[3] in ("200", "201"):
                    acked.add(note)
    return put, acked


def test_a_lossy_failover_fails_naming_ids_a_query_confirms_missing(
    healthy_foreign: d.Layout, tmp_path: Path
) -> None:
    layout = healthy_foreign
    feature = tmp_path / "lossy_failover.feature"
    feature.write_text(LOSSY_FEATURE)
    target = tmp_path / "foreign-lagging.yaml"
    target.write_text(target_text(layout, crash_lag_sec=LAG_SEC))
    junit = tmp_path / "junit.xml"
    access_log = layout.folder / "nginx" / "access.log"
    offset = access_log.stat().st_size
    args = ["-c", str(ROOT / "pytest.ini"), "--rootdir", str(tmp_path)]
    for plugin in root_plugins():
        args += ["-p", plugin]
    args += [str(feature), "--target", str(target), "--allow-destructive", "--junitxml",
             str(junit)]  # fmt: skip
    code, out = run_pytest(args, tmp_path, layout)
    tail = out[-6000:]
    assert code == 1, f"exit {code}:\n{tail}"
    assert "Traceback" not in out, tail
    [(outcome, message)] = junit_cases(junit).values()
    assert outcome == "failure", (outcome, message)
    assert "lost" in message, message
    put, acked = _writes_since(access_log, offset)
    named = set(re.findall(r"[A-Za-z0-9._-]+", message)) & put
    assert named, f"no id written through nginx is named in:\n{message}"
    primary = d.load_state(layout).pg_primary
    with d.pg_connect(layout, primary, dbname="notes") as conn:
        present = {r[0] for r in conn.execute(
            "SELECT id FROM notes WHERE id = ANY(%s)", (sorted(acked),)).fetchall()}  # fmt: skip
    truly_lost = acked - present
    assert named <= truly_lost, (
        f"named but not lost: {sorted(named - truly_lost)} (acknowledged by nginx and missing "
        f"on {primary}: {sorted(truly_lost)})"
    )
    assert d.password(layout) not in out
    assert d.healthy(layout), d.status(layout)
