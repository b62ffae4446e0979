"""The history of a run: the append-only record of every probe sample and fault event.

A run writes its history as it grows, one JSON object per line (`history.jsonl`), and flushes
after every record: when the run is killed (even with SIGKILL) every record already appended
is in the operating system's hands and survives. `read_history` reads a file back.

In memory a history is typed columns, not objects (~60 bytes a sample, so hours of samples fit),
with each probe's send order kept as samples arrive: the live waits of a scenario (has the
probe recovered, how many failures since the fault) cost what they read, not what the run
holds, and the report cuts each scenario out by bisection. Checks stay pure functions of
samples; `History.samples(probe)` hands them a sequence of `Sample` made on demand.

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

import gc
import hashlib
import json
import math
import operator
import os
import re
import sys
import threading
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from itertools import chain, compress
from operator import itemgetter, methodcaller
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, TypeAlias, cast, get_args, overload

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


@dataclass(frozen=True, init=False)
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

    def __init__(
        self,
        probe: str,
        seq: int,
        sent: float,
        duration: float | None,
        ok: bool,
        status: int | None = None,
        error: str | None = None,
        server: str | None = None,
        key: str | None = None,
        outcome: str | None = None,
    ) -> None:
        _check_finite("sent", sent)
        if duration is not None and not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f"duration must be >= 0 or None, got {duration}")
        if error is not None and error not in ERROR_KINDS:
            raise ValueError(f"error must be one of {', '.join(ERROR_KINDS)}, got {error!r}")
        if outcome is not None and outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        # The fields in one dict rather than the frozen dataclass's object.__setattr__ for each
        # of them: a probe makes hundreds of samples a second, and this halves their cost.
        self.__dict__.update(
            probe=probe, seq=seq, sent=sent, duration=duration, ok=ok, status=status,
            error=error, server=server, key=key, outcome=outcome,
        )  # fmt: skip

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


# -- the columns a history is kept in --------------------------------------------------------

# A sample kept as a dataclass costs ~500 bytes; a 1-hour game day at 1,000 samples/s holds
# 3.6M of them. Kept as typed columns (one array per field, in the order appended) it costs
# ~60 bytes: strings that repeat (probe, server, the prefix of a write id) are interned, and a
# write id that ends in a counter ("gameday-<run>-orders-17", the probes' own) keeps that
# counter as an integer.
_NO_STATUS = -(2**31)
_STATUS_MIN, _STATUS_MAX = _NO_STATUS + 1, 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_ERROR_CODE: dict[str | None, int] = {None: 0, **{k: i for i, k in enumerate(ERROR_KINDS, 1)}}
_ERROR_OF: tuple[str | None, ...] = (None, *ERROR_KINDS)
_OUTCOME_CODE: dict[str | None, int] = {None: 0, **{k: i for i, k in enumerate(OUTCOMES, 1)}}
_OUTCOME_OF: tuple[str | None, ...] = (None, *OUTCOMES)
_DIGITS = "0123456789"
_MAX_COUNTER_DIGITS = 18  # any 18-digit counter fits an int64


def time_of(record: Record) -> float:
    """When a record happened on the run's clock: a sample's send time, an event's `at`."""
    return record.sent if isinstance(record, Sample) else record.at


def _check_storable(sample: Sample) -> None:
    # The columns are fixed-width: refuse what they cannot hold before anything is written,
    # so the file and the memory never disagree.
    if not _INT64_MIN <= sample.seq <= _INT64_MAX:
        raise ValueError(f"field 'seq' must fit in 64 bits, got {sample.seq}")
    if sample.status is not None and not _STATUS_MIN <= sample.status <= _STATUS_MAX:
        raise ValueError(f"field 'status' must fit in 32 bits, got {sample.status}")


def _split_key(key: str | None) -> tuple[str | None, int]:
    """A write id as (prefix, counter), -1 when it ends in no counter (the prefix is then the
    whole id). `prefix + str(counter)` is the id again: zeros that lead the counter stay in the
    prefix."""
    if key is None:
        return None, -1
    prefix = key.rstrip(_DIGITS)
    digits = key[len(prefix) :]
    if not digits or len(digits) > _MAX_COUNTER_DIGITS:
        return key, -1
    if len(digits) > 1 and digits[0] == "0":
        significant = digits.lstrip("0") or "0"
        prefix, digits = key[: len(key) - len(significant)], significant
    return prefix, int(digits)


# Plain counters, one a line: ASCII digits, no leading zero, at most _MAX_COUNTER_DIGITS.
_COUNTER = rf"(?:0|[1-9][0-9]{{0,{_MAX_COUNTER_DIGITS - 1}}})"
_COUNTERS = re.compile(rf"(?:{_COUNTER}\n)*{_COUNTER}")


