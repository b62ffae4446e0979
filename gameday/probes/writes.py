"""Write probes: acknowledged writes that must survive a fault, read back at the end.

Each write gets a key; its sample says what the writer knows about it (Jepsen's
distinction): `ok` = acknowledged, `fail` = certainly not applied (the connection was never
made, the request was refused), `info` = unknown (sent, then the answer was lost). At the end
`read_back()` reads every key still present through a consistent read and records it, so
`checks.resilience.lost_writes_in` can tell lost writes from unknown ones.

- `OrdersProbe`: writes through the entrypoint with the target's write API (`app.orders`:
  POST with an idempotency key and a server-assigned id, or PUT to a client-chosen id...);
  the key read back is the written id, through a consistent read.
- `LedgerProbe`: commits rows straight to the database writer into a ledger table owned by
  the harness (run id, probe, sequence, time); reconnects through the target's URL after a
  failure, which finds the new primary (libpq multi-host, DNS).
- `CacheProbe`: SETs sequence keys on the cache's primary endpoint (optionally `WAIT 1` for
  one replica).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from gameday.checks.schedule import ScheduleReport
from gameday.clock import Clock
from gameday.facts import read_path, tls_context, write_request, written_id
from gameday.history import ReadBack, Sample
from gameday.probes.http import error_kind
from gameday.probes.schedule import FixedRate, Tick
from gameday.secrets import pg_conninfo, redis_client
from gameday.target import Target

LEDGER_TABLE = "gameday_ledger"
CACHE_KEY_TTL_SEC = 3600


class WriteProbe:
    """Scheduling and recording shared by the write probes; subclasses do one write."""

    def __init__(
        self,
        *,
        name: str,
        rate: float,
        clock: Clock,
        record: Callable[[Sample | ReadBack], None],
        timeout_sec: float,
        limit: int | None = None,
    ) -> None:
        self.name = name
        self.rate = rate
        self.timeout_sec = timeout_sec
        self._clock = clock
        self._record = record
        self._timeout = timeout_sec
        self._scheduler = FixedRate(
            self._tick, rate=rate, clock=clock, timeout_sec=timeout_sec, limit=limit, name=name,
            unit="write",
        )  # fmt: skip
        self.acknowledged = 0
        #: per worker thread: the server a write went to, when the probe knows it (`write`
        #: sets `server`; `_tick` reads it in the same thread)
        self._where = threading.local()

    def start(self) -> WriteProbe:
        self._scheduler.start()
        return self

    def stop(self) -> None:
        self._scheduler.stop()

    def join(self) -> None:
        self._scheduler.join()

    def settled_until(self) -> float:
        """See FixedRate.settled_until: the record is complete for writes sent before it."""
        return self._scheduler.settled_until()

    def schedule_report(self) -> ScheduleReport:
        """How well the writes kept their rate so far (or until they stopped): a write's
        send time is when its worker started it."""
        return self._scheduler.report()

    def _tick(self, tick: Tick) -> None:
        started = time.monotonic()
        self._where.server = None
        try:
            key, outcome, error, status = self.write(tick.seq)
        except Exception:
            # A write that fails in a way the probe did not foresee is still a sample (of
            # unknown outcome): a probe must never go quiet, which would read as "no outage".
            key, outcome, error, status = str(tick.seq), "info", "other", None
        duration = None if error == "timeout" else time.monotonic() - started
        if outcome == "ok":
            self.acknowledged += 1
        self._record(
            Sample(
                probe=self.name, seq=tick.seq, sent=tick.sent, duration=duration,
                ok=outcome == "ok", status=status, error=error, server=self._where.server, key=key,
                outcome=outcome,
            )
        )  # fmt: skip

    def write(self, seq: int) -> tuple[str, str, str | None, int | None]:
        """Do write `seq`: (key, outcome, error kind or None, HTTP status or None)."""
        raise NotImplementedError

    def found_keys(self) -> list[str]:
        raise NotImplementedError

    def read_back(self) -> ReadBack:
        """Stop writing, then read back every key present and record it."""
        self.stop()
        readback = ReadBack(probe=self.name, at=self._clock.now(), keys=tuple(self.found_keys()))
        self._record(readback)
        return readback


class OrdersProbe(WriteProbe):
    def __init__(self, target: Target, *, run_id: str, name: str = "orders", **kw: Any) -> None:
        if target.app.orders is None:
            raise ValueError(f"target {target.name!r} declares no app.orders API")
        self._orders = target.app.orders
        self._run_id = run_id
        self._target = target
        self._acked_ids: list[str] = []
        self._lock = threading.Lock()
        super().__init__(name=name, timeout_sec=kw.pop("timeout_sec", 5.0), **kw)
        workers = self._scheduler.workers
        self._client = httpx.Client(
            base_url=target.entrypoint.url,
            timeout=self._timeout,
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
            verify=tls_context(),
        )

    def write(self, seq: int) -> tuple[str, str, str | None, int | None]:
        # Unique per run, scenario and write: the client-chosen id, or the idempotency key.
        unique = f"gameday-{self._run_id}-{self.name}-{seq}"
        req = write_request(self._orders, unique)
        try:
            resp = self._client.request(req.method, req.path, json=req.json, headers=req.headers)
        except httpx.HTTPError as exc:
            kind = error_kind(exc)
            # A refused connection never carried the request; anything else may have.
            return unique, ("fail" if kind == "refused" else "info"), kind, None
        if self._orders.acknowledged(resp.status_code):
            try:
                body = resp.json() if self._orders.id_from == "answer" else None
            except ValueError:
                body = None
            order_id = written_id(self._orders, unique, resp.status_code, body)
            if order_id is None:
                return unique, "info", "other", resp.status_code
            with self._lock:
                self._acked_ids.append(order_id)
            return order_id, "ok", None, resp.status_code
        # 4xx: refused by the application; 5xx: the write may or may not have happened.
        outcome = "fail" if 400 <= resp.status_code < 500 else "info"
        return unique, outcome, "http", resp.status_code

    def found_keys(self) -> list[str]:
        with self._lock:
            ids = list(self._acked_ids)
        found = []
        for order_id in ids:
            try:
                resp = self._client.get(read_path(self._orders, order_id, consistent=True))
            except httpx.HTTPError:
                continue
            if resp.status_code == 200:
                found.append(order_id)
        self._client.close()
        return found


class LedgerProbe(WriteProbe):
    def __init__(self, target: Target, *, run_id: str, name: str = "ledger", **kw: Any) -> None:
        if target.database is None:
            raise ValueError(f"target {target.name!r} has no database role")
        # The password moves to a libpq password file: no string psycopg holds (and a
        # traceback with locals would show) carries it.
        self._conninfo = pg_conninfo(target.database.writer_url)
        self._run_id = run_id
        self._local = threading.local()
        super().__init__(name=name, timeout_sec=kw.pop("timeout_sec", 5.0), **kw)
        self._ensure_table()

    def _connect(self) -> Any:
        import psycopg

        # tcp_user_timeout: a write sent to a primary whose network went dark (a zone lost:
        # packets dropped, no reset) fails after the probe's timeout instead of waiting for
        # TCP to give up (about 15 minutes), which would silence the probe for the outage.
        return psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=max(1, int(self._timeout)),
            tcp_user_timeout=int(self._timeout * 1000),
        )  # fmt: skip

    def _ensure_table(self) -> None:
        with self._connect() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} ("
                " run_id text NOT NULL, probe text NOT NULL, seq bigint NOT NULL,"
                " sent_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (run_id, probe, seq))"
            )

    def write(self, seq: int) -> tuple[str, str, str | None, int | None]:
        import psycopg

        key = str(seq)
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._local.conn = self._connect()
            except psycopg.OperationalError as exc:
                return key, "fail", _pg_error_kind(exc), None
            # The node the multi-host URL led this connection to: a lost write then names
            # the node that acknowledged it (an old primary, a promoted standby).
            self._local.node = f"{conn.info.host}:{conn.info.port}"
        self._where.server = self._local.node
        try:
            conn.execute(
                f"INSERT INTO {LEDGER_TABLE} (run_id, probe, seq) VALUES (%s, %s, %s)",
                (self._run_id, self.name, seq),
                prepare=False,
            )
        except psycopg.Error as exc:
            # The statement was sent: whether it committed is unknown. The next write
            # reconnects, and the multi-host URL leads it to the current primary.
            self._local.conn = None
            with contextlib.suppress(psycopg.Error):
                conn.close()
            return key, "info", _pg_error_kind(exc), None
        return key, "ok", None, None

    def found_keys(self) -> list[str]:
        # One set-returning query, not a row per write: a million rows read back in seconds.
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT seq FROM {LEDGER_TABLE} WHERE run_id = %s AND probe = %s",
                (self._run_id, self.name),
            ).fetchall()
        return [str(r[0]) for r in rows]


def _pg_error_kind(exc: BaseException) -> str:
    text = str(exc).lower()
    if "refused" in text:
        return "refused"
    if "timeout" in text or "timed out" in text:
        return "timeout"
    if "read-only" in text or "read only" in text:
        return "other"
    if "terminat" in text or "closed" in text or "reset" in text or "lost" in text:
        return "reset"
    return "other"


class CacheProbe(WriteProbe):
    def __init__(
        self,
        target: Target,
        *,
        run_id: str,
        name: str = "cache",
        wait_replicas: int = 0,
        **kw: Any,
    ) -> None:
        if target.cache is None:
            raise ValueError(f"target {target.name!r} has no cache role")
        self._url = target.cache.url
        self._prefix = f"gameday:{run_id}:{name}:"
        self._wait = wait_replicas
        super().__init__(name=name, timeout_sec=kw.pop("timeout_sec", 2.0), **kw)
        self._client = self._make_client()

    def _make_client(self, *, retries: int = 0) -> Any:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # redis-py retries failed commands by default: that would turn an outage into slow
        # successes (and a write sent twice). The writes must see every failure.
        return redis_client(
            self._url,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            max_connections=self._scheduler.workers,
            retry=Retry(NoBackoff(), retries),
        )

    def write(self, seq: int) -> tuple[str, str, str | None, int | None]:
        import redis

        key = str(seq)
        try:
            self._client.set(self._prefix + key, seq, ex=CACHE_KEY_TTL_SEC)
            if self._wait:
                self._client.wait(self._wait, int(self._timeout * 1000))
        except redis.ConnectionError as exc:
            kind = "refused" if "refused" in str(exc).lower() else "reset"
            return key, ("fail" if kind == "refused" else "info"), kind, None
        except (redis.TimeoutError, TimeoutError):
            return key, "info", "timeout", None
        except (redis.RedisError, OSError):
            return key, "info", "other", None
        return key, "ok", None, None

    def found_keys(self) -> list[str]:
        import redis

        self._client.close()
        # Reading is idempotent: a connection the endpoint closed after the failover is
        # simply tried again, a few times.
        reader = self._make_client(retries=3)
        try:
            for attempt in range(3):
                try:
                    return [
                        k.decode()[len(self._prefix) :]
                        for k in reader.scan_iter(match=self._prefix + "*", count=1000)
                    ]
                except (redis.ConnectionError, redis.TimeoutError):
                    if attempt == 2:
                        raise
                    time.sleep(0.5)
            return []
        finally:
            reader.close()
