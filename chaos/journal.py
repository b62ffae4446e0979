"""The undo journal: what was injected and how to heal it, on disk before the fault acts.

One JSON-lines file per target (`journal-<target name>.jsonl`) in the state folder:
`$GAMEDAY_STATE_DIR`, else `$XDG_STATE_HOME/gameday`, else `~/.local/state/gameday`. A run
appends a record before each inject and another once the fault is healed; every record is
flushed and fsync'd before the call returns, so a run killed with SIGKILL (or a host losing
power) leaves behind exactly the faults it had begun and not healed. `gameday heal` (and the
start of the next run) rebuilds them with `Fault.from_undo` and heals them: `heal_pending`.

Records (one JSON object a line, appended, never rewritten):

    {"id":"9f..","at":"2025-..+00:00","run_id":"..","pid":4242,"fault":"command",
     "provider":"generic","target_source":"targets/x.yaml","params":{..},"state":"injecting"}
    {"id":"9f..","at":"..","state":"updated","params":{..}}     a fault learnt something
    {"id":"9f..","at":"..","state":"healed"}

Secrets: the journal holds what heal needs, verbatim (a redacted value could not heal
anything), so undo params must never contain a secret. A fault keeps the *name* of an
environment variable, or a URL without its password, and reads the secret when it heals.
`begin` and `update` refuse, before anything is written, params that hold a registered secret
or a password in a URL (see gameday.secrets), so a mistake fails loudly instead of leaving a
password in `~/.local/state`. The file is created readable by its owner only.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos.base import Fault, FaultError, fault_class
from gameday.secrets import redact
from gameday.target import Target

Log = Callable[[str], None]

STATE_DIR_ENV = "GAMEDAY_STATE_DIR"


def state_dir() -> Path:
    """Where journals live: $GAMEDAY_STATE_DIR, $XDG_STATE_HOME/gameday, ~/.local/state/gameday."""
    explicit = os.environ.get(STATE_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "gameday"
    return Path.home() / ".local" / "state" / "gameday"


@dataclass(frozen=True)
class Entry:
    """A fault begun by a run: everything needed to rebuild it and heal it elsewhere."""

    id: str
    at: str  # wall time (ISO 8601, UTC) when the fault was begun
    run_id: str
    pid: int  # the process that injected it: alive means the run may still heal it itself
    fault: str  # registry name
    provider: str
    target_source: str
    params: dict[str, str] = field(hash=False)  # the latest undo params


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _file_name(target_name: str) -> str:
    # A target name is free text; keep the file inside the state folder whatever it says.
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", target_name).lstrip(".") or "_"
    return f"journal-{safe}.jsonl"


def _refuse_secrets(fault: str, params: dict[str, str]) -> None:
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise FaultError(f"undo params of {fault} must map str to str, got {key!r}: {value!r}")
        if redact(value) != value or redact(key) != key:
            raise FaultError(
                f"undo params of {fault} hold a secret in {key!r}: the undo journal never "
                "stores secrets (keep the name of an environment variable instead)"
            )


class Journal:
    """The undo journal of one target. Thread-safe; safe to share between processes (each
    record is one O_APPEND write, so records of concurrent writers never interleave)."""

    def __init__(self, target: Target, *, directory: Path | None = None) -> None:
        self.target = target
        self.directory = directory if directory is not None else state_dir()
        self.path = self.directory / _file_name(target.name)
        #: line numbers skipped as damaged by the last `pending()` (not the truncated last line)
        self.damaged: list[int] = []
        self._lock = threading.Lock()

    def begin(self, fault: Fault, run_id: str) -> Entry:
        """Record a fault about to be injected; on disk (fsync'd) when this returns."""
        params = fault.undo_params()
        _refuse_secrets(fault.name, params)
        entry = Entry(
            id=uuid.uuid4().hex,
            at=_now(),
            run_id=run_id,
            pid=os.getpid(),
            fault=fault.name,
            provider=self.target.provider,
            target_source=self.target.source,
            params=dict(params),
        )
        self._append(
            {
                "id": entry.id,
                "at": entry.at,
                "run_id": run_id,
                "pid": entry.pid,
                "fault": entry.fault,
                "provider": entry.provider,
                "target_source": entry.target_source,
                "params": entry.params,
                "state": "injecting",
            }
        )
        return entry

    def update(self, entry: Entry, params: dict[str, str]) -> Entry:
        """Record new undo params for a begun fault (learnt during inject); fsync'd."""
        _refuse_secrets(entry.fault, params)
        self._append({"id": entry.id, "at": _now(), "state": "updated", "params": dict(params)})
        return replace(entry, params=dict(params))

    def done(self, entry: Entry) -> None:
        """Record that the fault is healed; fsync'd."""
        self._append({"id": entry.id, "at": _now(), "state": "healed"})

    def pending(self) -> list[Entry]:
        """Faults begun and not healed, oldest first, each with its latest params.

        A last line without its newline (the writer died mid-record) is ignored; any other
        line that is not a record is skipped and its number kept in `damaged`.
        """
        self.damaged = []
        try:
            with open(self.path, "rb") as f:
                lines = f.read().split(b"\n")
        except FileNotFoundError:
            return []
        begun: dict[str, Entry] = {}
        params: dict[str, dict[str, str]] = {}
        healed: set[str] = set()
        last = len(lines)
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            record = _parse(raw)
            if record is None:
                if lineno != last:  # the last chunk lacks "\n": a truncated record
                    self.damaged.append(lineno)
                continue
            rid = record["id"]
            state = record.get("state")
            if state == "healed":
                healed.add(rid)
            elif state == "injecting":
                entry = _entry(record)
                if entry is None:
                    self.damaged.append(lineno)
                else:
                    begun.setdefault(rid, entry)
            elif state == "updated" and _str_map(record.get("params")):
                params[rid] = dict(record["params"])
            else:
                self.damaged.append(lineno)
        return [
            replace(e, params=params.get(rid, e.params))
            for rid, e in begun.items()
            if rid not in healed
        ]

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self._lock:
            created = not self.path.exists()
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                # A record cut short by a crash must not swallow this one: end it first.
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.directory)


