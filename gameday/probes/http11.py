"""A small HTTP/1.1 client for asyncio: what the HTTP probe needs, at a few tens of µs a request.

The HTTP probe sends hundreds of GETs a second from one thread and must measure the target,
not itself. Measured here in a closed loop on the lab's HAProxy (bench/probe_clients.py):
httpx's AsyncClient costs 1.1-1.8 ms of CPU per request, h11 under an asyncio protocol
0.12-0.37 ms, this module 0.05-0.16 ms. It does only what a probe needs: one GET at a time
per connection (no pipelining), the status and one header of the answer kept, the body
counted and dropped.

`ResponseParser` is sans-IO (bytes in, "complete" out) and frames a response to a GET as
RFC 9112 section 6.3 says: 1xx answers are skipped; 204 and 304 have no body; a chunked
transfer coding is read chunk by chunk (trailers skipped); otherwise Content-Length; otherwise
the body runs to the end of the connection. A connection is kept for the next request only
when the answer allows it (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
`keep-alive`) and nothing follows the answer.

`Connection` is the asyncio protocol that carries one request at a time and tells its
`Listener` (the probe) how each one ended.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

# An answer's head (status line and headers) larger than this is refused: a probe reads
# health checks, not arbitrary documents, and must not buffer without bound.
MAX_HEAD_BYTES = 64 * 1024
MAX_LINE_BYTES = 4096

_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _TO_CLOSE, _DONE = range(8)


class ResponseError(Exception):
    """The bytes received are not an HTTP/1.x answer."""


def _tokens(value: bytes) -> list[bytes]:
    return [t.strip().lower() for t in value.split(b",")]


class ResponseParser:
    """Reads one answer to a GET at a time; `reset()` before each request.

    After `feed` (or `eof`) returns True: `status`, `header` (the value of the header named
    when the parser was made, or None) and `keep_alive` (the connection may carry the next
    request) describe the answer.
    """

    __slots__ = ("_buf", "_header", "_remaining", "_state", "header", "keep_alive", "status")

    def __init__(self, header: str | None = None) -> None:
        self._header = header.lower().encode("latin-1") if header else None
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self.status = 0
        self.header: str | None = None
        self.keep_alive = False

    def reset(self) -> None:
        self._buf = b""
        self._state = _HEAD
        self._remaining = 0
        self.status = 0
        self.header = None
        self.keep_alive = False

    @property
    def started(self) -> bool:
        """Whether any byte of an answer arrived since the last `reset`."""
        return bool(self._buf) or self._state != _HEAD or self.status != 0

    def feed(self, data: bytes) -> bool:
        """Take more bytes; True once the answer is complete. Raises ResponseError."""
        buf = self._buf + data if self._buf else data
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise ResponseError(f"answer head longer than {MAX_HEAD_BYTES} bytes")
                    self._buf = buf
                    return False
                self._head(buf[:end])
                buf = buf[end + 4 :]
            elif state in (_LENGTH, _CHUNK_DATA):
                n = min(self._remaining, len(buf))
                self._remaining -= n
                buf = buf[n:]
                if self._remaining:
                    self._buf = b""
                    return False
                self._state = _DONE if state == _LENGTH else _CHUNK_END
            elif state in (_CHUNK_SIZE, _TRAILER, _CHUNK_END):
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_LINE_BYTES:
                        raise ResponseError(f"chunk line longer than {MAX_LINE_BYTES} bytes")
                    self._buf = buf
                    return False
                line = buf[:end]
                buf = buf[end + 2 :]
                if state == _CHUNK_END:
                    if line:
                        raise ResponseError("chunk data longer than its size")
                    self._state = _CHUNK_SIZE
                elif state == _CHUNK_SIZE:
                    size_text = line.split(b";", 1)[0].strip()
                    try:
                        size = int(size_text, 16)
                    except ValueError:
                        raise ResponseError(f"bad chunk size {size_text[:20]!r}") from None
                    if size < 0:
                        raise ResponseError(f"bad chunk size {size_text[:20]!r}")
                    self._remaining = size
                    self._state = _CHUNK_DATA if size else _TRAILER
                elif not line:  # the empty line after the trailers
                    self._state = _DONE
            elif state == _TO_CLOSE:
                self._buf = b""
                return False
            else:  # _DONE
                if buf:
                    # Bytes nobody asked for: whatever they are, the connection cannot be
                    # trusted with the next request.
                    self.keep_alive = False
                self._buf = b""
                return True

    def eof(self) -> bool:
        """The peer closed the connection: True if that completes the answer."""
        if self._state == _TO_CLOSE:
            self._state = _DONE
            return True
        return self._state == _DONE

    def _head(self, head: bytes) -> None:
        key = (self._header, head)
        parsed = _HEADS.get(key, _UNSEEN)
        if parsed is _UNSEEN:
            parsed = _parse_head(head, self._header)
            if len(head) <= _HEAD_CACHED_BYTES:
                if len(_HEADS) >= _HEADS_KEPT:
                    _HEADS.clear()
                _HEADS[key] = parsed
        if parsed is None:
            return  # an interim answer; the real one follows
        self.status, self.header, self.keep_alive, self._state, self._remaining = parsed


# What an answer's head says: its status, the kept header's value, whether the connection may
# carry the next request, how the body is framed and its length; None for an interim (1xx).
_Head = tuple[int, str | None, bool, int, int] | None

# Heads already parsed, by the header kept and their bytes. A probe reads the same few heads
# over and over (one per server; a Date header changes once a second), and parsing one was
# about a third of the probe's own Python per request (2.9 µs; 1.3 from this cache).
# Parsing is a function of the bytes alone, so a head seen before gets the same result. The
# cache is bounded (emptied when full), keeps only small heads and never a refused one.
_HEADS: dict[tuple[bytes | None, bytes], _Head] = {}
_HEADS_KEPT = 256
_HEAD_CACHED_BYTES = 1024
_UNSEEN: _Head = (0, None, False, _HEAD, 0)


def _parse_head(head: bytes, wanted: bytes | None) -> _Head:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3:
        raise ResponseError(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise ResponseError(f"bad status {parts[1]!r}") from None
    length: bytes | None = None
    chunked = False
    coded = False
    connection: list[bytes] = []
    kept: bytes | None = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            if line[:1] in (b" ", b"\t"):
                continue  # an obsolete folded line: no header the probe reads uses it
            raise ResponseError(f"bad header line {line[:40]!r}")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            if length is not None and length != value:
                raise ResponseError("conflicting Content-Length headers")
            length = value
        elif name == b"transfer-encoding":
            coded = True
            chunked = _tokens(value)[-1] == b"chunked"
        elif name == b"connection":
            connection += _tokens(value)
        if name == wanted and kept is None:
            kept = value
    if 100 <= status < 200:
        if status == 101:
            raise ResponseError("101 Switching Protocols: the probe asked for no upgrade")
        return None
    header = kept.decode("latin-1") if kept is not None else None
    if parts[0] == b"HTTP/1.0":
        keep_alive = b"keep-alive" in connection
    else:
        keep_alive = b"close" not in connection
    if status in (204, 304):
        return status, header, keep_alive, _DONE, 0
    if coded:
        return status, header, keep_alive and chunked, _CHUNK_SIZE if chunked else _TO_CLOSE, 0
    if length is not None:
        try:
            remaining = int(length)
        except ValueError:
            raise ResponseError(f"bad Content-Length {length[:20]!r}") from None
        if remaining < 0:
            raise ResponseError(f"bad Content-Length {length[:20]!r}")
        return status, header, keep_alive, _LENGTH if remaining else _DONE, remaining
    return status, header, False, _TO_CLOSE, 0


class Listener(Protocol):
    """What a `Connection` tells about the request it carries (`job` is the listener's own)."""

    def answered(
        self, conn: Connection, job: object, status: int, header: str | None, keep_alive: bool
    ) -> None: ...

    def broken(self, conn: Connection, job: object, exc: BaseException | None) -> None: ...

    def dropped(self, conn: Connection) -> None: ...


# How much one read takes at most. Reads go into a buffer the caller gives (one per event
# loop: a read is copied out before the loop makes the next), not into a new bytes object per
# read: asyncio's plain Protocol receives into a fresh 256 KiB object every time, which in a
# minimal asyncio ping-pong with HAProxy doubled the CPU a request (~24 -> ~53 µs; in the
# probe's process, with a bigger heap, the difference was within the noise).
READ_BYTES = 64 * 1024


def read_buffer() -> memoryview:
    """A buffer for the connections of one event loop to read into."""
    return memoryview(bytearray(READ_BYTES))


class Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection carrying one request at a time for a `Listener`.

    An answer, a broken connection (reset, closed before the answer was complete, bytes that
    are not HTTP) or a close while idle each reach the listener exactly once per request.
    `buffer` (from `read_buffer()`) may be shared by every connection of one event loop.
    """

    def __init__(self, listener: Listener, header: str | None, buffer: memoryview) -> None:
        self._listener = listener
        self._parser = ResponseParser(header)
        self._buffer = buffer
        self.transport: asyncio.Transport | None = None
        self.job: object | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, job: object, data: bytes) -> None:
        assert self.transport is not None and self.job is None
        self.job = job
        self._parser.reset()
        self.transport.write(data)

    def abort(self) -> None:
        """Drop the connection at once (a request cut at its deadline): it is not reused."""
        self.job = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._buffer[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        job = self.job
        if job is None:
            # An answer nobody asked for (or to a request already cut): not trustworthy.
            self.abort()
            return
        try:
            done = self._parser.feed(data)
        except ResponseError as exc:
            self.abort()
            self._listener.broken(self, job, exc)
            return
        if done:
            self.job = None
            p = self._parser
            self._listener.answered(self, job, p.status, p.header, p.keep_alive)

    def eof_received(self) -> bool:
        job = self.job
        if job is not None and self._parser.eof():
            self.job = None
            p = self._parser
            self._listener.answered(self, job, p.status, p.header, False)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        job, self.job = self.job, None
        if job is not None:
            self._listener.broken(self, job, exc)
        else:
            self._listener.dropped(self)
