"""The report of a run: `report.html` (one self-contained page) and `verdicts.json`.

The page is what people read after a game day: per scenario its verdicts, then for each
probe a timeline of what the users saw (every sample at its send time, failures in a band of
their own, the fault window shaded, recovery and ground-truth moments marked), and under it
the counts by error kind, latency percentiles before/during/after the fault and the servers
that answered. It is plain HTML with inline CSS and SVG drawn here, so it opens anywhere,
offline, without JavaScript, and can be attached to a ticket as one file.

The run's history is one file for the whole session; the engine delimits each scenario in it
with marks, and the records sent (samples) or made (events, marks) between a scenario's
start and end are that scenario's:

    Mark("scenario-start", at, {"scenario": nodeid, "title": title})
    Mark("scenario-end", at, {"scenario": nodeid, "outcome": "passed"|"failed"|"skipped"})
    Mark("recovered", at, {"probe": name})       a recovery line on that probe's timeline
    Mark(<any other name>, at, {...})            a labelled tick (e.g. ground truth)

A history without scenario marks is shown as one scenario named after the run. Every text
that reaches the page or `verdicts.json` passes through `gameday.secrets.redact`.
"""

from __future__ import annotations

import heapq
import html
import json
import math
import os
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from itertools import compress
from pathlib import Path
from typing import Any

# failure_kind is the checks' own wording of a failure ("timeout", "http 503"): the page
# counts failures by the same kinds that verdict messages name.
from gameday.checks.resilience import PHASES, UNKNOWN_SERVER, Window, failure_kind
from gameday.checks.schedule import CHECK as RATE_KEPT
from gameday.history import (
    MARK_RECOVERED,
    MARK_SCENARIO_END,
    MARK_SCENARIO_START,
    FaultEvent,
    History,
    Mark,
    ReadBack,
    SampleColumns,
    Samples,
    time_of,
)
from gameday.secrets import redact
from gameday.stats import nearest_rank
from gameday.verdict import Verdict

__all__ = [
    "FAIL_COLOR",
    "FAULT_COLOR",
    "LATE_COLOR",
    "MAX_MARKS",
    "OK_COLOR",
    "REPORT_FILE",
    "VERDICTS_FILE",
    "VerdictRecord",
    "load_verdicts",
    "write_report",
]

REPORT_FILE = "report.html"
VERDICTS_FILE = "verdicts.json"
# Most sample marks drawn in one chart: beyond a few thousand SVG nodes a page with many
# charts gets slow to open, and the plot is only ~830 px wide anyway.
MAX_MARKS = 2000

OK_COLOR = "#2ca02c"
FAIL_COLOR = "#d62728"
FAULT_COLOR = "#fde0b4"
RECOVERY_COLOR = "#1f5fbf"
LATE_COLOR = "#e08a00"
TICK_COLOR = "#7a5195"
# A white outline behind labels drawn over the data keeps them readable on top of marks.
HALO = 'stroke="#fff" stroke-width="3" stroke-linejoin="round" paint-order="stroke"'


# -- verdicts --------------------------------------------------------------------------------


def json_safe(value: Any, where: str, *, strict: bool = True) -> Any:
    """`value` as it will read back from JSON (tuples and sets become lists, keys strings),
    with every string redacted. What JSON cannot hold (NaN, objects) raises ValueError, or
    with `strict=False` becomes null (non-finite numbers) or its redacted text (objects):
    a verdict's measurements must never be what fails a step."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            if strict:
                raise ValueError(f"{where}: {value} is not a JSON number")
            return None
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            redact(str(k)): json_safe(v, f"{where}.{k}", strict=strict) for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [json_safe(v, f"{where}[{i}]", strict=strict) for i, v in enumerate(items)]
    if strict:
        raise ValueError(f"{where}: {type(value).__name__} is not JSON-safe")
    return redact(str(value))


@dataclass(frozen=True)
class VerdictRecord:
    """One verdict of one scenario, as the report shows it and `verdicts.json` stores it.

    `scenario` is the pytest node id, `title` the scenario's name for people. `message` and
    every string in `measured` are redacted when the record is made, and `measured` is
    normalised to what JSON reads back, so a record survives `load_verdicts` unchanged.
    """

    scenario: str
    title: str
    check: str
    ok: bool
    message: str
    measured: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", redact(self.message))
        object.__setattr__(self, "measured", json_safe(dict(self.measured), "measured"))

    @classmethod
    def from_verdict(cls, scenario: str, title: str, verdict: Verdict) -> VerdictRecord:
        measured = json_safe(dict(verdict.measured), "measured", strict=False)
        return cls(scenario, title, verdict.check, verdict.ok, verdict.message, measured)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "check": self.check,
            "ok": self.ok,
            "message": self.message,
            "measured": self.measured,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerdictRecord:
        for name in ("scenario", "title", "check", "message"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"field {name!r} must be a string, got {data.get(name)!r}")
        if not isinstance(data.get("ok"), bool):
            raise ValueError(f"field 'ok' must be true or false, got {data.get('ok')!r}")
        measured = data.get("measured", {})
        if not isinstance(measured, dict):
            raise ValueError(f"field 'measured' must be an object, got {measured!r}")
        return cls(
            data["scenario"], data["title"], data["check"], data["ok"], data["message"], measured
        )


def load_verdicts(path: str | os.PathLike[str]) -> list[VerdictRecord]:
    """The verdicts of a run, read back from its `verdicts.json`; ValueError names the file
    and the verdict that cannot be read."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    items = data.get("verdicts") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected an object with a 'verdicts' list")
    out = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ValueError(f"expected an object, got {item!r:.60}")
            out.append(VerdictRecord.from_dict(item))
        except ValueError as exc:
            raise ValueError(f"{path}: verdict {i}: {exc}") from None
    return out


# -- scenarios in the history ----------------------------------------------------------------


BOUNDARIES = (MARK_SCENARIO_START, MARK_SCENARIO_END)