def _fsync_dir(directory: Path) -> None:
    # The file's name lives in the folder: without this a new journal could vanish on power loss.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        return None
    return data


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


def _entry(record: dict[str, Any]) -> Entry | None:
    strings = ("at", "run_id", "fault", "provider", "target_source")
    if not all(isinstance(record.get(k), str) for k in strings):
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not _str_map(record.get("params")):
        return None
    return Entry(
        id=record["id"],
        at=record["at"],
        run_id=record["run_id"],
        pid=pid,
        fault=record["fault"],
        provider=record["provider"],
        target_source=record["target_source"],
        params=dict(record["params"]),
    )


def pid_alive(pid: int) -> bool:
    """Is this process still running here? A zombie (killed, not yet reaped) is not."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rpartition(")")[2].split()[:1]
    return state not in (["Z"], ["X"])


def safe_log(log: Log) -> Log:
    """`log`, made unable to raise: after SIGHUP the terminal is gone and writing to it fails,
    and a log line must never be what stops a heal."""

    def say(message: str) -> None:
        with contextlib.suppress(Exception):
            log(message)

    return say


def one_line(exc: BaseException) -> str:
    """An exception as one redacted line for the user."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return redact(text)


def heal_pending(
    target: Target, *, log: Log, force: bool = False, journal: Journal | None = None
) -> list[str]:
    """Heal every fault the journal of `target` holds as begun and not healed.

    Each entry is rebuilt with `fault_class(entry.fault, target.provider).from_undo(...)`,
    healed and marked done; the return value describes what was healed. An entry whose run
    is still alive (its pid exists: that run is in the middle of the fault and will heal it)
    is refused unless `force`. A refused entry or a heal that fails stays pending, is
    reported in one line and the others are still healed; then FaultError sums up.
    """
    from chaos.runner import healing  # the runner imports this module

    log = safe_log(log)
    journal = journal if journal is not None else Journal(target)
    entries = journal.pending()
    for lineno in journal.damaged:
        log(f"warning: {journal.path}:{lineno} is damaged and was skipped")
    healed: list[str] = []
    failures: list[str] = []
    for entry in entries:
        what = f"{entry.fault} (begun {entry.at} by run {entry.run_id}, pid {entry.pid})"
        if not force and pid_alive(entry.pid):
            failures.append(
                f"{what}: that process is still running, in the middle of this fault; it heals "
                "it itself (use --force only if that process is not gameday)"
            )
            log(f"refused: {failures[-1]}")
            continue
        try:
            if entry.provider != target.provider:
                raise FaultError(
                    f"journaled for a {entry.provider} target, but {target.name} is now "
                    f"{target.provider}"
                )
            fault = fault_class(entry.fault, target.provider).from_undo(target, entry.params)
            description = redact(fault.describe())
            log(f"healing: {description} ({what})")
            with healing():
                fault.heal()
        except Exception as exc:
            failures.append(f"{what}: {one_line(exc)}")
            log(f"heal failed: {failures[-1]}")
            continue
        journal.done(entry)
        healed.append(description)
        log(f"healed: {description}")
    if failures:
        raise FaultError(
            f"{len(failures)} of {len(entries)} pending faults of target {target.name} "
            f"not healed (still in {journal.path}): " + "; ".join(failures)
        )
    return healed
