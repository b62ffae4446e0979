"""The HTTP probe: GET a path through the entrypoint at a fixed rate, one sample per request.

Each sample keeps the time the request really started (handed to the socket, or the start of
the connect when it needed a new connection), how long it took, the status or the kind of
error, and the server that answered (the target's served-by header). Every request has a
deadline, `timeout_sec` after its start: a request still unanswered then is cut (its
connection dropped) and recorded as a timeout failure at the time it started.

The probe runs on one event loop in a thread of its own: the schedule is a timer callback,
each request a few callbacks on a keep-alive connection (`gameday.probes.http11`), so a probe
costs tens of µs of CPU per request, not a thread each. At most `max_in_flight` requests are
in flight at once (default: what rate x timeout needs, capped); when all are, the next one
waits for a slot and starts late, and `schedule_report()` says how late and how often:
`gameday.checks.schedule.rate_kept` turns that into "asked 300/s, sent 255/s; 45 requests
late by more than 10 ms".
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import math
import resource
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from urllib.parse import quote, urlsplit

import httpx

from gameday.checks.schedule import LATE_SEC, ScheduleReport
from gameday.clock import Clock
from gameday.facts import server_of
from gameday.history import Sample
from gameday.probes.http11 import Connection, read_buffer
from gameday.probes.schedule import ScheduleLog
from gameday.target import Target

# The most requests one probe keeps in flight (one connection each). With a hung backend at
# 1,000 req/s and a 1 s timeout that is what it takes to keep sending on time.
MAX_IN_FLIGHT = 1024
# A connection idle longer than this is not reused: servers close idle keep-alive
# connections (uvicorn after 5 s), and a request written just as the server closes would
# fail although the server is fine.
IDLE_REUSE_SEC = 2.0


def error_kind(exc: BaseException) -> str:
    """What went wrong, in the words of the report: timeout, refused, reset, dns, other."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == (
            errno.ECONNREFUSED
        ):
            return "refused"
        if isinstance(cause, ConnectionResetError | BrokenPipeError):
            return "reset"
        if "Name or service not known" in str(cause) or "nodename nor servname" in str(cause):
            return "dns"
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    if "refused" in text:
        return "refused"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError) or "reset" in text:
        return "reset"
    return "other"


def connect_error_kind(exc: BaseException) -> str:
    """`error_kind` of a failed connect; asyncio folds the errors of a name's several
    addresses (::1 and 127.0.0.1 for localhost) into one OSError with only their texts."""
    if isinstance(exc, socket.gaierror):
        return "dns"
    text = str(exc)
    if text.startswith("Multiple exceptions") and f"[Errno {errno.ECONNREFUSED}]" in text:
        return "refused"
    return error_kind(exc)


