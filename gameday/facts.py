"""Facts: one-shot questions asked of a target's roles, answered as plain data.

Acceptance steps gather facts here and hand them to the pure checks in `gameday.checks`.
Every question goes to the real endpoint the target names (the load balancer, the database
writer, the cache's primary endpoint, the sentinels) with a bounded timeout; clients are made
inside each function, never at import time.

Bounds: an HTTP request is bounded as a whole (`entrypoint.timeout_sec` from the first byte
sent to the last byte read), not per read, so a server trickling one byte a second is given up
on; requests are paced to the target's `load.max_rps`; no check sends more than
`MAX_CHECK_REQUESTS`. Passwords reach the clients through `gameday.secrets` (a libpq password
file, a redis credential provider), never inside a string a traceback could show.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import socket
import ssl
import statistics
import threading
import time
import uuid
import weakref
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote

import httpx

from gameday.secrets import pg_conninfo, redact, redis_client
from gameday.target import Cache, Database, LoadBalancer, Orders, Target

# No acceptance check sends more than this many requests, whatever the target or step says.
MAX_CHECK_REQUESTS = 1000
# Bodies are read for a JSON field or a few words of text: never more than this.
MAX_BODY_BYTES = 1024 * 1024


class LoadCapError(ValueError):
    """A check would send more than the target's caps allow (one line saying which)."""


@dataclass(frozen=True)
class HttpAnswer:
    url: str
    status: int | None
    duration_sec: float
    served_by: str | None = None
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    detail: str | None = None  # the transport error's own words, when there was no answer


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every HTTP client the harness makes: httpx builds a new one per
    client otherwise (35 ms of CPU each, loading the CA bundle), even for http:// URLs."""
    return ssl.create_default_context()


def _client(target: Target) -> httpx.Client:
    return httpx.Client(
        base_url=target.entrypoint.url,
        timeout=target.entrypoint.timeout_sec,
        verify=tls_context(),
    )


# The sockets each client opened (kept alive between its requests): what a deadline cuts.
_client_sockets: weakref.WeakKeyDictionary[httpx.Client, list[socket.socket]] = (
    weakref.WeakKeyDictionary()
)


class Deadline:
    """A whole-request time limit: when it passes, the request's sockets are shut down.

    httpx's timeouts bound each read, so a server that sends one byte a second is never timed
    out. Shutting the socket down wakes the blocked read at once, whatever phase (headers, body)
    it is in. Pass `trace` as the request's `trace` extension (httpcore calls it with each new
    connection); use as a context manager around the request. `sockets` is where the client's
    sockets are kept across requests: a request on a kept-alive connection opens none.
    """

    def __init__(self, seconds: float, sockets: list[socket.socket] | None = None) -> None:
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = [] if sockets is None else sockets
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._sockets[:] = [s for s in self._sockets if s.fileno() != -1]  # closed ones
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_pace_lock = threading.Lock()
_next_send: dict[str, float] = {}


def _pace(target: Target) -> None:
    """Wait until this target's `load.max_rps` allows one more request from the checks."""
    rps = target.load.max_rps
    if rps is None:
        return
    key = target.identity()
    with _pace_lock:
        now = time.monotonic()
        at = max(now, _next_send.get(key, now))
        _next_send[key] = at + 1.0 / rps
    if at > now:
        time.sleep(at - now)


def _capped(target: Target, requests: int, what: str) -> None:
    if requests > MAX_CHECK_REQUESTS:
        raise LoadCapError(
            f"{what} would send {requests} requests to {target.name}: a check sends at most "
            f"{MAX_CHECK_REQUESTS}"
        )


def server_of(served_by: str | None) -> str | None:
    """`server1/az-a` -> `server1`: the server part of an X-Served-By value."""
    return served_by.split("/")[0].strip() if served_by else None


def request(
    client: httpx.Client, target: Target, method: str, path: str, **kwargs: Any
) -> HttpAnswer:
    """One request, bounded as a whole by `entrypoint.timeout_sec` and paced to `load.max_rps`;
    a transport error is an answer too (status None, error set)."""
    _pace(target)
    limit = target.entrypoint.timeout_sec
    started = time.monotonic()
    deadline = Deadline(limit, _client_sockets.setdefault(client, []))
    try:
        with (
            deadline,
            client.stream(method, path, extensions={"trace": deadline.trace}, **kwargs) as resp,
        ):
            data = b""
            for chunk in resp.iter_bytes():
                data += chunk
                if len(data) >= MAX_BODY_BYTES:
                    break
    except Exception as exc:  # any transport failure, httpx-mapped or not, is an answer
        took = time.monotonic() - started
        if deadline.expired:
            detail = f"no complete answer within {limit:g} s"
            return HttpAnswer(path, None, took, error="timeout", detail=detail)
        return HttpAnswer(path, None, took, error=type(exc).__name__, detail=redact(str(exc)))
    duration = time.monotonic() - started
    text = data.decode(resp.encoding or "utf-8", errors="replace")
    try:
        body = json.loads(text)
    except ValueError:
        body = text[:200]
    return HttpAnswer(
        path,
        resp.status_code,
        duration,
        served_by=server_of(resp.headers.get(target.entrypoint.served_by_header)),
        headers=dict(resp.headers),
        body=body,
    )


