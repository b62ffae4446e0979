"""The HTTP probe: GET a path through the entrypoint at a fixed rate, one sample per request.

Each sample keeps the time the request was sent, how long it took, the status or the kind of
error, and the server that answered (the target's served-by header). A request that hangs is
cut by its timeout and recorded as a failure at the time it was sent.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

import httpx

from gameday.clock import Clock
from gameday.facts import server_of
from gameday.history import Sample
from gameday.probes.schedule import FixedRate, Tick
from gameday.target import Target


def error_kind(exc: BaseException) -> str:
    """What went wrong, in the words of the report: timeout, refused, reset, dns, other."""
    if isinstance(exc, httpx.TimeoutException):
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


class HttpProbe:
    """GET `path` through the target's entrypoint `rate` times a second."""

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
    ) -> None:
        self.name = name or f"GET {path}"
        self.rate = rate
        self._path = path
        self._clock = clock
        self._record = record
        self._header = target.entrypoint.served_by_header
        timeout = timeout_sec or target.entrypoint.timeout_sec
        self.timeout_sec = timeout
        self._scheduler = FixedRate(
            self._send, rate=rate, clock=clock, timeout_sec=timeout, limit=limit, name="http"
        )
        workers = self._scheduler.workers
        # One connection per worker: a request never waits for a free connection, so the
        # measured duration is the server's, not the pool's.
        self._client = httpx.Client(
            base_url=target.entrypoint.url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )

    def start(self) -> HttpProbe:
        self._scheduler.start()
        return self

    def stop(self) -> None:
        self._scheduler.stop()
        self._client.close()

    def join(self) -> None:
        self._scheduler.join()
        self._client.close()

    def _send(self, tick: Tick) -> None:
        started = time.monotonic()
        try:
            resp = self._client.get(self._path)
        except Exception as exc:  # every request is a sample, whatever broke
            kind = error_kind(exc)
            self._record(
                Sample(
                    probe=self.name, seq=tick.seq, sent=tick.sent,
                    duration=None if kind == "timeout" else time.monotonic() - started,
                    ok=False, status=None, error=kind, server=None, key=None, outcome=None,
                )
            )  # fmt: skip
            return
        ok = 200 <= resp.status_code < 400
        self._record(
            Sample(
                probe=self.name, seq=tick.seq, sent=tick.sent,
                duration=time.monotonic() - started, ok=ok, status=resp.status_code,
                error=None if ok else "http", server=server_of(resp.headers.get(self._header)),
                key=None, outcome=None,
            )
        )  # fmt: skip