@dataclass(frozen=True)
class _Scenario:
    nodeid: str
    title: str
    outcome: str  # passed, failed, skipped; "unfinished" (no end mark); "not recorded"
    start: float
    end: float
    history: History  # its records only, boundary marks left out
    verdicts: list[VerdictRecord]


@dataclass(frozen=True)
class _FaultWindow:
    fault: str
    start: float
    end: float
    healed: bool


def _span(history: History) -> tuple[float, float]:
    """The earliest and latest time of any record (0, 0 when there is none)."""
    times = [time_of(r) for r in history.events]
    for probe in history.probes:
        samples = history.samples(probe)
        times += [samples[0].sent, samples[-1].sent]
    return min(times, default=0.0), max(times, default=0.0)


def _scenarios(history: History, verdicts: Sequence[VerdictRecord]) -> list[_Scenario]:
    # Each scenario is cut out of the run's history by bisection of every probe's send order
    # (History.window), not by a scan of all records per scenario.
    earliest, last = _span(history)
    run_id = history.header.run_id
    starts = [m for m in history.marks if m.name == MARK_SCENARIO_START]
    if not starts:
        body = history.window(None, None, leave_out=BOUNDARIES)
        first = min(0.0, earliest)
        title = f"Run {run_id}"
        return [_Scenario(run_id, title, "not recorded", first, last, body, list(verdicts))]

    by_id: dict[str, list[VerdictRecord]] = {}
    for v in verdicts:
        by_id.setdefault(v.scenario, []).append(v)
    ends = [m for m in history.marks if m.name == MARK_SCENARIO_END]
    used: set[int] = set()
    nodeids = [m.detail.get("scenario", f"scenario {i + 1}") for i, m in enumerate(starts)]
    # A scenario run twice (a rerun) shows its verdicts under its last run only.
    last_index = {nodeid: i for i, nodeid in enumerate(nodeids)}
    found: list[_Scenario] = []
    for i, (mark, nodeid) in enumerate(zip(starts, nodeids, strict=True)):
        end_mark = next(
            (
                e
                for j, e in enumerate(ends)
                if j not in used and e.detail.get("scenario") == nodeid and e.at >= mark.at
            ),
            None,
        )
        if end_mark is not None:
            used.add(ends.index(end_mark))
            end, outcome = end_mark.at, end_mark.detail.get("outcome", "not recorded")
        else:  # the run was killed, or the engine failed before writing the end
            end = starts[i + 1].at if i + 1 < len(starts) else last
            outcome = "unfinished"
        body = history.window(mark.at, end, leave_out=BOUNDARIES)
        mine = by_id.get(nodeid, []) if last_index[nodeid] == i else []
        title = mark.detail.get("title") or (mine[0].title if mine else nodeid)
        found.append(_Scenario(nodeid, title, outcome, mark.at, end, body, mine))
    # Verdicts of scenarios the history never saw start (e.g. a check run after the end).
    for nodeid, records in by_id.items():
        if nodeid not in last_index:
            empty = History(history.header, ())
            found.append(
                _Scenario(nodeid, records[0].title, "not recorded", 0.0, 0.0, empty, records)
            )
    return found


def _fault_windows(scenario: _Scenario) -> list[_FaultWindow]:
    """Each fault's window, from its first inject-start to its last heal-end; without a
    heal-end after the last injection it was never seen healed and runs to the scenario end."""
    out = []
    for fault in scenario.history.faults:
        events = [e for e in scenario.history.fault_events if e.fault == fault]
        starts = [e.at for e in events if e.phase == "inject-start"]
        if not starts:
            continue
        heal_ends = [e.at for e in events if e.phase == "heal-end"]
        if heal_ends and max(heal_ends) >= max(starts):
            out.append(_FaultWindow(fault, min(starts), max(heal_ends), healed=True))
        else:
            end = max(scenario.end, scenario.history.last_sample_time or scenario.end)
            out.append(_FaultWindow(fault, min(starts), end, healed=False))
    return out


def _phase_window(windows: Sequence[_FaultWindow]) -> Window | None:
    if not windows:
        return None
    return (min(w.start for w in windows), max(w.end for w in windows))


# -- formatting ------------------------------------------------------------------------------


def _e(text: str) -> str:
    """Text for the page: redacted, then escaped (the order matters: escaping first could
    break up a secret's shape and let it through)."""
    return html.escape(redact(text))


def _num(x: float) -> str:
    """A number for people: two decimals at most, no trailing zeros (2.5, 10, 0.05)."""
    text = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _rel(t: float, start: float) -> str:
    return f"+{_num(t - start)} s"