def health(target: Target) -> HttpAnswer:
    with _client(target) as client:
        return request(client, target, "GET", target.entrypoint.health_path)


@dataclass(frozen=True)
class Rotation:
    """Who answered a series of health checks through the entrypoint: 200s by the server the
    served-by header named, every other answer by what it was ("404", "ConnectTimeout")."""

    answered: Counter[str]
    refused: Counter[str]


def rotation_sample(target: Target, requests: int) -> Rotation:
    _capped(target, requests, "the rotation sample")
    answered: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    with _client(target) as client:
        for _ in range(requests):
            a = request(client, target, "GET", target.entrypoint.health_path)
            if a.status == 200:
                answered[a.served_by or "(unknown)"] += 1
            else:
                refused[str(a.status) if a.status is not None else a.error or "no answer"] += 1
    return Rotation(answered, refused)


STATS_TIMEOUT_SEC = 2.0


def _lb_stats(lb: LoadBalancer) -> list[dict[str, str]]:
    """HAProxy's statistics CSV, one dict per proxy row."""
    if lb.kind != "haproxy":
        raise NotImplementedError(f"reading the statistics of a {lb.kind} load balancer")
    if lb.stats_url:
        with (
            httpx.Client(timeout=STATS_TIMEOUT_SEC, verify=tls_context()) as client,
            Deadline(STATS_TIMEOUT_SEC) as deadline,
        ):
            resp = client.get(
                lb.stats_url.rstrip("/") + ";csv", extensions={"trace": deadline.trace}
            )
        resp.raise_for_status()
        text = resp.text
    elif lb.stats_socket:
        text = _haproxy_socket(lb.stats_socket, "show stat")
    else:
        raise ValueError("load_balancer needs stats_url or stats_socket")
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def lb_backend_states(lb: LoadBalancer) -> dict[str, str]:
    """server -> status ("UP", "DOWN", "MAINT", "no check"...) as the load balancer reports."""
    return {
        r["svname"]: r["status"]
        for r in _lb_stats(lb)
        if r["pxname"] == lb.backend and r["svname"] not in ("FRONTEND", "BACKEND")
    }


def lb_requests_total(lb: LoadBalancer) -> int:
    """HTTP requests the load balancer's backend has handled since it started (req_tot).

    The difference of two readings counts the requests of a window as the load balancer saw
    them: a third count beside locust's statistics and its per-request records.
    """
    for r in _lb_stats(lb):
        if r["pxname"] == lb.backend and r["svname"] == "BACKEND":
            return int(r["req_tot"] or 0)
    raise LookupError(f"the load balancer has no backend {lb.backend!r}")


def _haproxy_socket(path: str, command: str) -> str:
    deadline = time.monotonic() + STATS_TIMEOUT_SEC
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(STATS_TIMEOUT_SEC)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path}: no complete answer within {STATS_TIMEOUT_SEC:g} s")
    return b"".join(chunks).decode()


# -- database ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StandbyRow:
    name: str
    state: str | None  # None: the user lacks pg_monitor and the row is hidden
    sync_state: str | None
    replay_lag_sec: float
    lag_bytes: int


@dataclass(frozen=True)
class ReplicationFacts:
    synchronous_standby_names: str
    standbys: list[StandbyRow]


def replication(db: Database) -> ReplicationFacts:
    import psycopg

    with psycopg.connect(pg_conninfo(db.writer_url), autocommit=True) as conn:
        names = conn.execute("SHOW synchronous_standby_names").fetchone()
        rows = conn.execute(
            "SELECT application_name, state, sync_state,"
            " coalesce(extract(epoch FROM replay_lag), 0)::float8,"
            " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint"
            " FROM pg_stat_replication ORDER BY application_name"
        ).fetchall()
    return ReplicationFacts(
        synchronous_standby_names=str(names[0]) if names else "",
        standbys=[StandbyRow(*r) for r in rows],
    )


@dataclass(frozen=True)
class OrderReadBack:
    created: HttpAnswer
    order_id: str | None
    consistent: HttpAnswer | None
    replica_seconds: float | None  # None: the default read never found it before the deadline
    replica_attempts: int


@dataclass(frozen=True)
class WriteRequest:
    """One write of the target's write API (`app.orders`), ready to send."""

    method: str
    path: str
    json: Any
    headers: dict[str, str]


