"""The report's view of the pager: one time axis per scenario with the fault window, each
alert's firing, delivery and resolution and the recovery marks, a table of the same moments,
and verdicts.json's time to detect beside time to recover."""

from __future__ import annotations

import json
from pathlib import Path

from gameday.clock import Clock
from gameday.history import (
    MARK_ALERT_DELIVERED,
    MARK_ALERT_FIRING,
    MARK_ALERT_RESOLVED,
    MARK_RECOVERED,
    MARK_SCENARIO_END,
    MARK_SCENARIO_START,
    FaultEvent,
    History,
    Mark,
    RunHeader,
)
from gameday.report import VerdictRecord, scenario_timings, write_report
from gameday.verdict import failed, passed

NODE = "features/monitoring/x.feature::test_pg"


def history(*records: Mark | FaultEvent) -> History:
    header = RunHeader.create("run-1", "lab", Clock(wall_anchor=1.7e9, monotonic_anchor=0.0))
    start = Mark(MARK_SCENARIO_START, 0.0, {"scenario": NODE, "title": "PG down"})
    end = Mark(MARK_SCENARIO_END, 60.0, {"scenario": NODE, "outcome": "passed"})
    return History(header, (start, *records, end))


def alert(name: str, at: float, **detail: str) -> Mark:
    return Mark(
        name, at, {"alert": "PostgreSQLDown", "fingerprint": "f1", "server": "server2", **detail}
    )


def test_the_alert_axis_and_table_show_fired_delivered_resolved_and_time_to_detect(
    tmp_path: Path,
) -> None:
    h = history(
        FaultEvent("database primary crash", "inject-start", 10.0),
        alert(MARK_ALERT_FIRING, 17.5),
        alert(MARK_ALERT_DELIVERED, 18.0, status="firing"),
        Mark(MARK_RECOVERED, 19.0, {"probe": "ledger", "after_sec": "9.000"}),
        FaultEvent("database primary crash", "heal-start", 30.0),
        FaultEvent("database primary crash", "heal-end", 40.0),
        alert(MARK_ALERT_RESOLVED, 35.0),
        alert(MARK_ALERT_DELIVERED, 36.0, status="resolved"),
    )
    page = write_report(tmp_path, h, []).read_text()
    assert "<h3>Alerts</h3>" in page
    assert page.count('class="alert firing"') == 1
    assert page.count('class="alert delivered"') == 2
    assert page.count('class="alert resolved"') == 1
    assert 'class="recovery"' in page and 'class="fault"' in page
    row = page[page.index("<td>PostgreSQLDown</td>") :].split("</tr>")[0]
    assert [c.split("</td>")[0] for c in row.split("<td>")[1:]] == [
        "PostgreSQLDown",
        "server2",
        "+17.5 s",
        "+18 s",
        "+35 s",
        "+36 s",
        "7.5 s",
    ]


def test_a_scenario_without_alerts_has_no_alert_axis(tmp_path: Path) -> None:
    page = write_report(tmp_path, history(FaultEvent("f", "inject-start", 1.0)), []).read_text()
    assert "<h3>Alerts</h3>" not in page
    assert "No probe samples in this scenario." in page


def test_verdicts_json_has_time_to_detect_beside_time_to_recover(tmp_path: Path) -> None:
    verdicts = [
        VerdictRecord.from_verdict(NODE, "PG down", v)
        for v in (
            passed("alert_fires", "fired", alert="PostgreSQLDown", time_to_detect_sec=7.5),
            passed("alert_fires", "fired", alert="InstanceDown", time_to_detect_sec=9.0),
            passed("time_to_recover", "ok", recovery_sec=4.2),
            passed("time_to_recover", "ok", recovery_sec=6.1),
            failed("alert_resolves", "late", time_to_resolve_sec=None),
            passed("alert_resolves", "ok", time_to_resolve_sec=5.0),
            passed("entrypoint_healthy", "200"),
        )
    ]
    other = VerdictRecord.from_verdict("acc::x", "acc", passed("entrypoint_healthy", "200"))
    write_report(tmp_path, history(), [*verdicts, other])
    timings = json.loads((tmp_path / "verdicts.json").read_text())["timings"]
    # The first detection, the slowest recovery and resolution; scenarios without any: none.
    assert timings == [
        {
            "scenario": NODE,
            "title": "PG down",
            "time_to_detect_sec": 7.5,
            "time_to_recover_sec": 6.1,
            "time_to_resolve_sec": 5.0,
        }
    ]
    assert scenario_timings([]) == []
