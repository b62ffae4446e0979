"""The history of a run: the append-only record of every probe sample and fault event.

A run writes its history as it grows, one JSON object per line (`history.jsonl`), and flushes
after every record: when the run is killed (even with SIGKILL) every record already appended
is in the operating system's hands and survives. Checks never watch a live run; they read the
history back (`read_history`) and judge it.

File layout: the first line is the `RunHeader` (run id, target, the clock's anchor); every
other line is one record, told apart by its `kind`:

    {"kind":"header","run_id":"...","target":"lab","clock":{...},"started":"...+00:00"}
    {"kind":"sample","probe":"health","seq":0,"sent":0.012,"duration":0.004,"ok":true,...}
    {"kind":"fault","fault":"database-failover","phase":"inject-start","at":10.0,"detail":{}}
    {"kind":"mark","name":"primary","at":14.2,"detail":{"pg_auto_failover":"node_2 primary"}}
    {"kind":"readback","probe":"orders","at":80.1,"keys":["o-1","o-2"]}

All times are seconds on the run's `Clock` (monotonic, 0 = run start). Optional fields that
are None are left out of a line, and read back as None.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeAlias, cast, get_args

from gameday.clock import Clock

# "silent": not an answer but its absence: the probe sent nothing when it was due (it stalled
# or died); checks put such samples into a probe's record where it fell silent.
ErrorKind: TypeAlias = Literal["timeout", "refused", "reset", "dns", "http", "silent", "other"]
# Jepsen's three outcomes of a write: "ok" acknowledged, "fail" definitely not applied,
# "info" unknown (e.g. a timeout after the request was sent: it may or may not have applied).
Outcome: TypeAlias = Literal["ok", "fail", "info"]
FaultPhase: TypeAlias = Literal["inject-start", "inject-end", "heal-start", "heal-end", "abort"]

# Names of the marks the engine itself puts on a run's timeline (the report draws them).
MARK_SCENARIO_START = "scenario-start"
MARK_SCENARIO_END = "scenario-end"
MARK_RECOVERED = "recovered"
MARK_HEAL_FAILED = "heal-failed"
MARK_LOCUST_SUMMARY = "locust-summary"
# Alert state changes, as the target's monitoring reported them (gameday/monitoring.py).
MARK_ALERT_FIRING = "alert-firing"
MARK_ALERT_DELIVERED = "alert-delivered"
MARK_ALERT_RESOLVED = "alert-resolved"

ERROR_KINDS: tuple[ErrorKind, ...] = get_args(ErrorKind)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
FAULT_PHASES: tuple[FaultPhase, ...] = get_args(FaultPhase)


class HistoryError(ValueError):
    """A history file that cannot be read: names the file and, where known, the line."""

    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


# -- records ---------------------------------------------------------------------------------


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value}")


def _check_detail(detail: Mapping[str, str]) -> None:
    # The file format promises strings; a number here would not read back as written.
    for k, v in detail.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"detail must map str to str, got {k!r}: {v!r}")


@dataclass(frozen=True)
class Sample:
    """One action of a probe and what came of it, timed by when it was *sent*.

    A request cut by its timeout has `duration` None, `ok` False and error "timeout". For a
    write probe, `key` is the write's id and `outcome` says whether it was acknowledged ("ok"),
    surely not applied ("fail") or of unknown fate ("info").
    """

    KIND: ClassVar[str] = "sample"

    probe: str
    seq: int
    sent: float
    duration: float | None
    ok: bool
    status: int | None = None
    # Typed str, not the Literal aliases, so a probe can pass what its classifier returned;
    # the values are still checked against ERROR_KINDS and OUTCOMES when the sample is made.
    error: str | None = None
    server: str | None = None
    key: str | None = None
    outcome: str | None = None

    def __post_init__(self) -> None:
        _check_finite("sent", self.sent)
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration >= 0):
            raise ValueError(f"duration must be >= 0 or None, got {self.duration}")
        if self.error is not None and self.error not in ERROR_KINDS:
            raise ValueError(f"error must be one of {', '.join(ERROR_KINDS)}, got {self.error!r}")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.KIND,
            "probe": self.probe,
            "seq": self.seq,
            "sent": self.sent,
            "ok": self.ok,
        }
        optional = {
            "duration": self.duration,
            "status": self.status,
            "error": self.error,
            "server": self.server,
            "key": self.key,
            "outcome": self.outcome,
        }
        out.update((k, v) for k, v in optional.items() if v is not None)
        return out


@dataclass(frozen=True)
class FaultEvent:
    """A step in the life of a fault: injection and healing each have a start and an end."""

    KIND: ClassVar[str] = "fault"

    fault: str
    phase: str  # one of FAULT_PHASES, checked when the event is made
    at: float
    # hash=False: a record stays hashable although its detail is a dict.
    detail: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_finite("at", self.at)
        if self.phase not in FAULT_PHASES:
            raise ValueError(f"phase must be one of {', '.join(FAULT_PHASES)}, got {self.phase!r}")
        _check_detail(self.detail)
        object.__setattr__(self, "detail", dict(self.detail))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "fault": self.fault,
            "phase": self.phase,
            "at": self.at,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Mark:
    """A moment worth showing on the timeline, often ground truth read from the system."""

    KIND: ClassVar[str] = "mark"

    name: str
    at: float
    detail: dict[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        _check_finite("at", self.at)
        _check_detail(self.detail)
        object.__setattr__(self, "detail", dict(self.detail))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "name": self.name, "at": self.at, "detail": self.detail}


@dataclass(frozen=True)
class ReadBack:
    """The ids a write probe's final consistent read found, duplicates kept (a duplicate id
    is a write applied twice). Stored as a tuple whatever sequence is given."""

    KIND: ClassVar[str] = "readback"

    probe: str
    at: float
    keys: Sequence[str] = field(hash=False)

    def __post_init__(self) -> None:
        _check_finite("at", self.at)
        if isinstance(self.keys, str):
            raise TypeError("keys must be a sequence of ids, not one string")
        object.__setattr__(self, "keys", tuple(self.keys))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "probe": self.probe, "at": self.at, "keys": list(self.keys)}


Record: TypeAlias = Sample | FaultEvent | Mark | ReadBack


@dataclass(frozen=True)
class RunHeader:
    """The first line of a history: which run, against which target, on which clock."""

    KIND: ClassVar[str] = "header"

    run_id: str
    target: str
    clock: Clock
    started: datetime  # UTC wall time of clock time 0, for people reading the file

    @classmethod
    def create(cls, run_id: str, target: str, clock: Clock) -> RunHeader:
        return cls(run_id, target, clock, clock.wall(0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "run_id": self.run_id,
            "target": self.target,
            "clock": self.clock.to_dict(),
            "started": self.started.isoformat(),
        }


# -- parsing (each helper raises ValueError naming the field) --------------------------------


def _get(d: Mapping[str, Any], name: str, types: type | tuple[type, ...], what: str) -> Any:
    if name not in d:
        raise ValueError(f"missing field {name!r}")
    value = d[name]
    # bool is an int in Python; a JSON true is never a valid number here.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
        raise ValueError(f"field {name!r} must be {what}, got {value!r}")
    return value


def _tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _opt(d: Mapping[str, Any], name: str, types: type | tuple[type, ...], what: str) -> Any:
    return None if d.get(name) is None else _get(d, name, types, what)


def _str(d: Mapping[str, Any], name: str) -> str:
    return cast(str, _get(d, name, str, "a string"))


def _float(d: Mapping[str, Any], name: str) -> float:
    return float(_get(d, name, (int, float), "a number"))


def _choice(d: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = _str(d, name)
    if value not in allowed:
        raise ValueError(f"field {name!r} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _detail(d: Mapping[str, Any]) -> dict[str, str]:
    detail = d.get("detail", {})
    if not isinstance(detail, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in detail.items()
    ):
        raise ValueError(f"field 'detail' must map strings to strings, got {detail!r}")
    return cast(dict[str, str], detail)


def _sample(d: Mapping[str, Any]) -> Sample:
    error = _opt(d, "error", str, "a string")
    if error is not None and error not in ERROR_KINDS:
        raise ValueError(f"field 'error' must be one of {', '.join(ERROR_KINDS)}, got {error!r}")
    outcome = _opt(d, "outcome", str, "a string")
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"field 'outcome' must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    duration = _opt(d, "duration", (int, float), "a number")
    return Sample(
        probe=_str(d, "probe"),
        seq=cast(int, _get(d, "seq", int, "an integer")),
        sent=_float(d, "sent"),
        duration=None if duration is None else float(duration),
        ok=cast(bool, _get(d, "ok", bool, "true or false")),
        status=cast(int | None, _opt(d, "status", int, "an integer")),
        error=cast(str | None, error),
        server=cast(str | None, _opt(d, "server", str, "a string")),
        key=cast(str | None, _opt(d, "key", str, "a string")),
        outcome=cast(str | None, outcome),
    )


def _fault(d: Mapping[str, Any]) -> FaultEvent:
    phase = _choice(d, "phase", FAULT_PHASES)
    return FaultEvent(_str(d, "fault"), phase, _float(d, "at"), _detail(d))


def _mark(d: Mapping[str, Any]) -> Mark:
    return Mark(_str(d, "name"), _float(d, "at"), _detail(d))


def _readback(d: Mapping[str, Any]) -> ReadBack:
    keys = _get(d, "keys", list, "a list of ids")
    if not all(isinstance(k, str) for k in keys):
        raise ValueError("field 'keys' must hold only strings")
    return ReadBack(_str(d, "probe"), _float(d, "at"), keys)


def _header(d: Mapping[str, Any]) -> RunHeader:
    clock = Clock.from_dict(cast(dict[str, float], _get(d, "clock", dict, "an object")))
    started = datetime.fromisoformat(_str(d, "started"))
    return RunHeader(_str(d, "run_id"), _str(d, "target"), clock, started)


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Record]] = {
    Sample.KIND: _sample,
    FaultEvent.KIND: _fault,
    Mark.KIND: _mark,
    ReadBack.KIND: _readback,
}


def record_from_dict(d: Mapping[str, Any]) -> Record:
    """A record from one parsed line; ValueError (naming the field) if it is not one."""
    kind = d.get("kind")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        if kind == RunHeader.KIND:
            raise ValueError("a second header: only the first line may be a header")
        raise ValueError(f"unknown kind {kind!r} (expected one of {', '.join(_PARSERS)})")
    return parser(d)


# -- writing ---------------------------------------------------------------------------------


def _line(record: Record | RunHeader) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON and other readers of the file would choke.
    text = json.dumps(record.to_dict(), separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


class HistoryWriter:
    """Appends records to a new history file, one JSON line each, flushed at once.

    Thread-safe: probes run in threads and share one writer; one lock keeps lines whole and
    in the order `append` was called. The file must not exist yet: a run never writes into
    another run's history. With `fsync=True` each record is also forced to the disk (survives
    a power loss, not only a killed process), at the cost of a disk sync per record.

    The records appended are also kept in memory, in order, so the run's own steps can judge
    what happened so far (`records`) without parsing the file again on every poll.
    """

    def __init__(
        self, path: str | os.PathLike[str], header: RunHeader, *, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.header = header
        self._fsync = fsync
        self._lock = threading.Lock()
        self._kept: list[Record] = []
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "xb")  # noqa: SIM115 (closed by close())
        self._write(_line(header))

    def _write(self, line: bytes) -> None:
        self._file.write(line)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())

    def append(self, record: Record) -> None:
        line = _line(record)  # serialize outside the lock: a bad record raises here, early
        with self._lock:
            if self._file.closed:
                raise ValueError(f"history {self.path} is closed")
            self._write(line)
            self._kept.append(record)

    def records(self, start: int = 0) -> tuple[Record, ...]:
        """The records appended so far, from the `start`-th on (in the order of the file)."""
        with self._lock:
            return tuple(self._kept[start:])

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- reading ---------------------------------------------------------------------------------


def read_history(path: str | os.PathLike[str]) -> History:
    """Read a history file back.

    An unfinished last line (no newline and not valid JSON: the run was killed while writing
    it) is ignored. Anything else that is not a valid record raises `HistoryError` naming the
    file and line, because a verdict computed over a silently damaged history would be wrong.
    """
    path = Path(path)
    header: RunHeader | None = None
    records: list[Record] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError as exc:
                if not raw.endswith(b"\n"):
                    break  # only the last line can lack its newline: truncated by a kill
                raise HistoryError(path, lineno, f"not a JSON line: {exc}") from None
            try:
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got {type(data).__name__}")
                if header is None:
                    if data.get("kind") != RunHeader.KIND:
                        raise ValueError(f"the first line must be the header, got {data!r:.80}")
                    header = _header(data)
                else:
                    records.append(record_from_dict(data))
            except ValueError as exc:
                raise HistoryError(path, lineno, str(exc)) from None
    if header is None:
        raise HistoryError(path, None, "no header line: not a history, or killed before it")
    return History(header, tuple(records))


# -- the in-memory view ----------------------------------------------------------------------


def _by_send_time(sample: Sample) -> tuple[float, int]:
    return (sample.sent, sample.seq)


@dataclass(frozen=True)
class History:
    """A run's history in memory, immutable. `records` keep the order they were appended in
    (completion order for samples); `samples()` gives them in send order."""

    header: RunHeader
    records: tuple[Record, ...]

    @cached_property
    def _samples_by_probe(self) -> dict[str, tuple[Sample, ...]]:
        grouped: dict[str, list[Sample]] = {}
        for r in self.records:
            if isinstance(r, Sample):
                grouped.setdefault(r.probe, []).append(r)
        return {p: tuple(sorted(s, key=_by_send_time)) for p, s in grouped.items()}

    @cached_property
    def _all_samples(self) -> tuple[Sample, ...]:
        return tuple(sorted((r for r in self.records if isinstance(r, Sample)), key=_by_send_time))

    def samples(self, probe: str | None = None) -> tuple[Sample, ...]:
        """One probe's samples (all probes' if None), sorted by send time then seq."""
        if probe is not None:
            return self._samples_by_probe.get(probe, ())
        return self._all_samples

    @property
    def probes(self) -> list[str]:
        """Names of the probes that recorded samples, sorted."""
        return sorted(self._samples_by_probe)

    @cached_property
    def fault_events(self) -> tuple[FaultEvent, ...]:
        return tuple(r for r in self.records if isinstance(r, FaultEvent))

    @cached_property
    def marks(self) -> tuple[Mark, ...]:
        return tuple(r for r in self.records if isinstance(r, Mark))

    @cached_property
    def readbacks(self) -> tuple[ReadBack, ...]:
        return tuple(r for r in self.records if isinstance(r, ReadBack))

    def readback(self, probe: str) -> ReadBack | None:
        """The probe's final read: the last ReadBack recorded for it, if any."""
        found = [r for r in self.readbacks if r.probe == probe]
        return found[-1] if found else None

    @property
    def faults(self) -> list[str]:
        """Labels of the faults in the history, in order of first appearance."""
        return list(dict.fromkeys(e.fault for e in self.fault_events))

    @property
    def last_sample_time(self) -> float | None:
        return self._all_samples[-1].sent if self._all_samples else None

    def fault_window(self, fault: str | None = None) -> tuple[float, float] | None:
        """(start, end) of a fault (of all faults if None): from its first inject-start to its
        last heal-end. Without a heal-end after the last inject-start the fault was never seen
        healed, so the window runs to the last sample's send time. None: never injected."""
        events = [e for e in self.fault_events if fault is None or e.fault == fault]
        starts = [e.at for e in events if e.phase == "inject-start"]
        if not starts:
            return None
        start = min(starts)
        heal_ends = [e.at for e in events if e.phase == "heal-end"]
        if heal_ends and max(heal_ends) >= max(starts):
            return (start, max(heal_ends))
        last = self.last_sample_time
        return (start, max(start, last if last is not None else start))

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)
