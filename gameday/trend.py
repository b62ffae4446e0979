"""Trends across runs: the numbers of each scenario, run after run, from the ledger.

- `scenario_metrics` turns a scenario's verdicts (and its probes' samples) into the numbers
  the ledger keeps: time to recover, lost and unknown writes, availability, p50/p95/p99,
  how long traffic took to move, a drill's times to detect, mitigate and restore.
- `regressions` compares a run with the median of the last N passing runs of the same
  scenario on the same deployment, within the plan's tolerances, and says which number
  regressed in one line ("database failover: time to recover 9.8 s vs median 1.3 s of the
  last 10 runs (tolerance +100 %)").
- `history_table` and `trend_page` show the records (`gameday history [--html]`).

Pure functions of their inputs: tested on hand-built records.
"""

from __future__ import annotations

import html
import math
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gameday.ledger import RunRecord, iso

if TYPE_CHECKING:
    from gameday.history import History


@dataclass(frozen=True)
class Metric:
    label: str
    unit: str  # shown after the number
    worse: Literal["higher", "lower"]
    digits: int = 1


METRICS: dict[str, Metric] = {
    "time_to_recover": Metric("time to recover", "s", "higher"),
    "lost_writes": Metric("lost writes", "", "higher", 0),
    "unknown_writes": Metric("writes of unknown outcome", "", "higher", 0),
    "availability": Metric("availability", "%", "lower", 2),
    "longest_outage": Metric("longest outage", "s", "higher"),
    "traffic_moved": Metric("traffic moved after", "s", "higher"),
    "p50": Metric("p50 latency", "ms", "higher"),
    "p95": Metric("p95 latency", "ms", "higher"),
    "p99": Metric("p99 latency", "ms", "higher"),
    "time_to_detect": Metric("time to detect", "s", "higher"),
    "time_to_mitigate": Metric("time to mitigate", "s", "higher"),
    "time_to_restore": Metric("time to restore", "s", "higher"),
}
#: the numbers the trend page draws, in this order, when a scenario has them
CHARTED = ("time_to_recover", "lost_writes", "availability", "p95", "time_to_detect",
           "time_to_mitigate", "time_to_restore")  # fmt: skip


def fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    m = METRICS.get(metric)
    digits = m.digits if m else 2
    unit = f" {m.unit}" if m and m.unit else ""
    return f"{value:.{digits}f}{unit}"


