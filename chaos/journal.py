"""The undo journal: what was injected and how to heal it, on disk before the fault acts.

One JSON-lines file per deployment (`journal-<target name>-<hash of its identity>.jsonl`: a
target's name is only a label, `Target.identity()` says which deployment it is) in the state
folder:
`$GAMEDAY_STATE_DIR`, else `$XDG_STATE_HOME/gameday`, else `~/.local/state/gameday`. A run
appends a record before each inject and another once the fault is healed; every record is
flushed and fsync'd before the call returns, so a run killed with SIGKILL (or a host losing
power) leaves behind exactly the faults it had begun and not healed. `gameday heal` (and the
start of the next run) rebuilds them with `Fault.from_undo` and heals them:
`chaos.runner.heal_pending`. An entry is healed only on the deployment it was made on: its
record carries that deployment's identity, and a heal through a target of another identity
refuses it.

Records (one JSON object a line, appended, never rewritten):

    {"id":"9f..","at":"2025-..+00:00","run_id":"..","pid":4242,"fault":"command",
     "provider":"generic","target_source":"targets/x.yaml","identity":"generic http://..",
     "params":{..},"state":"injecting"}
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

import hashlib
import json
import os
import re
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos.base import Fault, FaultError
from gameday.secrets import redact
from gameday.target import Target

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
    # The deployment it was made on (Target.identity()); "" in journals older than identities.
    identity: str = ""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _safe(target_name: str) -> str:
    # A target name is free text; keep the file inside the state folder whatever it says.
    return re.sub(r"[^A-Za-z0-9._-]", "_", target_name).lstrip(".")[:64] or "_"


def _file_name(target: Target) -> str:
    digest = hashlib.sha256(target.identity().encode()).hexdigest()[:12]
    return f"journal-{_safe(target.name)}-{digest}.jsonl"


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
        self.identity = target.identity()
        self.path = self.directory / _file_name(target)
        # Before identities, one file per target name: still read, so nothing pending is lost.
        self.legacy_path = self.directory / f"journal-{_safe(target.name)}.jsonl"
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
            identity=self.identity,
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
                "identity": entry.identity,
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
        """Record that the fault is healed, in the file it was begun in; fsync'd."""
        path = self.legacy_path if not entry.identity else self.path
        self._append({"id": entry.id, "at": _now(), "state": "healed"}, path)

    def pending(self) -> list[Entry]:
        """Faults begun and not healed, oldest first, each with its latest params: this
        deployment's journal, and the pre-identity journal of the target's name (its entries
        have identity "": `heal_pending` asks for --force before touching them).

        A last line without its newline (the writer died mid-record) is ignored; any other
        line that is not a record is skipped and its number kept in `damaged`.
        """
        self.damaged = []
        found = _pending_in(self.path, self.damaged)
        if self.legacy_path.exists():
            found += [e for e in _pending_in(self.legacy_path, []) if not e.identity]
        return found

    def elsewhere(self) -> dict[str, int]:
        """Deployments other than this one, of the same target name, with faults pending in
        their journals: identity -> how many. For the one line a heal that found nothing says."""
        out: dict[str, int] = {}
        mine = re.compile(rf"journal-{re.escape(_safe(self.target.name))}-[0-9a-f]{{12}}\.jsonl")
        for path in sorted(self.directory.glob(f"journal-{_safe(self.target.name)}-*.jsonl")):
            if path == self.path or not mine.fullmatch(path.name):
                continue
            for entry in _pending_in(path, []):
                if entry.identity and entry.identity != self.identity:
                    out[entry.identity] = out.get(entry.identity, 0) + 1
        return out

    def _append(self, record: dict[str, Any], path: Path | None = None) -> None:
        path = path or self.path
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        with self._lock:
            created = not path.exists()
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                # A record cut short by a crash must not swallow this one: end it first.
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write to {path} ({written} of {len(line)} bytes)")
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.directory)


def _pending_in(path: Path, damaged: list[int]) -> list[Entry]:
    try:
        with open(path, "rb") as f:
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
                damaged.append(lineno)
            continue
        rid = record["id"]
        state = record.get("state")
        if state == "healed":
            healed.add(rid)
        elif state == "injecting":
            entry = _entry(record)
            if entry is None:
                damaged.append(lineno)
            else:
                begun.setdefault(rid, entry)
        elif state == "updated" and _str_map(record.get("params")):
            params[rid] = dict(record["params"])
        else:
            damaged.append(lineno)
    pending = [(rid, e) for rid, e in begun.items() if rid not in healed]
    return [replace(e, params=params.get(rid, e.params)) for rid, e in pending]


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
    identity = record.get("identity", "")
    if not isinstance(identity, str):
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
        identity=identity,
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
