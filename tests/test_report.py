"""Tests of the run's report (gameday.report) on hand-built histories.

The page is asserted on as people read it (its text, with tags stripped) and on the SVG
drawn for each probe; one test renders it in headless Chromium and looks at the pixels, so
a chart that is in the markup but not on the screen fails too.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import struct
import subprocess
import tempfile
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest

from gameday.checks.resilience import availability, lost_writes_in
from gameday.clock import Clock
from gameday.history import (
    FaultEvent,
    History,
    HistoryWriter,
    Mark,
    ReadBack,
    Record,
    RunHeader,
    Sample,
    read_history,
)
from gameday.report import (
    BAND_TOP,
    FAIL_COLOR,
    FAULT_COLOR,
    LEFT,
    MAX_MARKS,
    PLOT_BOTTOM,
    PLOT_TOP,
    RIGHT,
    WIDTH,
    VerdictRecord,
    load_verdicts,
    write_report,
)

FAILOVER = "features/resilience/database.feature::Database failover under load"
HEALTHY = "features/acceptance/health.feature::The entrypoint answers"
TITLE = 'Failover <script>alert("x")</script> & "quotes"'
DSN = "postgresql://gameday:hunter2secret@db.internal:5432/cloudmart"
# Long enough that a tick label showing it is cut before the "@".
REDIS_URL = "redis://:hunter2secret-and-more@cache.internal:6379"

# -- builders --------------------------------------------------------------------------------


def header(run_id: str = "run-2024-05-01") -> RunHeader:
    return RunHeader.create(run_id, "lab", Clock(wall_anchor=1_714_557_600.0, monotonic_anchor=0))


def start(nodeid: str, at: float, title: str) -> Mark:
    return Mark("scenario-start", at, {"scenario": nodeid, "title": title})


def end(nodeid: str, at: float, outcome: str) -> Mark:
    return Mark("scenario-end", at, {"scenario": nodeid, "outcome": outcome})


def health_samples() -> list[Sample]:
    """GET /health every 0.1 s from 1 s to 59.9 s (590 samples): refused from 15 s to 17 s,
    timeouts from 17 s to 20 s; 10 ms from app-1 outside the fault, 40 ms from app-2 in it."""
    out = []
    for i in range(590):
        t = round(1.0 + i * 0.1, 6)
        error = "refused" if 15 <= t < 17 else "timeout" if 17 <= t < 20 else None
        faulted = 10 <= t <= 30
        out.append(
            Sample(
                probe="GET /health", seq=i, sent=t, ok=error is None,
                duration=None if error else (0.04 if faulted else 0.01),
                status=None if error else 200, error=error,
                server=None if error else ("app-2" if faulted else "app-1"),
            )
        )  # fmt: skip
    return out


def order_samples() -> list[Sample]:
    """An order written every 0.5 s from 1 s: o-0 .. o-117, all acknowledged."""
    return [
        Sample("orders", i, 1.0 + i * 0.5, 0.02, True, 201, server="app-1", key=f"o-{i}",
               outcome="ok")
        for i in range(118)
    ]  # fmt: skip


LOST = ["o-7", "o-12", "o-30"]


def failover_run(path: Path) -> History:
    """Two scenarios in one run: a database failover (fault 10 s to 30 s, /health failing
    from 15 s to 20 s, recovered at 20 s, three orders lost) and an acceptance scenario with
    verdicts only. Written with the real writer and read back, as a run would."""
    with HistoryWriter(path, header()) as w:
        w.append(start(FAILOVER, 0.0, TITLE))
        records: list[Record] = [*health_samples(), *order_samples()]
        records += [
            FaultEvent("database-failover", "inject-start", 10.0),
            FaultEvent("database-failover", "inject-end", 11.0),
            Mark("ground-truth", 14.0, {"source": "pg_auto_failover", "event": "node_2 primary"}),
            Mark("ground-truth", 14.5, {"source": "sentinel", "event": f"to {REDIS_URL}"}),
            Mark("recovered", 20.0, {"probe": "GET /health"}),
            FaultEvent("database-failover", "heal-start", 29.0),
            FaultEvent("database-failover", "heal-end", 30.0),
            ReadBack("orders", 59.5, [f"o-{i}" for i in range(118) if f"o-{i}" not in LOST]),
        ]
        for r in sorted(records, key=lambda r: r.sent if isinstance(r, Sample) else r.at):
            w.append(r)
        w.append(end(FAILOVER, 60.0, "failed"))
        w.append(start(HEALTHY, 61.0, "The entrypoint answers"))
        w.append(end(HEALTHY, 62.0, "passed"))
    return read_history(path)


def failover_verdicts(history: History) -> list[VerdictRecord]:
    health = availability(history.samples("GET /health"), window=(10.0, 30.0), min_ratio=0.99)
    assert not health.ok
    lost = lost_writes_in(history, "orders")
    assert not lost.ok and lost.measured["lost_ids"] == LOST
    return [
        VerdictRecord.from_verdict(FAILOVER, TITLE, health),
        VerdictRecord.from_verdict(FAILOVER, TITLE, lost),
        VerdictRecord(FAILOVER, TITLE, "steady_state", True, "healthy before the fault", {}),
        VerdictRecord(
            HEALTHY, "The entrypoint answers", "entrypoint_healthy", False,
            f"could not reach {DSN}: <timeout> & gave up", {"tries": 3, "dsn": DSN},
        ),
    ]  # fmt: skip


BLOCKS = {"br", "dd", "div", "dt", "h1", "h2", "h3", "li", "p", "section", "td", "th", "tr"}


class _Text(HTMLParser):
    """The words of a page as a reader sees them: tags dropped (a block or a table cell
    ends with a space), entities decoded, whitespace collapsed, <style> left out."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        if tag in BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag in BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.parts.append(data)