def write_request(orders: Orders, unique: str) -> WriteRequest:
    """The request that writes once, `unique` being the harness's own key for it: the id
    itself when the client chooses ids, else the idempotency key (if the API takes one)."""
    headers = {orders.idempotency_header: unique} if orders.idempotency_header else {}
    if orders.id_from == "client":
        path = _fill(orders.create_path, quote(unique, safe=""))
        return WriteRequest(orders.method, path, _fill(orders.body, unique), headers)
    return WriteRequest(orders.method, orders.create_path, orders.body, headers)


def written_id(orders: Orders, unique: str, status: int, body: Any) -> str | None:
    """The id an acknowledged write can be read back by; None: not acknowledged, or the
    answer does not say which id (then the write's fate is unknown)."""
    if not orders.acknowledged(status):
        return None
    if orders.id_from == "client":
        return unique
    value = body.get(orders.id_field) if isinstance(body, dict) else None
    return None if value is None else str(value)


def read_path(orders: Orders, written: str, *, consistent: bool) -> str:
    path = orders.read_path.replace("{id}", quote(written, safe=""))
    if consistent and orders.consistent_read_query:
        return f"{path}?{orders.consistent_read_query}"
    return path


def _fill(value: Any, unique: str) -> Any:
    # {id} in the path (quoted by the caller) and in any string of the body.
    if isinstance(value, str):
        return value.replace("{id}", unique)
    if isinstance(value, dict):
        return {k: _fill(v, unique) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, unique) for v in value]
    return value


def write_and_read_order(target: Target, within_sec: float) -> OrderReadBack:
    """Write once through the write API, read it back at once consistently, then poll the
    default read path (the replica, where reads go) until it is there too."""
    orders = target.app.orders
    assert orders is not None
    unique = f"gameday-{uuid.uuid4()}"
    with _client(target) as client:
        req = write_request(orders, unique)
        created = request(client, target, req.method, req.path, json=req.json, headers=req.headers)
        order_id = (
            None
            if created.status is None
            else written_id(orders, unique, created.status, created.body)
        )
        if order_id is None:
            return OrderReadBack(created, None, None, None, 0)
        path = read_path(orders, order_id, consistent=False)
        consistent = request(client, target, "GET", read_path(orders, order_id, consistent=True))
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            answer = request(client, target, "GET", path)
            if answer.status == 200:
                return OrderReadBack(
                    created, str(order_id), consistent, time.monotonic() - started, attempts
                )
            if time.monotonic() - started > within_sec:
                return OrderReadBack(created, str(order_id), consistent, None, attempts)
            time.sleep(0.05)


# -- cache ---------------------------------------------------------------------------------


def _redis(url: str) -> Any:
    return redis_client(url, socket_timeout=2.0, socket_connect_timeout=2.0, decode_responses=True)


@dataclass(frozen=True)
class CacheReplication:
    role: str
    run_id: str
    replicas: list[dict[str, str]]  # each: ip, port, state, lag


def cache_replication(cache: Cache) -> CacheReplication:
    client = _redis(cache.url)
    try:
        info = client.info("replication")
        server = client.info("server")
    finally:
        client.close()
    replicas = [
        {k: str(v) for k, v in info[key].items()}
        for key in sorted(info)
        if key.startswith("slave") and isinstance(info[key], dict)
    ]
    return CacheReplication(str(info.get("role")), str(server.get("run_id")), replicas)


@dataclass(frozen=True)
class SentinelView:
    address: str
    error: str | None = None
    master_address: str | None = None
    master_run_id: str | None = None
    flags: str = ""
    other_sentinels: int = 0
    quorum: int = 0


def sentinel_views(cache: Cache) -> list[SentinelView]:
    import redis

    views = []
    for address in cache.sentinels:
        host, _, port = address.rpartition(":")
        client = redis.Redis(
            host=host, port=int(port), socket_timeout=2.0, socket_connect_timeout=2.0,
            decode_responses=True,
        )  # fmt: skip
        try:
            m = cast(dict[str, Any], client.sentinel_master(cache.master_name or "mymaster"))
            views.append(
                SentinelView(
                    address,
                    master_address=f"{m['ip']}:{m['port']}",
                    master_run_id=str(m.get("runid", "")),
                    flags=str(m.get("flags", "")),
                    other_sentinels=int(m.get("num-other-sentinels", 0)),
                    quorum=int(m.get("quorum", 0)),
                )
            )
        except redis.RedisError as exc:
            views.append(SentinelView(address, error=f"{type(exc).__name__}: {exc}"))
        finally:
            client.close()
    return views


@dataclass(frozen=True)
class CacheAsideRound:
    product_id: int
    first: HttpAnswer
    second: HttpAnswer


