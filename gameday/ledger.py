"""The ledger: one store of every game day, shared by every machine that runs one.

It keeps four things per target, keyed by `Target.identity()` (the deployment, not the file
name), so that two target files naming the same deployment share one lease and one pause:

- the **lease**: one destructive run per target at a time, across machines. A run takes it
  before anything is broken, renews it while it runs, and gives it back at its end. A second
  run is refused at once, naming the holder (host, pid, run id, since when). A lease whose
  holder died is taken over: at once when the holder ran on this machine and its process is
  gone, otherwise once it has not been renewed for its time to live (`lease_ttl_sec`, 60 s).
- the **pause** (the kill switch): while a target is paused, no fault is injected by anyone.
  chaos.gates puts it into the engine: an injection gate asks `paused` right before a fault
  acts, and `PauseSwitch` is the abort condition every fault's watchdog polls, so a running
  game day heals within a second of the pause.
- the **records**: one row per scenario of every run, with the measured numbers of its
  verdicts (time to recover, lost writes, availability, latency...), for trends.
- the **events**: who paused, resumed, acknowledged a drill, took over a dead run's lease.

Where: `$GAMEDAY_LEDGER_URL` (a `postgresql://` URL for a team sharing one ledger, or
`sqlite:///path`), else `.gameday/ledger.sqlite3` in the project folder (the working
directory, like `reports/`). The schema lives in `MIGRATIONS` below and is brought up to date
whenever a ledger is opened; a ledger newer than this code is refused, never downgraded.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from gameday.secrets import redact
from gameday.target import Target

LEDGER_URL_ENV = "GAMEDAY_LEDGER_URL"
LEASE_TTL_ENV = "GAMEDAY_LEASE_TTL_SEC"
# A lease holder hands its token to the processes it starts: a run started *by* the holder (a
# harness test running pytest, `make test` running the resilience tests) is part of its game
# day, not a second one.
LEASE_TOKEN_ENV = "GAMEDAY_LEASE_TOKEN"
# What `gameday run` tells the pytest session underneath (gameday.ledger_plugin reads them).
PLAN_ENV = "GAMEDAY_PLAN"
RUN_INFO_ENV = "GAMEDAY_RUN_INFO"
DEPLOYMENT_REVISION_ENV = "GAMEDAY_DEPLOYMENT_REVISION"
DEFAULT_LEDGER_PATH = Path(".gameday") / "ledger.sqlite3"
DEFAULT_LEASE_TTL_SEC = 60.0
#: how often a running game day looks at the pause state (the kill switch acts within ~this)
PAUSE_POLL_SEC = 0.5
#: a ledger that cannot be read this long is treated as "cannot tell": the fault heals
LEDGER_SILENCE_SEC = 5.0
CONNECT_TIMEOUT_SEC = 5

Dialect = Literal["sqlite", "postgres"]


class LedgerError(Exception):
    """The ledger cannot be used (unreachable, not a ledger, too new). One line for the user."""


class LeaseHeld(Exception):
    """Another run holds the target's lease. `str()` names the holder in one line."""

    def __init__(self, lease: Lease, now: float) -> None:
        super().__init__(
            f"target {lease.target_name} is held by another game day: {lease.describe(now)}"
        )
        self.lease = lease


class LeaseLost(Exception):
    """Our lease is gone: it expired and another run took it over."""


class TargetPaused(Exception):
    """The target is paused (the kill switch): no fault may be injected. One line."""

    def __init__(self, pause: Pause) -> None:
        super().__init__(pause.describe())
        self.pause = pause


# -- who we are --------------------------------------------------------------------------------


def _proc_start(pid: int) -> str | None:
    """The start time of a process (clock ticks since boot), or None when it does not exist
    here or is a zombie. Together with the pid it names one process: pids are reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else None


def _machine() -> str:
    """What makes a pid meaningful: this kernel's boot and this pid namespace. Two containers
    on one host (or two hosts with one name) never share both, so a lease's pid is only
    checked where it can be: elsewhere, the lease's time to live decides."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{boot}/{pidns}"