def text_of(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return re.sub(r"\s+", " ", "".join(parser.parts)).strip()


def sections(page: str) -> list[str]:
    """The text of each scenario's section, in page order."""
    return [text_of(s) for s in re.findall(r"<section\b.*?</section>", page, re.S)]


def charts(page: str) -> list[ET.Element]:
    """Every inline SVG of the page, parsed: each must be well-formed XML."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, re.S)]


SVG = "{http://www.w3.org/2000/svg}"


def fail_marks(svg: ET.Element) -> list[ET.Element]:
    return [r for g in svg.iter(f"{SVG}g") if g.get("class") == "failed" for r in g]


def ok_marks(svg: ET.Element) -> list[ET.Element]:
    return [c for g in svg.iter(f"{SVG}g") if g.get("class") == "ok" for c in g]


def px(t: float, span: float) -> int:
    return round(LEFT + t / span * (WIDTH - LEFT - RIGHT))


@pytest.fixture
def report(tmp_path: Path) -> tuple[str, str, list[VerdictRecord], Path]:
    history = failover_run(tmp_path / "history.jsonl")
    verdicts = failover_verdicts(history)
    path = write_report(tmp_path, history, verdicts)
    page = path.read_text(encoding="utf-8")
    return page, text_of(page), verdicts, tmp_path


# -- the page --------------------------------------------------------------------------------


def test_writes_both_files_and_returns_the_page(
    report: tuple[str, str, list[VerdictRecord], Path],
) -> None:
    _, _, _, folder = report
    assert (folder / "report.html").is_file()
    assert (folder / "verdicts.json").is_file()
    assert sorted(p.name for p in folder.iterdir()) == [
        "history.jsonl",
        "report.html",
        "verdicts.json",
    ]  # fmt: skip  (no temporary file left behind)


def test_header_names_the_run_and_counts_outcomes(
    report: tuple[str, str, list[VerdictRecord], Path],
) -> None:
    _, text, _, _ = report
    assert "run run-2024-05-01 target lab started 2024-05-01 10:00:00 UTC" in text
    assert "scenarios 1 passed, 1 failed, 0 skipped" in text
    assert "verdicts 1 passed, 3 failed" in text


def test_scenarios_in_order_with_outcome_and_verdicts(
    report: tuple[str, str, list[VerdictRecord], Path],
) -> None:
    page, _, verdicts, _ = report
    failover, healthy = sections(page)
    assert failover.startswith(f"{TITLE} failed {FAILOVER} · started 10:00:00 UTC · 60 s")
    assert healthy.startswith(f"The entrypoint answers passed {HEALTHY}")
    health, lost = verdicts[0], verdicts[1]
    assert f"availability FAIL {health.message}" in failover
    assert f"lost_writes FAIL {lost.message}" in failover
    assert "steady_state PASS healthy before the fault" in failover
    assert "entrypoint_healthy FAIL could not reach" in healthy
    assert re.search(r'class="badge FAIL">FAIL<', page)
    # The scenario with verdicts only says so instead of drawing empty charts.
    assert "No probe samples in this scenario." in healthy
    assert len(charts(page)) == 2  # GET /health and orders, both in the failover


def test_fault_window_is_shaded_and_labelled(
    report: tuple[str, str, list[VerdictRecord], Path],
) -> None:
    page, text, _, _ = report
    assert "Fault database-failover: +10 s to +30 s (20 s)" in text
    health = charts(page)[0]
    shade = next(r for r in health.iter(f"{SVG}rect") if r.get("class") == "fault")
    assert shade.get("fill") == FAULT_COLOR
    # The scenario lasts 60 s: the window covers 10 s to 30 s of the x axis.
    assert int(shade.get("x", "")) == px(10, 60)
    assert int(shade.get("width", "")) == px(30, 60) - px(10, 60)
    labels = [t.text for t in health.iter(f"{SVG}text") if t.get("class") == "fault-label"]
    assert labels == ["database-failover"]


def test_failures_are_drawn_in_the_band_inside_the_window(
    report: tuple[str, str, list[VerdictRecord], Path],
) -> None:
    page, _, _, _ = report
    health, orders = charts(page)
    marks = fail_marks(health)
    assert marks and all(m.get("fill") is None and m.get("y") == str(BAND_TOP) for m in marks)
    xs = sorted(int(m.get("x", "")) + 1 for m in marks)  # a mark is 3 px centred on its time
    assert xs[0] == px(15, 60) and xs[-1] == px(19.9, 60)
    assert not fail_marks(orders)
    assert len(ok_marks(health)) > 100


def test_counts_percentiles_and_servers_by_phase(
    report: tuple[str, str, list[VerdictRecord], Path],
) -> None:
    _, text, _, _ = report
    assert "ok 540 · failed 50 (timeout 30, refused 20) · fault window" in text
    # before: 1 s .. 9.9 s; during: 10 s .. 30 s (201 sent, 50 failed); after: 30.1 .. 59.9 s
    assert "before < +10 s 90 0 10.0 ms 10.0 ms 10.0 ms app-1 90" in text
    assert "during +10 s to +30 s 201 50 40.0 ms 40.0 ms 40.0 ms app-2 151" in text
    assert "after > +30 s 299 0 10.0 ms 10.0 ms 10.0 ms app-1 299" in text
    assert "ok 118 · failed 0 · fault window" in text
    assert "final read at +59.5 s: 115 ids" in text


def test_recovery_and_ground_truth_are_marked(
    report: tuple[str, str, list[VerdictRecord], Path],
) -> None:
    page, _, _, _ = report
    health, orders = charts(page)

    def texts(svg: ET.Element) -> list[str]:
        return [t.text or "" for t in svg.iter(f"{SVG}text")]

    # Counted from the start of the fault (10 s): the recovery mark is at 20 s.
    assert "recovered +10s" in texts(health)
    assert not any(t.startswith("recovered") for t in texts(orders))  # another probe's
    for svg in (health, orders):
        assert "node_2 primary" in texts(svg)
        ticks = [g for g in svg.iter(f"{SVG}g") if g.get("class") == "tick"]
        assert len(ticks) == 2


def test_lost_writes_are_listed(report: tuple[str, str, list[VerdictRecord], Path]) -> None:
    page, text, _, _ = report
    assert "Lost writes (lost_writes): 3 of 118 acknowledged writes lost: o-7, o-12, o-30" in text
    assert "<code>o-12</code>" in page


def test_text_is_escaped_and_secrets_redacted(
    report: tuple[str, str, list[VerdictRecord], Path],
) -> None:
    page, text, _, folder = report
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;quotes&quot;" in page
    assert TITLE in text  # and reads as written
    assert "could not reach postgresql://gameday:***@db.internal:5432/cloudmart: <timeout>" in text
    # In a verdict message, and in a mark's detail that a tick label shows cut short.
    assert "hunter2secret" not in page
    assert "to redis://:***@cache.internal:6379" in page
    assert "hunter2secret" not in (folder / "verdicts.json").read_text()


# -- verdicts.json ---------------------------------------------------------------------------


def test_verdicts_round_trip(report: tuple[str, str, list[VerdictRecord], Path]) -> None:
    _, _, verdicts, folder = report
    assert load_verdicts(folder / "verdicts.json") == verdicts
    data = json.loads((folder / "verdicts.json").read_text())
    assert data["run_id"] == "run-2024-05-01" and len(data["verdicts"]) == 4


def test_verdict_record_is_json_safe_when_made() -> None:
    record = VerdictRecord("s", "t", "c", True, "m", {"ids": ("a", "b"), "by": {1: 2}})
    assert record.measured == {"ids": ["a", "b"], "by": {"1": 2}}
    with pytest.raises(ValueError, match=r"measured\.ratio"):
        VerdictRecord("s", "t", "c", True, "m", {"ratio": float("nan")})
    with pytest.raises(ValueError, match="not JSON-safe"):
        VerdictRecord("s", "t", "c", True, "m", {"when": object()})


def test_load_verdicts_names_the_bad_verdict(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.json"
    good = VerdictRecord("s", "t", "c", True, "m").to_dict()
    path.write_text(json.dumps({"verdicts": [good, {**good, "ok": "yes"}]}))
    with pytest.raises(ValueError, match=r"verdicts\.json: verdict 1: field 'ok'"):
        load_verdicts(path)
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match="not JSON"):
        load_verdicts(path)


# -- histories that are not the happy case ---------------------------------------------------


def test_history_without_scenario_marks_is_one_scenario(tmp_path: Path) -> None:
    records: list[Record] = [Sample("GET /health", i, i * 1.0, 0.005, True) for i in range(10)]
    verdicts = [
        VerdictRecord("a.feature::one", "One", "availability", True, "fine"),
        VerdictRecord("b.feature::two", "Two", "longest_outage", False, "too long"),
    ]
    page = write_report(tmp_path, History(header("solo"), tuple(records)), verdicts).read_text()
    text = text_of(page)
    assert "Run solo not recorded" in text
    assert "availability PASS fine" in text and "longest_outage FAIL too long" in text
    assert "ok 10 · failed 0" in text
    # No sample names a server (as for a write probe): no "(unknown)" server in the table.
    assert "whole scenario 10 0 5.0 ms 5.0 ms 5.0 ms —" in text and "(unknown)" not in text
    assert "fault window" not in text
    assert len(charts(page)) == 1


def test_killed_run_missing_heal_end_and_scenario_end(tmp_path: Path) -> None:
    records: list[Record] = [
        start(FAILOVER, 100.0, "Killed mid-fault"),
        FaultEvent("database-failover", "inject-start", 105.0),
        *(Sample("orders", i, 100.0 + i, None, i < 5, error=None if i < 5 else "timeout")
          for i in range(21)),
    ]  # fmt: skip
    page = write_report(tmp_path, History(header(), tuple(records)), []).read_text()
    text = text_of(page)
    assert "Killed mid-fault unfinished" in text
    assert "scenarios 0 passed, 0 failed, 0 skipped, 1 unfinished" in text
    # The window runs to the last record: the fault was never seen healed.
    assert "+5 s to +20 s (15 s, not seen healed" in text
    assert "ok 5 · failed 16 (timeout 16)" in text
    assert "No verdicts recorded for this scenario." in text
    shade = next(r for r in charts(page)[0].iter(f"{SVG}rect") if r.get("class") == "fault")
    assert int(shade.get("x", "")) + int(shade.get("width", "")) == px(20, 20)


def test_verdicts_of_a_scenario_the_history_never_saw(tmp_path: Path) -> None:
    records: list[Record] = [start(HEALTHY, 0.0, "Seen"), end(HEALTHY, 1.0, "skipped")]
    verdicts = [VerdictRecord("ghost.feature::x", "Never started", "c", False, "why")]
    text = text_of(write_report(tmp_path, History(header(), tuple(records)), verdicts).read_text())
    assert "Seen skipped" in text
    assert "Never started not recorded" in text and "c FAIL why" in text


def test_thousands_of_samples_are_thinned_but_every_failure_is_drawn(tmp_path: Path) -> None:
    rng = random.Random(7)
    failures = {2_000, 5_000, 9_000, 12_345, 15_000, 18_000, 19_990}
    samples = [
        Sample("GET /health", i, i * 0.01, None if i in failures else rng.uniform(0.002, 0.01),
               i not in failures, error="timeout" if i in failures else None)
        for i in range(20_000)
    ]  # fmt: skip
    samples[10_000] = Sample("GET /health", 10_000, 100.0, 0.025, True)  # the slowest
    page = write_report(tmp_path, History(header(), tuple(samples)), []).read_text()
    (svg,) = charts(page)
    ok, failed = ok_marks(svg), fail_marks(svg)
    assert len(ok) + len(failed) <= MAX_MARKS
    assert len(failed) == len(failures)  # each alone in its pixel column: none dropped
    # The slowest (25 ms, 2.5 times any other) survives the thinning, alone at its height.
    heights = sorted(int(c.get("cy", "")) for c in ok)
    assert heights[0] < heights[1] and heights[0] <= (PLOT_TOP + PLOT_BOTTOM) / 2
    text = text_of(page)
    assert "ok 19993 · failed 7 (timeout 7)" in text
    assert f"{len(ok) + len(failed)} marks drawn for 20000 samples" in text


# -- the page in a real browser --------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_TIMEOUT_SEC = 60


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB pixels) of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = depth = colour = interlace = -1
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length  # length, type, body, CRC
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    assert depth == 8 and interlace == 0 and colour in (2, 6), (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        at = y * (stride + 1)
        kind_ = raw[at]
        line = bytearray(raw[at + 1 : at + 1 + stride])
        if kind_ == 1:  # Sub
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 0xFF
        elif kind_ == 2:  # Up
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind_ == 3:  # Average
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 0xFF
        elif kind_ == 4:  # Paeth
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b = prev[x]
                c = prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        else:
            assert kind_ == 0, f"unknown PNG filter {kind_} on row {y}"
        prev = line
        rgb = bytearray(width * 3)
        for channel in range(3):
            rgb[channel::3] = line[channel::bpp]
        rows.append(bytes(rgb))
    return width, height, rows


def colour_counts(rows: Sequence[bytes]) -> Counter[tuple[int, int, int]]:
    counts: Counter[tuple[int, int, int]] = Counter()
    for row in rows:
        counts.update(zip(row[0::3], row[1::3], row[2::3], strict=True))
    return counts


def rgb(hex_colour: str) -> tuple[int, int, int]:
    value = int(hex_colour.lstrip("#"), 16)
    return (value >> 16, (value >> 8) & 0xFF, value & 0xFF)


def screenshot(page: Path) -> Counter[tuple[int, int, int]]:
    """The colours of `page` rendered by headless Chromium at 1200x1600."""
    with tempfile.TemporaryDirectory(prefix="gameday-chromium-", ignore_cleanup_errors=True) as d:
        shot = Path(d) / "shot.png"
        args = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={d}/profile", f"--screenshot={shot}",
            "--window-size=1200,1600", page.resolve().as_uri(),
        ]  # fmt: skip
        # Its own process group: the browser's helpers are ended with it, whatever happens.
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            output, _ = proc.communicate(timeout=CHROMIUM_TIMEOUT_SEC)
        except subprocess.TimeoutExpired:
            output = b"(timed out)"
        finally:
            with contextlib.suppress(ProcessLookupError):  # the whole group already exited
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert shot.is_file(), f"chromium wrote no screenshot: {output.decode(errors='replace')}"
        width, height, rows = decode_png(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    return colour_counts(rows)


def one_scenario(faulted: bool) -> History:
    records: list[Record] = [start(FAILOVER, 0.0, "Failover")]
    for i in range(300):
        t = i * 0.1
        broken = faulted and 12 <= t < 18
        records.append(
            Sample("GET /health", i, t, None if broken else 0.01 + (i % 7) * 0.002, not broken,
                   error="timeout" if broken else None, server="app-1")
        )  # fmt: skip
    if faulted:
        records += [
            FaultEvent("database-failover", "inject-start", 10.0),
            FaultEvent("database-failover", "heal-end", 20.0),
            Mark("recovered", 18.0, {"probe": "GET /health"}),
        ]
    records.append(end(FAILOVER, 30.0, "passed"))
    return History(header(), tuple(records))


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: apt-get install chromium")
def test_charts_render_in_chromium(tmp_path: Path) -> None:
    passing = [VerdictRecord(FAILOVER, "Failover", "availability", True, "fine")]
    broken = screenshot(write_report(tmp_path / "broken", one_scenario(True), passing))
    calm = screenshot(write_report(tmp_path / "calm", one_scenario(False), passing))
    fail, fault = rgb(FAIL_COLOR), rgb(FAULT_COLOR)
    # 60 failures over 6 s, ~83 px of 12 px-high band; the window 10 s to 20 s is ~276 px
    # wide and ~116 px high. The legend's swatches alone are 100 px each.
    assert broken[fail] > 600, broken[fail]
    assert broken[fault] > 20_000, broken[fault]
    assert calm[fail] == 0 and calm[fault] == 0, (calm[fail], calm[fault])
