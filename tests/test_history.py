"""Tests of the run's clock (gameday.clock) and history file (gameday.history).

The history is what every verdict is computed from, so these tests write real files: from
several threads, killed mid-line, killed by SIGKILL, damaged in the middle.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gameday.clock import Clock
from gameday.history import (
    FaultEvent,
    History,
    HistoryError,
    HistoryWriter,
    Mark,
    ReadBack,
    Record,
    RunHeader,
    Sample,
    read_history,
)

# -- builders --------------------------------------------------------------------------------


def header(run_id: str = "run-1") -> RunHeader:
    return RunHeader.create(run_id, "lab", Clock())


def sample(probe: str = "health", seq: int = 0, sent: float = 0.0, ok: bool = True) -> Sample:
    return Sample(probe, seq, sent, 0.004, ok, 200 if ok else None, None if ok else "refused")


def fault(phase: str, at: float, label: str = "database-failover") -> FaultEvent:
    return FaultEvent(label, phase, at)


def write(path: Path, records: list[Record], head: RunHeader | None = None) -> RunHeader:
    head = head or header()
    with HistoryWriter(path, head) as writer:
        for r in records:
            writer.append(r)
    return head


# -- the clock -------------------------------------------------------------------------------


def test_clock_counts_seconds_since_its_start_on_the_monotonic_clock() -> None:
    before = time.monotonic()
    clock = Clock()
    after = time.monotonic()
    assert before <= clock.monotonic_anchor <= after
    t1 = clock.now()
    time.sleep(0.02)
    t2 = clock.now()
    assert 0 <= t1 < t2
    assert t2 - t1 >= 0.02


def test_clock_maps_clock_time_to_utc_wall_time_from_one_anchor() -> None:
    clock = Clock(wall_anchor=1_700_000_000.0, monotonic_anchor=5_000.0)
    assert clock.wall(0.0) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert clock.wall(12.5) - clock.wall(0.0) == timedelta(seconds=12.5)
    assert clock.wall(12.5).tzinfo is UTC


def test_a_live_clock_maps_now_to_the_current_wall_time() -> None:
    clock = Clock()
    mapped = clock.wall(clock.now())
    assert abs((mapped - datetime.now(UTC)).total_seconds()) < 0.5


def test_clock_anchor_round_trips_through_a_dict() -> None:
    clock = Clock()
    again = Clock.from_dict(json.loads(json.dumps(clock.to_dict())))
    assert again == clock
    assert again.wall(42.0) == clock.wall(42.0)


@pytest.mark.parametrize(
    "data", [{"wall": 1.0}, {"wall": "x", "monotonic": 2.0}, {"wall": True, "monotonic": 1.0}]
)
def test_clock_refuses_a_broken_anchor(data: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="anchor"):
        Clock.from_dict(data)


def test_clock_needs_both_halves_of_an_anchor() -> None:
    with pytest.raises(ValueError, match="both"):
        Clock(wall_anchor=1.0)


# -- records ---------------------------------------------------------------------------------


def test_sample_refuses_an_error_kind_the_report_does_not_know() -> None:
    with pytest.raises(ValueError, match="timeout, refused"):
        Sample("health", 0, 1.0, 0.1, False, error="ECONNREFUSED")


def test_sample_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="outcome"):
        Sample("orders", 0, 1.0, 0.1, True, key="o-1", outcome="acked")


@pytest.mark.parametrize(
    ("sent", "duration", "match"),
    [(float("nan"), 0.1, "sent"), (float("inf"), 0.1, "sent"), (1.0, -0.001, "duration"),
     (1.0, float("nan"), "duration")],
)  # fmt: skip
def test_sample_refuses_times_that_are_not_times(sent: float, duration: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sample("health", 0, sent, duration, True)


def test_sample_is_a_frozen_value_with_its_defaults() -> None:
    # Sample writes its fields itself (one dict update, not a setattr each): it must still be
    # the dataclass it declares.
    s = Sample("health", 3, 1.5, None, False, error="timeout")
    assert s == Sample(probe="health", seq=3, sent=1.5, duration=None, ok=False, status=None,
                       error="timeout", server=None, key=None, outcome=None)  # fmt: skip
    assert hash(s) == hash(dataclasses.replace(s))
    assert dataclasses.astuple(s) == ("health", 3, 1.5, None, False, None, "timeout", None,
                                      None, None)  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seq = 4  # type: ignore[misc]
    assert dataclasses.replace(s, seq=4).seq == 4
    with pytest.raises(ValueError, match="outcome"):
        dataclasses.replace(s, outcome="acked")


def test_fault_event_refuses_an_unknown_phase() -> None:
    with pytest.raises(ValueError, match="inject-start"):
        FaultEvent("database-failover", "injected", 1.0)


def test_readback_keeps_duplicates_as_an_immutable_tuple() -> None:
    keys = ["o-1", "o-2", "o-1"]
    rb = ReadBack("orders", 80.0, keys)
    keys.append("o-3")
    assert rb.keys == ("o-1", "o-2", "o-1")


# -- writing and reading ---------------------------------------------------------------------


def test_every_kind_of_record_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "run" / "history.jsonl"
    records: list[Record] = [
        sample(sent=0.5),
        Sample("orders", 3, 1.25, None, False, None, "timeout", None, "o-3", "info"),
        Sample("orders", 4, 1.5, 0.02, True, 201, None, "server2", "o-4", "ok"),
        fault("inject-start", 10.0),
        Mark("primary", 14.2, {"pg_auto_failover": "node_2 primary"}),
        fault("heal-end", 60.0),
        ReadBack("orders", 80.0, ["o-4", "o-3"]),
    ]
    head = write(path, records)
    history = read_history(path)
    assert history.header == head
    assert history.header.started == head.clock.wall(0.0)
    assert history.records == tuple(records)
    assert history.marks[0].detail == {"pg_auto_failover": "node_2 primary"}
    first = path.read_text().splitlines()[0]
    assert json.loads(first)["kind"] == "header"


def test_none_fields_are_left_out_of_the_line_and_read_back_as_none(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    write(path, [Sample("health", 0, 1.0, None, False, error="timeout")])
    line = json.loads(path.read_text().splitlines()[1])
    assert line == {
        "kind": "sample", "probe": "health", "seq": 0, "sent": 1.0, "ok": False,
        "error": "timeout",
    }  # fmt: skip
    assert read_history(path).samples()[0].duration is None


def test_threads_append_whole_lines_in_their_own_order(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    threads_n, per_thread = 8, 500
    with HistoryWriter(path, header()) as writer:

        def probe(name: str) -> None:
            for seq in range(per_thread):
                writer.append(Sample(name, seq, seq * 0.01, 0.001, True, 200))

        threads = [threading.Thread(target=probe, args=(f"p{i}",)) for i in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    history = read_history(path)
    assert len(history.records) == threads_n * per_thread
    # What the writer kept in memory is the file, record for record, in the file's order.
    assert writer.records() == history.records
    assert writer.records(len(writer) - 3) == history.records[-3:]
    assert history.probes == [f"p{i}" for i in range(threads_n)]
    for name in history.probes:
        in_file_order = [
            r.seq for r in history.records if isinstance(r, Sample) and r.probe == name
        ]
        assert in_file_order == list(range(per_thread))


def test_an_appended_record_is_on_disk_before_the_writer_closes(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    writer = HistoryWriter(path, header())
    try:
        writer.append(sample(seq=7, sent=3.5))
        with open(path) as other:
            lines = other.read().splitlines()
        assert len(lines) == 2
        assert json.loads(lines[1])["seq"] == 7
        assert read_history(path).samples()[0].sent == 3.5
        assert not writer.closed
    finally:
        writer.close()


def test_records_survive_a_sigkill_of_the_writing_process(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    program = f"""
import os, signal
from gameday.clock import Clock
from gameday.history import HistoryWriter, RunHeader, Sample
writer = HistoryWriter({str(path)!r}, RunHeader.create("killed", "lab", Clock()))
for seq in range(100):
    writer.append(Sample("health", seq, seq * 0.1, 0.002, True, 200))
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = subprocess.run([sys.executable, "-c", program], cwd=Path(__file__).parent.parent)
    assert done.returncode == -9
    history = read_history(path)
    assert history.header.run_id == "killed"
    assert [s.seq for s in history.samples("health")] == list(range(100))


