"""Late sends in the report: counted under a probe's chart and marked on its timeline, from
the probe's `rate_kept` verdict (which says when each sample was due)."""

from __future__ import annotations

from pathlib import Path

from gameday.checks.schedule import ScheduleReport, rate_kept
from gameday.history import HistoryWriter, Sample, read_history
from gameday.report import LATE_COLOR, VerdictRecord, write_report
from tests.test_report import SVG, charts, end, header, px, start, text_of

NODE = "features/resilience/x.feature::Late sends"
RATE = 10.0
FIRST_DUE = 1.0
LATE = range(20, 30)  # samples 20..29 started 0.25 s late


def late_run(tmp_path: Path, *, with_verdict: bool) -> str:
    samples = [
        Sample("GET /health", k, FIRST_DUE + k / RATE + (0.25 if k in LATE else 0.001), 0.005,
               True, 200)
        for k in range(100)
    ]  # fmt: skip
    with HistoryWriter(tmp_path / "h.jsonl", header()) as w:
        w.append(start(NODE, 0.0, "Late sends"))
        for s in samples:
            w.append(s)
        w.append(end(NODE, 12.0, "passed"))
    history = read_history(tmp_path / "h.jsonl")
    report = ScheduleReport("GET /health", "request", RATE, FIRST_DUE, 10.95, 100, 100,
                            len(LATE), 0.010, 0.25)  # fmt: skip
    verdict = rate_kept(report)
    assert not verdict.ok  # 10 % late
    verdicts = [VerdictRecord.from_verdict(NODE, "Late sends", verdict)] if with_verdict else []
    return write_report(tmp_path, history, verdicts).read_text(encoding="utf-8")


def test_late_sends_are_counted_and_marked_where_they_were_sent(tmp_path: Path) -> None:
    page = late_run(tmp_path, with_verdict=True)
    text = text_of(page)
    assert "late 10 (started more than 10 ms after their due time; worst 250 ms)" in text
    (svg,) = charts(page)
    (group,) = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "late"]
    assert group.get("stroke") == LATE_COLOR
    xs = sorted(int(float(line.get("x1", "0"))) for line in group.iter(f"{SVG}line"))
    # The chart spans the scenario (0 to 12 s): the marks are where samples 20..29 were sent.
    expected = sorted({px(FIRST_DUE + k / RATE + 0.25, 12.0) for k in LATE})
    assert xs == expected
    # The verdict's own message says it too.
    assert "10 requests late by more than 10 ms (worst 250 ms)" in text


def test_without_a_rate_verdict_the_page_claims_nothing_about_lateness(tmp_path: Path) -> None:
    page = late_run(tmp_path, with_verdict=False)
    assert "late 10" not in text_of(page)
    (svg,) = charts(page)
    assert not [g for g in svg.iter(f"{SVG}g") if g.get("class") == "late"]
