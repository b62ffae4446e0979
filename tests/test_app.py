"""Integration tests of the CloudMart reference backend (lab/app) against real services.

A throwaway PostgreSQL 15 cluster (127.0.0.1:17380), a redis-server (127.0.0.1:17381) and the
app itself (``python -m lab.app`` on 127.0.0.1:17382) are started once for the module and
always torn down, temp folders included. Test order matters at the end of the file: the
database restart, Redis outage and SIGTERM tests run last because they disturb the stack.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import psycopg
import pytest
import redis

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = shutil.which("redis-server")
REPO_ROOT = Path(__file__).resolve().parents[1]
# Below the lab's port blocks (base+0.., base+50.., the Docker lab's 17650-17692).
_BELOW = int(os.environ.get("GAMEDAY_LAB_BASE_PORT", "17400")) - 20
PG_PORT, REDIS_PORT, APP_PORT = _BELOW, _BELOW + 1, _BELOW + 2
DB_URL = f"postgresql://postgres@127.0.0.1:{PG_PORT}/postgres"
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"
APP_URL = f"http://127.0.0.1:{APP_PORT}"
SERVED_BY = "server1/az-a"

if not (PG_BIN / "postgres").exists() or REDIS_SERVER is None:
    pytest.skip(
        f"needs PostgreSQL 15 binaries in {PG_BIN} and redis-server on PATH",
        allow_module_level=True,
    )


from lab.app.schema import ensure_schema  # noqa: E402

# No module marker: pytest.ini (run with --strict-markers) registers no `integration` marker.


def _wait_until(
    check: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes] | None
) -> None:
    """Poll `check` until it returns True; fail early if `proc` (the service) has exited."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout} s (last error: {last!r})")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        # Like the servers themselves: connections of an earlier run in TIME_WAIT don't count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> int | None:
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)


def _postgres_answers() -> bool:
    with psycopg.connect(DB_URL, connect_timeout=1) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def _redis_answers() -> bool:
    with redis.Redis.from_url(REDIS_URL, socket_timeout=1) as r:
        return bool(r.ping())