def _split_keys(keys: list[str | None]) -> tuple[list[str | None], list[int]]:
    """`_split_key` of each. A writer's ids share their prefix: when every id of `keys`
    starts with the first one's prefix and ends in a plain counter, they are split at once
    (C loops: `map`, one regular expression over the counters joined); otherwise one by one,
    where one that starts with the previous prefix is still cut there without stripping."""
    if keys and keys[0] is not None:
        prefix, counter = _split_key(keys[0])
        # A prefix ending in zeros (ids with leading zeros) would make the digits of an id
        # and its counter differ in length: those go one by one.
        if counter >= 0 and prefix and not prefix[-1].isdigit() and None not in keys:
            strs = cast(list[str], keys)
            cut = len(prefix)
            if all(map(methodcaller("startswith", prefix), strs)):
                digits = list(map(itemgetter(slice(cut, None)), strs))
                if _COUNTERS.fullmatch("\n".join(digits)):
                    return [prefix] * len(keys), list(map(int, digits))
    return _split_keys_one_by_one(keys)


def _split_keys_one_by_one(keys: list[str | None]) -> tuple[list[str | None], list[int]]:
    prefixes: list[str | None] = []
    counters: list[int] = []
    last: str | None = None
    cut = 0
    for key in keys:
        if last is not None and key is not None and key.startswith(last):
            digits = key[cut:]
            if (
                digits.isascii() and digits.isdigit()
                and (digits[0] != "0" or len(digits) == 1)
                and len(digits) <= _MAX_COUNTER_DIGITS
            ):  # fmt: skip
                prefixes.append(last)
                counters.append(int(digits))
                continue
        prefix, counter = _split_key(key)
        prefixes.append(prefix)
        counters.append(counter)
        # Not after a prefix that ends in zeros: the id's digits would then be longer than
        # its counter, and the general rule counts them all.
        if counter >= 0 and prefix and not prefix[-1].isdigit():
            last, cut = prefix, len(prefix)
    return prefixes, counters


