"""The CloudMart reference backend: the system under test of the gameday harness.

Several copies run behind HAProxy (one per "server" and zone). Each talks to a PostgreSQL
primary/standby pair through libpq multi-host URIs and to Redis through a stable primary
endpoint, and has to ride out failovers of both the way a well-behaved production service
would. Every response carries ``X-Served-By: <server>/az-<zone>`` so the harness can tell which
copy answered.

Endpoints:

- ``GET /health``: always 200 while the process is fine; the database/cache states come from a
  background probe refreshed every second, so the load balancer's checks cost nothing and a
  database failover never takes every server out of rotation at once.
- ``GET /api/products?limit=&offset=``: catalogue page from the read pool.
- ``GET /api/products/{id}``: cache-aside through Redis key ``product:{id}`` (600 s TTL),
  ``X-Cache: HIT|MISS``; falls back to the database alone when Redis is down.
- ``POST /api/orders``: body ``{"item", "quantity", "user_id"?}``, header ``Idempotency-Key``.
  201 with the new order, or 200 with the existing order when the key was already used (the
  stored order wins even if the body differs). Without a key the server makes one up
  (``srv-<uuid>``) so that its own retry after a dropped connection cannot insert twice.
- ``GET /api/orders/{id}``: from the read pool (the standby), or the write pool with
  ``?consistent=true``.
- ``POST /api/login`` / ``GET /api/me``: sessions stored in Redis, shared by all servers.
- ``GET /egress``: does this server reach the internet, and through which address? Calls the
  configured outside service on a new connection: 200 ``{"ok": true, "source": <address the
  service saw>, ...}`` or 502 ``{"ok": false, "error": "timeout"|"refused"|"unreachable"|...}``.
  The harness asks it where it cannot enter a zone itself.
- Per-user rate limit on ``/api/`` (``X-User-Id`` or the session's user), fail-open.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import redis.asyncio as aioredis
from psycopg.errors import QueryCanceled, ReadOnlySqlTransaction
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("lab.app")

T = TypeVar("T")
Connection = psycopg.AsyncConnection[Any]
Pool = AsyncConnectionPool[Connection]

# redis-py raises its own errors for most failures, but a socket dying mid-read can still
# surface as a bare OSError, and the asyncio.timeout() around PING raises TimeoutError.
REDIS_ERRORS = (RedisError, OSError, TimeoutError)
_UNCHECKED = "error: not checked yet"

_PG_INT_MAX = 2**31 - 1
_PG_BIGINT_MAX = 2**63 - 1
_ORDER_COLUMNS = "id, idempotency_key, item, quantity, user_id, created_at"


@dataclass(frozen=True)
class Settings:
    """Everything one server needs; the defaults are the seed deployment's values."""

    server_name: str
    zone: str
    db_write_url: str
    db_read_url: str
    redis_url: str
    rate_limit: int = 100  # requests per user per window; <= 0 disables the limit
    rate_limit_window_s: int = 60
    cache_ttl_s: int = 600
    session_ttl_s: int = 3600
    pool_min_size: int = 2
    pool_max_size: int = 20
    pool_max_idle_s: float = 30.0
    connect_timeout_s: int = 2
    statement_timeout_ms: int = 3000  # server side: a slow query is cancelled by PostgreSQL
    db_timeout_s: float = 5.0  # client side: bounds pool wait + query, covers a hung server
    # psycopg_pool backs off exponentially (1, 2, 4, 8... s) while reconnecting and only
    # starts a fresh attempt after giving up, so a long reconnect_timeout (default 300 s)
    # can leave the pool asleep for tens of seconds after the database is back.
    reconnect_timeout_s: float = 5.0
    health_interval_s: float = 1.0
    probe_timeout_s: float = 1.0
    # The internet service `GET /egress` calls (it answers with the address it sees: the NAT
    # this server's zone leaves through); None: this server has no egress to report.
    egress_url: str | None = None
    egress_timeout_s: float = 1.0

    @property
    def served_by(self) -> str:
        return f"{self.server_name}/az-{self.zone}"


