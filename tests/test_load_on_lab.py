"""Load against the real lab: distributed locust, three counts that must agree, users on a
fault's timeline, and the Gherkin baseline steps passing and failing.

locust runs as subprocesses only (never imported: gevent). Each run is bounded in time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gameday import baseline as bl
from gameday import load
from gameday.facts import lb_requests_total
from gameday.history import Sample, read_history
from gameday.report import load_verdicts
from gameday.target import LoadBalancer, load_target
from lab.layout import LabLayout
from tests.conftest import lab_target_text

pytestmark = [pytest.mark.lab, pytest.mark.load, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


def lab_lb() -> LoadBalancer:
    lb = load_target("lab").load_balancer
    assert lb is not None
    return lb


def lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


def test_master_and_two_workers_agree_with_records_and_haproxy(
    running_lab: LabLayout, tmp_path: Path
) -> None:
    """locust's aggregated statistics, our per-request records and HAProxy's own req_tot."""
    target = load_target("lab")
    before = lb_requests_total(lab_lb())
    result = bl.run_locust(
        target, users=8, spawn_rate=8, duration_sec=10, workdir=tmp_path, workers=2,
        records=True,
    )  # fmt: skip
    haproxy = lb_requests_total(lab_lb()) - before

    files = load.RecordTail(tmp_path / "records.jsonl").files()
    per_worker = {f.name: lines(f) for f in files}
    assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
    records = sum(per_worker.values())
    stats = result.total.requests
    print(f"locust {stats}, records {records} {per_worker}, haproxy {haproxy}")
    assert stats > 50
    assert abs(records - stats) <= 0.01 * stats
    assert abs(haproxy - stats) <= 0.01 * stats


def pytest_run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def report_folder(out: str) -> Path:
    line = next(x for x in out.splitlines() if "report: " in x)
    return ROOT / Path(line.split("report: ", 1)[1].strip()).parent


def test_users_during_a_failover_are_on_the_fault_timeline(
    running_lab: LabLayout, tmp_path: Path
) -> None:
    proc = pytest_run(
        "features/load/users_during_faults.feature", "-s",
        env={"GAMEDAY_STATE_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    folder = report_folder(out)
    history = read_history(folder / "history.jsonl")
    users = [s for s in history.samples() if s.probe.startswith(load.LOCUST_PROBE_PREFIX)]
    starts = [e.at for e in history.fault_events if e.phase == "inject-start"]
    assert len(starts) == 1
    fault_at = starts[0]
    recovered = next(m.at for m in history.marks if m.name == "recovered")

    def sent(samples: list[Sample], lo: float, hi: float) -> int:
        return sum(1 for s in samples if lo <= s.sent < hi)

    # Users were sending before, during and after the failover.
    assert sent(users, 0, fault_at) > 20 and sent(users, recovered, float("inf")) > 20
    failed = [s for s in users if not s.ok]
    # What failed, failed while the database was switching (a second of slack for requests
    # sent just before the primary stopped answering); nothing failed before the fault.
    assert all(fault_at - 1.0 <= s.sent <= recovered + 1.0 for s in failed), failed
    summary = next(m for m in history.marks if m.name == "locust-summary")
    assert int(summary.detail["records"]) == int(summary.detail["requests"]) == len(users)
    assert int(summary.detail["failures"]) == len(failed)
    print(
        f"{len(users)} user requests, {len(failed)} failed "
        f"({sorted({s.probe for s in failed})}), fault at {fault_at:.2f}, "
        f"writes back at {recovered:.2f}"
    )
    html = (folder / "report.html").read_text()
    assert "locust place order" in html and "locust product page" in html


BASELINE_FEATURE = """\
@load
Feature: A short load against a baseline
  Background:
    Given a load baseline for this target

  Scenario: Product pages are as fast as the baseline
    Given a load of 12 users for 8 seconds
    Then p95 latency of "product page" is within 20% of the baseline
    And at most 1% of the load's requests failed
"""


def write_baseline(folder: Path, p95_ms: float) -> None:
    page = bl.EndpointStats("product page", 1000, 0, 5.0, p95_ms / 2, p95_ms, p95_ms * 2)
    baseline = bl.Baseline(
        bl.Conditions("lab", 12, 12.0, 8), bl.LoadResult({"product page": page}, page, 8.0)
    )
    bl.save_baseline(baseline, bl.baseline_path("lab", directory=folder))


@pytest.mark.parametrize(("baseline_p95_ms", "passes"), [(1000.0, True), (0.5, False)])
def test_gherkin_baseline_steps_pass_and_fail(
    running_lab: LabLayout, tmp_path: Path, baseline_p95_ms: float, passes: bool
) -> None:
    """A generous baseline passes; one no real run can meet (0.5 ms p95) fails, naming it."""
    feature = ROOT / "features" / "load" / f"_test_{tmp_path.name}.feature"
    feature.write_text(BASELINE_FEATURE)
    write_baseline(tmp_path, baseline_p95_ms)
    try:
        proc = pytest_run(str(feature), env={"GAMEDAY_BASELINES_DIR": str(tmp_path)})
    finally:
        feature.unlink()
    out = proc.stdout + proc.stderr
    if passes:
        assert proc.returncode == 0 and "1 passed" in out, out[-3000:]
    else:
        assert proc.returncode == 1, out[-3000:]
        assert "product page p95" in out and "vs 0.5 ms baseline" in out, out[-3000:]
    verdicts = load_verdicts(report_folder(out) / "verdicts.json")
    p95 = next(v for v in verdicts if v.check == "load baseline p95")
    assert p95.ok is passes


def test_a_load_past_the_target_cap_is_refused_before_locust_starts(
    running_lab: LabLayout, tmp_path: Path
) -> None:
    capped = tmp_path / "lab-capped.yaml"
    lab_yaml = lab_target_text()
    assert "max_users: 200\n" in lab_yaml
    capped.write_text(lab_yaml.replace("max_users: 200\n", "max_users: 10\n"))
    proc = pytest_run(
        "features/load/users_during_faults.feature", "--target", str(capped),
        env={"GAMEDAY_STATE_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "load.max_users is 10: refusing 30 users" in out
    folder = report_folder(out)
    assert not list(folder.glob("locust-*")), "locust started although the load was refused"
    assert not read_history(folder / "history.jsonl").fault_events  # nothing was broken
