"""The writable-nodes probe: which nodes of a data store accept a write, asked one by one.

A split brain is two primaries (or two Redis masters) taking writes at once. Clients that go
through the store's endpoint (libpq's multi-host URL, the cache's primary endpoint) only ever
see one of them, so this probe asks every node directly, at a fixed rate: each tick tries one
small write on each node and records one sample per node, all with the tick's `seq`, `server`
naming the node (host:port). `ok` means the node accepted the write; a node that refuses it
(a standby, a replica: `outcome` "fail", no error) or cannot be reached (`error` says how) did
not. `gameday.checks.network.one_writer_at_a_time` reads them.

- database: every host of the writer URL's libpq multi-host list, each on a connection of its
  own with `synchronous_commit = local` (a primary whose synchronous standby is cut off would
  otherwise hold the write and hide that it takes writes); the write is `txid_current()`, the
  smallest thing only a primary can do (a standby: "cannot assign TransactionIds during
  recovery"). Nothing is stored.
- cache: every node of `cache.nodes`: SET of one key per node with a one-minute expiry (a
  replica answers READONLY).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gameday.checks.schedule import ScheduleReport
from gameday.clock import Clock
from gameday.history import Sample
from gameday.probes.schedule import FixedRate, Tick
from gameday.secrets import pg_conninfo, redis_client
from gameday.target import Target

TIMEOUT_SEC = 1.0
PROBE_NAMES = {"database": "writable database", "cache": "writable cache"}


def database_nodes(writer_url: str) -> list[str]:
    """host:port of each host of a (multi-host) libpq URL."""
    netloc = urlsplit(writer_url).netloc.rpartition("@")[2]
    return [h if ":" in h else f"{h}:5432" for h in netloc.split(",") if h]


def node_url(url: str, node: str) -> str:
    """A store's URL (the database writer's, the cache's) pointed at one node (host:port),
    its user, password and database kept, without libpq's multi-host attributes."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{node}" if user else node
    keep = [
        q for q in parts.query.split("&")
        if q and not q.startswith(("target_session_attrs=", "load_balance_hosts="))
    ]  # fmt: skip
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(keep), ""))


class WritableNodesProbe:
    """Ask each node of the `role`'s store ("database" or "cache") for a write, `rate` times
    a second; see the module doc."""

    def __init__(
        self,
        target: Target,
        *,
        role: str,
        run_id: str,
        rate: float,
        clock: Clock,
        record: Callable[[Sample], None],
        limit: int | None = None,
    ) -> None:
        self.role = role
        self.name = PROBE_NAMES[role]
        self.rate = rate
        self.timeout_sec = TIMEOUT_SEC
        self._record = record
        self._local = threading.local()
        self._write: Callable[[str, int], None]
        if role == "database":
            if target.database is None:
                raise ValueError(f"target {target.name!r} has no database role")
            self._url = target.database.writer_url
            self.nodes = database_nodes(self._url)
            self._write = self._write_database
        else:
            if target.cache is None or not target.cache.nodes:
                raise ValueError(f"target {target.name!r} declares no cache.nodes")
            self.nodes = list(target.cache.nodes)
            self._cache_url = target.cache.url
            self._prefix = f"gameday:{run_id}:writable:"
            self._write = self._write_cache
        # Each tick asks every node in turn, each bounded by the timeout.
        self._scheduler = FixedRate(
            self._tick, rate=rate, clock=clock, limit=limit, name=self.name,
            timeout_sec=TIMEOUT_SEC * len(self.nodes) + 1, unit="round",
        )  # fmt: skip

    def start(self) -> WritableNodesProbe:
        self._scheduler.start()
        return self

    def stop(self) -> None:
        self._scheduler.stop()

    def settled_until(self) -> float:
        return self._scheduler.settled_until()

    def schedule_report(self) -> ScheduleReport:
        return self._scheduler.report()

    def _tick(self, tick: Tick) -> None:
        began = time.monotonic()
        for node in self.nodes:
            # The later nodes of a round are asked a little after the tick's start.
            started = time.monotonic()
            sent = tick.sent + (started - began)
            error: str | None = None
            outcome = "ok"
            try:
                self._write(node, tick.seq)
            except _Refused:
                outcome = "fail"
            except Exception as exc:  # unreachable, timed out: it did not take the write
                error, outcome = _error_kind(exc), "info"
            duration = None if error == "timeout" else time.monotonic() - started
            self._record(
                Sample(
                    probe=self.name, seq=tick.seq, sent=sent, duration=duration,
                    ok=outcome == "ok", error=error, server=node, outcome=outcome,
                )
            )  # fmt: skip

    # -- one write ------------------------------------------------------------------------
    def _connection(self, node: str) -> Any:
        conns: dict[str, Any] = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(node)
        if conn is None or getattr(conn, "closed", False):
            conn = conns[node] = self._connect(node)
        return conn

    def _connect(self, node: str) -> Any:
        if self.role == "database":
            import psycopg

            return psycopg.connect(
                pg_conninfo(node_url(self._url, node)), autocommit=True,
                connect_timeout=int(TIMEOUT_SEC),
                options="-c synchronous_commit=local -c statement_timeout=1000",
                # A node whose network went dark drops packets: fail, do not wait on TCP.
                tcp_user_timeout=int(TIMEOUT_SEC * 1000),
            )  # fmt: skip
        return redis_client(
            node_url(self._cache_url, node), socket_timeout=TIMEOUT_SEC,
            socket_connect_timeout=TIMEOUT_SEC, retry_on_timeout=False,
        )  # fmt: skip

    def _drop(self, node: str) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(node, None)
        if conn is not None:
            # A broken connection may fail to close: it is gone either way.
            with contextlib.suppress(Exception):
                conn.close()

    def _write_database(self, node: str, seq: int) -> None:
        import psycopg

        try:
            self._connection(node).execute("SELECT txid_current()")
        except psycopg.Error as exc:
            # A standby answers "cannot execute txid_current() during recovery" (55000) or,
            # read-only, 25006: it is there and refuses, which is not an error of the probe.
            if exc.sqlstate in ("25006", "55000") or "recovery" in str(exc):
                raise _Refused from None
            self._drop(node)
            raise

    def _write_cache(self, node: str, seq: int) -> None:
        import redis

        try:
            self._connection(node).set(self._prefix + node, seq, px=60_000)
        except redis.ReadOnlyError:
            raise _Refused from None
        except (redis.RedisError, OSError):
            self._drop(node)
            raise


class _Refused(Exception):
    """The node answered and refused the write (a standby, a replica)."""


def _error_kind(exc: BaseException) -> str:
    text = str(exc).lower()
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if "refused" in text:
        return "refused"
    if "reset" in text or "closed" in text or "terminat" in text:
        return "reset"
    return "other"