@dataclass(frozen=True)
class Holder:
    """A process that holds (or asks for) a lease."""

    host: str
    machine: str
    pid: int
    pid_start: str

    @classmethod
    def me(cls) -> Holder:
        pid = os.getpid()
        return cls(socket.gethostname(), _machine(), pid, _proc_start(pid) or "")

    def gone(self) -> bool:
        """True only when this process can be seen not to run any more (same machine)."""
        if not self.machine or self.machine != _machine():
            return False
        return _proc_start(self.pid) != self.pid_start


def who_am_i() -> str:
    """user@host, for a pause or an acknowledgement given without --by."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


# -- values ----------------------------------------------------------------------------------


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Lease:
    target_key: str
    target_name: str
    token: str
    holder: Holder
    run_id: str
    plan: str
    since: float
    renewed_at: float
    expires_at: float

    @property
    def ttl_sec(self) -> float:
        return self.expires_at - self.renewed_at

    def describe(self, now: float) -> str:
        run = self.run_id or "(starting)"
        plan = f", plan {self.plan}" if self.plan else ""
        left = self.expires_at - now
        expiry = f"expires in {_ago(left)} unless renewed" if left > 0 else "expired"
        return (
            f"host {self.holder.host}, pid {self.holder.pid}, run {run}{plan}, since "
            f"{iso(self.since)} ({_ago(now - self.since)} ago; renewed "
            f"{_ago(now - self.renewed_at)} ago, {expiry})"
        )


@dataclass(frozen=True)
class Pause:
    target_key: str
    target_name: str
    reason: str
    by: str
    since: float

    def describe(self) -> str:
        return (
            f"target {self.target_name} is paused by {self.by} since {iso(self.since)}: "
            f"{self.reason} (`gameday resume --target {self.target_name}` lifts it)"
        )


@dataclass(frozen=True)
class Event:
    at: float
    target_key: str
    target_name: str
    kind: str  # pause | resume | ack | lease-taken-over
    who: str
    detail: str


@dataclass(slots=True)
class RunRecord:
    """One scenario of one run (or one drill), as the ledger keeps it. (Not frozen: a trend
    reads tens of thousands of them, and a frozen dataclass is three times slower to make.)"""

    run_id: str
    kind: str  # scenario | drill
    plan: str
    target_name: str
    target_key: str
    harness_revision: str
    deployment_revision: str
    host: str
    started_at: float
    ended_at: float
    scenario: str  # node id (or the drill's fault)
    title: str
    outcome: str  # passed | failed | skipped | aborted
    message: str
    duration_sec: float
    metrics: dict[str, float] = field(default_factory=dict, hash=False)
    verdicts: list[dict[str, Any]] = field(default_factory=list, hash=False)
    report: str = ""
    regression: str | None = None
    id: int | None = None


# -- the schema, in one place ------------------------------------------------------------------

# Each migration is a list of statements; {serial} and {float} are filled in per dialect.
# Append new migrations at the end; never edit one that has shipped.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE gameday_leases (
            target_key TEXT PRIMARY KEY, target_name TEXT NOT NULL, token TEXT NOT NULL,
            host TEXT NOT NULL, machine TEXT NOT NULL, pid INTEGER NOT NULL,
            pid_start TEXT NOT NULL, run_id TEXT NOT NULL, plan TEXT NOT NULL,
            since {float} NOT NULL, renewed_at {float} NOT NULL, expires_at {float} NOT NULL)""",
        """CREATE TABLE gameday_pauses (
            target_key TEXT PRIMARY KEY, target_name TEXT NOT NULL, reason TEXT NOT NULL,
            paused_by TEXT NOT NULL, since {float} NOT NULL)""",
        """CREATE TABLE gameday_events (
            id {serial}, at {float} NOT NULL, target_key TEXT NOT NULL,
            target_name TEXT NOT NULL, kind TEXT NOT NULL, who TEXT NOT NULL,
            detail TEXT NOT NULL)""",
        "CREATE INDEX gameday_events_by_target ON gameday_events (target_key, kind, at)",
        """CREATE TABLE gameday_records (
            id {serial}, run_id TEXT NOT NULL, kind TEXT NOT NULL, plan TEXT NOT NULL,
            target_name TEXT NOT NULL, target_key TEXT NOT NULL,
            harness_revision TEXT NOT NULL, deployment_revision TEXT NOT NULL,
            host TEXT NOT NULL, started_at {float} NOT NULL, ended_at {float} NOT NULL,
            scenario TEXT NOT NULL, title TEXT NOT NULL, outcome TEXT NOT NULL,
            message TEXT NOT NULL, duration_sec {float} NOT NULL, metrics TEXT NOT NULL,
            verdicts TEXT NOT NULL, report TEXT NOT NULL, regression TEXT)""",
        "CREATE INDEX gameday_records_by_trend ON gameday_records (target_key, title, ended_at)",
        "CREATE INDEX gameday_records_by_run ON gameday_records (run_id)",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY", "float": "REAL"},
    "postgres": {
        "serial": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        "float": "DOUBLE PRECISION",
    },
}
_RECORD_COLUMNS = (
    "run_id, kind, plan, target_name, target_key, harness_revision, deployment_revision, host, "
    "started_at, ended_at, scenario, title, outcome, message, duration_sec, metrics, verdicts, "
    "report, regression"
)
_LEASE_COLUMNS = (
    "target_key, target_name, token, host, machine, pid, pid_start, run_id, plan, since, "
    "renewed_at, expires_at"
)


