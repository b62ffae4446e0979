"""The history's in-memory indexes, against the obvious rebuild from scratch.

A run keeps its history as typed columns with each probe's send order built as records arrive
(gameday.history). Every answer read from those indexes (a probe's samples in a time span, its
failures since a time, the scenario's events, a window of the history, the records in file
order) must be exactly what sorting and filtering all records again would give, on random
histories: samples completing out of send order, ties in send time, write ids of every shape.
And the live waits must cost what they read: a poll of the recovery wait or of an error
budget reads the same records with 20,000 records before the fault as with none (counted,
not timed).
"""

from __future__ import annotations

import random
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import gameday.history as gh
from gameday.checks.resilience import (
    PHASES,
    latency_percentiles,
    lost_writes,
    lost_writes_in,
    servers_by_phase,
)
from gameday.clock import Clock
from gameday.history import (
    ERROR_KINDS,
    FAULT_PHASES,
    MARK_SCENARIO_END,
    MARK_SCENARIO_START,
    FaultEvent,
    History,
    HistoryWriter,
    Mark,
    ReadBack,
    Record,
    RunHeader,
    Sample,
    read_history,
    time_of,
)
from gameday.report import BOUNDARIES, phase_summaries, write_report
from gameday.run import Run
from gameday.scenario import Scenario
from gameday.target import Target
from gameday.verdict import Verdict
from tests.conftest import generic_target

# -- random histories ------------------------------------------------------------------------
# Seeded, so that a failure names the seed that makes it again: `random_history(seed)`.

SEEDS = range(150)
PROBES = ("GET /health", "orders", "locust GET /")
IDS = ["", "0", "00", "007", "x-010", "o-9", "abc", "é1", "9" * 25, "a-" + "1" * 19, 'a"b']


def a_time(rng: random.Random) -> float:
    # On a coarse grid, so that ties (same send time, even same seq) happen often.
    return rng.randint(0, 40) / 4


def a_key(rng: random.Random) -> str | None:
    pick = rng.randrange(4)
    if pick == 0:
        return None
    if pick == 1:
        return f"gameday-run-s1-orders-{rng.randint(0, 10**6)}"
    if pick == 2:
        return rng.choice(IDS)
    return "".join(rng.choice("ab-_0123456789é ") for _ in range(rng.randint(0, 8)))


def a_sample(rng: random.Random) -> Sample:
    ok = rng.random() < 0.6
    return Sample(
        probe=rng.choice(PROBES),
        seq=rng.randint(-1, 30),
        sent=a_time(rng),
        duration=rng.choice([None, 0.0, rng.uniform(0, 5)]),
        ok=ok,
        status=rng.choice([None, 200, 201, 503, 0, -5, 2**31 - 1]),
        error=None if ok else rng.choice([None, *ERROR_KINDS]),
        server=rng.choice([None, "server1", "server2", ""]),
        key=a_key(rng),
        outcome=rng.choice([None, "ok", "info", "fail"]),
    )


def an_event(rng: random.Random) -> Record:
    pick = rng.randrange(3)
    if pick == 0:
        return FaultEvent(rng.choice(["db", "nat"]), rng.choice(FAULT_PHASES), a_time(rng))
    if pick == 1:
        name = rng.choice([MARK_SCENARIO_START, MARK_SCENARIO_END, "primary"])
        return Mark(name, a_time(rng))
    keys = [rng.choice(["o-1", "o-2"]) for _ in range(rng.randint(0, 3))]
    return ReadBack("orders", a_time(rng), keys)


def random_history(seed: int, *, size: int = 60, events: bool = True) -> list[Record]:
    rng = random.Random(seed)
    return [
        an_event(rng) if events and rng.random() < 0.25 else a_sample(rng)
        for _ in range(rng.randint(0, size))
    ]


def a_bound(rng: random.Random) -> float | None:
    return None if rng.random() < 0.25 else a_time(rng)


def header() -> RunHeader:
    return RunHeader.create("run-1", "lab", Clock())


