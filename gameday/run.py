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
from typing import TYPE_CHECKING

from gameday.clock import Clock
from gameday.history import HistoryWriter, Mark, Record, RunHeader, write_columns
from gameday.report import VerdictRecord, write_report
from gameday.secrets import redact
from gameday.verdict import Verdict

if TYPE_CHECKING:  # the target's models are built when a target is loaded, not on import
    from gameday.target import Target

REPORTS_ENV = "GAMEDAY_REPORTS_DIR"


def reports_dir() -> Path:
    """Where runs write their folders: $GAMEDAY_REPORTS_DIR, else reports/ here."""
    return Path(os.environ.get(REPORTS_ENV) or "reports")


# A scenario's outcome: what pytest reported, or "error" when the run ended (an interrupt)
# before pytest could report it. Never "passed" by default: a scenario is only passed when
# pytest said so.
OUTCOMES = ("passed", "failed", "skipped", "error")


@dataclass
class ScenarioResult:
    nodeid: str
    title: str
    outcome: str | None = None  # one of OUTCOMES; None until pytest reports it
    message: str = ""
    duration_sec: float = 0.0
    began: bool = False  # pytest started it (set up); an interrupt may leave it unreported


@dataclass
class Run:
    run_id: str
    target: Target
    folder: Path
    clock: Clock
    writer: HistoryWriter
    #: the user's opt-in for faults (--allow-destructive or the target's allow_destructive)
    allow_destructive: bool = False
    verdicts: list[VerdictRecord] = field(default_factory=list)
    scenarios_begun: int = 0
    scenarios: list[ScenarioResult] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def start(
        cls, target: Target, parent: Path | None = None, *, allow_destructive: bool = False
    ) -> Run:
        parent = parent if parent is not None else reports_dir()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        # The name is free text ("../../etc" included): only its path-safe form names a folder.
        from gameday.target import path_safe

        run_id = f"{stamp}-{path_safe(target.name)}"
        folder = parent / run_id
        suffix = 1
        while folder.exists():  # two runs in the same second
            suffix += 1
            folder = parent / f"{run_id}-{suffix}"
        clock = Clock()
        writer = HistoryWriter(
            folder / "history.jsonl", RunHeader.create(folder.name, target.name, clock)
        )
        return cls(
            folder.name, target, folder, clock, writer,
            allow_destructive=allow_destructive or target.allow_destructive,
        )  # fmt: skip

    def record(self, record: Record) -> None:
        self.writer.append(record)

    def mark(self, name: str, **detail: str) -> None:
        self.writer.append(Mark(name=name, at=self.clock.now(), detail=detail))

    def judge(self, scenario: str, title: str, verdict: Verdict) -> Verdict:
        """Keep the verdict for the report, and hand it back for the step to assert on."""
        with self._lock:
            self.verdicts.append(VerdictRecord.from_verdict(scenario, title, verdict))
        return verdict

    def result(self, nodeid: str, title: str = "") -> ScenarioResult:
        """The scenario's result, made when first asked for."""
        with self._lock:
            for r in self.scenarios:
                if r.nodeid == nodeid:
                    if title:
                        r.title = title
                    return r
            made = ScenarioResult(nodeid, title or nodeid.partition("::")[2])
            self.scenarios.append(made)
            return made

    def finish(self, *, interrupted: str | None = None) -> Path:
        """Close the history and write the report files; returns the report's path.

        `interrupted`: why the run stopped early (a signal). A scenario that began and was
        never reported is then an error in junit.xml with that reason, never a pass.
        """
        for r in self.scenarios:
            if r.outcome is None and r.began:
                r.outcome = "error"
                r.message = f"interrupted: {interrupted}" if interrupted else "never finished"
            elif r.outcome is None:
                r.outcome = "skipped"
                r.message = f"not run: {interrupted}" if interrupted else "not run"
        self.writer.close()
        write_columns(self.writer)  # a long run's history, read back later in a fraction
        # The writer kept every record (as columns): the report is made from them, not from
        # a second copy read back from the file.
        history = self.writer.history()
        write_junit(self.folder / "junit.xml", self.target.name, self.scenarios)
        return write_report(self.folder, history, self.verdicts)


def write_junit(path: Path, target: str, scenarios: list[ScenarioResult]) -> None:
    """JUnit XML of the scenarios (not of the harness's own tests), for CI dashboards."""
    failures = sum(s.outcome == "failed" for s in scenarios)
    errors = sum(s.outcome in ("error", None) for s in scenarios)
    skipped = sum(s.outcome == "skipped" for s in scenarios)
    suite = ET.Element(
        "testsuite",
        name=f"gameday {target}",
        tests=str(len(scenarios)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{sum(s.duration_sec for s in scenarios):.3f}",
    )
    for s in scenarios:
        classname, _, name = s.nodeid.partition("::")
        case = ET.SubElement(
            suite, "testcase", classname=classname, name=s.title or name,
            time=f"{s.duration_sec:.3f}",
        )  # fmt: skip
        message = redact(s.message)
        if s.outcome == "failed":
            ET.SubElement(case, "failure", message=message[:500]).text = message
        elif s.outcome in ("error", None):
            ET.SubElement(case, "error", message=message[:500] or "no outcome").text = message
        elif s.outcome == "skipped":
            ET.SubElement(case, "skipped", message=message[:500])
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