# -- where the ledger is ------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerLocation:
    """A parsed ledger URL and where it came from (for the one-line error)."""

    dialect: Dialect
    # the postgres URL as given (its password too: never in a repr), or the SQLite file path
    url: str = field(repr=False)
    source: str = ""  # "GAMEDAY_LEDGER_URL", "gamedays/x.yaml: ledger", or "default"

    @property
    def shown(self) -> str:
        return redact(self.url)


def ledger_location(url: str | None = None, *, source: str | None = None) -> LedgerLocation:
    """`url` (else $GAMEDAY_LEDGER_URL, else the default SQLite file) as a location."""
    if url is None:
        env = os.environ.get(LEDGER_URL_ENV, "").strip()
        if not env:
            return LedgerLocation("sqlite", str(DEFAULT_LEDGER_PATH), "the default ledger")
        url, source = env, LEDGER_URL_ENV
    source = source or "ledger"
    scheme = urlsplit(url).scheme
    if scheme in ("postgresql", "postgres"):
        return LedgerLocation("postgres", url, source)
    if scheme == "sqlite":
        # SQLAlchemy's spelling: sqlite:///relative/path, sqlite:////absolute/path
        if url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///")
        elif url.startswith("sqlite://"):
            raise LedgerError(f"{source}: {url!r}: write sqlite:////absolute/path/file")
        else:
            path = url.removeprefix("sqlite:")
        if not path:
            raise LedgerError(f"{source}: {url!r} names no SQLite file (sqlite:///path/file)")
        return LedgerLocation("sqlite", path, source)
    if "://" not in url:
        return LedgerLocation("sqlite", url, source)
    raise LedgerError(
        f"{source}: {redact(url)!r} is not a ledger URL (postgresql://... or sqlite:///path)"
    )


# -- the store ---------------------------------------------------------------------------------