def in_send_order(records: list[Record], probe: str) -> list[Sample]:
    # What History did before it kept indexes: filter, then a stable sort by (sent, seq).
    mine = [r for r in records if isinstance(r, Sample) and r.probe == probe]
    return sorted(mine, key=lambda s: (s.sent, s.seq))


def within(t: float, start: float | None, end: float | None) -> bool:
    return (start is None or t >= start) and (end is None or t <= end)


# -- the indexes agree with a rebuild --------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_a_window_of_the_history_is_what_filtering_every_record_gives(seed: int) -> None:
    records = random_history(seed)
    rng = random.Random(-seed)
    start, end = a_bound(rng), a_bound(rng)
    history = History(header(), records)
    assert history.records == tuple(records)
    assert len(history) == len(records)
    for probe in PROBES:
        assert list(history.samples(probe)) == in_send_order(records, probe)
    everything = sorted(
        (r for r in records if isinstance(r, Sample)), key=lambda s: (s.sent, s.seq)
    )
    assert list(history.samples()) == everything
    view = history.window(start, end, leave_out=BOUNDARIES)
    kept = [
        r
        for r in records
        if within(time_of(r), start, end) and not (isinstance(r, Mark) and r.name in BOUNDARIES)
    ]
    assert view.records == tuple(kept)
    assert view.probes == sorted({r.probe for r in kept if isinstance(r, Sample)})
    for probe in PROBES:
        assert list(view.samples(probe)) == in_send_order(kept, probe)
    assert view.fault_events == tuple(r for r in kept if isinstance(r, FaultEvent))
    sent = [r.sent for r in kept if isinstance(r, Sample)]
    assert view.last_sample_time == (max(sent) if sent else None)


@pytest.mark.parametrize("seed", SEEDS[::3])
def test_the_writers_live_answers_are_what_filtering_every_record_gives(
    tmp_path: Path, seed: int
) -> None:
    records = random_history(seed)
    rng = random.Random(-seed)
    since, until, first_record = a_bound(rng), a_bound(rng), rng.randint(0, 60)
    with HistoryWriter(tmp_path / "h.jsonl", header()) as writer:
        for r in records:
            writer.append(r)
        for probe in PROBES:
            mine = in_send_order(records, probe)
            got = writer.samples(probe, since=since, until=until)
            assert list(got) == [s for s in mine if within(s.sent, since, until)]
            t = since if since is not None else 0.0
            assert writer.failures(probe, since=t) == sum(
                1 for s in mine if not s.ok and s.sent >= t
            )
        expected_events = [
            r
            for k, r in enumerate(records)
            if not isinstance(r, Sample) and k >= first_record and within(time_of(r), since, None)
        ]
        assert writer.events(first_record=first_record, since=since) == expected_events
        snapshot = writer.history(since=since, first_record=first_record)
        assert snapshot.events == tuple(expected_events)
        for probe in PROBES:
            assert list(snapshot.samples(probe)) == [
                s for s in in_send_order(records, probe) if within(s.sent, since, None)
            ]
        assert writer.records() == tuple(records)


@pytest.mark.parametrize("seed", SEEDS[::5])
@pytest.mark.parametrize("chunk", [64, 300, 4 << 20])
def test_a_history_reads_back_as_written_whatever_the_chunks(
    tmp_path: Path, seed: int, chunk: int
) -> None:
    records = random_history(seed)
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, header()) as writer:
        for r in records:
            writer.append(r)
    saved = gh._CHUNK_BYTES
    gh._CHUNK_BYTES = chunk  # many chunks: the bulk path, its seams, and a header chunk
    try:
        again = read_history(path)
    finally:
        gh._CHUNK_BYTES = saved
    assert again.records == tuple(records)
    for probe in PROBES:
        assert list(again.samples(probe)) == in_send_order(records, probe)


def test_a_bad_line_far_into_a_long_file_is_named_exactly(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, header()) as writer:
        for i in range(5000):
            writer.append(Sample("GET /health", i, i * 0.01, 0.002, True, 200, server="server1"))
    lines = path.read_text().splitlines(keepends=True)
    lines[4321] = lines[4321].replace('"ok":true', '"ok":1')
    path.write_text("".join(lines))
    saved = gh._CHUNK_BYTES
    gh._CHUNK_BYTES = 20_000  # the damage sits in a later chunk, which was read in bulk
    try:
        with pytest.raises(gh.HistoryError, match="field 'ok' must be true or false") as caught:
            read_history(path)
    finally:
        gh._CHUNK_BYTES = saved
    assert caught.value.line == 4322