# -- from verdicts to numbers ----------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def verdict_metrics(verdicts: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The numbers of one scenario's verdicts; when a check ran for several probes (two
    writers), the worst of them: the longest recovery, the most lost writes, the lowest
    availability."""
    out: dict[str, list[float]] = defaultdict(list)
    for v in verdicts:
        measured = v.get("measured") or {}
        check = v.get("check")
        picks: list[tuple[str, Any]] = []
        if check == "time_to_recover":
            picks = [("time_to_recover", measured.get("recovery_sec"))]
        elif check == "lost_writes":
            picks = [("lost_writes", measured.get("lost")), ("unknown_writes",
                     measured.get("unknown"))]  # fmt: skip
        elif check == "availability":
            ratio = _number(measured.get("ratio"))
            picks = [("availability", None if ratio is None else ratio * 100)]
        elif check == "longest_outage":
            picks = [("longest_outage", measured.get("longest_sec"))]
        elif check == "traffic_moved_to":
            picks = [("traffic_moved", measured.get("moved_after_sec"))]
        elif check == "latency_within":
            pct = _number(measured.get("percentile"))
            if pct is not None and f"p{pct:g}" in METRICS:
                picks = [(f"p{pct:g}", measured.get("latency_ms"))]
        elif check in ("time_to_detect", "time_to_mitigate", "time_to_restore"):
            picks = [(check, measured.get("sec"))]
        for name, value in picks:
            number = _number(value)
            if number is not None:
                out[name].append(number)
    return {
        name: (min(values) if METRICS[name].worse == "lower" else max(values))
        for name, values in out.items()
    }


def scenario_latencies(history: History, nodeid: str) -> dict[str, float]:
    """p50/p95/p99 (ms) of the HTTP probes' successful requests of one scenario while its
    fault was in effect (the whole scenario when it had no fault)."""
    # Imported here: plans (and `gameday run` refusing in under a second) need this module's
    # tolerances, not the checks.
    from gameday.stats import nearest_rank

    start = end = None
    for mark in history.marks:
        if mark.detail.get("scenario") != nodeid:
            continue
        if mark.name == "scenario-start":
            start = mark.at
        elif mark.name == "scenario-end" and start is not None:
            end = mark.at
    if start is None:
        return {}
    # By bisection of the history's columns: a long game day's millions of samples are not
    # made into objects (once per scenario) to find one scenario's.
    faults = history.window(start, end).fault_events
    begun = [e.at for e in faults if e.phase == "inject-start"]
    healed = [e.at for e in faults if e.phase == "heal-end"]
    if begun:
        during = history.window(min(begun), max(healed) if healed else end)
    else:
        during = history.window(start, end)
    values: list[float] = []
    for probe in during.probes:
        if probe.startswith("GET "):
            samples = during.samples(probe)
            values += (d * 1000 for d, ok in zip(samples.durations(), samples.oks(), strict=True)
                       if ok and d is not None)  # fmt: skip
    if not values:
        return {}
    values.sort()
    return {f"p{p}": nearest_rank(values, p) for p in (50, 95, 99)}


# -- tolerances and regressions ----------------------------------------------------------------

_TOLERANCE = re.compile(
    r"^\s*\+?\s*(?:(?P<pct>\d+(?:\.\d+)?)\s*%)?\s*(?:\+?\s*(?P<abs>\d+(?:\.\d+)?))?\s*$"
)


@dataclass(frozen=True)
class Tolerance:
    """How much worse than the median a number may be: a share of the median, plus an
    amount in the number's own unit ("100%", "0.5", "100% + 0.5")."""

    percent: float = 0.0
    absolute: float = 0.0

    @classmethod
    def parse(cls, text: str | float | int) -> Tolerance:
        if isinstance(text, int | float) and not isinstance(text, bool):
            if text < 0:
                raise ValueError(f"{text!r}: a tolerance cannot be negative")
            return cls(0.0, float(text))
        match = _TOLERANCE.match(str(text))
        if not match or (match["pct"] is None and match["abs"] is None):
            raise ValueError(f'{text!r} is not a tolerance (e.g. "100%", "0.5" or "100% + 0.5")')
        return cls(float(match["pct"] or 0), float(match["abs"] or 0))

    def limit(self, median: float, worse: str) -> float:
        slack = abs(median) * self.percent / 100 + self.absolute
        return median + slack if worse == "higher" else median - slack

    def __str__(self) -> str:
        parts = []
        if self.percent:
            parts.append(f"+{self.percent:g} %")
        if self.absolute or not parts:
            parts.append(f"+{self.absolute:g}")
        return " ".join(parts)


#: used for the numbers a plan names no tolerance for
DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "time_to_recover": Tolerance(100, 1.0),
    "lost_writes": Tolerance(0, 0),
    "availability": Tolerance(0, 1.0),
}


@dataclass(frozen=True)
class Regression:
    title: str
    metric: str
    value: float
    median: float
    runs: int
    tolerance: Tolerance

    def __str__(self) -> str:
        m = METRICS[self.metric]
        sign = "-" if m.worse == "lower" else "+"
        tol = str(self.tolerance).replace("+", sign)
        return (
            f"{self.title}: {m.label} {fmt(self.metric, self.value)} vs median "
            f"{fmt(self.metric, self.median)} of the last {self.runs} runs (tolerance {tol})"
        )


