"""One JSON line per request locust makes, for checks that need more than locust's statistics.

Enabled by ``GAMEDAY_RECORDS=<path>``. Each line::

    {"t": 1764018000.123, "name": "product page", "method": "GET", "status": 200,
     "duration_ms": 3.2, "error": null, "served_by": "server1/az-a"}

``t`` is the wall-clock send time (seconds since the epoch), ``status`` is None when no
response arrived, ``served_by`` is the ``X-Served-By`` header (None when absent). Lines are
buffered and flushed at least every ``FLUSH_INTERVAL_SEC`` and when the test stops or locust
quits, so a normal end loses nothing. In distributed mode each worker writes its own file,
``<stem>.<client id><suffix>`` (``records.jsonl`` becomes ``records.host_abc123.jsonl``); the
master makes no requests and writes nothing.

The writer itself does not import locust; only ``attach()`` does (lazily).
"""

from __future__ import annotations

import atexit
import json
import re
import time
from pathlib import Path
from typing import IO, Any

RECORDS_ENV = "GAMEDAY_RECORDS"
FLUSH_INTERVAL_SEC = 0.5
SERVED_BY_HEADER = "X-Served-By"


class RecordWriter:
    """Appends JSON lines to a file; flushes when the buffer is older than the interval."""

    def __init__(self, path: Path, flush_interval_sec: float = FLUSH_INTERVAL_SEC) -> None:
        self.path = path
        self.flush_interval_sec = flush_interval_sec
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = path.open("a", encoding="utf-8")
        self._buffer: list[str] = []
        self._last_flush = time.monotonic()
        self.written = 0

    def add(self, line: str) -> None:
        """One JSON line, newline included (see `record_line`)."""
        if self._file is None:
            return  # closed: locust is quitting
        self._buffer.append(line)
        if time.monotonic() - self._last_flush >= self.flush_interval_sec:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._file is None or not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        self._file.write("".join(lines))
        self._file.flush()
        self.written += len(lines)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


# JSON of the strings that repeat (endpoint names, methods, servers): encoded once each.
_ENCODED: dict[str, str] = {}
_ENCODED_MAX = 10_000


def _json_str(value: str | None) -> str:
    if value is None:
        return "null"
    encoded = _ENCODED.get(value)
    if encoded is None:
        encoded = json.dumps(value)
        if len(_ENCODED) < _ENCODED_MAX:
            _ENCODED[value] = encoded
    return encoded


def record_line(
    request_type: str,
    name: str,
    response_time: float | None,
    response: Any,
    exception: BaseException | None,
    start_time: float | None = None,
) -> str:
    """The JSON line of one request, from the arguments of locust's ``events.request``.

    Formatted by hand rather than with ``json.dumps`` of a dict: this runs once per request
    inside locust, and the dict plus the encoder cost a tenth of locust's throughput
    (bench/locust_vs_wrk.py).
    """
    duration_ms = float(response_time or 0.0)
    sent = start_time if start_time is not None else time.time() - duration_ms / 1000.0
    status = getattr(response, "status_code", None) or None
    served_by = None
    if status is not None:
        try:
            served_by = response.headers.get(SERVED_BY_HEADER)
        except Exception:  # a half-built response after a connection error
            served_by = None
    error = None if exception is None else str(exception) or type(exception).__name__
    return (
        f'{{"t":{sent:.6f},"name":{_json_str(name)},"method":{_json_str(request_type)},'
        f'"status":{"null" if status is None else int(status)},"duration_ms":{duration_ms:.3f},'
        f'"error":{"null" if error is None else json.dumps(error)},'
        f'"served_by":{_json_str(served_by if isinstance(served_by, str) else None)}}}\n'
    )


def worker_path(path: Path, client_id: str) -> Path:
    """The file of one worker: the client id (made file-name safe) before the suffix."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", client_id)
    return path.with_name(f"{path.stem}.{safe}{path.suffix}")


def attach(environment: Any, path: Path) -> RecordWriter | None:
    """Write records of ``environment``'s requests to ``path``; call from ``events.init``.

    Returns None on a master (it makes no requests). A greenlet flushes every interval so a
    quiet period does not hold lines back; the test-stop and quitting events flush,
    ``quit`` (the last event before exit) closes.
    """
    import gevent
    from locust.runners import MasterRunner, WorkerRunner

    runner = environment.runner
    if isinstance(runner, MasterRunner):
        return None
    if isinstance(runner, WorkerRunner):
        path = worker_path(path, runner.client_id)
    writer = RecordWriter(path)
    events = environment.events

    def on_request(
        request_type: str,
        name: str,
        response_time: float | None,
        response_length: int,
        response: Any = None,
        exception: BaseException | None = None,
        start_time: float | None = None,
        **_: Any,
    ) -> None:
        writer.add(record_line(request_type, name, response_time, response, exception, start_time))

    def flusher() -> None:
        while writer._file is not None:
            gevent.sleep(writer.flush_interval_sec)
            writer.flush()

    greenlet = gevent.spawn(flusher)

    def on_test_stop(**_: Any) -> None:
        writer.flush()

    def on_quit(**_: Any) -> None:
        writer.close()
        greenlet.kill(block=False)

    events.request.add_listener(on_request)
    events.test_stop.add_listener(on_test_stop)
    # `quitting` fires before a signal-driven shutdown stops the users, `quit` after it: flush
    # at the first, close at the last, so requests finishing in between are kept too.
    events.quitting.add_listener(on_test_stop)
    events.quit.add_listener(on_quit)
    atexit.register(writer.close)  # a last resort for exits that skip `quit`
    return writer