@pytest.mark.parametrize("seed", SEEDS)
def test_the_reports_phase_table_says_what_the_checks_say(seed: int) -> None:
    records = random_history(seed, size=80, events=False)
    rng = random.Random(-seed)
    start, end = a_time(rng), a_time(rng)
    history = History(header(), records)
    for probe in history.probes:
        ordered = history.samples(probe)
        summary = phase_summaries(ordered.columns(), (start, end))
        latency = latency_percentiles(ordered, window=(start, end))
        servers = servers_by_phase(ordered, window=(start, end))
        for phase in PHASES:
            assert summary[phase].latency == latency.get(phase)
            assert summary[phase].servers == +servers[phase]
            in_phase = [s for s in ordered if gh_phase(s.sent, start, end) == phase]
            assert summary[phase].total == len(in_phase)
            assert summary[phase].failed == sum(1 for s in in_phase if not s.ok)


def gh_phase(t: float, start: float, end: float) -> str:
    return "before" if t < start else "during" if t <= end else "after"


@pytest.mark.parametrize("seed", SEEDS)
def test_lost_writes_read_from_columns_judge_as_from_samples(seed: int) -> None:
    records = [r for r in random_history(seed, size=80, events=False) if isinstance(r, Sample)]
    history = History(
        header(), [*records, ReadBack("orders", 99.0, [s.key for s in records if s.key][::2])]
    )
    final = history.readback("orders")
    assert final is not None
    mine = [s for s in records if s.probe == "orders"]
    by_objects = lost_writes(
        (s.key for s in mine if s.outcome == "ok" and s.key is not None),
        (s.key for s in mine if s.outcome == "info" and s.key is not None),
        final.keys,
        probe="orders",
    )
    got = lost_writes_in(history, "orders")
    # The same judgement; a loss also says which servers acknowledged what (an addition).
    assert (got.check, got.ok) == (by_objects.check, by_objects.ok)
    assert got.message.startswith(by_objects.message)
    assert {k: got.measured[k] for k in by_objects.measured} == by_objects.measured


# -- what a kept record costs ----------------------------------------------------------------


def test_a_kept_sample_costs_at_most_100_bytes(tmp_path: Path) -> None:
    n = 60_000
    tracemalloc.start()
    try:
        with HistoryWriter(tmp_path / "h.jsonl", header()) as writer:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                if i % 3:
                    writer.append(
                        Sample("GET /health", i, i * 0.001, 0.0021, True, 200, None, "server1")
                    )
                else:
                    key = f"gameday-20260101T000000Z-lab-s1-orders-{i}"
                    writer.append(
                        Sample("orders", i, i * 0.001, 0.004, True, 201, key=key, outcome="ok")
                    )
            kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(writer) == n
    assert kept / n <= 100, f"{kept / n:.1f} bytes per kept sample"


# -- a poll costs what it reads --------------------------------------------------------------


class QuietProbe:
    """A probe that runs nothing: the test appends its samples itself."""

    def __init__(self, name: str, rate: float, timeout_sec: float) -> None:
        self.name, self.rate, self.timeout_sec = name, rate, timeout_sec

    def start(self) -> QuietProbe:
        return self

    def stop(self) -> None:
        pass


FAULT_AT = 200.0