def regressions(
    current: Sequence[RunRecord],
    past: Mapping[str, Sequence[RunRecord]],
    tolerances: Mapping[str, Tolerance],
    *,
    min_runs: int = 3,
) -> list[Regression]:
    """The numbers of `current` (one run's passing records) worse than the median of
    `past[title]` (the last N passing runs of that scenario) by more than the tolerance.
    A scenario with fewer than `min_runs` past runs is not judged: no baseline yet."""
    found: list[Regression] = []
    for record in current:
        if record.outcome != "passed":
            continue
        baseline = past.get(record.title, ())
        if len(baseline) < min_runs:
            continue
        for metric, tolerance in tolerances.items():
            value = record.metrics.get(metric)
            history = [r.metrics[metric] for r in baseline if metric in r.metrics]
            if value is None or len(history) < min_runs:
                continue
            median = statistics.median(history)
            worse = METRICS[metric].worse
            limit = tolerance.limit(median, worse)
            if (value > limit) if worse == "higher" else (value < limit):
                found.append(
                    Regression(record.title, metric, value, median, len(history), tolerance)
                )
    return found


# -- showing the records ------------------------------------------------------------------------


def history_table(records: Sequence[RunRecord]) -> str:
    """One line per record, oldest first, with the numbers that matter most."""
    header = ("ended (UTC)", "run", "plan", "scenario", "outcome", "recover", "lost", "avail",
              "p95", "detect/mitigate/restore")  # fmt: skip
    rows = [header]
    for r in records:
        m = r.metrics
        drill = ""
        if r.kind == "drill":
            drill = "/".join(
                fmt(k, m.get(k)) for k in ("time_to_detect", "time_to_mitigate", "time_to_restore")
            )
        outcome = r.outcome + (" REGRESSED" if r.regression else "")
        rows.append(
            (
                iso(r.ended_at), r.run_id, r.plan or "-", _short(r.title, 48), outcome,
                fmt("time_to_recover", m.get("time_to_recover")),
                fmt("lost_writes", m.get("lost_writes")),
                fmt("availability", m.get("availability")), fmt("p95", m.get("p95")), drill,
            )
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    regressed = [r for r in records if r.regression]
    lines += [f"regression: {r.regression}" for r in regressed]
    return "\n".join(lines)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_W, _H, _PAD = 720, 170, 44
#: more runs than this in one chart are drawn in groups of consecutive runs (median, and the
#: range as a bar), so a page over 10,000 runs stays small and quick to draw
MAX_POINTS = 360


def _groups(points: list[tuple[RunRecord, float]]) -> list[list[tuple[RunRecord, float]]]:
    size = math.ceil(len(points) / MAX_POINTS)
    return [points[i : i + size] for i in range(0, len(points), size)]


def _chart(metric: str, records: Sequence[RunRecord], page_dir: Path | None) -> str:
    points = [(r, r.metrics[metric]) for r in records if metric in r.metrics]
    if not points:
        return ""
    values = [v for _, v in points]
    lo, hi = min(values), max(values)
    if metric == "availability":
        hi = max(hi, 100.0)
    if hi == lo:
        hi, lo = hi + 1, max(lo - 1, 0) if lo >= 0 else lo - 1
    groups = _groups(points)
    n = len(groups)

    def x(i: int) -> float:
        return _PAD + (i + 0.5) * (_W - 2 * _PAD) / n

    def y(v: float) -> float:
        return _H - 24 - (v - lo) / (hi - lo) * (_H - 44)

    m = METRICS[metric]
    grouped = f", {len(groups[0])} runs per mark" if len(groups[0]) > 1 else ""
    parts = [
        f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
        f'aria-label="{html.escape(m.label)}">',
        f'<text x="4" y="14" class="t">{html.escape(m.label)}'
        f"{' (' + m.unit + ')' if m.unit else ''}{grouped}</text>",
        f'<text x="4" y="{y(hi) + 4:.0f}" class="a">{fmt(metric, hi)}</text>',
        f'<text x="4" y="{y(lo) + 4:.0f}" class="a">{fmt(metric, lo)}</text>',
        f'<line x1="{_PAD}" x2="{_W - 4}" y1="{y(lo):.1f}" y2="{y(lo):.1f}" class="g"/>',
    ]
    medians = [statistics.median(v for _, v in g) for g in groups]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(v):.1f}" for i, v in
                    enumerate(medians))  # fmt: skip
    parts.append(f'<path d="{path}" class="l"/>')
    for i, (group, v) in enumerate(zip(groups, medians, strict=True)):
        failed = [r for r, _ in group if r.outcome != "passed"]
        regressed = [r for r, _ in group if r.regression]
        cls = "f" if failed else ("r" if regressed else "p")
        shown = (failed or regressed or [group[-1][0]])[-1]
        if len(group) == 1:
            tip = f"{shown.run_id} {iso(shown.ended_at)} {shown.outcome}: {fmt(metric, v)}"
            if shown.regression:
                tip += f" REGRESSION {shown.regression}"
        else:
            low, high = min(g[1] for g in group), max(g[1] for g in group)
            tip = (f"{len(group)} runs {group[0][0].run_id} .. {group[-1][0].run_id}: median "
                   f"{fmt(metric, v)} (min {fmt(metric, low)}, max {fmt(metric, high)}); "
                   f"{len(failed)} not passed, {len(regressed)} regressed; links to "
                   f"{shown.run_id}")  # fmt: skip
            parts.append(
                f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(low):.1f}" y2="{y(high):.1f}" '
                'class="g"/>'
            )
        shape = (
            f'<path d="M{x(i) - 4:.1f},{y(v) - 4:.1f}l8,8m0,-8l-8,8" class="{cls}"/>'
            if cls == "f"
            else f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" class="{cls}"/>'
        )
        link = _link(shown.report, page_dir)
        body = f"<title>{html.escape(tip)}</title>{shape}"
        parts.append(f'<a href="{html.escape(link)}">{body}</a>' if link else f"<g>{body}</g>")
    parts.append("</svg>")
    return "".join(parts)