class Ledger:
    """An open ledger. Thread-safe (one connection, one lock); open one per process or thread
    that needs it, close it when done."""

    def __init__(self, location: LedgerLocation, conn: Any) -> None:
        self.location = location
        self.dialect: Dialect = location.dialect
        self._conn = conn
        self._lock = threading.RLock()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, url: str | None = None, *, source: str | None = None) -> Ledger:
        """Connect and bring the schema up to date; LedgerError in one line if it cannot."""
        location = ledger_location(url, source=source)
        conn = _connect(location)
        ledger = cls(location, conn)
        try:
            ledger._migrate()
        except LedgerError:
            ledger.close()
            raise
        except Exception as exc:
            ledger.close()
            raise LedgerError(
                f"{location.source}: {location.shown}: not usable as a ledger: {_one_line(exc)}"
            ) from None
        return ledger

    def close(self) -> None:
        with self._lock, contextlib.suppress(Exception):
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Ledger {self.dialect} {self.location.shown}>"

    # -- plumbing --------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgres" else sql

    @contextlib.contextmanager
    def _tx(self, lock_key: str | None = None) -> Iterator[Callable[..., Any]]:
        """A write transaction; yields `execute(sql, params) -> cursor`. SQLite takes the
        database's write lock at once (BEGIN IMMEDIATE); PostgreSQL takes an advisory lock
        per `lock_key`, so that two runs deciding about one target's lease take turns."""
        with self._lock:
            conn = self._conn
            if self.dialect == "sqlite":
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield lambda sql, params=(): conn.execute(sql, params)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                with conn.transaction():
                    if lock_key is not None:
                        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock_key,))
                    yield lambda sql, params=(): conn.execute(self._sql(sql), params)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._conn.execute(self._sql(sql), params).fetchall())

    def now(self) -> float:
        """POSIX seconds by the ledger's own clock (PostgreSQL's, shared by every machine)."""
        if self.dialect == "postgres":
            row = self._query("SELECT extract(epoch FROM clock_timestamp())::float8")
            return float(row[0][0])
        return time.time()

    def _migrate(self) -> None:
        with contextlib.suppress(Exception):  # no schema yet: migrate below
            if self.schema_version() == SCHEMA_VERSION:
                return  # the usual case: no write lock taken just to read
        if self.dialect == "postgres":
            with contextlib.suppress(Exception):
                self._conn.rollback()
        with self._tx(lock_key="gameday-schema") as ex:
            ex("CREATE TABLE IF NOT EXISTS gameday_schema (version INTEGER NOT NULL)")
            rows = ex("SELECT version FROM gameday_schema").fetchall()
            version = int(rows[0][0]) if rows else 0
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.location.source}: {self.location.shown}: ledger schema version "
                    f"{version} is newer than this gameday knows ({SCHEMA_VERSION}): "
                    "upgrade gameday"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    ex(statement.format(**_TYPES[self.dialect]))
            if not rows:
                ex("INSERT INTO gameday_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version != SCHEMA_VERSION:
                ex("UPDATE gameday_schema SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        return int(self._query("SELECT version FROM gameday_schema")[0][0])

    # -- leases ----------------------------------------------------------------------------
    def acquire(
        self,
        target: Target,
        *,
        run_id: str = "",
        plan: str = "",
        ttl_sec: float | None = None,
        holder: Holder | None = None,
    ) -> tuple[Lease, Lease | None]:
        """Take the target's lease; returns it and the dead holder's lease it replaced, if any.
        LeaseHeld (naming the holder) when a live run holds it."""
        ttl = lease_ttl(ttl_sec)
        me = holder or Holder.me()
        key = target.identity()
        with self._tx(lock_key=f"lease {key}") as ex:
            now = self.now() if self.dialect == "postgres" else time.time()
            rows = ex(
                f"SELECT {_LEASE_COLUMNS} FROM gameday_leases WHERE target_key = ?", (key,)
            ).fetchall()
            previous = _lease(rows[0]) if rows else None
            taken_over: Lease | None = None
            if previous is not None:
                if previous.expires_at > now and not previous.holder.gone():
                    raise LeaseHeld(previous, now)
                taken_over = previous
                ex("DELETE FROM gameday_leases WHERE target_key = ?", (key,))
            lease = Lease(
                target_key=key, target_name=target.name, token=uuid.uuid4().hex, holder=me,
                run_id=run_id, plan=plan, since=now, renewed_at=now, expires_at=now + ttl,
            )  # fmt: skip
            ex(
                f"INSERT INTO gameday_leases ({_LEASE_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _lease_row(lease),
            )
            if taken_over is not None:
                why = "expired" if taken_over.expires_at <= now else "its process is gone"
                self._event(
                    ex, now, target, "lease-taken-over", f"pid {me.pid}@{me.host}",
                    f"{why}: {taken_over.describe(now)}",
                )  # fmt: skip
        return lease, taken_over

    def renew(self, lease: Lease) -> Lease:
        """Push the lease's expiry one time-to-live ahead; LeaseLost if it is not ours now."""
        with self._tx() as ex:
            now = self.now() if self.dialect == "postgres" else time.time()
            expires = now + lease.ttl_sec
            cur = ex(
                "UPDATE gameday_leases SET renewed_at = ?, expires_at = ? "
                "WHERE target_key = ? AND token = ?",
                (now, expires, lease.target_key, lease.token),
            )
            if cur.rowcount != 1:
                holder = ex(
                    f"SELECT {_LEASE_COLUMNS} FROM gameday_leases WHERE target_key = ?",
                    (lease.target_key,),
                ).fetchall()
                who = f"now held by {_lease(holder[0]).describe(now)}" if holder else "released"
                raise LeaseLost(
                    f"the lease of target {lease.target_name} was lost (not renewed for "
                    f"{lease.ttl_sec:.0f} s; {who})"
                )
        return replace(lease, renewed_at=now, expires_at=expires)

    def attach_run(self, lease: Lease, run_id: str) -> Lease:
        """Name the run that holds the lease (known only once the run has started)."""
        with self._tx() as ex:
            ex(
                "UPDATE gameday_leases SET run_id = ? WHERE target_key = ? AND token = ?",
                (run_id, lease.target_key, lease.token),
            )
        return replace(lease, run_id=run_id)

    def release(self, lease: Lease) -> None:
        with self._tx() as ex:
            ex(
                "DELETE FROM gameday_leases WHERE target_key = ? AND token = ?",
                (lease.target_key, lease.token),
            )

    def lease(self, target: Target) -> Lease | None:
        """The target's lease as stored (it may have expired)."""
        rows = self._query(
            f"SELECT {_LEASE_COLUMNS} FROM gameday_leases WHERE target_key = ?",
            (target.identity(),),
        )
        return _lease(rows[0]) if rows else None

    def lease_problem(self, target: Target) -> str | None:
        """Why a destructive run would be refused the lease now (holder named), or None."""
        lease = self.lease(target)
        now = self.now()
        if lease is None or lease.expires_at <= now or lease.holder.gone():
            return None
        if self.joinable(target) is not None:
            return None
        return str(LeaseHeld(lease, now))

    def joinable(self, target: Target, token: str | None = None) -> Lease | None:
        """The target's live lease when `token` (default: $GAMEDAY_LEASE_TOKEN, set by a
        holder for the processes it starts) is its token, else None."""
        token = token if token is not None else os.environ.get(LEASE_TOKEN_ENV)
        if not token:
            return None
        lease = self.lease(target)
        if lease is None or lease.token != token:
            return None
        if lease.expires_at <= self.now() or lease.holder.gone():
            return None
        return lease

    # -- the kill switch -------------------------------------------------------------------
    def pause(self, target: Target, *, reason: str, by: str) -> Pause:
        with self._tx() as ex:
            now = self.now() if self.dialect == "postgres" else time.time()
            key = target.identity()
            ex("DELETE FROM gameday_pauses WHERE target_key = ?", (key,))
            ex(
                "INSERT INTO gameday_pauses (target_key, target_name, reason, paused_by, since) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, target.name, reason, by, now),
            )
            self._event(ex, now, target, "pause", by, reason)
        return Pause(key, target.name, reason, by, now)

    def resume(self, target: Target, *, by: str) -> Pause | None:
        """Lift the pause; returns the pause that was lifted (None: it was not paused)."""
        with self._tx() as ex:
            now = self.now() if self.dialect == "postgres" else time.time()
            key = target.identity()
            rows = ex(
                "SELECT target_key, target_name, reason, paused_by, since FROM gameday_pauses "
                "WHERE target_key = ?",
                (key,),
            ).fetchall()
            if not rows:
                return None
            ex("DELETE FROM gameday_pauses WHERE target_key = ?", (key,))
            lifted = _pause(rows[0])
            self._event(ex, now, target, "resume", by, f"paused by {lifted.by}: {lifted.reason}")
        return lifted

    def paused(self, target: Target | str) -> Pause | None:
        key = target if isinstance(target, str) else target.identity()
        rows = self._query(
            "SELECT target_key, target_name, reason, paused_by, since FROM gameday_pauses "
            "WHERE target_key = ?",
            (key,),
        )
        return _pause(rows[0]) if rows else None

    # -- events ----------------------------------------------------------------------------
    def _event(
        self, ex: Callable[..., Any], at: float, target: Target, kind: str, who: str, detail: str
    ) -> None:
        ex(
            "INSERT INTO gameday_events (at, target_key, target_name, kind, who, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (at, target.identity(), target.name, kind, who, detail),
        )

    def ack(self, target: Target, *, by: str, note: str = "") -> Event:
        """A person acknowledges what is going on (a drill's time to detect stops here)."""
        with self._tx() as ex:
            now = self.now() if self.dialect == "postgres" else time.time()
            self._event(ex, now, target, "ack", by, note)
        return Event(now, target.identity(), target.name, "ack", by, note)

    def events(
        self, target: Target, *, kind: str | None = None, since: float | None = None
    ) -> list[Event]:
        sql = (
            "SELECT at, target_key, target_name, kind, who, detail FROM gameday_events "
            "WHERE target_key = ?"
        )
        params: list[Any] = [target.identity()]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if since is not None:
            sql += " AND at >= ?"
            params.append(since)
        return [Event(float(r[0]), *r[1:]) for r in self._query(sql + " ORDER BY at", params)]

    # -- records ---------------------------------------------------------------------------
    def append(self, records: Sequence[RunRecord]) -> None:
        """Append records (one transaction: a run's rows land together or not at all)."""
        if not records:
            return
        with self._tx() as ex:
            sql = f"INSERT INTO gameday_records ({_RECORD_COLUMNS}) VALUES ({', '.join('?' * 19)})"
            for r in records:
                ex(sql, _record_row(r))

    def records(
        self,
        *,
        target_key: str | None = None,
        title: str | None = None,
        title_contains: str | None = None,
        run_id: str | None = None,
        last_runs: int | None = None,
        passing_only: bool = False,
        exclude_run: str | None = None,
        verdicts: bool = True,
    ) -> list[RunRecord]:
        """Matching records, oldest first. `last_runs`: only those of the newest N runs.
        `verdicts=False` leaves each record's verdicts out (tables and trends need only the
        numbers, and reading the verdicts is most of the cost)."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("target_key", target_key), ("title", title), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if title_contains:
            where.append("lower(title) LIKE ?")
            params.append(f"%{title_contains.lower()}%")
        if passing_only:
            where.append("outcome = 'passed' AND regression IS NULL")
        if exclude_run is not None:
            where.append("run_id <> ?")
            params.append(exclude_run)
        cond = " AND ".join(where)
        columns = (
            _RECORD_COLUMNS
            if verdicts
            else _RECORD_COLUMNS.replace("verdicts,", "'[]' AS verdicts,")
        )
        if last_runs is not None and title is not None:
            # One record per run and title: the newest N rows, from the trend index.
            rows = self._query(
                f"SELECT {columns}, id FROM gameday_records WHERE {cond} "
                "ORDER BY ended_at DESC, id DESC LIMIT ?",
                [*params, last_runs],
            )
            return _records(rows[::-1])
        if last_runs is not None:
            # The newest N runs among the matching rows, then every matching row of theirs.
            cond += (
                f" AND run_id IN (SELECT run_id FROM gameday_records WHERE {cond} "
                "GROUP BY run_id ORDER BY max(ended_at) DESC LIMIT ?)"
            )
            params = [*params, *params, last_runs]
        rows = self._query(
            f"SELECT {columns}, id FROM gameday_records WHERE {cond} ORDER BY ended_at, id",
            params,
        )
        return _records(rows)

    def mark_regression(self, run_id: str, title: str, text: str) -> None:
        with self._tx() as ex:
            ex(
                "UPDATE gameday_records SET regression = ? WHERE run_id = ? AND title = ?",
                (text, run_id, title),
            )


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0] if lines else type(exc).__name__)


def _connect(location: LedgerLocation) -> Any:
    if location.dialect == "sqlite":
        path = Path(location.url)
        try:
            if path == DEFAULT_LEDGER_PATH:
                _make_private_folder(path.parent)
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            # WAL: readers (the pause switch, `gameday history`) never wait for a writer.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
        except (sqlite3.Error, OSError) as exc:
            raise LedgerError(
                f"{location.source}: {location.shown}: cannot open the SQLite ledger: "
                f"{_one_line(exc)}"
            ) from None
        return conn
    import psycopg

    try:
        return psycopg.connect(location.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SEC)
    except Exception as exc:
        raise LedgerError(
            f"{location.source}: {location.shown}: cannot connect to the ledger: {_one_line(exc)}"
        ) from None


def _make_private_folder(folder: Path) -> None:
    if folder.exists():
        return
    folder.mkdir(parents=True, mode=0o700)
    # Like .pytest_cache: the folder keeps itself out of git.
    (folder / ".gitignore").write_text("# created by gameday: the local ledger\n*\n")


def _lease_row(lease: Lease) -> tuple[Any, ...]:
    h = lease.holder
    return (
        lease.target_key, lease.target_name, lease.token, h.host, h.machine, h.pid,
        h.pid_start, lease.run_id, lease.plan, lease.since, lease.renewed_at, lease.expires_at,
    )  # fmt: skip


def _lease(row: Sequence[Any]) -> Lease:
    key, name, token, host, machine, pid, pid_start, run_id, plan, since, renewed, expires = row
    return Lease(
        key, name, token, Holder(host, machine, int(pid), pid_start), run_id, plan,
        float(since), float(renewed), float(expires),
    )  # fmt: skip


def _pause(row: Sequence[Any]) -> Pause:
    key, name, reason, by, since = row
    return Pause(key, name, reason, by, float(since))


def _record_row(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.run_id, r.kind, r.plan, r.target_name, r.target_key, r.harness_revision,
        r.deployment_revision, r.host, r.started_at, r.ended_at, r.scenario, r.title,
        r.outcome, redact(r.message), r.duration_sec,
        json.dumps(r.metrics, sort_keys=True), json.dumps(r.verdicts), r.report, r.regression,
    )  # fmt: skip


def _records(rows: Sequence[Sequence[Any]]) -> list[RunRecord]:
    # One JSON document for all rows: json.loads per row costs more than the parsing itself
    # when a trend reads 30,000 records.
    metrics = json.loads("[" + ",".join(r[15] for r in rows) + "]")
    verdicts = (
        [[] for _ in rows]
        if all(r[16] == "[]" for r in rows)
        else json.loads("[" + ",".join(r[16] for r in rows) + "]")
    )
    return [_record(r, m, v) for r, m, v in zip(rows, metrics, verdicts, strict=True)]


def _record(row: Sequence[Any], metrics: Any, verdicts: Any) -> RunRecord:
    (run_id, kind, plan, target_name, target_key, harness, deployment, host, started, ended,
     scenario, title, outcome, message, duration, _, _, report, regression,
     rid) = row  # fmt: skip
    return RunRecord(
        run_id=run_id, kind=kind, plan=plan, target_name=target_name, target_key=target_key,
        harness_revision=harness, deployment_revision=deployment, host=host,
        started_at=float(started), ended_at=float(ended), scenario=scenario, title=title,
        outcome=outcome, message=message, duration_sec=float(duration),
        metrics=metrics, verdicts=verdicts, report=report,
        regression=regression, id=int(rid),
    )  # fmt: skip


def lease_ttl(ttl_sec: float | None = None) -> float:
    """The lease's time to live: given, else $GAMEDAY_LEASE_TTL_SEC, else 60 s."""
    if ttl_sec is not None:
        value = float(ttl_sec)
    else:
        raw = os.environ.get(LEASE_TTL_ENV, "").strip()
        try:
            value = float(raw) if raw else DEFAULT_LEASE_TTL_SEC
        except ValueError:
            raise LedgerError(f"{LEASE_TTL_ENV}={raw!r} is not a number of seconds") from None
    if not 2 <= value <= 3600:
        raise LedgerError(f"lease time to live {value:g} s is outside 2..3600 s")
    return value


# -- the kill switch, for the engine -----------------------------------------------------------


def refuse_if_paused(target: Target, *, ledger: Ledger | None = None) -> None:
    """Raise TargetPaused if `target` is paused; call it right before any fault acts.

    It looks only at the ledger, never at tags or options: a paused target refuses every
    fault. A ledger that cannot be read refuses too (LedgerError): no fault is injected while
    nobody can tell whether someone pulled the switch.
    """
    own = ledger is None
    store = Ledger.open() if ledger is None else ledger
    try:
        pause = store.paused(target)
    finally:
        if own:
            store.close()
    if pause is not None:
        raise TargetPaused(pause)


class PauseSwitch:
    """An abort condition (the shape of chaos.runner.AbortCondition) for a fault's watchdog:
    `check()` returns why the fault must heal now (the target was paused: by whom, why), or
    None. Polled every 0.5 s, a running game day heals within a second of `gameday pause`.

    It opens its own connection on first use, in the thread that polls it. A ledger that
    cannot be read for `silence_sec` in a row counts as a reason to heal (cannot tell), but a
    blip shorter than that does not abort a game day.
    """

    def __init__(
        self,
        target: Target,
        *,
        url: str | None = None,
        silence_sec: float = LEDGER_SILENCE_SEC,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.key = target.identity()
        self.url = url
        self.silence_sec = silence_sec
        self._clock = clock
        self._ledger: Ledger | None = None
        self._failing_since: float | None = None

    def check(self) -> str | None:
        try:
            if self._ledger is None:
                self._ledger = Ledger.open(self.url)
            pause = self._ledger.paused(self.key)
        except Exception as exc:
            if self._ledger is not None:
                self._ledger.close()
                self._ledger = None
            now = self._clock()
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since >= self.silence_sec:
                return (
                    "cannot read the pause state from the ledger for "
                    f"{now - self._failing_since:.0f} s ({_one_line(exc)}): healing, as if paused"
                )
            return None
        self._failing_since = None
        return pause.describe() if pause is not None else None

    def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None


# -- keeping a lease while a run lasts ---------------------------------------------------------


class LeaseKeeper:
    """A thread that renews a lease (every third of its time to live) and watches the pause
    state (every 0.5 s) while a run lasts. When the target is paused, or the lease is lost,
    it calls `on_stop(reason)` once and keeps renewing (the run is healing: others must still
    wait). Uses its own connection to the ledger."""

    def __init__(
        self,
        lease: Lease,
        target: Target,
        *,
        url: str | None,
        on_stop: Callable[[str], None],
        poll_sec: float = PAUSE_POLL_SEC,
    ) -> None:
        self.lease = lease
        self.url = url
        self.on_stop = on_stop
        self.poll_sec = poll_sec
        self.stopped: str | None = None
        self._switch = PauseSwitch(target, url=url)
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gameday lease", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._switch.close()

    def _fire(self, reason: str) -> None:
        if self.stopped is None:
            self.stopped = reason
            with contextlib.suppress(Exception):
                self.on_stop(reason)

    def _run(self) -> None:
        renew_every = max(self.lease.ttl_sec / 3, self.poll_sec)
        next_renew = time.monotonic() + renew_every
        failing_since: float | None = None
        ledger: Ledger | None = None
        try:
            while not self._halt.wait(self.poll_sec):
                reason = self._switch.check()
                if reason is not None:
                    self._fire(reason)
                if time.monotonic() < next_renew:
                    continue
                try:
                    if ledger is None:
                        ledger = Ledger.open(self.url)
                    self.lease = ledger.renew(self.lease)
                    failing_since = None
                    next_renew = time.monotonic() + renew_every
                except LeaseLost as exc:
                    self._fire(str(exc))
                    return
                except Exception as exc:
                    if ledger is not None:
                        ledger.close()
                        ledger = None
                    now = time.monotonic()
                    failing_since = failing_since or now
                    # Retry every poll; give up before the lease could expire under us.
                    if now - failing_since > self.lease.ttl_sec / 2:
                        self._fire(
                            f"cannot renew the lease of target {self.lease.target_name} for "
                            f"{now - failing_since:.0f} s ({_one_line(exc)}): another run may "
                            "take it over"
                        )
        finally:
            if ledger is not None:
                ledger.close()