def test_a_last_line_cut_mid_write_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    write(path, [sample(seq=i, sent=float(i)) for i in range(3)])
    data = path.read_bytes()
    path.write_bytes(data[:-15])  # the kill came in the middle of the third sample's line
    history = read_history(path)
    assert [s.seq for s in history.samples()] == [0, 1]


def test_a_last_line_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    write(path, [sample(seq=i, sent=float(i)) for i in range(3)])
    path.write_bytes(path.read_bytes()[:-1])
    assert [s.seq for s in read_history(path).samples()] == [0, 1, 2]


def test_damage_in_the_middle_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    write(path, [sample(seq=i, sent=float(i)) for i in range(5)])
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2][:20] + "\n"  # line 3: a line cut short, but not the last one
    path.write_text("".join(lines))
    with pytest.raises(HistoryError) as caught:
        read_history(path)
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: not a JSON line")


def test_a_bad_field_names_the_line_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    write(path, [sample(seq=i, sent=float(i)) for i in range(3)])
    lines = path.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"ok":true', '"ok":"yes"')
    path.write_text("".join(lines))
    with pytest.raises(HistoryError, match=r"h\.jsonl:4: field 'ok' must be true or false"):
        read_history(path)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"kind":"sample","probe":"health","seq":1,"ok":true}', "missing field 'sent'"),
        ('{"kind":"probe"}', "unknown kind 'probe'"),
        ('{"kind":"header","run_id":"x"}', "a second header"),
        ("[1, 2]", "expected a JSON object"),
        ('{"kind":"sample","probe":"h","seq":1,"sent":1,"ok":false,"error":"boom"}', "'error'"),
    ],
)
def test_lines_that_are_not_records_are_refused(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "h.jsonl"
    write(path, [sample()])
    with open(path, "a") as f:
        f.write(line + "\n")
        f.write(json.dumps(sample(seq=2).to_dict()) + "\n")
    with pytest.raises(HistoryError, match=reason) as caught:
        read_history(path)
    assert caught.value.line == 3


def test_a_file_without_a_header_is_not_a_history(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(HistoryError, match="no header line"):
        read_history(empty)
    headless = tmp_path / "headless.jsonl"
    headless.write_text(json.dumps(sample().to_dict()) + "\n")
    with pytest.raises(HistoryError, match=r"headless\.jsonl:1: the first line must be the header"):
        read_history(headless)


def test_the_writer_never_appends_to_another_runs_history(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    write(path, [sample()])
    with pytest.raises(FileExistsError):
        HistoryWriter(path, header("run-2"))
    assert read_history(path).header.run_id == "run-1"


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "h.jsonl", header())
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.append(sample())


def test_a_record_that_is_not_json_is_refused_before_it_reaches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path, header()) as writer, pytest.raises(ValueError):
        writer.append(Sample("health", 0, 1.0, 0.1, True, key=float("nan")))  # type: ignore[arg-type]
    assert len(path.read_text().splitlines()) == 1


# -- the in-memory view ----------------------------------------------------------------------


def history_of(records: list[Record]) -> History:
    return History(header(), tuple(records))


def test_samples_come_in_send_order_whatever_order_they_completed_in() -> None:
    # A slow request completes (and is appended) after faster ones sent later.
    history = history_of([sample(seq=1, sent=1.0), sample(seq=0, sent=0.0), sample("cache", 0)])
    assert [s.seq for s in history.samples("health")] == [0, 1]
    assert [s.probe for s in history.samples()] == ["health", "cache", "health"]
    assert history.samples("nope") == ()
    assert history.probes == ["cache", "health"]


def test_the_final_read_of_a_probe_is_its_last_readback() -> None:
    history = history_of([ReadBack("orders", 70.0, ["a"]), ReadBack("orders", 80.0, ["a", "b"])])
    final = history.readback("orders")
    assert final is not None
    assert final.keys == ("a", "b")
    assert history.readback("cache") is None


def test_fault_window_runs_from_first_inject_start_to_last_heal_end() -> None:
    history = history_of(
        [
            sample(sent=5.0),
            fault("inject-start", 10.0),
            fault("inject-end", 11.0),
            fault("heal-start", 40.0),
            fault("heal-end", 42.5),
            sample(sent=90.0),
        ]
    )
    assert history.fault_window() == (10.0, 42.5)
    assert history.fault_window("database-failover") == (10.0, 42.5)


def test_fault_window_without_heal_end_runs_to_the_last_sample() -> None:
    history = history_of(
        [
            fault("inject-start", 10.0),
            sample(sent=55.0),
            fault("heal-start", 50.0),
            sample(sent=61.5),
            sample("cache", sent=58.0),
        ]
    )
    assert history.fault_window() == (10.0, 61.5)


def test_fault_window_of_a_fault_injected_again_and_never_healed_runs_to_the_end() -> None:
    history = history_of(
        [
            fault("inject-start", 10.0),
            fault("heal-end", 20.0),
            fault("inject-start", 30.0),
            sample(sent=70.0),
        ]
    )
    assert history.fault_window() == (10.0, 70.0)


def test_fault_window_picks_one_fault_by_label() -> None:
    history = history_of(
        [
            fault("inject-start", 10.0, "stop-server"),
            fault("heal-end", 20.0, "stop-server"),
            fault("inject-start", 30.0, "disable-nat"),
            fault("heal-end", 45.0, "disable-nat"),
        ]
    )
    assert history.fault_window("disable-nat") == (30.0, 45.0)
    assert history.fault_window("stop-server") == (10.0, 20.0)
    assert history.fault_window() == (10.0, 45.0)
    assert history.faults == ["stop-server", "disable-nat"]


def test_fault_window_is_none_when_nothing_was_injected() -> None:
    history = history_of([sample(sent=1.0), fault("abort", 2.0)])
    assert history.fault_window() is None
    assert history.fault_window("database-failover") is None