def _link(report: str, page_dir: Path | None) -> str:
    if not report:
        return ""
    if page_dir is None:
        return report
    try:
        return os.path.relpath(report, page_dir)
    except ValueError:
        return report


_STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h2{font-size:16px;margin:28px 0 4px} .sub{color:#666;margin:0 0 8px}
svg{display:block;margin:4px 0 10px;background:#fafafa;border:1px solid #eee}
.t{font-size:12px;font-weight:600} .a{font-size:10px;fill:#888}
.g{stroke:#ddd} .l{fill:none;stroke:#89a;stroke-width:1.2}
.p{fill:#2a7} .r{fill:#e80} .f{stroke:#d22;stroke-width:2.2}
table{border-collapse:collapse;font-size:12px} td,th{padding:2px 8px;border-bottom:1px solid #eee;
text-align:left}
"""


def trend_page(
    records: Sequence[RunRecord], *, page_dir: Path | None = None, title: str = ""
) -> str:
    """One self-contained HTML page: per scenario, its numbers over runs (failed runs marked
    with a red cross, regressions in orange), each point linking to that run's report."""
    by_title: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        by_title[r.title].append(r)
    heading = html.escape(title or "gameday: game days over time")
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{heading}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{heading}</h1>",
        f"<p class='sub'>{len(records)} records of {len({r.run_id for r in records})} runs; "
        "green: passed, orange: passed but regressed, red cross: failed. Each point links to "
        "its run's report.</p>",
    ]
    for name in sorted(by_title):
        group = sorted(by_title[name], key=lambda r: r.ended_at)
        failed = sum(r.outcome != "passed" for r in group)
        targets = ", ".join(sorted({r.target_name for r in group}))
        out.append(f"<h2>{html.escape(name)}</h2>")
        out.append(
            f"<p class='sub'>{len(group)} runs on {html.escape(targets)}, {failed} not passed; "
            f"last {iso(group[-1].ended_at)} ({html.escape(group[-1].outcome)})</p>"
        )
        charted = [m for m in CHARTED if any(m in r.metrics for r in group)]
        for metric in charted:
            out.append(_chart(metric, group, page_dir))
        regressed = [r for r in group if r.regression][-5:]
        if regressed:
            out.append("<table><tr><th>run</th><th>regression</th></tr>")
            out += [
                f"<tr><td>{html.escape(r.run_id)}</td><td>{html.escape(r.regression or '')}</td>"
                "</tr>"
                for r in regressed
            ]
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