def _detail_text(detail: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in detail.items())


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `raw`."""
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    base = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * base >= raw * (1 - 1e-9):
            return m * base
    return 10 * base


# -- the timeline chart ----------------------------------------------------------------------

WIDTH, HEIGHT = 900, 164
LEFT, RIGHT = 58, 14
LABEL_ROWS = (10, 21)  # baselines of the rows that hold ground-truth tick labels
BAND_TOP, BAND_BOTTOM = 26, 38  # failures are drawn in this band, above the latency plot
PLOT_TOP, PLOT_BOTTOM = 44, 142
LABEL_CHAR_PX = 5.6  # rough width of a 10 px character, to keep labels from overlapping


@dataclass(frozen=True)
class _Tick:
    """A labelled moment; its texts are redacted when made, because the label is cut to fit
    and a cut URL no longer has the shape that `redact` recognises."""

    at: float
    label: str
    tooltip: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", redact(self.label))
        object.__setattr__(self, "tooltip", redact(self.tooltip))


@dataclass(frozen=True)
class _Chart:
    svg: str
    drawn: int  # sample marks drawn
    clipped: int  # successes slower than the y axis, drawn on its top edge
    y_max_ms: float


class _Frame:
    """Maps clock time and latency to pixels."""

    def __init__(self, start: float, span: float, y_max: float) -> None:
        self.start, self.span, self.y_max = start, span, y_max

    def x(self, t: float) -> float:
        frac = min(max((t - self.start) / self.span, 0.0), 1.0)
        return LEFT + frac * (WIDTH - LEFT - RIGHT)

    def y(self, ms: float) -> float:
        return PLOT_BOTTOM - min(ms / self.y_max, 1.0) * (PLOT_BOTTOM - PLOT_TOP)


def _y_max(latencies: list[float]) -> float:
    """Top of the latency axis: the slowest success, unless a few outliers would squash all
    the others to the bottom; then the p99 with room, and the outliers go on the top edge."""
    if not latencies:
        return 10.0
    # The nearest-rank p99 is the k-th largest: no need to sort a million latencies for it.
    k = len(latencies) - math.ceil(0.99 * len(latencies)) + 1
    slowest, p99 = max(latencies), heapq.nlargest(k, latencies)[-1]
    top = slowest if slowest <= 3 * max(p99, 1.0) else p99 * 1.5
    # Headroom: a flat series would otherwise run along the top edge, under the labels.
    return _nice_step(max(top * 1.15, 1.0))


def _thin(points: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """At most ~`budget` of the pixel positions, keeping the extremes of every group of
    columns: the shape of the series (and its slowest samples) stays visible."""
    unique = sorted(set(points))
    if len(unique) <= budget:
        return unique
    columns = WIDTH - LEFT - RIGHT + 1
    group = max(1, math.ceil(2 * columns / max(budget, 2)))
    lows: dict[int, int] = {}
    highs: dict[int, int] = {}
    for px, py in unique:
        g = (px - LEFT) // group
        lows[g] = max(lows.get(g, py), py)  # pixel y grows downwards: max is the fastest
        highs[g] = min(highs.get(g, py), py)
    firsts = {(px - LEFT) // group: px for px, _ in reversed(unique)}
    return sorted({(firsts[g], lows[g]) for g in lows} | {(firsts[g], highs[g]) for g in highs})


def _timeline(
    samples: SampleColumns,
    *,
    probe: str,
    start: float,
    end: float,
    windows: Sequence[_FaultWindow],
    heal_starts: Sequence[FaultEvent],
    recoveries: Sequence[tuple[float, str]],
    ticks: Sequence[_Tick],
    late: Sequence[float] = (),
) -> _Chart:
    sent, duration, ok = samples.sent, samples.duration, samples.ok
    span = max(end - start, (sent[-1] - start) if sent else 0.0, 1.0)  # sent: in send order
    # NaN (no duration: cut by a timeout) is the one value not equal to itself.
    latencies = [d * 1000 for d, good in zip(duration, ok, strict=True) if good and d == d]
    frame = _Frame(start, span, _y_max(latencies))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="timeline of {_e(probe)}" '
        'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" '
        'font-size="10">',
        f'<rect x="{LEFT}" y="{BAND_TOP}" width="{WIDTH - LEFT - RIGHT}" '
        f'height="{BAND_BOTTOM - BAND_TOP}" fill="#f3f3f3"/>',
        f'<text x="{LEFT - 6}" y="{BAND_BOTTOM - 3}" text-anchor="end" fill="#555">failed</text>',
    ]
    # Fault windows first: everything else is drawn over the shading.
    for w in windows:
        x0, x1 = round(frame.x(w.start)), round(frame.x(w.end))
        state = "healed" if w.healed else "not seen healed"
        parts.append(
            f'<rect class="fault" x="{x0}" y="{BAND_TOP}" width="{max(x1 - x0, 2)}" '
            f'height="{PLOT_BOTTOM - BAND_TOP}" fill="{FAULT_COLOR}"><title>{_e(w.fault)}: '
            f"{_rel(w.start, start)} to {_rel(w.end, start)} ({state})</title></rect>"
        )
    # Axes: y ticks in ms, x ticks in s since the scenario start.
    y_step = _nice_step(frame.y_max / 4)
    k = 0
    while k * y_step <= frame.y_max * (1 + 1e-9):
        y = round(frame.y(k * y_step)) + 0.5
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="#e2e2e2"/>'
            f'<text x="{LEFT - 6}" y="{y + 3.5}" text-anchor="end" fill="#555">'
            f"{_num(k * y_step)} ms</text>"
        )
        k += 1
    x_step = _nice_step(span / 8)
    k = 0
    while k * x_step <= span * (1 + 1e-9):
        x = round(frame.x(start + k * x_step)) + 0.5
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{PLOT_BOTTOM}" y2="{PLOT_BOTTOM + 4}" stroke="#888"/>'
            f'<text x="{x}" y="{PLOT_BOTTOM + 15}" text-anchor="middle" fill="#555">'
            f"{_num(k * x_step)} s</text>"
        )
        k += 1
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{PLOT_BOTTOM + 0.5}" '
        f'y2="{PLOT_BOTTOM + 0.5}" stroke="#888"/>'
        f'<line x1="{LEFT - 0.5}" x2="{LEFT - 0.5}" y1="{BAND_TOP}" y2="{PLOT_BOTTOM}" '
        'stroke="#888"/>'
    )
    for e in heal_starts:
        x = round(frame.x(e.at)) + 0.5
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{BAND_TOP}" y2="{PLOT_BOTTOM}" stroke="#b07a2a" '
            f'stroke-dasharray="3 3"><title>{_e(e.fault)}: heal started at '
            f"{_rel(e.at, start)}</title></line>"
        )
    # Ground-truth ticks, labels staggered over two rows; a label that fits in neither is
    # left to the tooltip.
    row_end = [-math.inf for _ in LABEL_ROWS]
    for tick in sorted(ticks, key=lambda t: t.at):
        x = round(frame.x(tick.at)) + 0.5
        label = tick.label if len(tick.label) <= 32 else tick.label[:31] + "…"
        width = len(label) * LABEL_CHAR_PX
        anchor, left_edge = ("start", x - 2) if x + width < WIDTH else ("end", x - width)
        row = next((i for i, e in enumerate(row_end) if left_edge > e + 4), None)
        text = ""
        if row is not None:
            row_end[row] = left_edge + width
            tx = x + 2 if anchor == "start" else x - 2
            text = (
                f'<text x="{tx}" y="{LABEL_ROWS[row]}" text-anchor="{anchor}" '
                f'fill="{TICK_COLOR}" {HALO}>{_e(label)}</text>'
            )
        parts.append(
            f'<g class="tick"><title>{_e(tick.tooltip)}</title>'
            f'<line x1="{x}" x2="{x}" y1="{BAND_TOP - 4}" y2="{PLOT_BOTTOM}" '
            f'stroke="{TICK_COLOR}" stroke-dasharray="1 3"/>'
            f'<line x1="{x}" x2="{x}" y1="{BAND_TOP - 6}" y2="{BAND_TOP + 2}" '
            f'stroke="{TICK_COLOR}" stroke-width="2"/>{text}</g>'
        )
    # Samples. Failures: one mark per pixel column, so none can be thinned away; successes
    # share the rest of the budget.
    fail_columns = sorted({round(frame.x(t)) for t, good in zip(sent, ok, strict=True) if not good})
    # A set of pixels, not a point per sample: a million samples fall on ~80k pixels.
    ok_points: set[tuple[int, int]] = set()
    clipped = 0
    to_x, to_y, y_max = frame.x, frame.y, frame.y_max
    for t, d, good in zip(sent, duration, ok, strict=True):
        if good:
            ms = d * 1000 if d == d else 0.0
            clipped += ms > y_max
            ok_points.add((round(to_x(t)), round(to_y(ms))))
    shown = _thin(list(ok_points), MAX_MARKS - len(fail_columns))
    parts.append(f'<g class="ok" fill="{OK_COLOR}">')
    parts.extend(f'<circle cx="{px}" cy="{py}" r="2"/>' for px, py in shown)
    parts.append(f'</g><g class="failed" fill="{FAIL_COLOR}">')
    parts.extend(
        f'<rect x="{px - 1}" y="{BAND_TOP}" width="3" height="{BAND_BOTTOM - BAND_TOP}"/>'
        for px in fail_columns
    )
    parts.append("</g>")
    parts.append(_late_marks(late, frame))
    for at, label in recoveries:
        x = round(frame.x(at)) + 0.5
        width = len(label) * LABEL_CHAR_PX
        anchor, tx = ("start", x + 3) if x + width + 3 < WIDTH else ("end", x - 3)
        parts.append(
            f'<g class="recovery"><line x1="{x}" x2="{x}" y1="{BAND_TOP}" y2="{PLOT_BOTTOM}" '
            f'stroke="{RECOVERY_COLOR}" stroke-width="1.5"/><text x="{tx}" '
            f'y="{PLOT_TOP + 22}" text-anchor="{anchor}" fill="{RECOVERY_COLOR}" '
            f'font-weight="600" {HALO}>{_e(label)}</text></g>'
        )
    for w in windows:  # labels last, so that nothing is drawn over them
        parts.append(
            f'<text class="fault-label" x="{round(frame.x(w.start)) + 4}" y="{PLOT_TOP + 10}" '
            f'fill="#8a4b00" font-weight="600" {HALO}>{_e(w.fault)}</text>'
        )
    parts.append("</svg>")
    return _Chart("".join(parts), len(shown) + len(fail_columns), clipped, frame.y_max)


# -- alerts: the pager's view of a scenario (kept apart: the rest of this file is shared) ----

ALERT_COLORS = {"firing": "#d62728", "delivered": "#1f5fbf", "resolved": "#2ca02c"}
ALERT_LANE_PX = 30
# What verdicts.json's "timings" takes from each scenario's verdicts (measured keys).
TIMINGS = {
    "time_to_detect_sec": "time_to_detect_sec",
    "time_to_recover_sec": "recovery_sec",
    "time_to_resolve_sec": "time_to_resolve_sec",
}


def scenario_timings(verdicts: Sequence[VerdictRecord]) -> list[dict[str, Any]]:
    """Per scenario, side by side: time to detect (its first alert), time to recover (its
    slowest probe) and time to resolve (its slowest alert), as its verdicts measured them."""
    out: dict[str, dict[str, Any]] = {}
    for v in verdicts:
        row = out.setdefault(v.scenario, {"scenario": v.scenario, "title": v.title})
        for key, measured in TIMINGS.items():
            value = v.measured.get(measured)
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            keep_smallest = key == "time_to_detect_sec"
            if key not in row or (value < row[key] if keep_smallest else value > row[key]):
                row[key] = value
    return [row for row in out.values() if len(row) > 2]


def _alert_marks(scenario: _Scenario) -> list[tuple[Mark, str]]:
    from gameday.history import MARK_ALERT_DELIVERED, MARK_ALERT_FIRING, MARK_ALERT_RESOLVED

    kinds = {
        MARK_ALERT_FIRING: "firing",
        MARK_ALERT_DELIVERED: "delivered",
        MARK_ALERT_RESOLVED: "resolved",
    }
    return [(m, kinds[m.name]) for m in scenario.history.marks if m.name in kinds]


def _alert_block(scenario: _Scenario, windows: Sequence[_FaultWindow]) -> str:
    """One time axis for the pager: fault windows, each alert firing, delivered and resolved,
    the recovery marks; then a table of the same moments. Empty without alert marks."""
    marks = _alert_marks(scenario)
    if not marks:
        return ""
    alerts = list(dict.fromkeys(m.detail.get("alert", "?") for m, _ in marks))
    start = scenario.start
    span = max(scenario.end - start, max(m.at - start for m, _ in marks), 1.0)
    frame = _Frame(start, span, 1.0)
    bottom = 10 + ALERT_LANE_PX * len(alerts)
    height = bottom + 22
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="alerts" '
        'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif" '
        'font-size="10">'
    ]
    for w in windows:
        x0, x1 = round(frame.x(w.start)), round(frame.x(w.end))
        parts.append(
            f'<rect class="fault" x="{x0}" y="6" width="{max(x1 - x0, 2)}" '
            f'height="{bottom - 6}" fill="{FAULT_COLOR}"><title>{_e(w.fault)}: '
            f"{_rel(w.start, start)} to {_rel(w.end, start)}</title></rect>"
        )
    for m in scenario.history.marks:
        if m.name == MARK_RECOVERED:
            x = round(frame.x(m.at)) + 0.5
            parts.append(
                f'<line class="recovery" x1="{x}" x2="{x}" y1="6" y2="{bottom}" '
                f'stroke="{RECOVERY_COLOR}" stroke-width="1.5"><title>recovered '
                f"{_e(m.detail.get('probe', ''))} at {_rel(m.at, start)}</title></line>"
            )
    for i, alert in enumerate(alerts):
        parts.append(_alert_lane(alert, marks, frame, 10 + ALERT_LANE_PX * (i + 0.5), scenario))
    step = _nice_step(span / 8)
    k = 0
    while k * step <= span * (1 + 1e-9):
        x = round(frame.x(start + k * step)) + 0.5
        parts.append(
            f'<text x="{x}" y="{bottom + 14}" text-anchor="middle" fill="#555">'
            f"{_num(k * step)} s</text>"
        )
        k += 1
    parts.append("</svg>")
    legend = " · ".join(
        f'<span class="swatch dot" style="background:{c}"></span>{k}'
        for k, c in ALERT_COLORS.items()
    )
    return (
        f'<div class="probe alerts"><h3>Alerts</h3>{"".join(parts)}<p class="counts">{legend}'
        f' · <span class="swatch" style="background:{FAULT_COLOR}"></span>fault window · '
        f'<span class="swatch" style="background:{RECOVERY_COLOR}"></span>recovered</p>'
        f"{_alert_table(marks, scenario, windows)}</div>"
    )


def _alert_lane(
    alert: str, marks: Sequence[tuple[Mark, str]], frame: _Frame, y: float, scenario: _Scenario
) -> str:
    mine = [(m, k) for m, k in marks if m.detail.get("alert", "?") == alert]
    parts = [
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}" stroke="#e2e2e2"/>'
        f'<text x="{LEFT + 2}" y="{y - 6}" fill="#555" {HALO}>{_e(alert)}</text>'
    ]
    fired = [m.at for m, k in mine if k == "firing"]
    resolved = [m.at for m, k in mine if k == "resolved"]
    if fired:  # the span it fired over, faintly
        x0 = round(frame.x(min(fired)))
        x1 = round(frame.x(max(resolved) if resolved else scenario.end))
        parts.append(
            f'<rect x="{x0}" y="{y - 3}" width="{max(x1 - x0, 2)}" height="6" '
            f'fill="{ALERT_COLORS["firing"]}" opacity="0.25"/>'
        )
    for m, kind in mine:
        x = round(frame.x(m.at)) + 0.5
        status = m.detail.get("status", "")
        where = m.detail.get("server") or m.detail.get("instance") or ""
        color = ALERT_COLORS["resolved" if status == "resolved" else kind]
        if kind == "delivered":  # under the lane: a delivery often coincides with a sighting
            shape = f'<circle cx="{x}" cy="{y + 7}" r="3.5" fill="{color}"/>'
        else:
            shape = (
                f'<rect x="{x - 4}" y="{y - 4}" width="8" height="8" fill="{color}" '
                f'transform="rotate(45 {x} {y})"/>'
            )
        what = f"{kind} ({status})" if status else kind
        on = f" on {where}" if where else ""
        parts.append(
            f'<g class="alert {kind}"><title>{_e(f"{alert} {what}{on}")} at '
            f"{_rel(m.at, scenario.start)}</title>{shape}</g>"
        )
    return "".join(parts)


def _alert_table(
    marks: Sequence[tuple[Mark, str]], scenario: _Scenario, windows: Sequence[_FaultWindow]
) -> str:
    """Each alert (by fingerprint): when it fired, reached the receiver, resolved and the
    receiver heard so, and its time to detect from the first fault's start."""
    rows: dict[str, dict[str, Any]] = {}
    for m, kind in marks:
        key = m.detail.get("fingerprint") or m.detail.get("alert", "?")
        where = m.detail.get("server") or m.detail.get("instance") or ""
        row = rows.setdefault(key, {"alert": m.detail.get("alert", "?"), "where": where})
        if kind == "delivered" and m.detail.get("status") == "resolved":
            kind = "resolution delivered"
        row.setdefault(kind, m.at)
    fault = min((w.start for w in windows), default=None)
    lines = []
    for row in rows.values():
        fired = row.get("firing")
        detect = "—"
        if fired is not None and fault is not None and fired >= fault:
            detect = f"{_num(fired - fault)} s"
        times = "".join(
            f"<td>{_rel(row[k], scenario.start) if k in row else '—'}</td>"
            for k in ("firing", "delivered", "resolved", "resolution delivered")
        )
        lines.append(
            f"<tr><td>{_e(row['alert'])}</td><td>{_e(row['where'])}</td>{times}"
            f"<td>{detect}</td></tr>"
        )
    head = (
        "<tr><th>alert</th><th>where</th><th>fired</th><th>delivered</th><th>resolved</th>"
        "<th>resolution delivered</th><th>time to detect</th></tr>"
    )
    return f'<table class="phases">{head}{"".join(lines)}</table>'