class Stack:
    """The processes under test; methods let tests take services down and up again."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pgdata = tmp / "pgdata"
        self.postgres: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.app: subprocess.Popen[bytes] | None = None
        # PostgreSQL refuses to run as root: drop to the postgres user when we are root.
        self._as_pg: dict[str, Any] = {"user": "postgres"} if os.geteuid() == 0 else {}

    def _log(self, name: str) -> BinaryIO:
        # Appending, so a restarted service keeps the earlier log; the child holds its own copy
        # of the descriptor, so callers close theirs right after starting it.
        return open(self.tmp / f"{name}.log", "ab")

    def init_postgres(self) -> None:
        if self._as_pg:
            shutil.chown(self.tmp, "postgres", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", str(self.pgdata), "-U", "postgres"]
        initdb += ["-A", "trust", "-E", "UTF8", "--no-sync"]
        subprocess.run(initdb, check=True, capture_output=True, cwd=self.tmp, **self._as_pg)

    def start_postgres(self) -> None:
        argv = [str(PG_BIN / "postgres"), "-D", str(self.pgdata), "-p", str(PG_PORT)]
        argv += ["-k", str(self.tmp), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]
        with self._log("postgres") as log:
            self.postgres = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, **self._as_pg
            )
        _wait_until(_postgres_answers, 30, "postgres", self.postgres)

    def stop_postgres(self) -> None:
        _stop(self.postgres, signal.SIGINT)  # "fast" shutdown: disconnects clients

    def start_redis(self) -> None:
        assert REDIS_SERVER is not None
        argv = [REDIS_SERVER, "--port", str(REDIS_PORT), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.tmp)]
        with self._log("redis") as log:
            self.redis = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _wait_until(_redis_answers, 15, "redis-server", self.redis)

    def stop_redis(self) -> None:
        _stop(self.redis)

    def start_app(self) -> None:
        argv = [sys.executable, "-m", "lab.app", "--server-name", "server1", "--zone", "a"]
        argv += ["--port", str(APP_PORT), "--db-write-url", DB_URL, "--db-read-url", DB_URL]
        argv += ["--redis-url", REDIS_URL]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with self._log("app") as log:
            self.app = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
            )

        def healthy() -> bool:
            return httpx.get(f"{APP_URL}/health", timeout=1).status_code == 200

        try:
            _wait_until(healthy, 20, "the app", self.app)
        except Exception as exc:
            raise RuntimeError(f"{exc}; its log:\n{self.app_log()}") from exc

    def stop_app(self) -> int | None:
        return _stop(self.app)

    def app_log(self) -> str:
        path = self.tmp / "app.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for stop in (self.stop_app, self.stop_redis, self.stop_postgres):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"teardown: {exc!r}", file=sys.stderr)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="gameday-app-test-"))
    s = Stack(tmp)
    try:
        busy = [p for p in (PG_PORT, REDIS_PORT, APP_PORT) if not _port_free(p)]
        if busy:
            pytest.fail(f"127.0.0.1 ports {busy} are already in use; the test needs them")
        s.init_postgres()
        s.start_postgres()
        s.start_redis()
        ensure_schema(DB_URL)
        ensure_schema(DB_URL)  # idempotent: a second run must not fail or duplicate
        s.start_app()
        yield s
    finally:
        s.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=APP_URL, timeout=10) as c:
        yield c


@pytest.fixture
def cache() -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield r
    r.close()


def _served_by_ok(response: httpx.Response) -> None:
    assert response.headers["x-served-by"] == SERVED_BY


def test_schema_is_seeded(stack: Stack) -> None:
    with psycopg.connect(DB_URL) as conn:
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (300,)
        name = conn.execute("SELECT name FROM products WHERE id = 17").fetchone()
    assert name == ("Product 17",)


def test_health(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    _served_by_ok(r)
    assert r.json() == {
        "status": "ok",
        "server": "server1",
        "zone": "a",
        "database": "ok",
        "cache": "ok",
    }


def test_errors_carry_served_by(client: httpx.Client) -> None:
    r = client.get("/no/such/path")
    assert r.status_code == 404
    _served_by_ok(r)
    assert "error" in r.json()


def test_product_list(client: httpx.Client) -> None:
    r = client.get("/api/products", params={"limit": 5, "offset": 10})
    assert r.status_code == 200
    _served_by_ok(r)
    assert [p["id"] for p in r.json()] == [11, 12, 13, 14, 15]
    assert client.get("/api/products").json()[0] == client.get("/api/products/1").json()
    assert len(client.get("/api/products").json()) == 20
    assert client.get("/api/products", params={"limit": "x"}).status_code == 400
    assert client.get("/api/products", params={"limit": 0}).status_code == 400


def test_product_cache_aside(client: httpx.Client, cache: redis.Redis) -> None:
    cache.delete("product:17")
    first = client.get("/api/products/17")
    assert first.status_code == 200
    _served_by_ok(first)
    assert first.headers["x-cache"] == "MISS"
    assert first.json()["name"] == "Product 17"
    assert 0 < cache.ttl("product:17") <= 600

    second = client.get("/api/products/17")
    assert second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()

    # Proof that a HIT comes from Redis and not from PostgreSQL: doctor the cached copy.
    cache.set("product:17", '{"id":17,"name":"from redis","price_cents":1}', ex=600)
    assert client.get("/api/products/17").json()["name"] == "from redis"
    cache.delete("product:17")


def test_unknown_product_is_404(client: httpx.Client) -> None:
    r = client.get("/api/products/999999")
    assert r.status_code == 404
    _served_by_ok(r)
    assert r.json() == {"error": "product not found"}
    assert client.get("/api/products/99999999999999999999").status_code == 404


def test_order_create_read_and_idempotency(client: httpx.Client) -> None:
    key = f"test-{uuid.uuid4()}"
    body = {"item": "Product 3", "quantity": 2, "user_id": "bob"}
    created = client.post("/api/orders", json=body, headers={"Idempotency-Key": key})
    assert created.status_code == 201, created.text
    _served_by_ok(created)
    order = created.json()
    assert isinstance(order["id"], int)
    assert (order["item"], order["quantity"], order["idempotency_key"]) == ("Product 3", 2, key)
    assert order["created_at"]

    plain = client.get(f"/api/orders/{order['id']}")
    consistent = client.get(f"/api/orders/{order['id']}", params={"consistent": "true"})
    assert plain.status_code == consistent.status_code == 200
    assert plain.json() == consistent.json() == order

    again = client.post("/api/orders", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200
    assert again.json() == order

    other = client.post("/api/orders", json=body)
    assert other.status_code == 201
    assert other.json()["id"] != order["id"]
    assert client.get("/api/orders/987654321").status_code == 404


def test_concurrent_orders_with_one_key_make_one_order(stack: Stack) -> None:
    key = f"race-{uuid.uuid4()}"

    def post(_: int) -> httpx.Response:
        return httpx.post(
            f"{APP_URL}/api/orders",
            json={"item": "Product 9", "quantity": 1},
            headers={"Idempotency-Key": key},
            timeout=10,
        )

    with ThreadPoolExecutor(max_workers=10) as pool:
        responses = list(pool.map(post, range(10)))
    assert sorted(r.status_code for r in responses) == [200] * 9 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    with psycopg.connect(DB_URL) as conn:
        count = conn.execute("SELECT count(*) FROM orders WHERE idempotency_key = %s", (key,))
        assert count.fetchone() == (1,)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[1, 2]",
        b'{"quantity": 1}',
        b'{"item": "", "quantity": 1}',
        b'{"item": "x", "quantity": "2"}',
        b'{"item": "x", "quantity": true}',
        b'{"item": "x", "quantity": 0}',
        b'{"item": "x", "quantity": 1, "user_id": 5}',
    ],
)
def test_bad_order_body_is_400(client: httpx.Client, content: bytes) -> None:
    r = client.post("/api/orders", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    _served_by_ok(r)
    assert "error" in r.json()


def test_login_and_me(client: httpx.Client, cache: redis.Redis) -> None:
    r = client.post("/api/login", json={"user": "alice"})
    assert r.status_code == 200
    _served_by_ok(r)
    sid = r.json()["session"]
    assert r.json()["user"] == "alice"
    assert r.cookies.get("session") == sid
    assert 0 < cache.ttl(f"session:{sid}") <= 3600

    me = client.get("/api/me", headers={"Authorization": f"Bearer {sid}"})
    assert me.status_code == 200
    assert me.json() == {"user": "alice", "session": sid}
    # The client kept the cookie from the login response.
    assert client.get("/api/me").json()["user"] == "alice"

    client.cookies.clear()
    bad = client.get("/api/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    _served_by_ok(bad)
    assert client.get("/api/me").status_code == 401
    assert client.post("/api/login", json={"user": ""}).status_code == 400


def test_rate_limit(client: httpx.Client, cache: redis.Redis) -> None:
    user = f"rl-{uuid.uuid4().hex}"
    headers = {"X-User-Id": user}
    for i in range(100):
        r = client.get("/api/products/1", headers=headers)
        assert r.status_code == 200, f"request {i + 1}: {r.status_code}"
    limited = client.get("/api/products/1", headers=headers)
    assert limited.status_code == 429
    _served_by_ok(limited)
    assert limited.json() == {"error": "rate limit exceeded", "limit": 100}
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert 0 < cache.ttl(f"ratelimit:{user}") <= 60
    # Other users, and anonymous requests, are not affected.
    assert client.get("/api/products/1", headers={"X-User-Id": f"{user}-2"}).status_code == 200
    assert client.get("/api/products/1").status_code == 200


def test_rate_limit_by_session_user(client: httpx.Client) -> None:
    user = f"rl-{uuid.uuid4().hex}"
    sid = client.post("/api/login", json={"user": user}).json()["session"]
    client.cookies.clear()
    auth = {"Authorization": f"Bearer {sid}"}
    statuses = [client.get("/api/me", headers=auth).status_code for _ in range(101)]
    # The login itself carried no identity, so it did not count.
    assert statuses[:100] == [200] * 100
    assert statuses[100] == 429


def test_database_restart_needs_no_warmup(stack: Stack, client: httpx.Client) -> None:
    # Both pools hold idle connections that the restart kills, as a failover would.
    order = client.post("/api/orders", json={"item": "before restart", "quantity": 1}).json()
    assert client.get(f"/api/orders/{order['id']}").status_code == 200
    stack.stop_postgres()
    stack.start_postgres()
    # At once, no warm-up: each dead pooled connection is retried on a fresh one.
    for i in range(6):
        created = client.post("/api/orders", json={"item": f"after restart {i}", "quantity": 1})
        assert created.status_code == 201, created.text
        assert client.get(f"/api/orders/{created.json()['id']}").status_code == 200
    assert "stale database connection, retrying" in stack.app_log()


def test_database_outage(stack: Stack, client: httpx.Client) -> None:
    client.get("/api/products/1")  # make sure it is cached
    stack.stop_postgres()
    deadline = time.monotonic() + 5
    while True:
        health = client.get("/health")
        assert health.status_code == 200
        if health.json()["database"].startswith("error"):
            break
        assert time.monotonic() < deadline, "health never noticed the database outage"
        time.sleep(0.2)
    t0 = time.monotonic()
    down = client.post("/api/orders", json={"item": "x", "quantity": 1})
    assert down.status_code == 503
    assert time.monotonic() - t0 < 7  # bounded by the app's database timeout (5 s)
    _served_by_ok(down)
    assert down.json()["error"].startswith("database unavailable")
    cached = client.get("/api/products/1")  # cached earlier: still served
    assert (cached.status_code, cached.headers["x-cache"]) == (200, "HIT")

    stack.start_postgres()
    t0 = time.monotonic()
    r = client.post("/api/orders", json={"item": "after outage", "quantity": 1})
    assert r.status_code == 201, r.text
    assert time.monotonic() - t0 < 5
    _wait_until(lambda: client.get("/health").json()["database"] == "ok", 5, "db ok", None)


def test_redis_down_health_reports_it_and_requests_fail_open(
    stack: Stack, client: httpx.Client
) -> None:
    user = f"rl-{uuid.uuid4().hex}"
    for _ in range(101):
        client.get("/api/products/2", headers={"X-User-Id": user})
    assert client.get("/api/products/2", headers={"X-User-Id": user}).status_code == 429

    stack.stop_redis()
    deadline = time.monotonic() + 3
    while True:
        health = client.get("/health")
        assert health.status_code == 200
        _served_by_ok(health)
        if health.json()["cache"].startswith("error"):
            break
        assert time.monotonic() < deadline, "health never reported the cache outage"
        time.sleep(0.1)
    assert health.json()["database"] == "ok"

    r = client.get("/api/products/2", headers={"X-User-Id": user})  # the limit fails open
    assert r.status_code == 200
    assert r.headers["x-cache"] == "MISS"
    assert client.post("/api/login", json={"user": "alice"}).status_code == 503
    assert client.get("/api/me", headers={"Authorization": "Bearer x"}).status_code == 503
    assert client.post("/api/orders", json={"item": "x", "quantity": 1}).status_code == 201


def test_sigterm_exits_cleanly(stack: Stack) -> None:
    assert stack.stop_app() == 0, stack.app_log()
    assert "Traceback" not in stack.app_log()