def scenario_with(folder: Path, before: int) -> Scenario:
    """A scenario whose run began 1,000 s ago, with `before` records ahead of its fault, then
    the fault and the writer's outage (10 failures) and recovery (10 successes)."""
    raw = {"name": "polls", "provider": "generic", "entrypoint": {"url": "http://127.0.0.1:9"}}
    target = Target.model_validate(raw).model_copy(update={"source": "tests/inline"})
    clock = Clock(wall_anchor=time.time() - 1000, monotonic_anchor=time.monotonic() - 1000)
    writer = HistoryWriter(
        folder / f"run-{before}" / "history.jsonl", RunHeader.create("r", "polls", clock)
    )
    run = Run("r", target, folder / f"run-{before}", clock, writer)
    scenario = Scenario(run, "t::polls", "polls", False, lambda _: None, target, started=0.0)
    scenario.probes["orders"] = QuietProbe("orders", rate=10, timeout_sec=0.5)
    for i in range(before):
        t = 1.0 + i * (150.0 / max(before, 1))
        probe = "orders" if i % 2 else "GET /health"
        writer.append(Sample(probe, i, t, 0.003, i % 7 != 0, key=f"o-{i}", outcome="ok"))
    writer.append(FaultEvent("db", "inject-start", FAULT_AT))
    writer.append(FaultEvent("db", "inject-end", FAULT_AT + 0.5))
    for k in range(20):
        ok = k >= 10
        writer.append(
            Sample("orders", before + k, FAULT_AT + 0.1 * (k + 1), 0.003 if ok else None, ok,
                   error=None if ok else "timeout", key=f"o-{before + k}",
                   outcome="ok" if ok else "info")
        )  # fmt: skip
    return scenario


def made_per_poll(monkeypatch: pytest.MonkeyPatch, poll: Any) -> tuple[Any, int]:
    """Run `poll`; and how many samples it made into objects (every record: a failure)."""
    made = Counter[str]()
    make = gh._Columns.sample

    def counted(self: gh._Columns, i: int) -> Sample:
        made["samples"] += 1
        return make(self, i)

    with monkeypatch.context() as m:
        m.setattr(gh._Columns, "sample", counted)
        m.setattr(gh.History, "records", property(lambda _: pytest.fail("every record made")))
        result = poll()
    return result, made["samples"]


@pytest.mark.parametrize("before", [0, 20_000])
def test_a_recovery_poll_reads_the_samples_since_the_fault_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: int
) -> None:
    scenario = scenario_with(tmp_path, before)
    writer = scenario.run.writer
    handed = writer.touched
    verdict, made = made_per_poll(monkeypatch, lambda: scenario.recovered("orders", within_sec=30))
    assert isinstance(verdict, Verdict)
    assert verdict.ok, verdict.message
    assert verdict.measured["recovery_sec"] == pytest.approx(1.1)
    # 20 samples were sent after the fault: the poll read those, whatever came before.
    assert writer.touched - handed == 20
    assert made == 20
    writer.close()


@pytest.mark.parametrize("before", [0, 20_000])
def test_an_error_budget_poll_reads_no_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: int
) -> None:
    scenario = scenario_with(tmp_path, before)
    writer = scenario.run.writer
    handed = writer.touched
    failures, made = made_per_poll(monkeypatch, lambda: scenario.failures("orders", since=FAULT_AT))
    assert failures == 10
    assert made == 0 and writer.touched == handed
    start, made = made_per_poll(monkeypatch, scenario.fault_start)
    assert start == FAULT_AT and made == 0
    writer.close()


def test_the_run_reports_from_the_writers_memory_not_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = scenario_with(tmp_path, 1000)
    scenario.end("passed")
    monkeypatch.setattr(
        gh, "read_history", lambda *_: pytest.fail("the run read its history again")
    )
    monkeypatch.setattr(gh.History, "records", property(lambda _: pytest.fail("every record made")))
    report = scenario.run.finish()
    page = report.read_text()
    assert "orders" in page and "timeout 10" in page


def test_the_report_cuts_scenarios_without_making_every_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[Record] = []
    for n in range(3):
        base = n * 100.0
        records.append(Mark(MARK_SCENARIO_START, base, {"scenario": f"t::s{n}", "title": f"S{n}"}))
        records += [Sample("GET /health", i, base + i * 0.1, 0.002, True, 200) for i in range(50)]
        records.append(
            Mark(MARK_SCENARIO_END, base + 50, {"scenario": f"t::s{n}", "outcome": "passed"})
        )
    history = History(header(), records)
    monkeypatch.setattr(gh.History, "records", property(lambda _: pytest.fail("every record made")))
    page = write_report(tmp_path, history, []).read_text()
    assert page.count("<section") == 3
    assert page.count("ok 50") == 3