def default_max_in_flight(rate: float, timeout_sec: float) -> int:
    """Enough requests in flight for `rate` when each takes up to `timeout_sec`, within
    `MAX_IN_FLIGHT` and a quarter of the process's file descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds = MAX_IN_FLIGHT if soft == resource.RLIM_INFINITY else max(4, soft // 4)
    return min(MAX_IN_FLIGHT, fds, max(4, math.ceil(rate * timeout_sec) + 4))


class _Request:
    """One request of the probe, from its start to its sample."""

    __slots__ = ("conn", "connecting", "done", "due", "sent", "seq")

    def __init__(self, seq: int, due: float, sent: float) -> None:
        self.seq = seq
        self.due = due
        self.sent = sent
        self.conn: Connection | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.done = False


class HttpProbe:
    """GET `path` through the target's entrypoint `rate` times a second.

    `start()` returns at once; `stop()` stops sending and waits for the requests in flight
    (each ends by its deadline); `join()` waits until `limit` requests have been sent and
    answered. `schedule_report()` says how well the rate was kept, at any time.
    """

    def __init__(
        self,
        target: Target,
        *,
        path: str,
        rate: float,
        clock: Clock,
        record: Callable[[Sample], None],
        name: str | None = None,
        timeout_sec: float | None = None,
        limit: int | None = None,
        max_in_flight: int | None = None,
        late_sec: float = LATE_SEC,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.name = name or f"GET {path}"
        self.rate = rate
        self._clock = clock
        self._record = record
        self._header = target.entrypoint.served_by_header
        self._timeout = timeout_sec or target.entrypoint.timeout_sec
        self.timeout_sec = self._timeout
        self._limit = limit
        self.max_in_flight = max_in_flight or default_max_in_flight(rate, self._timeout)
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        url = urlsplit(target.entrypoint.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"entrypoint url must be http(s)://host[:port], not {url.geturl()}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        # As httpx joins a base URL and a path: the entrypoint's own path is a prefix.
        prefix = url.path if url.path.endswith("/") else url.path + "/"
        target_path = quote(prefix + path.lstrip("/"), safe="/?&=%:@!$'()*+,;~-._")
        host = url.netloc.rpartition("@")[2]  # never send credentials of the URL as a host
        self._request = (
            f"GET {target_path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gameday-probe\r\n"
            "Accept: */*\r\n\r\n"
        ).encode("latin-1")
        self.log = ScheduleLog(self.name, rate=rate, limit=limit, unit="request",
                               late_sec=late_sec)  # fmt: skip
        self._interval = 1.0 / rate
        # Loop state: touched only on the probe's own thread once it has started.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._finished: asyncio.Future[None] | None = None
        self._next: asyncio.Handle | None = None
        self._idle: list[Connection] = []
        self._read_buffer = read_buffer()  # every connection's reads: one loop, one at a time
        self._open: set[Connection] = set()
        # Requests in start order, hence in deadline order (each is due `timeout` after its
        # start): one timer, at the oldest one's deadline, cuts whatever is still unanswered
        # there, instead of a timer made and cancelled for every request.
        self._pending: deque[_Request] = deque()
        self._deadline: asyncio.TimerHandle | None = None
        self._first_due = 0.0
        self._seq = 0
        self._in_flight = 0
        self._waiting_for_slot = False
        self._scheduling = True

    # -- the public surface --------------------------------------------------------------
    def start(self) -> HttpProbe:
        if self._thread is not None:
            raise RuntimeError(f"probe {self.name!r} was already started")
        loop = self._loop = asyncio.new_event_loop()
        self._finished = loop.create_future()
        self._thread = threading.Thread(target=self._main, name="http-probe", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending; wait for the requests in flight (they end by their deadlines)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already ended (limit reached)
            loop.call_soon_threadsafe(self._halt)
        thread.join()

    def join(self) -> None:
        """Wait until `limit` requests have been sent and answered (or cut)."""
        if self._thread is None:
            raise RuntimeError(f"probe {self.name!r} was never started")
        self._thread.join()

    def schedule_report(self) -> ScheduleReport:
        """How well the probe kept its rate so far (or until it stopped)."""
        return self.log.report(self._clock.now())

    # -- the loop ------------------------------------------------------------------------
    def _main(self) -> None:
        loop, finished = self._loop, self._finished
        assert loop is not None and finished is not None
        asyncio.set_event_loop(loop)
        try:
            self._first_due = self._clock.now()
            self.log.begin(self._first_due)
            loop.call_soon(self._fire)
            loop.run_until_complete(finished)
            for conn in list(self._open):
                conn.close()
            # Let the transports finish closing, connects cut at their deadline unwind, and
            # the resolver's threads end.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, asyncio.sleep(0),
                                                   return_exceptions=True))  # fmt: skip
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _loop_time(self, t: float) -> float:
        # The loop's clock is time.monotonic(), as the run's clock is: only the origin moves.
        return t + self._clock.monotonic_anchor

    def _fire(self) -> None:
        """Start the next request (it is due now or was due earlier)."""
        self._next = None
        if not self._scheduling:
            return
        if self._in_flight >= self.max_in_flight:
            self._waiting_for_slot = True  # the next request starts when one ends, late
            return
        seq = self._seq
        self._start(seq, self._first_due + seq * self._interval)
        self._seq = seq = seq + 1
        if self._limit is not None and seq >= self._limit:
            self._end_schedule()
            return
        assert self._loop is not None
        due = self._first_due + seq * self._interval
        if self._in_flight >= self.max_in_flight and due <= self._clock.now():
            # Due already and no slot free: the request that ends first starts it (a timer
            # would only wake the loop to find every slot taken).
            self._waiting_for_slot = True
            return
        self._next = self._loop.call_at(self._loop_time(due), self._fire)

    def _halt(self) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
        self._end_schedule()

    def _end_schedule(self) -> None:
        if self._scheduling:
            self._scheduling = False
            self.log.end(self._clock.now())
        self._maybe_finished()

    def _maybe_finished(self) -> None:
        if not self._scheduling and self._in_flight == 0:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            assert self._finished is not None
            if not self._finished.done():
                self._finished.set_result(None)

    # -- one request ---------------------------------------------------------------------
    def _start(self, seq: int, due: float) -> None:
        loop = self._loop
        assert loop is not None
        sent = self._clock.now()
        conn = self._idle_connection(sent)
        req = _Request(seq, due, sent)
        self._in_flight += 1
        if conn is not None:
            req.conn = conn
            conn.send(req, self._request)
        else:
            req.connecting = loop.create_task(self._connect(req))
        self._pending.append(req)
        if self._deadline is None:
            self._deadline = loop.call_at(self._loop_time(sent + self._timeout), self._cut)
        self.log.started(due, sent)

    def _idle_connection(self, now: float) -> Connection | None:
        while self._idle:
            conn = self._idle.pop()  # the most recently used: the least likely to be closed
            if not conn.closed and now - conn.idle_since < IDLE_REUSE_SEC:
                return conn
            conn.close()
        return None

    async def _connect(self, req: _Request) -> None:
        assert self._loop is not None
        try:
            _, conn = await self._loop.create_connection(
                lambda: Connection(self, self._header, self._read_buffer), self._host, self._port,
                ssl=self._ssl, server_hostname=self._host if self._ssl else None,
            )  # fmt: skip
        except asyncio.CancelledError:
            return  # cut at its deadline: `_expire` recorded it
        except Exception as exc:  # every request is a sample, whatever broke
            if not req.done:
                self._finish(req, ok=False, error=connect_error_kind(exc))
            return
        req.connecting = None
        self._open.add(conn)
        if req.done:  # cut at its deadline just as the connection came up
            conn.close()
            return
        req.conn = conn
        conn.send(req, self._request)

    def _cut(self) -> None:
        """The oldest request's deadline: cut every request unanswered at its deadline, then
        wait for the next one's."""
        self._deadline = None
        pending, timeout = self._pending, self._timeout
        now = self._clock.now()
        while pending:
            req = pending[0]
            if req.done:
                pending.popleft()
            elif req.sent + timeout <= now:
                pending.popleft()
                self._expire(req)
            else:
                assert self._loop is not None
                if self._deadline is not None:  # armed by a request a cut let start
                    self._deadline.cancel()
                self._deadline = self._loop.call_at(self._loop_time(req.sent + timeout),
                                                    self._cut)  # fmt: skip
                return

    def _expire(self, req: _Request) -> None:
        if req.conn is not None:
            req.conn.abort()  # an answer that comes later must not be read as the next one's
        if req.connecting is not None:
            req.connecting.cancel()
        self._finish(req, ok=False, error="timeout")

    def _finish(
        self,
        req: _Request,
        *,
        ok: bool,
        error: str | None,
        status: int | None = None,
        server: str | None = None,
    ) -> None:
        now = self._clock.now()
        req.done = True
        self._in_flight -= 1
        if self._waiting_for_slot:
            # The request that waited for this slot starts now, before this one is
            # recorded: a loop iteration later would make it later still.
            self._waiting_for_slot = False
            self._fire()
        try:
            self._record(
                Sample(
                    probe=self.name, seq=req.seq, sent=req.sent,
                    duration=None if error == "timeout" else now - req.sent, ok=ok,
                    status=status, error=error, server=server, key=None, outcome=None,
                )
            )  # fmt: skip
        finally:
            # Even if recording failed: a probe whose last request never "ends" would hang
            # `stop()` for ever.
            self._maybe_finished()

    # -- what the connections tell (gameday.probes.http11.Listener) ----------------------
    def answered(
        self, conn: Connection, job: object, status: int, header: str | None, keep_alive: bool
    ) -> None:
        assert isinstance(job, _Request)
        if keep_alive and not conn.closed:
            conn.idle_since = self._clock.now()
            self._idle.append(conn)
        else:
            conn.close()
        ok = 200 <= status < 400
        self._finish(job, ok=ok, error=None if ok else "http", status=status,
                     server=server_of(header))  # fmt: skip

    def broken(self, conn: Connection, job: object, exc: BaseException | None) -> None:
        assert isinstance(job, _Request)
        self._open.discard(conn)
        if not job.done:
            # Closed before the answer was complete, without an error: a reset in the
            # report's words (httpx said RemoteProtocolError for it).
            self._finish(job, ok=False, error="reset" if exc is None else error_kind(exc))

    def dropped(self, conn: Connection) -> None:
        self._open.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
