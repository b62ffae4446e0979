"""Trends on hand-built records: the numbers kept from verdicts, tolerances, regressions
(a slower recovery flagged, an unchanged one not), the history table and the trend page."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from gameday.clock import Clock
from gameday.history import FaultEvent, History, Mark, RunHeader, Sample
from gameday.ledger import Ledger, RunRecord
from gameday.trend import (
    Tolerance,
    history_table,
    regressions,
    scenario_latencies,
    trend_page,
    verdict_metrics,
)

TITLE = "database failover"


def rec(run: str, ended: float, outcome: str = "passed", **metrics: float) -> RunRecord:
    return RunRecord(
        run_id=run, kind="scenario", plan="nightly", target_name="lab", target_key="lab x",
        harness_revision="abc", deployment_revision="", host="h", started_at=ended - 30,
        ended_at=ended, scenario="features/x.feature::test_x", title=TITLE, outcome=outcome,
        message="", duration_sec=30, metrics=dict(metrics),
        report=f"/srv/reports/{run}/report.html",
    )  # fmt: skip


def test_numbers_from_verdicts_take_the_worst_probe() -> None:
    verdicts = [
        {"check": "time_to_recover", "measured": {"recovery_sec": 1.2}},
        {"check": "time_to_recover", "measured": {"recovery_sec": 3.4}},  # the second writer
        {"check": "lost_writes", "measured": {"lost": 0, "unknown": 2}},
        {"check": "lost_writes", "measured": {"lost": 1, "unknown": 0}},
        {"check": "availability", "measured": {"ratio": 0.995}},
        {"check": "availability", "measured": {"ratio": 0.9}},
        {"check": "traffic_moved_to", "measured": {"moved_after_sec": 1.1}},
        {"check": "latency_within", "measured": {"latency_ms": 12.0, "percentile": 95}},
        {"check": "time_to_recover", "measured": {"recovery_sec": None}},  # not recovered
        {"check": "fault_aborted", "measured": {}},
    ]
    assert verdict_metrics(verdicts) == {
        "time_to_recover": 3.4, "lost_writes": 1, "unknown_writes": 2,
        "availability": pytest.approx(90.0), "traffic_moved": 1.1, "p95": 12.0,
    }  # fmt: skip


def test_latencies_of_one_scenario_during_its_fault() -> None:
    def ok(seq: int, sent: float, ms: float) -> Sample:
        return Sample("GET /health", seq, sent, ms / 1000, True, 200, None, "server1", None, None)

    records = [
        Mark("scenario-start", 0.0, {"scenario": "a"}),
        ok(1, 1.0, 5), ok(2, 2.0, 5),  # before the fault
        FaultEvent("f", "inject-start", 3.0),
        *[ok(10 + i, 3.1 + i / 10, 100 + i) for i in range(20)],
        FaultEvent("f", "heal-end", 6.0),
        ok(40, 7.0, 5),
        Mark("scenario-end", 8.0, {"scenario": "a"}),
        Mark("scenario-start", 9.0, {"scenario": "b"}),
        ok(50, 10.0, 900),  # another scenario's
    ]  # fmt: skip
    history = History(RunHeader.create("r", "lab", Clock()), tuple(records))
    assert scenario_latencies(history, "a") == {"p50": 109.0, "p95": 118.0, "p99": 119.0}
    assert scenario_latencies(history, "missing") == {}


@pytest.mark.parametrize(
    ("text", "percent", "absolute"),
    [("100%", 100, 0), ("+100 %", 100, 0), ("0.5", 0, 0.5), ("100% + 0.5", 100, 0.5), (2, 0, 2)],
)
def test_tolerances_parse(text: str | int, percent: float, absolute: float) -> None:
    assert Tolerance.parse(text) == Tolerance(percent, absolute)


@pytest.mark.parametrize("bad", ["", "fast", "-5", "100%%", "%"])
def test_bad_tolerances_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a tolerance"):
        Tolerance.parse(bad)


def _past(values: list[float]) -> list[RunRecord]:
    return [rec(f"r{i}", 100.0 + i, time_to_recover=v) for i, v in enumerate(values)]


def test_a_slower_recovery_is_flagged_naming_the_number() -> None:
    past = {TITLE: _past([1.2, 1.3, 1.4, 1.3, 1.25, 1.35, 1.3, 1.3, 1.2, 1.4])}
    found = regressions([rec("now", 500, time_to_recover=9.8)], past,
                        {"time_to_recover": Tolerance(100, 0)})  # fmt: skip
    assert [str(r) for r in found] == [
        "database failover: time to recover 9.8 s vs median 1.3 s of the last 10 runs "
        "(tolerance +100 %)"
    ]


def test_an_unchanged_recovery_is_not_flagged() -> None:
    past = {TITLE: _past([1.2, 1.3, 1.4, 1.3, 1.25])}
    current = [rec("now", 500, time_to_recover=1.45)]
    assert regressions(current, past, {"time_to_recover": Tolerance(100, 0)}) == []
    # ... but the same number against a much faster history is
    faster = {TITLE: _past([0.5, 0.6, 0.55])}
    assert len(regressions(current, faster, {"time_to_recover": Tolerance(100, 0)})) == 1


def test_lower_is_worse_for_availability_and_absolute_slack_counts() -> None:
    past = {TITLE: [rec(f"r{i}", i, availability=99.9) for i in range(5)]}
    tol = {"availability": Tolerance(0, 1.0)}
    assert regressions([rec("a", 9, availability=99.0)], past, tol) == []
    found = regressions([rec("b", 9, availability=98.5)], past, tol)
    assert [str(r) for r in found] == [
        "database failover: availability 98.50 % vs median 99.90 % of the last 5 runs "
        "(tolerance -1)"
    ]


def test_no_baseline_no_verdict_and_failed_runs_are_not_judged() -> None:
    past = {TITLE: _past([1.0, 1.0])}
    tol = {"time_to_recover": Tolerance(100, 0)}
    assert regressions([rec("n", 9, time_to_recover=50)], past, tol, min_runs=3) == []
    assert len(regressions([rec("n", 9, time_to_recover=50)], past, tol, min_runs=2)) == 1
    failed = rec("n", 9, "failed", time_to_recover=50)
    assert regressions([failed], past, tol, min_runs=2) == []


def test_regressions_on_synthetic_ledger_rows(tmp_path: Path) -> None:
    """Through the ledger, as `gameday run` judges: the last N passing runs of the scenario
    on that deployment, the run itself and failed or regressed runs left out."""
    from gameday.gamedays import judge_regressions
    from gameday.plan import load_plan

    plan_file = tmp_path / "p.yaml"
    plan_file.write_text(
        "target: lab\nfeatures: [features/acceptance/entrypoint.feature]\n"
        "regression: {last_runs: 5, min_runs: 3, tolerances: {time_to_recover: '100%'}}\n"
    )
    loaded = load_plan(str(plan_file), project=Path(__file__).resolve().parent.parent)
    key = loaded.target.identity()
    url = f"sqlite:///{tmp_path / 'l.db'}"

    def row(run: str, ended: float, ttr: float, outcome: str = "passed") -> RunRecord:
        r = rec(run, ended, outcome, time_to_recover=ttr)
        return replace(r, target_key=key)

    history = [row(f"old{i}", i, 50.0) for i in range(5)]  # slow, but older than the last 5
    history += [row(f"r{i}", 100 + i, 1.0 + i / 100) for i in range(5)]
    history += [row("broken", 200, 99.0, "failed")]
    with Ledger.open(url) as ledger:
        ledger.append(history)
        ledger.append([row("same", 300, 1.1)])
        assert judge_regressions(ledger, loaded, "same") == []
        ledger.append([row("slow", 400, 3.2)])
        found = judge_regressions(ledger, loaded, "slow")
        assert [str(r) for r in found] == [
            "database failover: time to recover 3.2 s vs median 1.0 s of the last 5 runs "
            "(tolerance +100 %)"
        ]
        slow = ledger.records(run_id="slow")[0]
        assert slow.regression == str(found[0])
        # a regressed run is no baseline for the next one
        ledger.append([row("next", 500, 1.1)])
        assert judge_regressions(ledger, loaded, "next") == []
        baseline = ledger.records(title=TITLE, passing_only=True, exclude_run="next", last_runs=5)
        assert "slow" not in {r.run_id for r in baseline}


def test_history_table_and_trend_page(tmp_path: Path) -> None:
    records = [
        rec("r1", 100, time_to_recover=1.3, lost_writes=0, availability=99.9),
        rec("r2", 200, "failed", time_to_recover=45.0, lost_writes=2, availability=80.0),
        replace(rec("r3", 300, time_to_recover=9.8),
                regression="database failover: time to recover 9.8 s vs ..."),
    ]  # fmt: skip
    table = history_table(records)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["ended", "(UTC)", "run"]
    assert "r2" in lines[2] and "failed" in lines[2] and "45.0 s" in lines[2]
    assert "passed REGRESSED" in lines[3]
    assert lines[-1].startswith("regression: database failover: time to recover 9.8 s")
    page = trend_page(records, page_dir=Path("/srv/reports"))
    assert page.startswith("<!doctype html>") and "<script" not in page
    assert page.count('href="r1/report.html"') == 3  # one point per chart it appears in
    assert len(re.findall(r'class="f"', page)) == 3  # the failed run, marked in 3 charts
    assert 'class="r"' in page  # the regressed run
    assert "time to recover" in page and "lost writes" in page and "availability" in page
