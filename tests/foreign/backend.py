"""A notes service: the foreign deployment's backend, deliberately unlike the lab's app.

    GET  /healthz          200 {"status": "ok"} (the process only: no database call, so the
                           load balancer keeps a node whose database is failing over)
    PUT  /v1/notes/{id}    body {"text": "..."}; the client chooses the id; 201 created,
                           200 overwritten, 400 bad id or body, 503 database unavailable
    GET  /v1/notes/{id}    200 {"id", "text", "node"} or 404

Every answer carries `X-Node: <name>`. Notes are written to and read from the current
primary: libpq's multi-host connection string with `target_session_attrs=read-write` finds it
after a promotion, so nothing is re-read or reconfigured. The database password comes from
$FOREIGN_DB_PASSWORD. Runs alone: `python -m tests.foreign.backend --name node-1 --port P
--db-ports P1,P2` (psycopg is all it needs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

_NOTE_PATH = re.compile(r"^/v1/notes/([A-Za-z0-9._-]{1,100})$")
POOL_SIZE = 8
CONNECT_TIMEOUT_SEC = 2
STATEMENT_TIMEOUT_MS = 5000


class Unavailable(Exception):
    """The database cannot be reached now (no primary, a failover in progress)."""


class Pool:
    """A few connections to the primary; a connection that fails once is thrown away, so the
    next request connects afresh and libpq picks whichever host is read-write now."""

    def __init__(self, conninfo: str, size: int = POOL_SIZE) -> None:
        self._conninfo = conninfo
        self._idle: queue.LifoQueue[psycopg.Connection[tuple[object, ...]]] = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        if not self._slots.acquire(timeout=10):
            raise Unavailable("all database connections are busy")
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                try:
                    conn = psycopg.connect(self._conninfo, autocommit=True)
                except psycopg.Error as exc:
                    raise Unavailable(str(exc).strip().splitlines()[0]) from None
            try:
                yield conn
            except psycopg.Error as exc:
                # A dropped connection, a primary that went read-only, a statement timeout:
                # the write is not acknowledged, and no pooled connection is trusted again
                # (they all went to the server that failed; a stale one could fail a request
                # long after the failover).
                conn.close()
                self._drain()
                raise Unavailable(str(exc).strip().splitlines()[0] or "error") from None
            except BaseException:
                conn.close()
                raise
            else:
                self._idle.put(conn)
        finally:
            self._slots.release()

    def _drain(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def conninfo(db_ports: list[int], password: str) -> str:
    hosts = ",".join("127.0.0.1" for _ in db_ports)
    ports = ",".join(str(p) for p in db_ports)
    return psycopg.conninfo.make_conninfo(
        host=hosts, port=ports, dbname="notes", user="notes", password=password,
        target_session_attrs="read-write", connect_timeout=str(CONNECT_TIMEOUT_SEC),
        application_name="notes-backend", options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
    )  # fmt: skip


def make_handler(name: str, pool: Pool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "notes/1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("X-Node", name)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._answer(200, {"status": "ok", "node": name})
                return
            match = _NOTE_PATH.match(path)
            if not match:
                self._answer(404, {"error": "no such path"})
                return
            try:
                with pool.connection() as conn:
                    row = conn.execute(
                        "SELECT text, node FROM notes WHERE id = %s", (match[1],)
                    ).fetchone()
            except Unavailable as exc:
                self._answer(503, {"error": f"database unavailable: {exc}"})
                return
            if row is None:
                self._answer(404, {"error": "no such note", "id": match[1]})
            else:
                self._answer(200, {"id": match[1], "text": row[0], "node": row[1]})

        def do_PUT(self) -> None:
            match = _NOTE_PATH.match(self.path.split("?", 1)[0])
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not match:
                self._answer(404, {"error": "no such path"})
                return
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("text"), str):
                self._answer(400, {"error": 'the body must be {"text": "..."}'})
                return
            try:
                with pool.connection() as conn:
                    row = conn.execute(
                        "INSERT INTO notes (id, text, node) VALUES (%s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET text = EXCLUDED.text, "
                        "node = EXCLUDED.node, updated_at = now() "
                        "RETURNING (xmax = 0)",
                        (match[1], body["text"], name),
                    ).fetchone()
            except Unavailable as exc:
                self._answer(503, {"error": f"database unavailable: {exc}"})
                return
            created = bool(row and row[0])
            self._answer(201 if created else 200, {"id": match[1], "text": body["text"]})

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog. socketserver's default, 5, is full after a few requests arrive while
    # the process waits for a CPU (a busy machine): the kernel then drops new connections,
    # nginx's connect times out after proxy_connect_timeout (1 s), and its passive health
    # check (max_fails=1) rests the node, both nodes at once under the same load: 502s for
    # every client though both processes are alive. A real server listens with a deep queue.
    request_queue_size = 512


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db-ports", required=True, help="comma-separated, e.g. 18510,18511")
    # Unused here: it puts the deployment's name in the command line, where `down` looks.
    parser.add_argument("--tag", default="")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.db_ports.split(",")]
    pool = Pool(conninfo(ports, os.environ.get("FOREIGN_DB_PASSWORD", "")))
    server = Server(("127.0.0.1", args.port), make_handler(args.name, pool))
    server.serve_forever()


if __name__ == "__main__":
    main()
