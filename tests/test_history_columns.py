"""The column file a finished run leaves next to its history: read back instead of parsing
every JSON line, but only while the history is exactly as it was, and never trusted over it.

Every damaged, stale or hostile column file here must leave `read_history` giving exactly
what the JSON lines say (the column file is a cache; the JSON lines are the record).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import gameday.history as gh
from gameday.clock import Clock
from gameday.history import (
    FaultEvent,
    History,
    HistoryWriter,
    Mark,
    ReadBack,
    RunHeader,
    Sample,
    columns_path,
    read_history,
    write_columns,
)
from tests.conftest import generic_target

SAMPLES = 60


def finished(folder: Path, samples: int = SAMPLES) -> Path:
    """A history as a run writes it (two probes, an outage, a final read), its column file
    written as `Run.finish` does."""
    path = folder / "history.jsonl"
    with HistoryWriter(path, RunHeader.create("r", "t", Clock())) as writer:
        writer.append(Mark("scenario-start", 0.5, {"scenario": "t::a"}))
        for i in range(samples):
            ok = not 20 <= i < 30
            writer.append(Sample("orders", i, 1 + i / 10, 0.003 if ok else None, ok,
                                 error=None if ok else "timeout", key=f"o-{i}",
                                 outcome="ok" if ok else "info"))  # fmt: skip
            up = i % 7 != 0
            writer.append(Sample("GET /health", i, 1 + i / 10, 0.002, up, 200 if up else 503,
                                 None if up else "http", "server1"))  # fmt: skip
            if i == 20:
                writer.append(FaultEvent("db", "inject-start", 3.0, {"how": "reboot"}))
        writer.append(ReadBack("orders", 99.0, [f"o-{i}" for i in range(samples) if i != 5]))
    write_columns(writer)
    return path


def from_lines(path: Path) -> History:
    """What the JSON lines alone say."""
    cpath = columns_path(path)
    kept = cpath.read_bytes() if cpath.exists() else None
    cpath.unlink(missing_ok=True)
    try:
        return read_history(path)
    finally:
        if kept is not None:
            cpath.write_bytes(kept)


@pytest.fixture(autouse=True)
def small_runs_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gh, "COLUMNS_MIN_SAMPLES", 10)


def lines_never_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gh._Reader, "feed", lambda *_: pytest.fail("the JSON lines were parsed"))


def test_a_finished_run_is_read_from_its_columns_as_its_lines_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = finished(tmp_path)
    expected = from_lines(path)
    assert columns_path(path).exists()
    lines_never_parsed(monkeypatch)
    history = read_history(path)
    assert history == expected
    assert history.samples("orders").keys("ok") == expected.samples("orders").keys("ok")
    assert history.readback("orders") == expected.readback("orders")
    assert [e.phase for e in history.fault_events] == ["inject-start"]


def test_a_small_run_leaves_no_column_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gh, "COLUMNS_MIN_SAMPLES", 10_000)
    path = finished(tmp_path)
    assert not columns_path(path).exists()
    assert len(read_history(path).samples("orders")) == SAMPLES


def test_columns_are_written_only_once_the_history_is_closed(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path / "h.jsonl", RunHeader.create("r", "t", Clock()))
    with pytest.raises(ValueError, match="still being written"):
        write_columns(writer)
    writer.close()


def _append_line(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b'{"kind":"mark","name":"late","at":100.0,"detail":{}}\n')


def _same_size_other_bytes_same_mtime(path: Path) -> None:
    st = path.stat()
    data = bytearray(path.read_bytes())
    at = data.rindex(b'"o-58"')
    data[at : at + 6] = b'"o-57"'  # the final read now names o-57 twice and o-58 never
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _touched(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.mark.parametrize("change", [_append_line, _same_size_other_bytes_same_mtime, _touched])
def test_a_history_changed_after_its_columns_is_read_from_its_lines(
    tmp_path: Path, change: Callable[[Path], None]
) -> None:
    path = finished(tmp_path)
    change(path)
    assert read_history(path) == from_lines(path)


def test_a_history_changed_after_its_columns_gets_the_verdict_its_lines_deserve(
    tmp_path: Path,
) -> None:
    from gameday.checks.resilience import lost_writes_in

    path = finished(tmp_path)
    before = lost_writes_in(read_history(path), "orders").message
    assert "1 of 50 acknowledged writes lost" in before
    _same_size_other_bytes_same_mtime(path)
    message = lost_writes_in(read_history(path), "orders").message
    assert "2 of 50 acknowledged writes lost" in message and "applied more than once" in message


def _meta_and_arrays(cpath: Path) -> tuple[dict[str, Any], bytes]:
    data = cpath.read_bytes()
    magic_end = data.index(b"\n") + 1
    meta_end = data.index(b"\n", magic_end) + 1
    return json.loads(data[magic_end:meta_end]), data[meta_end:]


def _rewrite(cpath: Path, meta: dict[str, Any], arrays: bytes) -> None:
    cpath.write_bytes(gh._COLUMNS_MAGIC + json.dumps(meta).encode() + b"\n" + arrays)


def _poke(name: str, value: float, fmt: str) -> Callable[[Path], None]:
    """Set the first value of the sample array `name` (packed as `fmt`)."""

    def damage(cpath: Path) -> None:
        meta, arrays = _meta_and_arrays(cpath)
        offset = 0
        for array_name, _, itemsize, length in meta["arrays"]:
            if array_name == name:
                packed = struct.pack(fmt, value)
                arrays = arrays[:offset] + packed + arrays[offset + len(packed) :]
                break
            offset += itemsize * length
        _rewrite(cpath, meta, arrays)

    return damage


def _meta(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def damage(cpath: Path) -> None:
        meta, arrays = _meta_and_arrays(cpath)
        edit(meta)
        _rewrite(cpath, meta, arrays)

    return damage


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta.__setitem__(key, value)


def _claim_length(n: int) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        for a in meta["arrays"]:
            a[3] = n

    return edit


def _add_other(entry: list[Any]) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta["others"].append(entry)


def _reverse_others(meta: dict[str, Any]) -> None:
    meta["others"].reverse()


DAMAGES: dict[str, Callable[[Path], None]] = {
    "cut short": lambda p: p.write_bytes(p.read_bytes()[:-5]),
    "bytes added": lambda p: p.write_bytes(p.read_bytes() + b"\0" * 8),
    "other magic": lambda p: p.write_bytes(b"GAMEDAY-COLUMNS 9" + p.read_bytes()[17:]),
    "binary garbage": lambda p: p.write_bytes(os.urandom(4096)),
    "empty": lambda p: p.write_bytes(b""),
    "meta not JSON": lambda p: p.write_bytes(gh._COLUMNS_MAGIC + b"{nope\n"),
    "meta nested deep": lambda p: p.write_bytes(gh._COLUMNS_MAGIC + b"[" * 100_000 + b"\n"),
    "a huge length": _meta(_claim_length(10**15)),
    "a negative length": _meta(_claim_length(-1)),
    "other byte order": _meta(_set("byteorder", "big" if sys.byteorder == "little" else "little")),
    "a string twice": _meta(lambda m: m.__setitem__("strings", ["orders", "orders"])),
    "a string that is not one": _meta(lambda m: m.__setitem__("strings", [1, 2, 3, 4])),
    "a sample among the others": _meta(
        _add_other([5, {"kind": "sample", "probe": "orders", "seq": 1, "sent": 1.0, "ok": True}])
    ),
    "others out of order": _meta(_reverse_others),
    "a probe id past the strings": _poke("probe", 999, "I"),
    "no probe": _poke("probe", 0, "I"),
    "ok neither 0 nor 1": _poke("ok", 2, "B"),
    "a send time not finite": _poke("sent", float("nan"), "d"),
    "a negative duration": _poke("duration", -1.0, "d"),
    "an error code past the kinds": _poke("error", 200, "B"),
    "an outcome code past the outcomes": _poke("outcome", 200, "B"),
    "a counter below -1": _poke("key_counter", -5, "q"),
}


@pytest.mark.parametrize("damage", list(DAMAGES), ids=list(DAMAGES))
def test_a_damaged_column_file_is_ignored_never_believed(tmp_path: Path, damage: str) -> None:
    path = finished(tmp_path)
    expected = from_lines(path)
    DAMAGES[damage](columns_path(path))
    assert read_history(path) == expected


def test_the_damages_above_each_change_a_file_that_is_otherwise_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The damages rewrite the file through the same helpers as an undamaged rewrite: that one
    # is still read from the columns, so each damage above is what made the difference.
    path = finished(tmp_path)
    _meta(lambda m: None)(columns_path(path))
    lines_never_parsed(monkeypatch)
    assert len(read_history(path).samples("orders")) == SAMPLES


def test_run_finish_leaves_the_column_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gameday.run import Run

    run = Run.start(generic_target("t"), tmp_path)
    for i in range(SAMPLES):
        run.record(Sample("GET /health", i, 1 + i / 10, 0.002, True, 200, None, "server1"))
    run.finish()
    path = run.folder / "history.jsonl"
    assert columns_path(path).exists()
    expected = from_lines(path)
    lines_never_parsed(monkeypatch)
    assert read_history(path) == expected
