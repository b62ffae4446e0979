"""The HTTP probe against real sockets: real send times, lateness counted, deadlines that cut
hung requests, and the answers an HTTP/1.1 server may give (read by `http11`).

The servers here are raw sockets on loopback whose every byte the test decides; they stand in
for an entrypoint so that a hung, slow or odd server can be made on purpose. Assertions are on
counts and order (and on lower bounds the servers' own sleeps guarantee), never on how fast
this machine happened to be.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gameday.checks.schedule import rate_kept
from gameday.clock import Clock
from gameday.history import Sample
from gameday.probes import http11
from gameday.probes.http import HttpProbe
from gameday.probes.http11 import ResponseError, ResponseParser
from gameday.probes.schedule import Scheduled
from gameday.target import Target

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Served-By: app-1/az-a\r\n\r\nok"
# Bounds for joins, so that a broken probe fails the test instead of hanging it.
JOIN_SEC = 60.0

Answer = Callable[[int], tuple[bytes, bool] | None]


class RawServer:
    """An HTTP server on loopback: `answer(n)` gives the bytes for the n-th request and
    whether to close the connection after them, or None to never answer (the connection is
    held until the client drops it). Each answer is sent `delay` seconds after its request."""

    def __init__(
        self, answer: Answer, *, clock: Clock, delay: float = 0.0, tls: ssl.SSLContext | None = None
    ) -> None:
        self._answer = answer
        self._clock = clock
        self._delay = delay
        self._tls = tls
        self._sock = socket.create_server(("127.0.0.1", 0))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self._sock.getsockname()[1]}"
        self.accepted: list[float] = []  # clock time of each accepted connection
        self.cut = 0  # connections the client dropped while the server held an answer back
        self._lock = threading.Lock()
        self._count = 0
        self._conns: list[socket.socket] = []
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append(self._clock.now())
                self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[buf.index(b"\r\n\r\n") + 4 :]
                with self._lock:
                    n = self._count
                    self._count += 1
                if self._delay:
                    time.sleep(self._delay)
                answer = self._answer(n)
                if answer is None:  # hang: wait for the client to give up on us
                    while conn.recv(65536):
                        pass
                    with self._lock:
                        self.cut += 1
                    return
                data, close = answer
                conn.sendall(data)
                if close:
                    return
        except OSError:
            if not self._closing:
                with self._lock:
                    self.cut += 1
        finally:
            conn.close()

    def close(self) -> None:
        self._closing = True
        self._sock.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def serve(clock: Clock) -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(answer: Answer, *, delay: float = 0.0, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(answer, clock=clock, delay=delay, tls=tls))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def target_at(url: str) -> Target:
    raw = {"name": "raw", "provider": "generic", "entrypoint": {"url": url}}
    return Target.model_validate(raw)


def always(data: bytes = OK, close: bool = False) -> Answer:
    return lambda n: (data, close)


def run(probe: HttpProbe) -> None:
    probe.start()
    waiter = threading.Thread(target=probe.join, daemon=True)
    waiter.start()
    waiter.join(JOIN_SEC)
    assert not waiter.is_alive(), "the probe did not finish"


def probe_for(url: str, clock: Clock, samples: list[Sample], **kw: object) -> HttpProbe:
    return HttpProbe(target_at(url), path="/health", clock=clock, record=samples.append,
                     **kw)  # type: ignore[arg-type]  # fmt: skip


def due_of(probe: HttpProbe, s: Sample) -> float:
    first = probe.schedule_report().first_due
    assert first is not None
    return first + s.seq / probe.rate


# -- the schedule ------------------------------------------------------------------------------


def test_every_request_is_a_sample_sent_no_earlier_than_due(
    serve: Callable[..., RawServer], clock: Clock
) -> None:
    server = serve(always())
    samples: list[Sample] = []
    probe = probe_for(server.url, clock, samples, rate=50, limit=10)
    run(probe)
    assert sorted(s.seq for s in samples) == list(range(10))
    assert all(s.ok and s.status == 200 and s.server == "app-1" for s in samples)
    assert all(s.sent >= due_of(probe, s) for s in samples)
    ordered = sorted(samples, key=lambda s: s.seq)
    assert [s.sent for s in ordered] == sorted(s.sent for s in ordered)
    r = probe.schedule_report()
    assert (r.due, r.sent, r.unit) == (10, 10, "request")
    assert isinstance(probe, Scheduled)
    # Answers came one after another: the probe kept its connection (keep-alive).
    assert len(server.accepted) < 10


def test_a_request_waiting_for_a_slot_is_sent_when_it_really_starts(
    serve: Callable[..., RawServer], clock: Clock
) -> None:
    # One request in flight at a time, each answered after >= 0.1 s, asked 100/s: request k
    # cannot start before request k-1 was answered. Stamping the hand-off (the old probe)
    # would put them 10 ms apart, on time.
    server = serve(always(), delay=0.1)
    samples: list[Sample] = []
    probe = probe_for(server.url, clock, samples, rate=100, limit=5, max_in_flight=1,
                      late_sec=0.05)  # fmt: skip
    run(probe)
    ordered = sorted(samples, key=lambda s: s.seq)
    assert [s.seq for s in ordered] == list(range(5))
    for before, after in itertools.pairwise(ordered):
        assert before.duration is not None and before.duration >= 0.1
        assert after.sent >= before.sent + before.duration
    r = probe.schedule_report()
    # Request k starts >= k * 0.1 s after the first, due k * 0.01 s after it: late by >= 90 ms
    # from the second on.
    assert r.late >= 4
    assert r.worst_late_sec >= 4 * 0.09


def test_an_overloaded_probe_reports_its_shortfall(
    serve: Callable[..., RawServer], clock: Clock
) -> None:
    # Asked 100/s from a server that answers one request per 0.1 s at most: about 10/s.
    server = serve(always(), delay=0.1)
    samples: list[Sample] = []
    probe = probe_for(server.url, clock, samples, rate=100, max_in_flight=1)
    probe.start()
    time.sleep(1.0)
    probe.stop()
    r = probe.schedule_report()
    assert r.sent == len(samples)
    assert r.due >= 100  # 1 s at 100/s (sleep never returns early)
    assert r.sent <= r.due // 2
    verdict = rate_kept(r)
    assert not verdict.ok
    assert verdict.message.startswith("GET /health: asked 100/s, sent ")
    assert f"({r.sent} of {r.due} due)" in verdict.message
    assert "requests late by more than 10 ms" in verdict.message
    assert "the probe did not keep its rate" in verdict.message


def test_a_probe_that_keeps_its_rate_passes_the_check(
    serve: Callable[..., RawServer], clock: Clock
) -> None:
    server = serve(always())
    samples: list[Sample] = []
    # A 1 s lateness threshold: a busy machine must not fail this test; a probe that queued
    # its requests would still be seconds late on a slow server (the test above).
    probe = probe_for(server.url, clock, samples, rate=20, limit=10, late_sec=1.0)
    run(probe)
    verdict = rate_kept(probe.schedule_report())
    assert verdict.ok, verdict.message
    assert verdict.message.startswith(
        "GET /health: asked 20/s, sent 20/s (10 of 10 due); no request late by more than 1000 ms"
    )


# -- deadlines and failures --------------------------------------------------------------------


def test_a_hung_request_is_cut_at_its_deadline_and_recorded_at_its_real_start(
    serve: Callable[..., RawServer], clock: Clock
) -> None:
    server = serve(lambda n: None)  # accepts, reads the request, never answers
    samples: list[Sample] = []
    probe = probe_for(server.url, clock, samples, rate=10, limit=3, timeout_sec=1.0)
    run(probe)  # returns: every request was cut, none waits for an answer that never comes
    assert len(samples) == 3
    assert all(s.error == "timeout" and not s.ok and s.duration is None for s in samples)
    # Each hung request had a connection of its own (the first one was still held), and
    # each sample is at its real start: after its due time, before the server accepted it.
    ordered = sorted(samples, key=lambda s: s.sent)
    assert len(server.accepted) == 3
    for s, accepted in zip(ordered, sorted(server.accepted), strict=True):
        assert due_of(probe, s) <= s.sent <= accepted
    # The probe dropped the connections it gave up on: the server sees them go.
    deadline = time.monotonic() + 10
    while server.cut < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.cut == 3


def test_hung_requests_among_answered_ones_are_each_cut_never_before_their_deadline(
    serve: Callable[..., RawServer], clock: Clock
) -> None:
    # One timer serves every deadline (the oldest request's): answered requests ahead of a
    # hung one must neither hide it nor make it be cut early.
    server = serve(lambda n: None if n % 3 == 1 else (OK, False))
    recorded: list[tuple[Sample, float]] = []
    probe = HttpProbe(
        target_at(server.url), path="/health", clock=clock, rate=20, limit=12, timeout_sec=0.5,
        record=lambda s: recorded.append((s, clock.now())),
    )  # fmt: skip
    run(probe)
    assert len(recorded) == 12
    cut = [(s, at) for s, at in recorded if not s.ok]
    assert len(cut) == 4 and all(s.error == "timeout" and s.duration is None for s, _ in cut)
    assert all(at >= s.sent + 0.5 for s, at in cut)
    assert sum(s.ok and s.status == 200 for s, _ in recorded) == 8
    # Cut in the order they were sent, as their deadlines came.
    assert [s.sent for s, _ in cut] == sorted(s.sent for s, _ in cut)


def test_stop_cuts_nothing_early_and_waits_for_the_deadline(
    serve: Callable[..., RawServer], clock: Clock
) -> None:
    server = serve(lambda n: None)
    samples: list[Sample] = []
    probe = probe_for(server.url, clock, samples, rate=5, timeout_sec=0.5)
    probe.start()
    time.sleep(0.3)
    probe.stop()
    # Whatever was in flight was recorded (as a timeout) before stop returned.
    assert len(samples) == probe.schedule_report().sent >= 1
    assert all(s.error == "timeout" for s in samples)


def test_a_refused_connection_is_a_refused_sample(clock: Clock) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    samples: list[Sample] = []
    run(probe_for(f"http://127.0.0.1:{port}", clock, samples, rate=20, limit=3))
    assert [s.error for s in samples] == ["refused"] * 3
    assert all(s.duration is not None and s.status is None for s in samples)


def test_a_dns_failure_is_a_dns_sample(clock: Clock) -> None:
    samples: list[Sample] = []
    # .invalid never resolves (RFC 2606), and no lookup leaves the machine for it.
    run(probe_for("http://gameday-probe.invalid:80", clock, samples, rate=20, limit=1))
    assert [s.error for s in samples] in (["dns"], ["other"])


@pytest.mark.parametrize(
    ("answer", "ok", "status", "error"),
    [
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy", False, 503, "http"),
        (b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n", True, 302, None),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"2;ext=1\r\nok\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\n", True, 200, None),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", True, 204, None),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", True, 200, None),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", True, 200, None),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", False, None, "other"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", False, None, "reset"),
    ],
    ids=["503", "302", "chunked", "100-then-204", "http10-to-close", "close-delimited",
         "not-http", "closed-mid-body"],
)  # fmt: skip
def test_answers_as_servers_give_them(
    serve: Callable[..., RawServer],
    clock: Clock,
    answer: bytes,
    ok: bool,
    status: int | None,
    error: str | None,
) -> None:
    # Every answer but the keep-alive ones ends its connection: close after it.
    keeps = b"Connection: close" not in answer and b"HTTP/1.0" not in answer and ok
    server = serve(always(answer, close=not keeps))
    samples: list[Sample] = []
    run(probe_for(server.url, clock, samples, rate=20, limit=3, timeout_sec=5.0))
    assert [(s.ok, s.status, s.error) for s in samples] == [(ok, status, error)] * 3


def big_answer(n: int) -> tuple[bytes, bool]:
    # Longer than one read of the probe's buffer: the answer arrives in several reads.
    body = bytes([65 + n % 26]) * (3 * 64 * 1024 + 17)
    head = b"HTTP/1.1 200 OK\r\nX-Served-By: app-2/az-b\r\nContent-Length: %d\r\n\r\n"
    return head % len(body) + body, False


def test_answers_longer_than_a_read_are_read_whole(
    serve: Callable[..., RawServer], clock: Clock
) -> None:
    samples: list[Sample] = []
    run(probe_for(serve(big_answer).url, clock, samples, rate=50, limit=10))
    assert [(s.ok, s.status, s.server) for s in samples] == [(True, 200, "app-2")] * 10


@pytest.fixture
def tls_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context with a certificate for 127.0.0.1 that the probe's default context
    trusts (through SSL_CERT_FILE, which OpenSSL's default paths read)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_an_https_entrypoint_is_probed_over_tls_and_its_answers_read_whole(
    serve: Callable[..., RawServer], clock: Clock, tls_server: ssl.SSLContext
) -> None:
    samples: list[Sample] = []
    server = serve(lambda n: big_answer(n) if n % 2 else (OK, False), tls=tls_server)
    run(probe_for(server.url, clock, samples, rate=50, limit=10))
    assert [(s.ok, s.status) for s in samples] == [(True, 200)] * 10
    # Each handshake takes longer than the 20 ms between requests: several connections, the
    # answers in the order they came.
    assert sorted(s.server or "" for s in samples) == ["app-1"] * 5 + ["app-2"] * 5


def test_an_https_entrypoint_with_an_untrusted_certificate_fails_every_request(
    serve: Callable[..., RawServer],
    clock: Clock,
    tls_server: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    samples: list[Sample] = []
    run(probe_for(serve(always(), tls=tls_server).url, clock, samples, rate=50, limit=3))
    assert [(s.ok, s.error) for s in samples] == [(False, "other")] * 3


def test_the_entrypoint_path_is_a_prefix_and_the_host_header_is_sent(clock: Clock) -> None:
    seen: list[bytes] = []
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    def serve_one() -> None:
        conn, _ = sock.accept()
        with conn:
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(4096)
            seen.append(buf)
            conn.sendall(OK)

    t = threading.Thread(target=serve_one, daemon=True)
    t.start()
    samples: list[Sample] = []
    run(HttpProbe(target_at(f"http://127.0.0.1:{port}/shop"), path="health?deep=1", rate=10,
                  clock=clock, record=samples.append, limit=1))  # fmt: skip
    sock.close()
    assert samples[0].ok
    assert seen[0].startswith(b"GET /shop/health?deep=1 HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{port}\r\n".encode() in seen[0]


def test_start_twice_is_refused_and_stop_before_start_does_nothing(clock: Clock) -> None:
    probe = probe_for("http://127.0.0.1:9", clock, [], rate=1)
    probe.stop()
    assert probe.schedule_report().sent == 0
    with pytest.raises(ValueError, match="rate must be positive"):
        probe_for("http://127.0.0.1:9", clock, [], rate=0)


# -- the parser on its own -------------------------------------------------------------------


def feed_bytewise(parser: ResponseParser, data: bytes) -> list[bool]:
    return [parser.feed(data[i : i + 1]) for i in range(len(data))]


def test_a_content_length_answer_split_anywhere_completes_on_its_last_byte() -> None:
    parser = ResponseParser("x-served-by")
    done = feed_bytewise(parser, OK)
    assert done == [False] * (len(OK) - 1) + [True]
    assert (parser.status, parser.header, parser.keep_alive) == (200, "app-1/az-a", True)


def test_a_chunked_answer_split_anywhere_completes_after_its_trailers() -> None:
    data = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
            b"A\r\n0123456789\r\n1;x=y\r\nz\r\n0\r\nX-Trailer: 1\r\n\r\n")  # fmt: skip
    parser = ResponseParser()
    done = feed_bytewise(parser, data)
    assert done == [False] * (len(data) - 1) + [True]
    assert parser.keep_alive


def test_keep_alive_follows_the_version_and_the_connection_header() -> None:
    cases = {
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n": True,
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n": False,
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n": False,
        b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n": True,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK": False,  # extra bytes
    }
    for data, keep in cases.items():
        parser = ResponseParser()
        assert parser.feed(data), data
        assert parser.keep_alive is keep, data


def test_a_body_without_length_runs_to_the_close() -> None:
    parser = ResponseParser()
    assert not parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body")
    assert not parser.feed(b" and more")
    assert parser.eof()
    assert not parser.keep_alive
    cut = ResponseParser()
    assert not cut.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert not cut.eof()  # closed before the body was complete: not an answer


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    ],
)
def test_what_is_not_an_http_answer_is_refused(data: bytes) -> None:
    with pytest.raises(ResponseError):
        ResponseParser().feed(data)


def test_an_endless_head_is_refused_rather_than_buffered() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ResponseError, match="longer than"):
        parser.feed(b"X-Pad: " + b"a" * 70_000)


# -- the cache of parsed heads -------------------------------------------------------------

ANSWERS = [
    OK,
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK",  # extra bytes
    b"HTTP/1.1 503 Unavailable\r\nx-served-by: app-2/az-b\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 204 No Content\r\nX-Served-By: app-1/az-a\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nbody to the close",
    b"HTTP/1.1 200 OK\r\n\r\nbody to the close",
]


def read_answer(data: bytes, header: str | None = "x-served-by") -> tuple[object, ...]:
    parser = ResponseParser(header)
    done = parser.feed(data)
    return done, parser.eof(), parser.status, parser.header, parser.keep_alive


@pytest.fixture
def no_heads_kept() -> Iterator[None]:
    http11._HEADS.clear()
    yield
    http11._HEADS.clear()


@pytest.mark.usefixtures("no_heads_kept")
def test_a_head_seen_before_reads_exactly_as_when_it_was_first_parsed() -> None:
    first = [read_answer(a) for a in ANSWERS]
    assert len(http11._HEADS) == len(ANSWERS) + 1  # the interim answer's head is one more
    again = [read_answer(a) for a in ANSWERS]
    assert again == first
    assert first[0] == (True, True, 200, "app-1/az-a", True)
    assert first[4][:5] == (True, True, 200, None, False)  # the extra bytes, after the head
    assert first[8] == (True, True, 200, None, True)  # the interim 100 skipped


@pytest.mark.usefixtures("no_heads_kept")
def test_an_answer_whose_head_was_seen_still_completes_only_on_its_last_byte() -> None:
    for data in (OK, ANSWERS[5], ANSWERS[9]):  # each with a body after its head
        whole = read_answer(data)  # now kept
        for cut in range(1, len(data)):
            parser = ResponseParser("x-served-by")
            assert parser.feed(data[:cut]) is False, (data, cut)
            assert parser.feed(data[cut:]) is True, (data, cut)
            assert (True, parser.eof(), parser.status, parser.header, parser.keep_alive) == whole


@pytest.mark.usefixtures("no_heads_kept")
def test_a_head_kept_for_one_header_name_answers_only_for_that_name() -> None:
    assert read_answer(OK, "x-served-by")[3] == "app-1/az-a"
    assert read_answer(OK, "x-other")[3] is None
    assert read_answer(OK, None)[3] is None
    assert read_answer(OK, "X-Served-By")[3] == "app-1/az-a"


@pytest.mark.usefixtures("no_heads_kept")
def test_the_kept_heads_are_bounded_small_and_never_refused_ones() -> None:
    for i in range(http11._HEADS_KEPT + 50):
        read_answer(b"HTTP/1.1 200 OK\r\nX-N: %d\r\nContent-Length: 0\r\n\r\n" % i)
        assert len(http11._HEADS) <= http11._HEADS_KEPT
    http11._HEADS.clear()
    big = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 2000 + b"\r\nContent-Length: 0\r\n\r\n"
    assert read_answer(big)[:3] == (True, True, 200)
    refused = b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"
    for _ in range(2):
        with pytest.raises(ResponseError):
            ResponseParser().feed(refused)
    assert http11._HEADS == {}