class _Strings:
    """The intern table: each distinct string once; id 0 is None."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: list[str | None] = [None]

    def id(self, text: str | None) -> int:
        if text is None:
            return 0
        found = self.ids.get(text)
        if found is None:
            found = self.ids[text] = len(self.names)
            self.names.append(text)
        return found

    def ids_of(self, texts: list[str | None]) -> list[int]:
        """`id` of each: the new ones first, then one lookup each (None is in no table: 0)."""
        for text in set(texts) - self.ids.keys():
            self.id(text)
        get = self.ids.get
        return [get(t, 0) for t in texts]  # type: ignore[arg-type]


def _trusted_sample(
    probe: str | None,
    seq: int,
    sent: float,
    duration: float | None,
    ok: bool,
    status: int | None,
    error: str | None,
    server: str | None,
    key: str | None,
    outcome: str | None,
) -> Sample:
    # A sample rebuilt from the columns holds values that passed Sample's checks when they were
    # stored: filling its dict directly makes it ~4x cheaper than __init__ and its checks.
    sample = object.__new__(Sample)
    sample.__dict__.update(
        probe=probe, seq=seq, sent=sent, duration=duration, ok=ok, status=status, error=error,
        server=server, key=key, outcome=outcome,
    )  # fmt: skip
    return sample


class _Columns:
    """Every record of a history. Samples: one array per field, in the order appended; the
    other records (fault events, marks, final reads: a few per scenario) as objects. Kept as
    records arrive, so that a question about one probe never sorts or scans the others:
    - per probe, its samples' indices in send order (send time, then seq, then arrival);
    - per probe, the send times of its failures, sorted.
    Not locked itself: the writer holds its lock around `add` and around every read of a live
    history. Only ever appended to: an index below the length seen once stays valid."""

    def __init__(self) -> None:
        self.strings = _Strings()
        self.probe: array[int] = array("I")
        self.seq: array[int] = array("q")
        self.sent: array[float] = array("d")
        self.duration: array[float] = array("d")  # NaN: None (cut by its timeout)
        self.ok: array[int] = array("B")
        self.status: array[int] = array("i")  # _NO_STATUS: None
        self.error: array[int] = array("B")  # index into _ERROR_OF
        self.server: array[int] = array("I")
        self.outcome: array[int] = array("B")  # index into _OUTCOME_OF
        self.key_prefix: array[int] = array("I")
        self.key_counter: array[int] = array("q")  # -1: the prefix is the whole id
        self.others: list[Record] = []
        self.other_at: array[int] = array("q")  # samples stored before each other record
        self.order: dict[int, array[int]] = {}
        self.failed_at: dict[int, array[float]] = {}

    def __len__(self) -> int:
        return len(self.sent) + len(self.others)

    def add(self, record: Record) -> None:
        if isinstance(record, Sample):
            self.add_sample(record)
        else:
            self.others.append(record)
            self.other_at.append(len(self.sent))

    def add_sample(self, s: Sample) -> None:
        _check_storable(s)
        strings = self.strings
        prefix, counter = _split_key(s.key)
        self.probe.append(strings.id(s.probe))
        self.seq.append(s.seq)
        self.sent.append(s.sent)
        self.duration.append(math.nan if s.duration is None else s.duration)
        self.ok.append(1 if s.ok else 0)
        self.status.append(_NO_STATUS if s.status is None else s.status)
        self.error.append(_ERROR_CODE[s.error])
        self.server.append(strings.id(s.server))
        self.outcome.append(_OUTCOME_CODE[s.outcome])
        self.key_prefix.append(strings.id(prefix))
        self.key_counter.append(counter)
        self._place(len(self.sent) - 1)

    def extend_samples(self, columns: _NewSamples) -> None:
        """Append samples already checked, field by field (the reader's bulk path)."""
        first = len(self.sent)
        self.probe.extend(columns.probe)
        self.seq.extend(columns.seq)
        self.sent.extend(columns.sent)
        self.duration.extend(columns.duration)
        self.ok.extend(columns.ok)
        self.status.extend(columns.status)
        self.error.extend(columns.error)
        self.server.extend(columns.server)
        self.outcome.extend(columns.outcome)
        self.key_prefix.extend(columns.key_prefix)
        self.key_counter.extend(columns.key_counter)
        self._place_from(first)

    def _place_from(self, first: int) -> None:
        """`_place` the samples from the `first`-th on: a probe's run of them already in send
        order (a file written by a run nearly always is) is appended whole."""
        end = len(self.sent)
        probes = self.probe[first:end]
        distinct = set(probes)
        groups: dict[int, Sequence[int]]
        if len(distinct) == 1:  # one probe's run (a writer's history): no grouping to do
            groups = {probes[0]: range(first, end)}
        else:
            lists: dict[int, list[int]] = {pid: [] for pid in distinct}
            for i, pid in zip(range(first, end), probes, strict=True):
                lists[pid].append(i)
            groups = dict(lists)
        sent, ok = self.sent, self.ok
        for pid, indices in groups.items():
            if isinstance(indices, range):
                times: Sequence[float] = sent[indices.start : indices.stop]
                oks: Iterable[int] = ok[indices.start : indices.stop]
            else:
                times = list(map(sent.__getitem__, indices))
                oks = map(ok.__getitem__, indices)
            order = self.order.get(pid)
            failed = self.failed_at.get(pid)
            in_order = all(map(operator.lt, times, times[1:])) and (
                not order or times[0] > sent[order[-1]]
            )
            failures = list(compress(times, map(operator.not_, oks)))
            if not in_order or (failures and failed and failures[0] < failed[-1]):
                for i in indices:
                    self._place(i)
                continue
            self.order.setdefault(pid, array("I")).extend(indices)
            if failures:
                self.failed_at.setdefault(pid, array("d")).extend(failures)

    def _send_key(self, i: int) -> tuple[float, int]:
        return (self.sent[i], self.seq[i])

    def _place(self, i: int) -> None:
        pid = self.probe[i]
        order = self.order.get(pid)
        if order is None:
            order = self.order[pid] = array("I")
        sent = self.sent[i]
        if order:
            last = order[-1]
            if sent < self.sent[last] or (sent == self.sent[last] and self.seq[i] < self.seq[last]):
                # Completed out of send order (a slow request): usually a few places from the
                # end, so the insert moves a few entries.
                order.insert(bisect_right(order, self._send_key(i), key=self._send_key), i)
            else:
                order.append(i)
        else:
            order.append(i)
        if not self.ok[i]:
            failed = self.failed_at.get(pid)
            if failed is None:
                failed = self.failed_at[pid] = array("d")
            if failed and sent < failed[-1]:
                failed.insert(bisect_right(failed, sent), sent)
            else:
                failed.append(sent)

    def span(self, order: array[int], start: float | None, end: float | None) -> tuple[int, int]:
        """The positions in `order` of the samples sent in [start, end] (None: unbounded)."""
        key = self.sent.__getitem__
        lo = 0 if start is None else bisect_left(order, start, key=key)
        hi = len(order) if end is None else bisect_right(order, end, key=key)
        return lo, max(lo, hi)

    def sample(self, i: int) -> Sample:
        names = self.strings.names
        duration = self.duration[i]
        status = self.status[i]
        prefix = names[self.key_prefix[i]]
        counter = self.key_counter[i]
        return _trusted_sample(
            names[self.probe[i]], self.seq[i], self.sent[i],
            None if duration != duration else duration, self.ok[i] == 1,
            None if status == _NO_STATUS else status, _ERROR_OF[self.error[i]],
            names[self.server[i]],
            prefix if prefix is None or counter < 0 else prefix + str(counter),
            _OUTCOME_OF[self.outcome[i]],
        )  # fmt: skip

    def event_position(self, j: int) -> int:
        """The place in the history of the j-th record that is not a sample."""
        return self.other_at[j] + j


@dataclass
class _NewSamples:
    """Samples read from a file, one list per column, checked and converted for `_Columns`."""

    probe: list[int]
    seq: list[int]
    sent: list[float]
    duration: list[float]
    ok: list[bool]
    status: list[int]
    error: list[int]
    server: list[int]
    outcome: list[int]
    key_prefix: list[int]
    key_counter: list[int]


@dataclass(frozen=True)
class SampleColumns:
    """Some fields of samples in send order, one array each: `duration` in seconds, NaN
    where there is none; `ok` 1 or 0; `server` an id into `names` (0: no server)."""

    sent: array[float]
    duration: array[float]
    ok: array[int]
    server: array[int]
    names: Sequence[str | None]


class Samples(Sequence[Sample]):
    """Samples of a history in send order (send time, then seq), read from its columns.

    A sequence of `Sample`, each made when asked for; code that goes through hundreds of
    thousands at once (the report) reads the columns instead: `sent()`, `durations()`,
    `oks()`, `servers()`, `keys()`. Compares equal to any sequence of the same samples.
    """

    __slots__ = ("_columns", "_idx")

    def __init__(self, columns: _Columns, idx: array[int]) -> None:
        self._columns = columns
        self._idx = idx

    def __len__(self) -> int:
        return len(self._idx)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> Samples: ...

    def __getitem__(self, index: int | slice) -> Sample | Samples:
        if isinstance(index, slice):
            return Samples(self._columns, self._idx[index])
        return self._columns.sample(self._idx[index])

    def __iter__(self) -> Iterator[Sample]:
        return map(self._columns.sample, self._idx)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __repr__(self) -> str:
        return f"<Samples: {len(self)}>"

    def _column(self, column: array[Any]) -> list[Any]:
        return list(map(column.__getitem__, self._idx))

    def columns(self) -> SampleColumns:
        """The fields the report draws, as arrays in send order (8 bytes a value, not an
        object each)."""
        c, idx = self._columns, self._idx
        return SampleColumns(
            sent=array("d", map(c.sent.__getitem__, idx)),
            duration=array("d", map(c.duration.__getitem__, idx)),
            ok=array("B", map(c.ok.__getitem__, idx)),
            server=array("I", map(c.server.__getitem__, idx)),
            names=c.strings.names,
        )

    def sent(self) -> list[float]:
        return self._column(self._columns.sent)

    def seqs(self) -> list[int]:
        return self._column(self._columns.seq)

    def durations(self) -> list[float | None]:
        return [None if d != d else d for d in self._column(self._columns.duration)]

    def oks(self) -> list[bool]:
        return [ok == 1 for ok in self._column(self._columns.ok)]

    def servers(self) -> list[str | None]:
        names = self._columns.strings.names
        return [names[s] for s in self._column(self._columns.server)]

    def failed(self) -> Samples:
        """Only the failed ones, still in send order."""
        ok = self._columns.ok
        return Samples(self._columns, array("I", [i for i in self._idx if not ok[i]]))

    def keys(self, outcome: str) -> list[str]:
        """The write ids of the samples whose outcome is `outcome` ("ok", "info", "fail")."""
        c = self._columns
        code = _OUTCOME_CODE[outcome]
        names = c.strings.names
        # C loops (`map`, `compress`) over the columns: a million ids are rebuilt in a fraction
        # of what a comprehension costs.
        idx = self._idx
        chosen = list(compress(idx, map(code.__eq__, map(c.outcome.__getitem__, idx))))
        pids = list(map(c.key_prefix.__getitem__, chosen))
        if 0 in pids:  # samples without an id
            chosen = list(compress(chosen, pids))
            pids = list(compress(pids, pids))
        counters = list(map(c.key_counter.__getitem__, chosen))
        ids = list(map(operator.add, map(names.__getitem__, pids), map(str, counters)))
        if counters and min(counters) < 0:  # ids without a counter: the prefix is the id
            for j in [j for j, n in enumerate(counters) if n < 0]:
                ids[j] = cast(str, names[pids[j]])
        return ids


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

    The records appended are also kept in memory (typed columns, ~60 bytes a sample), so the
    run judges what happened so far without parsing the file again, and writes its report from
    them at the end. What the live waits ask several times a second is answered from indexes
    kept as records arrive, at a cost that does not grow with the records already kept:
    one probe's samples sent in a time span (`samples`), its failures since a time
    (`failures`), the records that are not samples (`events`). `history()` is a snapshot.
    """

    def __init__(
        self, path: str | os.PathLike[str], header: RunHeader, *, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.header = header
        self._fsync = fsync
        self._lock = threading.Lock()
        self._columns = _Columns()
        #: how many samples the live questions handed out: tests hold a poll's cost to it
        self.touched = 0
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
        if isinstance(record, Sample):
            _check_storable(record)
        with self._lock:
            if self._file.closed:
                raise ValueError(f"history {self.path} is closed")
            self._write(line)
            self._columns.add(record)

    def history(self, *, since: float | None = None, first_record: int = 0) -> History:
        """What was appended so far as a `History`: the samples sent at or after `since`, the
        other records appended from the `first_record`-th on and made at or after `since`.
        Costs a copy of the samples' send order (4 bytes each); the columns are shared."""
        with self._lock:
            return History._of(self.header, self._columns, start=since, first_record=first_record)

    def records(self, start: int = 0) -> tuple[Record, ...]:
        """The records appended so far, from the `start`-th on (in the order of the file).
        Makes an object of every record: for small histories; `history()` for large ones."""
        return self.history().records[start:]

    def samples(
        self, probe: str, *, since: float | None = None, until: float | None = None
    ) -> Samples:
        """`probe`'s samples sent in [since, until], in send order: costs the samples handed
        out (and a bisection), whatever else the history holds."""
        with self._lock:
            c = self._columns
            pid = c.strings.ids.get(probe)
            order = c.order.get(pid) if pid is not None else None
            if order is None:
                return Samples(c, array("I"))
            lo, hi = c.span(order, since, until)
            idx = order[lo:hi]
            self.touched += len(idx)
            return Samples(c, idx)

    def failures(self, probe: str, *, since: float) -> int:
        """How many of `probe`'s samples sent at or after `since` failed (a bisection)."""
        with self._lock:
            c = self._columns
            pid = c.strings.ids.get(probe)
            failed = c.failed_at.get(pid) if pid is not None else None
            return 0 if failed is None else len(failed) - bisect_left(failed, since)

    def events(self, *, first_record: int = 0, since: float | None = None) -> list[Record]:
        """The records that are not samples, appended from the `first_record`-th record on and
        made at or after `since`, in the order appended."""
        with self._lock:
            c = self._columns
            j = bisect_left(range(len(c.others)), first_record, key=c.event_position)
            found = c.others[j:]
        return found if since is None else [r for r in found if time_of(r) >= since]

    def __len__(self) -> int:
        return len(self._columns)

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

# Lines are read and parsed this many bytes at a time: one json.loads per chunk costs half of
# one per line, and the chunk's parsed objects are all the reader holds besides the columns.
_CHUNK_BYTES = 4 << 20
_STR: frozenset[type] = frozenset({str})
_INT: frozenset[type] = frozenset({int})
_NUMBER: frozenset[type] = frozenset({int, float})
_BOOL: frozenset[type] = frozenset({bool})
_OPT_STR: frozenset[type] = frozenset({str, type(None)})
_OPT_INT: frozenset[type] = frozenset({int, type(None)})
_OPT_NUMBER: frozenset[type] = frozenset({int, float, type(None)})


_GET_PROBE, _GET_SEQ, _GET_SENT, _GET_OK = map(itemgetter, ("probe", "seq", "sent", "ok"))


def _only(values: list[Any], types: frozenset[type]) -> bool:
    return set(map(type, values)) <= types


def read_history(path: str | os.PathLike[str]) -> History:
    """Read a history file back.

    An unfinished last line (no newline and not valid JSON: the run was killed while writing
    it) is ignored. Anything else that is not a valid record raises `HistoryError` naming the
    file and line, because a verdict computed over a silently damaged history would be wrong.
    """
    path = Path(path)
    cached = _read_columns(path)
    if cached is not None:
        return History._of(*cached)
    # The parsed lines are millions of short-lived dicts, none in a cycle: the cyclic garbage
    # collector would walk every live object again and again for nothing (half the read time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with open(path, "rb") as f:
            reader = _Reader(path)
            while not reader.stopped:
                lines = f.readlines(_CHUNK_BYTES)
                if not lines:
                    break
                reader.feed(lines)
    finally:
        if collecting:
            gc.enable()
    if reader.header is None:
        raise HistoryError(path, None, "no header line: not a history, or killed before it")
    return History._of(reader.header, reader.columns)


class _Reader:
    """Turns the lines of a history file into its header and columns. Each chunk of lines is
    parsed at once and its samples checked and stored column by column; a chunk in which
    anything is wrong is read again line by line, which names the first bad line exactly as
    reading line by line always did."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.columns = _Columns()
        self.header: RunHeader | None = None
        self.lineno = 0  # lines consumed so far
        self.stopped = False  # at a last line cut by a kill

    def feed(self, lines: list[bytes]) -> None:
        first = self.lineno + 1
        self.lineno += len(lines)
        if self.header is None:  # up to the first line that is not blank: the header
            k = next((k for k, raw in enumerate(lines) if raw.strip()), len(lines) - 1)
            self._slow(lines[: k + 1], first)
            lines, first = lines[k + 1 :], first + k + 1
            if self.header is None or self.stopped or not lines:
                return
        if not self._fast(lines, first):
            self._slow(lines, first)

    def _fast(self, lines: list[bytes], first: int) -> bool:
        # Each line in a list of its own: a line holding two values, or a value spread over two
        # lines, shows as a list of another length.
        try:
            wrapped = json.loads(b"[[" + b"],[".join(lines) + b"]]")
        except ValueError:
            return False
        if len(wrapped) != len(lines) or any(len(w) != 1 for w in wrapped):
            return False
        parsed = [w[0] for w in wrapped]
        if not all(type(d) is dict for d in parsed):
            return False
        kinds = [d.get("kind") for d in parsed]
        # Samples come in runs between the few other records; each run is checked whole
        # before any of it is stored, and a run with a bad sample goes the slow way.
        start = 0
        checked: list[tuple[int, int, _NewSamples | Record]] = []
        for k in [*(k for k, kind in enumerate(kinds) if kind != "sample"), len(parsed)]:
            if k > start:
                new = self._samples(parsed[start:k])
                if new is None:
                    return False
                checked.append((start, k, new))
            if k < len(parsed):
                try:
                    checked.append((k, k + 1, record_from_dict(parsed[k])))
                except ValueError:
                    return False
            start = k + 1
        for _, _, item in checked:
            if isinstance(item, _NewSamples):
                self.columns.extend_samples(item)
            else:
                self.columns.add(item)
        return True

    def _samples(self, ds: list[dict[str, Any]]) -> _NewSamples | None:
        """The samples of `ds` as columns, or None when one of them is not a valid sample."""
        # The required fields by `map` over C getters (a list comprehension costs more).
        try:
            probes = list(map(_GET_PROBE, ds))
            seqs = list(map(_GET_SEQ, ds))
            sents = list(map(_GET_SENT, ds))
            oks = list(map(_GET_OK, ds))
        except KeyError:
            return None
        durations = [d.get("duration") for d in ds]
        statuses = [d.get("status") for d in ds]
        errors = [d.get("error") for d in ds]
        servers = [d.get("server") for d in ds]
        keys = [d.get("key") for d in ds]
        outcomes = [d.get("outcome") for d in ds]
        if not (
            _only(probes, _STR) and _only(seqs, _INT) and _only(sents, _NUMBER)
            and _only(oks, _BOOL) and _only(durations, _OPT_NUMBER)
            and _only(statuses, _OPT_INT) and _only(errors, _OPT_STR)
            and _only(servers, _OPT_STR) and _only(keys, _OPT_STR) and _only(outcomes, _OPT_STR)
        ):  # fmt: skip
            return None
        # Whole columns with or without a value are common (no timeouts; no statuses for a
        # writer): those skip the per-item filtering.
        timed = None not in durations
        given = cast(list[float], durations) if timed else [x for x in durations if x is not None]
        given_status = (
            [x for x in statuses if x is not None] if statuses.count(None) < len(statuses) else []
        )
        try:
            if not (
                set(errors) <= _ERROR_CODE.keys() and set(outcomes) <= _OUTCOME_CODE.keys()
                and all(map(math.isfinite, sents)) and all(map(math.isfinite, given))
                and min(given, default=0) >= 0
                and min(seqs) >= _INT64_MIN and max(seqs) <= _INT64_MAX
                and min(given_status, default=200) >= _STATUS_MIN
                and max(given_status, default=200) <= _STATUS_MAX
            ):  # fmt: skip
                return None
        except OverflowError:  # an integer too large to be a float
            return None
        strings = self.columns.strings
        if keys.count(None) == len(keys):
            prefixes: list[str | None] = keys
            counters = [-1] * len(keys)
        else:
            prefixes, counters = _split_keys(keys)
        return _NewSamples(
            probe=strings.ids_of(probes),
            seq=seqs,
            sent=sents,
            duration=given if timed else [math.nan if x is None else x for x in durations],
            ok=oks,
            status=[_NO_STATUS if x is None else x for x in statuses]
            if given_status
            else [_NO_STATUS] * len(statuses),
            error=list(map(_ERROR_CODE.__getitem__, errors)),
            server=strings.ids_of(servers),
            outcome=list(map(_OUTCOME_CODE.__getitem__, outcomes)),
            key_prefix=strings.ids_of(prefixes),
            key_counter=counters,
        )

    def _slow(self, lines: list[bytes], first: int) -> None:
        for lineno, raw in enumerate(lines, start=first):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError as exc:
                if not raw.endswith(b"\n"):
                    self.stopped = True  # only the last line can lack its newline: cut by a kill
                    return
                raise HistoryError(self.path, lineno, f"not a JSON line: {exc}") from None
            try:
                if not isinstance(data, dict):
                    raise ValueError(f"expected a JSON object, got {type(data).__name__}")
                if self.header is None:
                    if data.get("kind") != RunHeader.KIND:
                        raise ValueError(f"the first line must be the header, got {data!r:.80}")
                    self.header = _header(data)
                else:
                    self.columns.add(record_from_dict(data))
            except ValueError as exc:
                raise HistoryError(self.path, lineno, str(exc)) from None


# -- the column file: a finished run's columns, read back without parsing ---------------------

# A finished run with at least this many samples also leaves its columns next to its history
# (`history.columns`): reading a million JSON lines back costs ~5 s of CPU, the columns a
# fraction of one. The JSON lines stay the record: the column file is a cache, used only
# while the history file is exactly as it was when the columns were written (size, mtime,
# and a digest of its head and tail), checked value by value, and ignored when anything
# about it is wrong.
COLUMNS_MIN_SAMPLES = 50_000
_COLUMNS_MAGIC = b"GAMEDAY-COLUMNS 1\n"
_SAMPLE_ARRAYS = ("probe", "seq", "sent", "duration", "ok", "status", "error", "server",
                  "outcome", "key_prefix", "key_counter")  # fmt: skip
_DIGEST_BYTES = 64 << 10


def columns_path(history_path: str | os.PathLike[str]) -> Path:
    """Where the column file of a history file is."""
    return Path(history_path).with_suffix(".columns")


def _fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(_DIGEST_BYTES))
        if st.st_size > 2 * _DIGEST_BYTES:
            f.seek(-_DIGEST_BYTES, os.SEEK_END)
        digest.update(f.read(_DIGEST_BYTES))
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "digest": digest.hexdigest()}


def write_columns(writer: HistoryWriter) -> Path | None:
    """Leave the closed writer's columns next to its history file (when it has at least
    `COLUMNS_MIN_SAMPLES` samples); the file appears whole or not at all."""
    if not writer.closed:
        raise ValueError(f"history {writer.path} is still being written")
    c = writer._columns
    if len(c.sent) < COLUMNS_MIN_SAMPLES:
        return None
    meta = {
        "history": _fingerprint(writer.path),
        "byteorder": sys.byteorder,
        "header": writer.header.to_dict(),
        "strings": c.strings.names[1:],
        "others": [[at, r.to_dict()] for at, r in zip(c.other_at, c.others, strict=True)],
        "arrays": [[name, getattr(c, name).typecode, getattr(c, name).itemsize, len(c.sent)]
                   for name in _SAMPLE_ARRAYS],
    }  # fmt: skip
    target = columns_path(writer.path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_COLUMNS_MAGIC)
            f.write(json.dumps(meta, separators=(",", ":"), allow_nan=False).encode() + b"\n")
            for name in _SAMPLE_ARRAYS:
                getattr(c, name).tofile(f)
        tmp.replace(target)
    except OSError:
        # A cache that could not be written (a full disk) costs only a slower read later.
        tmp.unlink(missing_ok=True)
        return None
    return target


def _read_columns(path: Path) -> tuple[RunHeader, _Columns] | None:
    """The columns of `path` from its column file, or None when there is none that can be
    trusted: a history changed since, a file cut short, a value no run could have stored."""
    cpath = columns_path(path)
    try:
        with open(cpath, "rb") as f:
            if f.read(len(_COLUMNS_MAGIC)) != _COLUMNS_MAGIC:
                return None
            meta = json.loads(f.readline())
            if meta.get("history") != _fingerprint(path) or meta.get("byteorder") != sys.byteorder:
                return None
            columns = _Columns()
            names = meta["strings"]
            if not (isinstance(names, list) and _only(names, _STR)):
                return None
            for text in names:
                columns.strings.id(text)
            if len(columns.strings.names) != len(names) + 1:
                return None  # a string twice
            arrays = meta["arrays"]
            n = arrays[0][3]
            expected = [
                [name, getattr(columns, name).typecode, getattr(columns, name).itemsize, n]
                for name in _SAMPLE_ARRAYS
            ]
            width = sum(getattr(columns, name).itemsize for name in _SAMPLE_ARRAYS)
            # The arrays fill the rest of the file exactly: a length that claims more (or less)
            # than is there is refused before anything is allocated for it.
            rest = os.fstat(f.fileno()).st_size - f.tell()
            if arrays != expected or type(n) is not int or n < 0 or n * width != rest:
                return None
            for name in _SAMPLE_ARRAYS:
                getattr(columns, name).fromfile(f, n)
            header = _header(meta["header"])
            others = [(at, record_from_dict(d)) for at, d in meta["others"]]
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RecursionError):  # fmt: skip
        return None
    if not _columns_valid(columns, n) or any(isinstance(r, Sample) for _, r in others):
        return None
    ats = [at for at, _ in others]
    if not (
        _only(ats, _INT) and all(map(operator.le, ats, ats[1:])) and all(0 <= a <= n for a in ats)
    ):
        return None
    columns.others = [r for _, r in others]
    columns.other_at = array("q", ats)
    columns._place_from(0)
    return header, columns


def _columns_valid(c: _Columns, n: int) -> bool:
    """Every value is one a run could have stored (as `_Columns.add_sample` would)."""
    if n == 0:
        return True
    top = len(c.strings.names)
    if not (min(c.probe) > 0 and max(c.probe) < top and max(c.server) < top
            and max(c.key_prefix) < top and max(c.error) < len(_ERROR_OF)
            and max(c.outcome) < len(_OUTCOME_OF) and max(c.ok) <= 1
            and min(c.key_counter) >= -1):  # fmt: skip
        return False
    if not all(map(math.isfinite, c.sent)):
        return False
    durations = [d for d in c.duration if d == d]  # NaN: none
    if not all(map(math.isfinite, durations)) or min(durations, default=0) < 0:
        return False
    # No id (prefix 0) has no counter either.
    return set(compress(c.key_counter, map(operator.not_, c.key_prefix))) <= {-1}


# -- the in-memory view ----------------------------------------------------------------------


class History:
    """A run's history in memory, immutable: the samples sent and the other records made in a
    span of time (all of them, by default).

    `History(header, records)` builds one from records (the checks' tests do); a run's writer
    and `read_history` make theirs over the typed columns they kept, and `window()` cuts a
    scenario out of one by bisection, sharing the columns. `samples(probe)` gives one probe's
    samples in send order; `records` every record in the order appended (completion order for
    samples), made as objects when first asked for.
    """

    def __init__(self, header: RunHeader, records: Iterable[Record] = ()) -> None:
        columns = _Columns()
        for record in records:
            columns.add(record)
        self._set(header, columns, _by_name(columns), _all_events(columns))

    @classmethod
    def _of(
        cls,
        header: RunHeader,
        columns: _Columns,
        *,
        start: float | None = None,
        first_record: int = 0,
    ) -> History:
        """A view of `columns` (locked by the caller while they may grow): samples sent at or
        after `start`, other records from the `first_record`-th record on, made at or after
        `start`. Samples are cut by time only: a run reads `first_record` before `start`, so a
        sample appended earlier was also sent earlier."""
        j = bisect_left(range(len(columns.others)), first_record, key=columns.event_position)
        events = [
            (columns.other_at[k], r)
            for k, r in enumerate(columns.others[j:], start=j)
            if start is None or time_of(r) >= start
        ]
        view = cls.__new__(cls)
        view._set(header, columns, _cut(columns, _by_name(columns), start, None), events)
        return view

    def _set(
        self,
        header: RunHeader,
        columns: _Columns,
        by_probe: dict[str, array[int]],
        events: list[tuple[int, Record]],
    ) -> None:
        self.header = header
        self._columns = columns
        self._by_probe = by_probe
        self._events = events  # (samples stored before it, record), in the order appended

    def window(
        self, start: float | None, end: float | None, *, leave_out: Collection[str] = ()
    ) -> History:
        """The samples sent and the records made in [start, end] (None: unbounded), without
        the marks named in `leave_out`: by bisection of each probe's send order, not a scan."""
        events = [
            (at, r)
            for at, r in self._events
            if (start is None or time_of(r) >= start)
            and (end is None or time_of(r) <= end)
            and not (isinstance(r, Mark) and r.name in leave_out)
        ]
        view = History.__new__(History)
        view._set(
            self.header, self._columns, _cut(self._columns, self._by_probe, start, end), events
        )
        return view

    @cached_property
    def records(self) -> tuple[Record, ...]:
        """Every record, in the order appended; each made as an object (costly when large)."""
        indices = sorted(chain.from_iterable(self._by_probe.values()))
        out: list[Record] = []
        sample = self._columns.sample
        k = 0
        for at, record in self._events:
            stop = bisect_left(indices, at, lo=k)
            out.extend(map(sample, indices[k:stop]))
            out.append(record)
            k = stop
        out.extend(map(sample, indices[k:]))
        return tuple(out)

    def samples(self, probe: str | None = None) -> Samples:
        """One probe's samples (all probes' if None), sorted by send time then seq (then the
        order appended)."""
        if probe is not None:
            return Samples(self._columns, self._by_probe.get(probe, array("I")))
        c = self._columns
        merged = sorted(
            chain.from_iterable(self._by_probe.values()), key=lambda i: (c.sent[i], c.seq[i], i)
        )
        return Samples(c, array("I", merged))

    @property
    def probes(self) -> list[str]:
        """Names of the probes that recorded samples, sorted."""
        return sorted(self._by_probe)

    @property
    def events(self) -> tuple[Record, ...]:
        """The records that are not samples (fault events, marks, final reads), in order."""
        return tuple(r for _, r in self._events)

    @cached_property
    def fault_events(self) -> tuple[FaultEvent, ...]:
        return tuple(r for _, r in self._events if isinstance(r, FaultEvent))

    @cached_property
    def marks(self) -> tuple[Mark, ...]:
        return tuple(r for _, r in self._events if isinstance(r, Mark))

    @cached_property
    def readbacks(self) -> tuple[ReadBack, ...]:
        return tuple(r for _, r in self._events if isinstance(r, ReadBack))

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
        sent = self._columns.sent
        return max((sent[idx[-1]] for idx in self._by_probe.values()), default=None)

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
        return sum(map(len, self._by_probe.values())) + len(self._events)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return self.header == other.header and self.records == other.records

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<History {self.header.run_id}: {len(self)} records>"


def _by_name(columns: _Columns) -> dict[str, array[int]]:
    names = columns.strings.names
    return {cast(str, names[pid]): order for pid, order in columns.order.items() if order}


def _all_events(columns: _Columns) -> list[tuple[int, Record]]:
    return list(zip(columns.other_at, columns.others, strict=True))


def _cut(
    columns: _Columns, by_probe: Mapping[str, array[int]], start: float | None, end: float | None
) -> dict[str, array[int]]:
    # Copies each probe's slice of its send order: a writer's order may still grow (and take
    # inserts) after the view is made.
    out: dict[str, array[int]] = {}
    for name, order in by_probe.items():
        lo, hi = columns.span(order, start, end)
        if hi > lo:
            out[name] = order[lo:hi]
    return out