# -- late sends (gameday.checks.schedule.rate_kept) ------------------------------------------


@dataclass(frozen=True)
class _Late:
    """The samples of a probe that started late, as its `rate_kept` verdict tells which:
    sample k was due at `first_due + k / asked_rate`."""

    sent: list[float]  # send times of the late samples
    late_sec: float
    worst_sec: float


def _late_sends(probe: str, samples: Samples, verdicts: Sequence[VerdictRecord]) -> _Late | None:
    """None when no `rate_kept` verdict of this probe was recorded (nothing to tell)."""
    m = next(
        (v.measured for v in reversed(verdicts)
         if v.check == RATE_KEPT and v.measured.get("probe") == probe),
        None,
    )  # fmt: skip
    if m is None:
        return None
    try:
        first, rate, late_sec = (float(m[k]) for k in ("first_due", "asked_rate", "late_sec"))
    except (KeyError, TypeError, ValueError):  # a probe that never started: no first_due
        return None
    if rate <= 0:
        return None
    # From the columns: a long run's probe has hundreds of thousands of samples.
    lateness = [
        (t, t - (first + k / rate)) for t, k in zip(samples.sent(), samples.seqs(), strict=True)
    ]
    late = [(t, by) for t, by in lateness if by > late_sec]
    return _Late([t for t, _ in late], float(late_sec), max((by for _, by in late), default=0.0))