@pytest.mark.parametrize("seed", range(5))
def test_write_ids_split_in_a_run_as_one_by_one(seed: int) -> None:
    """The reader's shortcut for ids that share the previous prefix splits every id exactly as
    the general rule does: leading zeros, lone zeros, digits that are not ASCII, counters too
    long for 64 bits, ids with no counter, None."""
    rng = random.Random(seed)
    stems = ["o-", "a-0", "a-00", "", "x", "w-\u0661", "9-"]
    tails = ["0", "7", "07", "007", "10", "100", "1" * 19, "", "\u0662", "x", "12a"]
    keys: list[str | None] = [
        None if rng.random() < 0.05 else rng.choice(stems) + rng.choice(tails) for _ in range(2000)
    ]
    prefixes, counters = gh._split_keys(keys)
    assert list(zip(prefixes, counters, strict=True)) == [gh._split_key(k) for k in keys]


@pytest.mark.parametrize("seed", range(20))
def test_one_writers_ids_split_at_once_as_one_by_one(seed: int) -> None:
    """A chunk whose ids all share the first one's prefix is split at once: exactly as one by
    one, whatever the counters (lone zeros, leading zeros, too long, not ASCII, missing)."""
    rng = random.Random(seed)
    stem = rng.choice(["gameday-r1-s1-orders-", "o-", "a-0", "x"])
    tails = ["0", "7", "10", str(10**17), "9" * 18, "1" * 19, "07", "", "\u0662", "3x"]
    weights = [1.0] * 4 + [0.01 if rng.random() < 0.5 else 0.0] * 6  # usually plain counters
    keys: list[str | None] = [
        stem + rng.choices(tails, weights=weights)[0] if k else stem + str(rng.randrange(10**6))
        for k in range(500)
    ]
    prefixes, counters = gh._split_keys(keys)
    assert list(zip(prefixes, counters, strict=True)) == [gh._split_key(k) for k in keys]
    plain = [f"o-{n}" for n in range(1000)]
    assert gh._split_keys(list(plain)) == (["o-"] * 1000, list(range(1000)))


def test_the_ledgers_records_come_from_the_writers_memory_and_read_one_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gameday.ledger_plugin import run_records

    target = generic_target("polls")
    clock = Clock()
    writer = HistoryWriter(tmp_path / "run" / "history.jsonl", RunHeader.create("r", "t", clock))
    run = Run("r", target, tmp_path / "run", clock, writer)
    run.result("t::a", "a").outcome = "passed"
    writer.append(Mark("scenario-start", 1.0, {"scenario": "t::a"}))
    for i in range(5000):  # before the fault: quick answers that must not be counted
        writer.append(Sample("GET /health", i, 1.0 + i / 10_000, 0.002, True, 200))
    writer.append(FaultEvent("db", "inject-start", 10.0))
    for k in range(20):  # during it: 100 .. 119 ms
        writer.append(Sample("GET /health", 5000 + k, 10.1 + k / 100, (100 + k) / 1000, True, 200))
    writer.append(FaultEvent("db", "heal-end", 11.0))
    writer.append(Sample("GET /health", 6000, 12.0, 0.9, True, 200))  # after it
    writer.append(Mark("scenario-end", 13.0, {"scenario": "t::a"}))
    writer.close()
    monkeypatch.setattr(gh, "read_history", lambda *_: pytest.fail("the ledger read the file"))
    monkeypatch.setattr(gh.History, "records", property(lambda _: pytest.fail("every record made")))
    monkeypatch.setattr(gh.History, "__iter__", lambda _: pytest.fail("every record made"))
    (record,) = run_records(run, target, reported={"t::a"}, stopped=None, plan="p",
                            deployment_revision="d")  # fmt: skip
    assert {k: record.metrics[k] for k in ("p50", "p95", "p99")} == {
        "p50": 109.0, "p95": 118.0, "p99": 119.0,
    }  # fmt: skip
    assert record.started_at == clock.wall_anchor + 1.0
    assert record.ended_at == clock.wall_anchor + 13.0
