"""A run: one pytest session against one target, and its folder under `reports/`.

The run owns the one clock, the history writer (`history.jsonl`, appended as it grows), the
verdicts the Then-steps reached, and at the end writes `verdicts.json`, `report.html` and
`junit.xml` beside the history.
"""

from __future__ import annotations

import os
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gameday.clock import Clock
from gameday.history import HistoryWriter, Mark, Record, RunHeader, read_history
from gameday.report import VerdictRecord, write_report
from gameday.secrets import redact
from gameday.target import Target, path_safe
from gameday.verdict import Verdict

REPORTS_DIR = Path(os.environ.get("GAMEDAY_REPORTS_DIR", "reports"))


@dataclass
class ScenarioResult:
    nodeid: str
    title: str
    outcome: str = "passed"  # passed | failed | skipped
    message: str = ""
    duration_sec: float = 0.0


@dataclass
class Run:
    run_id: str
    target: Target
    folder: Path
    clock: Clock
    writer: HistoryWriter
    verdicts: list[VerdictRecord] = field(default_factory=list)
    scenarios_begun: int = 0
    scenarios: list[ScenarioResult] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(cls, target: Target, reports_dir: Path = REPORTS_DIR) -> Run:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        # The name is free text ("../../etc" included): only its path-safe form names a folder.
        run_id = f"{stamp}-{path_safe(target.name)}"
        folder = reports_dir / run_id
        suffix = 1
        while folder.exists():  # two runs in the same second
            suffix += 1
            folder = reports_dir / f"{run_id}-{suffix}"
        clock = Clock()
        writer = HistoryWriter(
            folder / "history.jsonl", RunHeader.create(folder.name, target.name, clock)
        )
        return cls(folder.name, target, folder, clock, writer)

    def record(self, record: Record) -> None:
        self.writer.append(record)

    def mark(self, name: str, **detail: str) -> None:
        self.writer.append(Mark(name=name, at=self.clock.now(), detail=detail))

    def judge(self, scenario: str, title: str, verdict: Verdict) -> Verdict:
        """Keep the verdict for the report, and hand it back for the step to assert on."""
        with self._lock:
            self.verdicts.append(
                VerdictRecord(
                    scenario=scenario, title=title, check=verdict.check, ok=verdict.ok,
                    message=verdict.message, measured=_json_safe(verdict.measured),
                )
            )  # fmt: skip
        return verdict

    def finish(self) -> Path:
        """Close the history and write the report files; returns the report's path."""
        self.writer.close()
        history = read_history(self.folder / "history.jsonl")
        write_junit(self.folder / "junit.xml", self.target.name, self.scenarios)
        return write_report(self.folder, history, self.verdicts)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def write_junit(path: Path, target: str, scenarios: list[ScenarioResult]) -> None:
    """JUnit XML of the scenarios (not of the harness's own tests), for CI dashboards."""
    failures = sum(s.outcome == "failed" for s in scenarios)
    skipped = sum(s.outcome == "skipped" for s in scenarios)
    suite = ET.Element(
        "testsuite",
        name=f"gameday {target}",
        tests=str(len(scenarios)),
        failures=str(failures),
        skipped=str(skipped),
        time=f"{sum(s.duration_sec for s in scenarios):.3f}",
    )
    for s in scenarios:
        classname, _, name = s.nodeid.partition("::")
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=s.title or name,
            time=f"{s.duration_sec:.3f}",
        )  # fmt: skip
        if s.outcome == "failed":
            ET.SubElement(case, "failure", message=redact(s.message)[:500]).text = redact(s.message)
        elif s.outcome == "skipped":
            ET.SubElement(case, "skipped", message=redact(s.message)[:500])
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