def _late_marks(late: Sequence[float], frame: _Frame) -> str:
    """One short mark per pixel column holding a late start, between the failure band and
    the latency plot."""
    if not late:
        return ""
    columns = sorted({round(frame.x(t)) for t in late})
    marks = "".join(
        f'<line x1="{px}" x2="{px}" y1="{BAND_BOTTOM + 1}" y2="{PLOT_TOP - 1}"/>' for px in columns
    )
    return (
        f'<g class="late" stroke="{LATE_COLOR}" stroke-width="2"><title>{len(late)} started '
        f"late</title>{marks}</g>"
    )


def _late_line(late: _Late | None) -> str:
    if late is None:
        return ""
    threshold = f"more than {_num(late.late_sec * 1000)} ms after their due time"
    if not late.sent:
        return f'<p class="counts late">late 0 (none started {threshold})</p>'
    return (
        f'<p class="counts late"><span class="swatch" style="background:{LATE_COLOR}"></span>'
        f"late {len(late.sent)} (started {threshold}; worst "
        f"{_num(late.worst_sec * 1000)} ms)</p>"
    )


# -- the page --------------------------------------------------------------------------------

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       color: #1f2328; background: #fff; margin: 0 auto; padding: 16px 24px; max-width: 960px; }
h1 { font-size: 22px; margin: 0 0 8px; }
h2 { font-size: 18px; margin: 0 0 4px; }
h3 { font-size: 15px; margin: 16px 0 4px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
              font-size: 12px; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.run dt { color: #59636e; }
dl.run dd { margin: 0; }
nav ol { margin: 8px 0 0; padding-left: 20px; }
section.scenario { border-top: 2px solid #d1d9e0; margin-top: 24px; padding-top: 12px; }
.sub { color: #59636e; font-size: 12px; margin: 0 0 8px; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { border: 1px solid #d1d9e0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.msg { overflow-wrap: anywhere; }
table.verdicts { width: 100%; }
table.verdicts td:not(.msg), table.verdicts th:not(:last-child) { width: 1%; white-space: nowrap; }
table.phases td.n { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0 7px; border-radius: 10px; font-size: 12px;
         font-weight: 600; border: 1px solid transparent; }
.passed, .PASS { background: #dafbe1; color: #116329; border-color: #aceebb; }
.failed, .FAIL { background: #b42318; color: #fff; }
.skipped { background: #eff2f5; color: #59636e; border-color: #d1d9e0; }
.unfinished, .not-recorded { background: #fff1c2; color: #7d4e00; border-color: #f0d67a; }
.probe { margin-top: 14px; }
.probe svg { display: block; max-width: 100%; height: auto; border: 1px solid #e6e9ec; }
.counts { margin: 4px 0; font-size: 13px; }
.swatch { display: inline-block; width: 10px; height: 10px; vertical-align: -1px;
          margin-right: 3px; }
.dot { border-radius: 5px; }
.lost { background: #fff5f5; border: 1px solid #f5c2c0; padding: 6px 10px; margin: 8px 0; }
.faults { margin: 6px 0; }
details { margin-top: 10px; font-size: 13px; }
details ul { margin: 4px 0; padding-left: 20px; }
footer { color: #59636e; font-size: 12px; margin-top: 32px; }
"""


def _badge(text: str) -> str:
    cls = text.replace(" ", "-")
    return f'<span class="badge {html.escape(cls)}">{_e(text)}</span>'


def _servers(counter: Counter[str]) -> str:
    if not counter:
        return "—"
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{_e(server)} {n}" for server, n in ranked)


@dataclass(frozen=True)
class PhaseSummary:
    """What the report's table says of one phase of one probe: the same figures as the checks'
    `latency_percentiles` (p50/p95/p99 in ms, nearest rank, successes only) and
    `servers_by_phase`, computed from columns (samples in send order, so a phase is a slice)."""

    total: int
    failed: int
    latency: dict[str, float] | None  # None: no successful sample with a duration
    servers: Counter[str]


def phase_summaries(samples: SampleColumns, window: Window) -> dict[str, PhaseSummary]:
    sent, duration, ok, server = samples.sent, samples.duration, samples.ok, samples.server
    # phase_of: before < start <= during <= end < after
    cuts = [0, bisect_left(sent, window[0]), bisect_right(sent, window[1]), len(sent)]
    cuts[2] = max(cuts[1], cuts[2])
    out: dict[str, PhaseSummary] = {}
    for phase, lo, hi in zip(PHASES, cuts, cuts[1:], strict=False):
        good = ok[lo:hi]
        values = sorted(
            d * 1000 for d, g in zip(duration[lo:hi], good, strict=True) if g and d == d
        )
        latency = None
        if values:
            latency = {
                "p50": nearest_rank(values, 50),
                "p95": nearest_rank(values, 95),
                "p99": nearest_rank(values, 99),
                "count": float(len(values)),
            }
        by_id = Counter(compress(server[lo:hi], good))
        servers: Counter[str] = Counter()
        for sid, n in by_id.items():
            servers[samples.names[sid] or UNKNOWN_SERVER] += n
        out[phase] = PhaseSummary(hi - lo, good.count(0), latency, servers)
    return out


def _phase_table(samples: SampleColumns, window: Window | None, start: float) -> str:
    # Without a fault every sample is "before" an infinitely late window: one row.
    judged = window if window is not None else (math.inf, math.inf)
    summaries = phase_summaries(samples, judged)
    # Write probes (ledger rows, cache keys) have no serving server: say nothing, not
    # "(unknown)", which reads as a server the target does not list.
    has_servers = any(samples.names[sid] for sid in set(samples.server))
    rows = []
    for phase in PHASES if window is not None else ("before",):
        if window is None:
            name, span = "whole scenario", ""
        elif phase == "before":
            name, span = phase, f"&lt; {_rel(window[0], start)}"
        elif phase == "during":
            name, span = phase, f"{_rel(window[0], start)} to {_rel(window[1], start)}"
        else:
            name, span = phase, f"&gt; {_rel(window[1], start)}"
        summary = summaries[phase]
        lat = summary.latency
        cells = [f"{lat[p]:.1f} ms" if lat else "—" for p in ("p50", "p95", "p99")]
        rows.append(
            f"<tr><td>{name}</td><td>{span}</td><td class=n>{summary.total}</td>"
            f"<td class=n>{summary.failed}</td>"
            + "".join(f"<td class=n>{c}</td>" for c in cells)
            + f"<td>{_servers(summary.servers) if has_servers else '—'}</td></tr>"
        )
    head = (
        "<tr><th>phase</th><th>sent</th><th>samples</th><th>failed</th><th>p50</th>"
        "<th>p95</th><th>p99</th><th>answered by (successes)</th></tr>"
    )
    return f'<table class="phases">{head}{"".join(rows)}</table>'


def _counts_line(samples: Samples, ok: int, windows: Sequence[_FaultWindow]) -> str:
    kinds = Counter(failure_kind(s) for s in samples.failed())
    parts = [f'<span class="swatch dot" style="background:{OK_COLOR}"></span>ok {ok}']
    if kinds:
        by_kind = ", ".join(
            f"{_e(k)} {n}" for k, n in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        parts.append(
            f'<span class="swatch" style="background:{FAIL_COLOR}"></span>'
            f"failed {sum(kinds.values())} ({by_kind})"
        )
    else:
        parts.append("failed 0")
    if windows:
        parts.append(f'<span class="swatch" style="background:{FAULT_COLOR}"></span>fault window')
    return '<p class="counts">' + " · ".join(parts) + "</p>"


def _recovery_reference(at: float, scenario: _Scenario, windows: Sequence[_FaultWindow]) -> float:
    """What a recovery is counted from: the start of the latest fault injected before it."""
    begun = [w.start for w in windows if w.start <= at]
    return max(begun) if begun else scenario.start


def _probe_block(
    probe: str, scenario: _Scenario, windows: Sequence[_FaultWindow], ticks: Sequence[_Tick]
) -> str:
    hist = scenario.history
    samples = hist.samples(probe)
    columns = samples.columns()
    recoveries = [
        (m.at, f"recovered +{_num(m.at - _recovery_reference(m.at, scenario, windows))}s")
        for m in hist.marks
        if m.name == MARK_RECOVERED and m.detail.get("probe", probe) == probe
    ]
    heal_starts = [e for e in hist.fault_events if e.phase == "heal-start"]
    late = _late_sends(probe, samples, scenario.verdicts)
    chart = _timeline(
        columns,
        probe=probe,
        start=scenario.start,
        end=scenario.end,
        windows=windows,
        heal_starts=heal_starts,
        recoveries=recoveries,
        ticks=ticks,
        late=late.sent if late else (),
    )
    notes = []
    if chart.drawn < len(samples):
        notes.append(
            f"{chart.drawn} marks drawn for {len(samples)} samples (samples that fall on the "
            "same pixels are drawn once; every failure is drawn)"
        )
    if chart.clipped:
        notes.append(
            f"{chart.clipped} successes slower than {_num(chart.y_max_ms)} ms are drawn on the "
            "top edge of the plot"
        )
    final = hist.readback(probe)
    if final is not None:
        notes.append(f"final read at {_rel(final.at, scenario.start)}: {len(final.keys)} ids")
    note = f'<p class="sub">{_e("; ".join(notes))}</p>' if notes else ""
    return (
        f'<div class="probe"><h3>{_e(probe)}</h3>{chart.svg}'
        f"{_counts_line(samples, columns.ok.count(1), windows)}{_late_line(late)}"
        f"{_phase_table(columns, _phase_window(windows), scenario.start)}{note}</div>"
    )


def _ids_listing(ids: Any, count: Any) -> str:
    names = [str(i) for i in ids] if isinstance(ids, list) else []
    more = count - len(names) if isinstance(count, int) and count > len(names) else 0
    listed = ", ".join(f"<code>{_e(i)}</code>" for i in names)
    return listed + (f" and {more} more" if more else "")


def _lost_writes(verdicts: Sequence[VerdictRecord]) -> str:
    blocks = []
    for v in verdicts:
        m = v.measured
        lines = []
        if m.get("lost_ids"):
            of = f" of {m['acknowledged']}" if isinstance(m.get("acknowledged"), int) else ""
            lines.append(
                f"{_e(str(m.get('lost', len(m['lost_ids']))))}{of} acknowledged writes lost: "
                f"{_ids_listing(m['lost_ids'], m.get('lost'))}"
            )
        if m.get("duplicate_ids"):
            lines.append(
                f"{_e(str(m.get('duplicates', len(m['duplicate_ids']))))} writes applied more "
                f"than once: {_ids_listing(m['duplicate_ids'], m.get('duplicates'))}"
            )
        if lines:
            blocks.append(
                f'<div class="lost"><strong>Lost writes</strong> ({_e(v.check)}):<br>'
                + "<br>".join(lines)
                + "</div>"
            )
    return "".join(blocks)


def _verdict_table(verdicts: Sequence[VerdictRecord]) -> str:
    if not verdicts:
        return '<p class="sub">No verdicts recorded for this scenario.</p>'
    rows = "".join(
        f"<tr><td><code>{_e(v.check)}</code></td><td>{_badge('PASS' if v.ok else 'FAIL')}</td>"
        f'<td class="msg">{_e(v.message)}</td></tr>'
        for v in verdicts
    )
    return (
        '<table class="verdicts"><tr><th>check</th><th>verdict</th><th>message</th></tr>'
        f"{rows}</table>"
    )


def _events(scenario: _Scenario) -> str:
    items: list[tuple[float, str]] = []
    for r in scenario.history.events:
        if isinstance(r, FaultEvent):
            extra = f" ({_detail_text(r.detail)})" if r.detail else ""
            items.append((r.at, f"fault {r.fault}: {r.phase}{extra}"))
        elif isinstance(r, Mark):
            extra = f": {_detail_text(r.detail)}" if r.detail else ""
            items.append((r.at, f"{r.name}{extra}"))
        elif isinstance(r, ReadBack):
            items.append((r.at, f"final read of {r.probe}: {len(r.keys)} ids"))
    if not items:
        return ""
    lis = "".join(
        f"<li><span class=mono>{_rel(at, scenario.start)}</span> {_e(text)}</li>"
        for at, text in sorted(items, key=lambda it: it[0])
    )
    return f"<details><summary>Events ({len(items)})</summary><ul>{lis}</ul></details>"


def _ticks(scenario: _Scenario) -> list[_Tick]:
    ticks = []
    for m in scenario.history.marks:
        if m.name == MARK_RECOVERED:
            continue
        label = m.detail.get("event") or m.name
        tooltip = f"{_rel(m.at, scenario.start)} {m.name}"
        if m.detail:
            tooltip += f": {_detail_text(m.detail)}"
        ticks.append(_Tick(m.at, label, tooltip))
    for e in scenario.history.fault_events:
        if e.phase == "abort":
            ticks.append(_Tick(e.at, f"{e.fault} aborted", f"{_rel(e.at, scenario.start)} abort"))
    return ticks


def _scenario_section(index: int, scenario: _Scenario, wall_start: str) -> str:
    windows = _fault_windows(scenario)
    ticks = _ticks(scenario)
    faults = "".join(
        f'<p class="faults"><span class="swatch" style="background:{FAULT_COLOR}"></span>'
        f"Fault <strong>{_e(w.fault)}</strong>: {_rel(w.start, scenario.start)} to "
        f"{_rel(w.end, scenario.start)} ({_num(w.end - w.start)} s"
        f"{'' if w.healed else ', not seen healed: shown to the end of the scenario'})</p>"
        for w in windows
    )
    probes = scenario.history.probes
    charts = _alert_block(scenario, windows)
    charts += "".join(_probe_block(p, scenario, windows, ticks) for p in probes)
    if not charts:
        charts = '<p class="sub">No probe samples in this scenario.</p>'
    duration = (
        f" · {_num(scenario.end - scenario.start)} s" if scenario.end > scenario.start else ""
    )
    return (
        f'<section class="scenario" id="s{index}"><h2>{_e(scenario.title)} '
        f"{_badge(scenario.outcome)}</h2>"
        f'<p class="sub"><code>{_e(scenario.nodeid)}</code> · started {wall_start}{duration}</p>'
        f"{_verdict_table(scenario.verdicts)}{_lost_writes(scenario.verdicts)}{faults}{charts}"
        f"{_events(scenario)}</section>"
    )


def _render(history: History, verdicts: Sequence[VerdictRecord]) -> Iterator[str]:
    """The page, in parts: one scenario's section at a time, so that a run of hundreds of
    scenarios is never held as one string (nor twice, while it is written)."""
    header = history.header
    scenarios = _scenarios(history, verdicts)
    outcomes = Counter(s.outcome for s in scenarios)
    scenario_totals = ", ".join(
        [f"{outcomes[o]} {o}" for o in ("passed", "failed", "skipped")]
        + [f"{n} {o}" for o, n in outcomes.items() if o not in ("passed", "failed", "skipped")]
    )
    verdict_ok = sum(1 for v in verdicts if v.ok)
    started = header.started.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def wall(t: float) -> str:
        return header.clock.wall(t).strftime("%H:%M:%S UTC")

    nav = "".join(
        f'<li><a href="#s{i}">{_e(s.title)}</a> {_badge(s.outcome)}</li>'
        for i, s in enumerate(scenarios, start=1)
    )
    yield (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>gameday report: {_e(header.run_id)}</title><style>{_CSS}</style></head>"
        f"<body><header><h1>gameday report</h1><dl class=run>"
        f"<dt>run</dt><dd><code>{_e(header.run_id)}</code></dd>"
        f"<dt>target</dt><dd>{_e(header.target)}</dd>"
        f"<dt>started</dt><dd>{started}</dd>"
        f"<dt>scenarios</dt><dd>{scenario_totals}</dd>"
        f"<dt>verdicts</dt><dd>{verdict_ok} passed, {len(verdicts) - verdict_ok} failed</dd>"
        f"</dl></header><nav><ol>{nav}</ol></nav>"
    )
    for i, s in enumerate(scenarios, start=1):
        yield _scenario_section(i, s, wall(s.start))
    yield (
        "<footer>Times are seconds since each scenario started, on the run's monotonic clock; "
        "samples are placed at their send time.</footer></body></html>\n"
    )


def _write_atomic(path: Path, text: str | Iterable[str]) -> None:
    # A reader (or a run killed while writing) never sees half a file. open() rather than
    # mkstemp: the report gets the umask's permissions, not mkstemp's owner-only ones.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines([text] if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_report(
    folder: str | os.PathLike[str], history: History, verdicts: Sequence[VerdictRecord]
) -> Path:
    """Write `report.html` and `verdicts.json` into `folder` (made if missing) and return the
    path of the HTML report."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {
        "run_id": history.header.run_id,
        "target": history.header.target,
        "verdicts": [v.to_dict() for v in verdicts],
        "timings": scenario_timings(verdicts),
    }
    _write_atomic(folder / VERDICTS_FILE, json.dumps(payload, indent=2, allow_nan=False) + "\n")
    report = folder / REPORT_FILE
    _write_atomic(report, _render(history, verdicts))
    return report