def _reason(exc: BaseException) -> str:
    """A short, single-line description of a failure (libpq/redis messages hold no passwords)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


async def _ask_source(url: str) -> str:
    """GET `url` on a connection of its own (every call crosses the NAT afresh) and return
    the `source` its JSON answer names."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        path = parts.path or "/"
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        raise ConnectionError(f"the outside service answered {head[:40]!r}")
    return str(json.loads(body)["source"])


def _egress_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return _reason(exc)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _session_id(conn: HTTPConnection) -> str | None:
    """The session id from ``Authorization: Bearer <sid>`` or, failing that, the cookie."""
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    sid = token.strip() if scheme.lower() == "bearer" else conn.cookies.get("session", "")
    # Bound the size: the id becomes part of a Redis key.
    return sid if 0 < len(sid) <= 128 else None


def _query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise HTTPException(400, f"{name} must be between {low} and {high}")
    return value


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise HTTPException(400, "body must be JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "body must be a JSON object")
    return body


def _order_json(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "created_at": row["created_at"].isoformat()}


async def _fetch(conn: Connection, query: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


class CloudMart:
    """The running state of one server: pools, Redis client, health probe and the endpoints."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db_state = _UNCHECKED
        self.cache_state = _UNCHECKED
        self._conn_kwargs: dict[str, Any] = {
            # Every statement here stands alone, so autocommit saves the BEGIN/COMMIT round
            # trips and the pool's reset on return.
            "autocommit": True,
            "connect_timeout": settings.connect_timeout_s,
            "application_name": f"cloudmart-{settings.server_name}",
            "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        }
        self._last_warning: dict[str, float] = {}
        self._health_task: asyncio.Task[None] | None = None
        self._db_probe: asyncio.Task[str] | None = None
        # Timed-out database operations left to wind down (see `_bounded`); strong references
        # so they are not garbage collected mid-flight.
        self._winding_down: set[asyncio.Task[Any]] = set()
        self.write_pool: Pool | None = None
        self.read_pool: Pool | None = None
        # redis-py's default retry policy is 10 attempts with backoff, i.e. several seconds per
        # command while Redis is down. One immediate retry is what a dropped connection needs
        # (the endpoint moved to a new master): the retry reconnects and succeeds.
        self.redis: aioredis.Redis = aioredis.from_url(
            settings.redis_url,
            socket_timeout=1,
            socket_connect_timeout=1,
            retry=Retry(NoBackoff(), 1),
        )

    # -- lifecycle ------------------------------------------------------------------------

    def _make_pool(self, conninfo: str, name: str) -> Pool:
        s = self.settings
        # No check= callback: checking costs a round trip on every checkout. Instead `_db`
        # retries once on a fresh connection when a pooled one turns out to be dead (the
        # usual state of the whole pool right after a failover), so only failures pay.
        return AsyncConnectionPool(
            conninfo,
            min_size=min(s.pool_min_size, s.pool_max_size),
            max_size=s.pool_max_size,
            max_idle=s.pool_max_idle_s,
            # Just under the request's own deadline so that the 503 says why.
            timeout=max(0.1, s.db_timeout_s - 0.5),
            reconnect_timeout=s.reconnect_timeout_s,
            kwargs=self._conn_kwargs,
            name=f"{s.server_name}-{name}",
            open=False,
        )

    async def start(self) -> None:
        s = self.settings
        self.write_pool = self._make_pool(s.db_write_url, "write")
        self.read_pool = self._make_pool(s.db_read_url or s.db_write_url, "read")
        # wait=False: a server must come up (and answer /health) while the database is down.
        await self.write_pool.open(wait=False)
        await self.read_pool.open(wait=False)
        await self._probe()  # so the very first /health already reports real states
        self._health_task = asyncio.create_task(self._health_loop(), name="health-probe")

    async def stop(self) -> None:
        tasks = [t for t in (self._health_task, self._db_probe, *self._winding_down) if t]
        for _ in range(2):
            # psycopg answers the first cancellation of a running query by asking the server
            # to cancel it, for up to 10 s against a hung server; a second one makes it close
            # the connection at once.
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=0.2)
        await asyncio.gather(*tasks, return_exceptions=True)
        for pool in (self.write_pool, self.read_pool):
            if pool is not None:
                await pool.close(timeout=2)
        await self.redis.aclose()

    # -- health -----------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._probe()
            await asyncio.sleep(max(0.0, self.settings.health_interval_s - (loop.time() - started)))

    async def _probe(self) -> None:
        db, cache = await asyncio.gather(self._probe_db(), self._probe_cache())
        self._set_state("database", db)
        self._set_state("cache", cache)

    async def _select_one(self) -> str:
        async def select_one(conn: Connection) -> None:
            await conn.execute("SELECT 1")

        try:
            # Like requests, retry past a dead pooled connection: right after a failover the
            # database is fine and the probe should say so. Give up waiting for a connection a
            # bit before the probe times out, so "no connection" and "hung" read differently.
            await self._with_retry(self.write_pool, select_one, 0.8 * self.settings.probe_timeout_s)
        except Exception as exc:
            return f"error: {_reason(exc)}"
        return "ok"

    async def _probe_db(self) -> str:
        # The probe is never cancelled: cancelling a query makes psycopg spend up to 10 s
        # trying to cancel it server-side, which against a hung server only blocks the probe.
        # A probe that overruns is reported as a timeout and awaited again next round, so a
        # hung database ties up one connection, not one per second.
        if self._db_probe is None or self._db_probe.done():
            self._db_probe = asyncio.create_task(self._select_one(), name="db-probe")
        probe = self._db_probe
        done, _ = await asyncio.wait({probe}, timeout=self.settings.probe_timeout_s)
        return probe.result() if done else "error: timeout"

    async def _probe_cache(self) -> str:
        try:
            async with asyncio.timeout(self.settings.probe_timeout_s):
                await self.redis.ping()
        except Exception as exc:
            return f"error: {_reason(exc)}"
        return "ok"

    def _set_state(self, what: str, state: str) -> None:
        attr = "db_state" if what == "database" else "cache_state"
        old = getattr(self, attr)
        if old != state:
            # Only transitions are logged (the probe runs every second), and not a clean start.
            if not (old == _UNCHECKED and state == "ok"):
                log.warning("%s: %s is now %s", self.settings.served_by, what, state)
            setattr(self, attr, state)

    def _cache_usable(self) -> bool:
        # While the probe says Redis is down the fail-open paths skip it altogether, so a
        # blackholed Redis costs each request nothing instead of a socket timeout.
        return self.cache_state == "ok"

    def _warn(self, key: str, msg: str, *args: Any) -> None:
        """Log a warning at most every 5 s per key: failures come at request rate."""
        now = time.monotonic()
        if now - self._last_warning.get(key, -10.0) >= 5.0:
            self._last_warning[key] = now
            log.warning("%s: " + msg, self.settings.served_by, *args)

    # -- database ---------------------------------------------------------------------------

    async def _bounded(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Await `coro` for at most `timeout` seconds, else raise TimeoutError at once.

        Unlike asyncio.timeout() this does not wait for the cancelled operation to finish:
        psycopg answers a cancellation by asking the server to cancel the query and waiting up
        to 5 + 5 s for it, which against a hung or unreachable server would triple the time
        the client waits for its 503. The operation winds down in the background instead and
        then hands its (closed) connection back to the pool.
        """
        task = asyncio.ensure_future(coro)
        try:
            await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if task.done():
            return task.result()
        task.cancel()
        self._winding_down.add(task)
        task.add_done_callback(self._wound_down)
        raise TimeoutError

    def _wound_down(self, task: asyncio.Task[Any]) -> None:
        self._winding_down.discard(task)
        if not task.cancelled():
            task.exception()  # mark it retrieved: the request has long been answered

    async def _db(self, pool: Pool | None, op: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `op` within the database timeout; see `_with_retry` and `_bounded`."""
        return await self._bounded(self._with_retry(pool, op), self.settings.db_timeout_s)

    async def _with_retry(
        self,
        pool: Pool | None,
        op: Callable[[Connection], Awaitable[T]],
        pool_wait: float | None = None,
    ) -> T:
        """Run `op` on a pooled connection, retrying once on a fresh one if the pooled one died.

        After a failover every idle pooled connection points at the old primary. Retrying on a
        new, unpooled connection (found by the multi-host URI) succeeds at once, whereas
        retrying through the pool could pick the next dead connection. The dead one is closed
        so the pool replaces it. Operations must be safe to run twice: reads are, and order
        creation is thanks to its idempotency key.
        """
        assert pool is not None
        async with pool.connection(timeout=pool_wait) as conn:
            try:
                return await op(conn)
            except (psycopg.OperationalError, ReadOnlySqlTransaction) as exc:
                # A statement timeout or a failure on a live connection is a real answer;
                # only a dead connection, or one left on a demoted primary, is retried.
                if isinstance(exc, QueryCanceled) or not (
                    conn.closed or isinstance(exc, ReadOnlySqlTransaction)
                ):
                    raise
                self._warn("db-retry", "stale database connection, retrying: %s", _reason(exc))
                await conn.close()
        assert isinstance(pool.conninfo, str)  # `_make_pool` only ever passes a string
        async with await psycopg.AsyncConnection.connect(
            pool.conninfo, **self._conn_kwargs
        ) as fresh:
            return await op(fresh)

    # -- endpoints --------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        s = self.settings
        return JSONResponse(
            {
                "status": "ok",
                "server": s.server_name,
                "zone": s.zone,
                "database": self.db_state,
                "cache": self.cache_state,
            }
        )

    async def egress(self, request: Request) -> Response:
        s = self.settings
        about = {"server": s.server_name, "zone": s.zone}
        if s.egress_url is None:
            return JSONResponse({**about, "error": "no egress URL configured"}, status_code=404)
        started = time.monotonic()
        try:
            async with asyncio.timeout(s.egress_timeout_s):
                source = await _ask_source(s.egress_url)
        except Exception as exc:  # whatever stopped the call is the answer
            elapsed = round((time.monotonic() - started) * 1000, 1)
            body = {**about, "ok": False, "error": _egress_error(exc), "ms": elapsed}
            return JSONResponse(body, status_code=502)
        elapsed = round((time.monotonic() - started) * 1000, 1)
        return JSONResponse({**about, "ok": True, "source": source, "ms": elapsed})

    async def list_products(self, request: Request) -> Response:
        limit = _query_int(request, "limit", 20, 1, 100)
        offset = _query_int(request, "offset", 0, 0, _PG_INT_MAX)

        async def op(conn: Connection) -> list[dict[str, Any]]:
            return await _fetch(
                conn,
                "SELECT id, name, price_cents FROM products ORDER BY id LIMIT %s OFFSET %s",
                (limit, offset),
            )

        return JSONResponse(await self._db(self.read_pool, op))

    async def get_product(self, request: Request) -> Response:
        product_id: int = request.path_params["product_id"]
        if product_id > _PG_INT_MAX:
            raise HTTPException(404, "product not found")
        key = f"product:{product_id}"
        use_cache = self._cache_usable()
        if use_cache:
            try:
                cached = await self.redis.get(key)
            except REDIS_ERRORS as exc:
                self._warn("cache", "cache read failed, using the database: %s", _reason(exc))
                cached, use_cache = None, False
            if cached is not None:
                return Response(cached, media_type="application/json", headers={"X-Cache": "HIT"})

        async def op(conn: Connection) -> list[dict[str, Any]]:
            return await _fetch(
                conn, "SELECT id, name, price_cents FROM products WHERE id = %s", (product_id,)
            )

        rows = await self._db(self.read_pool, op)
        if not rows:
            raise HTTPException(404, "product not found")
        body = json.dumps(rows[0], separators=(",", ":"))
        if use_cache:
            try:
                await self.redis.set(key, body, ex=self.settings.cache_ttl_s)
            except REDIS_ERRORS as exc:
                self._warn("cache", "cache write failed: %s", _reason(exc))
        return Response(body, media_type="application/json", headers={"X-Cache": "MISS"})

    async def create_order(self, request: Request) -> Response:
        body = await _json_object(request)
        item, quantity, user_id = body.get("item"), body.get("quantity"), body.get("user_id")
        if not isinstance(item, str) or not item.strip() or len(item) > 200:
            raise HTTPException(400, "item must be a non-empty string")
        # bool is an int subclass; `true` is not a quantity.
        if type(quantity) is not int or not 1 <= quantity <= _PG_INT_MAX:
            raise HTTPException(400, "quantity must be a positive integer")
        if user_id is not None and (not isinstance(user_id, str) or len(user_id) > 200):
            raise HTTPException(400, "user_id must be a string")
        key = request.headers.get("idempotency-key") or f"srv-{uuid.uuid4().hex}"
        if len(key) > 200:
            raise HTTPException(400, "Idempotency-Key is too long")

        async def op(conn: Connection) -> tuple[dict[str, Any] | None, bool]:
            rows = await _fetch(
                conn,
                "INSERT INTO orders (idempotency_key, item, quantity, user_id)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING"
                f" RETURNING {_ORDER_COLUMNS}",
                (key, item, quantity, user_id),
            )
            if rows:
                return rows[0], True
            # The key exists (possibly committed by a concurrent request we waited for); a new
            # statement in autocommit mode has a fresh snapshot that sees it.
            rows = await _fetch(
                conn, f"SELECT {_ORDER_COLUMNS} FROM orders WHERE idempotency_key = %s", (key,)
            )
            return (rows[0] if rows else None), False

        order, created = await self._db(self.write_pool, op)
        if order is None:
            raise HTTPException(409, "idempotency key in use, retry")
        return JSONResponse(_order_json(order), status_code=201 if created else 200)

    async def get_order(self, request: Request) -> Response:
        order_id: int = request.path_params["order_id"]
        if order_id > _PG_BIGINT_MAX:
            raise HTTPException(404, "order not found")
        consistent = request.query_params.get("consistent", "").lower() in ("1", "true", "yes")

        async def op(conn: Connection) -> list[dict[str, Any]]:
            return await _fetch(
                conn, f"SELECT {_ORDER_COLUMNS} FROM orders WHERE id = %s", (order_id,)
            )

        rows = await self._db(self.write_pool if consistent else self.read_pool, op)
        if not rows:
            raise HTTPException(404, "order not found")
        return JSONResponse(_order_json(rows[0]))

    async def login(self, request: Request) -> Response:
        body = await _json_object(request)
        user = body.get("user")
        if not isinstance(user, str) or not user.strip() or len(user) > 200:
            raise HTTPException(400, "user must be a non-empty string")
        sid = secrets.token_urlsafe(24)
        session = {"user": user, "created_at": datetime.now(UTC).isoformat()}
        try:
            await self.redis.set(
                f"session:{sid}", json.dumps(session), ex=self.settings.session_ttl_s
            )
        except REDIS_ERRORS as exc:
            self._warn("session", "session store failed: %s", _reason(exc))
            return _error(503, "session store unavailable")
        response = JSONResponse({"session": sid, "user": user})
        response.set_cookie(
            "session", sid, max_age=self.settings.session_ttl_s, httponly=True, samesite="lax"
        )
        return response

    async def _session_user(self, sid: str | None) -> str | None:
        if sid is None:
            return None
        raw = await self.redis.get(f"session:{sid}")
        if raw is None:
            return None
        try:
            user = json.loads(raw).get("user")
        except (ValueError, AttributeError):
            return None
        return user if isinstance(user, str) else None

    async def me(self, request: Request) -> Response:
        sid = _session_id(request)
        try:
            user = await self._session_user(sid)
        except REDIS_ERRORS as exc:
            self._warn("session", "session lookup failed: %s", _reason(exc))
            return _error(503, "session store unavailable")
        if user is None:
            return _error(401, "not logged in", headers={"WWW-Authenticate": "Bearer"})
        return JSONResponse({"user": user, "session": sid})

    # -- rate limit -------------------------------------------------------------------------

    async def rate_limited(self, conn: HTTPConnection) -> int | None:
        """Seconds until the caller may retry if over its limit, else None (also on doubt)."""
        s = self.settings
        if s.rate_limit <= 0 or not self._cache_usable():
            return None
        try:
            user = conn.headers.get("x-user-id") or await self._session_user(_session_id(conn))
            if not user:
                return None  # anonymous traffic is not limited
            key = f"ratelimit:{user}"
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)  # queued, not sent: the pipeline sends both in one MULTI/EXEC
                pipe.ttl(key)
                count, ttl = await pipe.execute()
            if ttl < 0:
                # First hit of the window; checking the TTL rather than count == 1 also heals
                # a key whose EXPIRE was lost, which would otherwise block the user forever.
                await self.redis.expire(key, s.rate_limit_window_s)
                ttl = s.rate_limit_window_s
        except REDIS_ERRORS as exc:
            self._warn("ratelimit", "rate limit check failed, letting through: %s", _reason(exc))
            return None
        return max(1, ttl) if count > s.rate_limit else None

    # -- errors -----------------------------------------------------------------------------

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, exc.detail, headers=exc.headers)

    async def database_unavailable(self, request: Request, exc: Exception) -> Response:
        reason = _reason(exc)
        self._warn(
            "db", "%s %s: database unavailable: %s", request.method, request.url.path, reason
        )
        return _error(503, f"database unavailable: {reason}", headers={"Retry-After": "1"})

    async def server_error(self, request: Request, exc: Exception) -> Response:
        # Runs in Starlette's outermost ServerErrorMiddleware, outside EdgeMiddleware, so it
        # stamps X-Served-By itself. The traceback is logged by uvicorn.
        return JSONResponse(
            {"error": "internal server error"},
            status_code=500,
            headers={"X-Served-By": self.settings.served_by},
        )


class EdgeMiddleware:
    """Stamps X-Served-By on every response and applies the per-user rate limit to /api/."""

    def __init__(self, app: ASGIApp, backend: CloudMart) -> None:
        self.app = app
        self.backend = backend
        self.served_by = backend.settings.served_by

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                MutableHeaders(scope=message)["X-Served-By"] = self.served_by
            await send(message)

        if scope["path"].startswith("/api/"):
            retry_after = await self.backend.rate_limited(HTTPConnection(scope))
            if retry_after is not None:
                response = JSONResponse(
                    {"error": "rate limit exceeded", "limit": self.backend.settings.rate_limit},
                    status_code=429,
                    headers={"Retry-After": str(retry_after)},
                )
                await response(scope, receive, stamped)
                return
        await self.app(scope, receive, stamped)


def create_app(settings: Settings) -> Starlette:
    """Build the ASGI app; pools and the health probe start with the lifespan."""
    backend = CloudMart(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()

    app = Starlette(
        routes=[
            Route("/health", backend.health, methods=["GET"]),
            Route("/egress", backend.egress, methods=["GET"]),
            Route("/api/products", backend.list_products, methods=["GET"]),
            Route("/api/products/{product_id:int}", backend.get_product, methods=["GET"]),
            Route("/api/orders", backend.create_order, methods=["POST"]),
            Route("/api/orders/{order_id:int}", backend.get_order, methods=["GET"]),
            Route("/api/login", backend.login, methods=["POST"]),
            Route("/api/me", backend.me, methods=["GET"]),
        ],
        middleware=[Middleware(EdgeMiddleware, backend=backend)],
        exception_handlers={
            HTTPException: backend.http_error,
            psycopg.OperationalError: backend.database_unavailable,  # includes PoolTimeout
            TimeoutError: backend.database_unavailable,  # raised by _bounded
            Exception: backend.server_error,
        },
        lifespan=lifespan,
    )
    app.state.backend = backend
    return app