def cache_aside_rounds(target: Target, cache: Cache, rounds: int) -> list[CacheAsideRound]:
    """Evict a product's key, then read it twice through the entrypoint, `rounds` times.

    Evicting is safe for a cache-aside cache (the next read refills it) and makes the first
    read a true miss whatever traffic came before.
    """
    product_path, product_key = target.app.product_path, target.app.product_key
    assert product_path is not None and product_key is not None
    _capped(target, 2 * rounds, "the cache-aside check")
    client_r = _redis(cache.url)
    out = []
    try:
        with _client(target) as client:
            for i in range(rounds):
                pid = target.app.product_id + i
                client_r.delete(product_key.format(id=pid))
                path = product_path.format(id=pid)
                first = request(client, target, "GET", path)
                second = request(client, target, "GET", path)
                out.append(CacheAsideRound(pid, first, second))
    finally:
        client_r.close()
    return out


@dataclass(frozen=True)
class PersistenceFacts:
    appendonly: bool | None
    appendfsync: str | None
    rdb: bool | None
    source: str


def cache_persistence(cache: Cache) -> PersistenceFacts:
    """CONFIG GET where allowed; INFO persistence where CONFIG is disabled (ElastiCache)."""
    import redis

    client = _redis(cache.url)
    try:
        try:
            cfg = client.config_get("appendonly")
            cfg.update(client.config_get("appendfsync"))
            cfg.update(client.config_get("save"))
            return PersistenceFacts(
                appendonly=cfg.get("appendonly") == "yes",
                appendfsync=cfg.get("appendfsync"),
                rdb=bool(cfg.get("save", "").strip()),
                source="CONFIG GET",
            )
        except redis.ResponseError:
            info = client.info("persistence")
            return PersistenceFacts(
                appendonly=str(info.get("aof_enabled")) == "1",
                appendfsync=None,
                rdb=None,
                source="INFO persistence",
            )
    finally:
        client.close()


# -- sessions and rate limit ----------------------------------------------------------------


@dataclass(frozen=True)
class SessionTrial:
    login: HttpAnswer
    checks: list[HttpAnswer]  # whoami answers until one came from another server


def session_across_servers(target: Target, tries: int = 12) -> SessionTrial:
    sessions = target.app.sessions
    assert sessions is not None
    user = f"gameday-{uuid.uuid4().hex[:8]}"
    body = {
        k: (v.format(user=user) if isinstance(v, str) else v)
        for k, v in sessions.login_body.items()
    }
    _capped(target, tries + 1, "the session check")
    with _client(target) as client:
        login = request(client, target, "POST", sessions.login_path, json=body)
        token = login.body.get(sessions.token_field) if isinstance(login.body, dict) else None
        checks: list[HttpAnswer] = []
        if token is None:
            return SessionTrial(login, checks)
        for _ in range(tries):
            # A fresh connection per try so the load balancer may pick another server.
            with _client(target) as fresh:
                answer = request(
                    fresh, target, "GET", sessions.whoami_path,
                    headers={"Authorization": f"Bearer {token}"},
                )  # fmt: skip
            checks.append(answer)
            if answer.served_by and answer.served_by != login.served_by:
                break
    return SessionTrial(login, checks)


def rate_limit_refusal(target: Target) -> str | None:
    """Why the rate-limit check must not run on this target, or None.

    It sends `requests + 1` requests within `window_sec` (else the limit is never reached):
    more than `load.max_rps` allows in that window, or than a check may send, is refused.
    """
    limit = target.app.rate_limit
    assert limit is not None
    needed = limit.requests + 1
    where = target.source or target.name
    if needed > MAX_CHECK_REQUESTS:
        return (
            f"{where}: app.rate_limit.requests is {limit.requests}: the check would send "
            f"{needed} requests, more than the {MAX_CHECK_REQUESTS} one check may send"
        )
    rps = target.load.max_rps
    if rps is not None and needed > rps * limit.window_sec:
        return (
            f"{where}: the rate-limit check needs {needed} requests within "
            f"{limit.window_sec} s (app.rate_limit), more than load.max_rps {rps:g} allows "
            f"({rps * limit.window_sec:g})"
        )
    return None


def rate_limit_statuses(target: Target) -> list[int | None]:
    """`requests + 1` requests as a fresh user, paced to `load.max_rps`; their statuses."""
    limit = target.app.rate_limit
    assert limit is not None
    refusal = rate_limit_refusal(target)
    if refusal is not None:
        raise LoadCapError(refusal)
    user = f"gameday-{uuid.uuid4().hex}"
    with _client(target) as client:
        return [
            request(client, target, "GET", limit.path, headers={limit.user_header: user}).status
            for _ in range(limit.requests + 1)
        ]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
