"""Bad target files are refused in one line naming the file, with exit code 2, never hung on.

The fuzz corpus: every file in tests/bad_targets/ (its first line says `# expect: <the words the
one line must hold>`) plus the files that cannot live in git, made here at test time: a FIFO,
a folder, a symlink loop, an unreadable file, a 60 MB file, non-UTF-8 bytes, a device, a socket,
a file name with a newline. Each is given to `gameday target check FILE` and to
`pytest features/acceptance --target FILE`, as subprocesses, as a user would.

A case that runs longer than `HANG_SEC` fails as a hang. The goal is under 2 s, but the machine
is shared: durations are recorded, and bench/bad_input.py prints them (docs/benchmarks.md).
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import pytest
import yaml

from gameday import facts
from gameday.baseline import baseline_path
from gameday.gherkin import GherkinError, check_feature_file, first_ignored_line
from gameday.pytest_plugin import entrypoint_problem
from gameday.run import Run
from gameday.target import Target, path_safe
from tests.conftest import HealthHandler

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "bad_targets"
HANG_SEC = 60.0  # far above the 2 s goal: a busy machine must not look like a hang
T = TypeVar("T")
WORKERS = 3
TARGET = "name: corpus\nprovider: generic\nentrypoint:\n  url: http://127.0.0.1:9/\n"
# Taking CAP_DAC_OVERRIDE away is what makes a mode-000 file unreadable for root.
NO_DAC = [
    "setpriv",
    "--bounding-set", "-dac_override,-dac_read_search",
    "--inh-caps", "-dac_override,-dac_read_search",
]  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    path: str  # as given on the command line
    expect: str  # words the one line must hold
    prefix: tuple[str, ...] = ()  # runs the command under this (setpriv for "unreadable")

    @property
    def shown(self) -> str:
        """How the harness names the file: as given, or its repr when it is not printable."""
        return self.path if self.path.isprintable() else repr(self.path)


@dataclass(frozen=True)
class Outcome:
    command: str  # "gameday" or "pytest"
    code: int | None  # None: still running after HANG_SEC (killed)
    stdout: str
    stderr: str
    seconds: float


def corpus_cases() -> list[Case]:
    cases = []
    for path in sorted(CORPUS.glob("*.yaml")):
        first = path.read_bytes().split(b"\n", 1)[0].decode()
        assert first.startswith("# expect: "), f"{path.name}: first line must be # expect: ..."
        cases.append(Case(path.stem, str(path.relative_to(ROOT)), first.removeprefix("# expect: ")))
    return cases


SPECIAL = (
    "fifo", "folder", "symlink-loop", "unreadable", "huge-60mb", "just-over-1mib",
    "latin1-bytes", "binary", "utf16", "device", "socket", "newline-in-name", "missing", "empty",
)  # fmt: skip


def special_cases(folder: Path) -> tuple[list[Case], list[socket.socket]]:
    """The files that cannot be committed: made here, in `folder`."""
    cases = []

    def case(name: str, path: Path, expect: str, prefix: tuple[str, ...] = ()) -> None:
        cases.append(Case(name, str(path), expect, prefix))

    fifo = folder / "fifo.yaml"
    os.mkfifo(fifo)
    case("fifo", fifo, "is a named pipe (FIFO), not a target file")
    (folder / "folder.yaml").mkdir()
    case("folder", folder / "folder.yaml", "is a folder, not a target file")
    (folder / "loop-a.yaml").symlink_to(folder / "loop-b.yaml")
    (folder / "loop-b.yaml").symlink_to(folder / "loop-a.yaml")
    case("symlink-loop", folder / "loop-a.yaml", "Too many levels of symbolic links")
    unreadable = folder / "unreadable.yaml"
    unreadable.write_text(TARGET)
    unreadable.chmod(0)
    drop = tuple(NO_DAC) if os.geteuid() == 0 and shutil.which("setpriv") else ()
    case("unreadable", unreadable, "cannot read it: Permission denied", drop)
    huge = folder / "huge.yaml"
    with huge.open("w") as f:
        f.write(TARGET + "# " + "x" * (60 * 1024 * 1024) + "\n")
    case("huge-60mb", huge, f"is {huge.stat().st_size:,} bytes; a target file may have at most")
    over = folder / "just-over.yaml"
    over.write_text(TARGET + "#" * (1024 * 1024 - len(TARGET)) + "\n")
    case("just-over-1mib", over, "is 1,048,577 bytes")
    latin1 = folder / "latin1.yaml"
    latin1.write_bytes((TARGET + "description: café\n").encode("latin-1"))
    case("latin1-bytes", latin1, "line 5: not UTF-8 text (byte 0xe9)")
    binary = folder / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 64)
    case("binary", binary, "line 2: not UTF-8 text (byte 0x80)")
    utf16 = folder / "utf16.yaml"
    utf16.write_bytes(TARGET.encode("utf-16"))
    case("utf16", utf16, "line 1: not UTF-8 text (byte 0xff)")
    case("device", Path("/dev/zero"), "is a character device, not a target file")
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(folder / "socket.yaml"))
    listening.listen(1)
    case("socket", folder / "socket.yaml", "is a socket, not a target file")
    newline = folder / "new\nline.yaml"
    newline.write_text(TARGET + "colour: blue\n")
    case("newline-in-name", newline, "colour: unknown key")
    case("missing", folder / "missing.yaml", "no such target file (known targets: ")
    (folder / "empty.yaml").write_text("")
    case("empty", folder / "empty.yaml", "is empty (a target needs name, provider and entrypoint)")
    assert [c.name for c in cases] == list(SPECIAL)
    return cases, [listening]


def run(case: Case, command: str, root: Path = ROOT) -> Outcome:
    """One command on one case, as a subprocess in `root` (a checkout of the harness)."""
    if command == "gameday":
        argv = [sys.executable, "-m", "gameday.cli", "target", "check", case.path]
    else:
        argv = [
            # One small feature: the target is refused the same way whatever is collected,
            # and 100 of these runs must fit in the test suite's time.
            sys.executable, "-m", "pytest", "features/acceptance/entrypoint.feature",
            "--target", case.path, "-p", "no:cacheprovider",
        ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAMEDAY_CORPUS_")}
    if root != ROOT:
        env["PYTHONPATH"] = str(root)
    started = time.monotonic()
    proc = subprocess.Popen(
        [*case.prefix, *argv], cwd=root, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=HANG_SEC)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        code = None
    return Outcome(command, code, out, err, time.monotonic() - started)


def problems(case: Case, outcome: Outcome) -> list[str]:
    """What is wrong with how a command answered a bad file (empty: it was refused right)."""
    if outcome.code is None:
        return [f"hang: still running after {HANG_SEC:g} s (killed)"]
    found = []
    if outcome.code != 2:
        found.append(f"exit code {outcome.code}, expected 2")
    text = outcome.stdout + outcome.stderr
    for word in ("Traceback", "INTERNALERROR"):
        if word in text:
            found.append(f"{word} in the output")
    naming = [line for line in text.splitlines() if case.shown in line]
    if outcome.command == "gameday":
        lines = outcome.stderr.splitlines()
        if outcome.stdout or len(lines) != 1:
            found.append(f"{len(lines)} lines on stderr and {len(outcome.stdout)} chars on stdout")
    elif " passed" in text or " failed" in text:
        found.append("scenarios ran")
    if len(naming) != 1:
        found.append(f"{len(naming)} lines name the file {case.shown}, expected 1")
    elif case.expect not in naming[0]:
        found.append(f"the line does not say {case.expect!r}")
    if found:
        found.append(f"output: {text[-800:]!r}")
    return found


def run_corpus(
    cases: list[Case], workers: int = WORKERS, root: Path = ROOT
) -> dict[tuple[str, str], Outcome]:
    """Every case with both commands, a few at a time (the machine is shared)."""
    jobs = [(c, command) for c in cases for command in ("gameday", "pytest")]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = pool.map(lambda job: run(*job, root=root), jobs)
        return {(c.name, command): o for (c, command), o in zip(jobs, outcomes, strict=True)}


@pytest.fixture(scope="module")
def corpus(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, Case], dict[tuple[str, str], Outcome]]]:
    special, sockets = special_cases(tmp_path_factory.mktemp("special"))
    cases = corpus_cases() + special
    try:
        outcomes = run_corpus(cases)
    finally:
        for s in sockets:
            s.close()
        huge = next(c for c in special if c.name == "huge-60mb")
        Path(huge.path).unlink()  # pytest keeps the last runs' folders: not 60 MB each
    (name, command), slowest = max(outcomes.items(), key=lambda item: item[1].seconds)
    took = f"{slowest.seconds:.2f} s"
    print(f"\nbad-input corpus: {len(cases)} cases; slowest: {name} ({command}), {took}")
    yield {c.name: c for c in cases}, outcomes


def test_the_corpus_has_at_least_60_bad_files() -> None:
    assert len(corpus_cases()) + len(SPECIAL) >= 60
    # One line per file: the expected words cannot span lines, and no two files are the same.
    texts = [p.read_bytes() for p in CORPUS.glob("*.yaml")]
    assert len(set(texts)) == len(texts)


@pytest.mark.slow  # ~200 subprocesses: 2 to 4 minutes on a shared 2-core machine
@pytest.mark.parametrize("name", [c.name for c in corpus_cases()] + list(SPECIAL))
@pytest.mark.parametrize("command", ["gameday", "pytest"])
def test_bad_target_gives_one_line_and_exit_2(
    corpus: tuple[dict[str, Case], dict[tuple[str, str], Outcome]], name: str, command: str
) -> None:
    cases, outcomes = corpus
    outcome = outcomes[(name, command)]
    assert not problems(cases[name], outcome), problems(cases[name], outcome)


def test_the_judge_fails_a_traceback_a_hang_and_two_lines() -> None:
    # The judge of the corpus must itself say "fail" where it should.
    case = Case("x", "t.yaml", "bad port")
    good = Outcome("gameday", 2, "", "gameday: t.yaml: entrypoint.url: bad port\n", 0.1)
    assert problems(case, good) == []
    assert problems(case, Outcome("gameday", None, "", "", 30.0))[0].startswith("hang")
    two = Outcome("gameday", 2, "", "gameday: t.yaml: bad port\nt.yaml again\n", 0.1)
    assert any("lines" in p for p in problems(case, two))
    trace = Outcome("pytest", 3, "INTERNALERROR> Traceback\nt.yaml: bad port\n", "", 0.1)
    assert any("Traceback" in p for p in problems(case, trace))
    assert any("exit code 3" in p for p in problems(case, trace))
    vague = Outcome("gameday", 2, "", "gameday: t.yaml: invalid\n", 0.1)
    assert any("does not say" in p for p in problems(case, vague))


# -- a whole request is bounded, not each read ---------------------------------------------


class SlowLoris:
    """A real server on loopback that answers one byte a second: after the headers (the body
    trickles) or from the first byte (the headers trickle). With `fast_first`, the first
    request of each connection is answered at once and kept alive; the second trickles."""

    def __init__(self, *, trickle_headers: bool = False, fast_first: bool = False) -> None:
        self.trickle_headers = trickle_headers
        self.fast_first = fast_first
        self.connections = 0
        self.requests = 0
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 300\r\n\r\n"
        with conn:
            self.connections += 1
            conn.recv(65536)
            self.requests += 1
            if self.fast_first:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                conn.recv(65536)
                self.requests += 1
            data = head + b"x" * 300
            if not self.trickle_headers:
                conn.sendall(head)
                data = data[len(head) :]
            for i in range(len(data)):  # at most 300 s: the test ends it long before
                if self._stop.wait(1.0):
                    return
                try:
                    conn.sendall(data[i : i + 1])
                except OSError:  # the client gave up: that is what we want
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()


def within(seconds: float, func: Callable[[], T]) -> T:
    """func() in a thread; fails as a hang (not a timing check) if it is still running."""
    result: list[T] = []
    thread = threading.Thread(target=lambda: result.append(func()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"hang: still waiting after {seconds:g} s"
    return result[0]


def generic(url: str, extra: str = "", timeout_sec: float = 1) -> Target:
    entrypoint = f"entrypoint:\n  url: {url}\n  timeout_sec: {timeout_sec}\n"
    text = f"name: t\nprovider: generic\n{entrypoint}{extra}"
    raw = yaml.safe_load(text)
    return Target.model_validate(raw).model_copy(update={"source": "t.yaml"})


@pytest.mark.parametrize("trickle_headers", [False, True], ids=["body", "headers"])
def test_a_server_trickling_one_byte_a_second_is_given_up_on(trickle_headers: bool) -> None:
    server = SlowLoris(trickle_headers=trickle_headers)
    try:
        # Each read gets a byte within a second, well inside the 2 s: only a deadline on the
        # whole request ends it (300 bytes would take 300 s).
        target = generic(f"http://127.0.0.1:{server.port}", timeout_sec=2)
        answer = within(HANG_SEC, lambda: facts.health(target))
        assert answer.status is None and answer.error == "timeout", answer
        assert answer.detail == "no complete answer within 2 s"
        # The session's entrypoint check is the same bounded request.
        problem = within(HANG_SEC, lambda: entrypoint_problem(target))
        assert problem is not None and "does not answer (timeout: no complete answer" in problem
    finally:
        server.close()


def test_a_kept_alive_connection_that_starts_trickling_is_cut_too() -> None:
    # The checks reuse one connection for several requests: the second request opens no new
    # socket, and its deadline must still cut the one it uses.
    server = SlowLoris(fast_first=True)
    try:
        target = generic(f"http://127.0.0.1:{server.port}", timeout_sec=2)

        def two_requests() -> tuple[facts.HttpAnswer, facts.HttpAnswer]:
            with facts._client(target) as client:
                first = facts.request(client, target, "GET", "/fast")
                return first, facts.request(client, target, "GET", "/slow")

        first, second = within(HANG_SEC, two_requests)
        assert first.status == 200 and first.body == "ok"
        assert second.status is None and second.error == "timeout", second
        assert (server.connections, server.requests) == (1, 2)
    finally:
        server.close()


# -- every load the harness generates counts against the target's caps ---------------------


class Counting(HealthHandler):
    """The shared stand-in entrypoint, remembering every path it was asked."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        Counting.seen.append(self.path)
        super().do_GET()


@pytest.fixture
def counting_entrypoint() -> Iterator[str]:
    Counting.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_rate_limit_check_over_the_caps_is_refused_before_sending(
    counting_entrypoint: str,
) -> None:
    # The audit's case: the check would need 1,000,001 requests at once; load.max_rps is 5.
    target = generic(
        counting_entrypoint,
        "app:\n  rate_limit: {requests: 1000000, window_sec: 60}\nload:\n  max_rps: 5\n",
    )
    refusal = facts.rate_limit_refusal(target)
    assert refusal is not None and "the check would send 1000001 requests" in refusal
    # Within the harness's cap but over the target's: 301 requests in 60 s at most 5/s = 300.
    target = generic(
        counting_entrypoint,
        "app:\n  rate_limit: {requests: 300, window_sec: 60}\nload:\n  max_rps: 5\n",
    )
    assert facts.rate_limit_refusal(target) == (
        "t.yaml: the rate-limit check needs 301 requests within 60 s (app.rate_limit), more "
        "than load.max_rps 5 allows (300)"
    )
    with pytest.raises(facts.LoadCapError):
        facts.rate_limit_statuses(target)
    assert Counting.seen == []  # nothing was sent


def test_rate_limit_check_within_the_caps_is_paced_to_max_rps(counting_entrypoint: str) -> None:
    target = generic(
        counting_entrypoint,
        "app:\n  rate_limit: {requests: 4, window_sec: 2}\nload:\n  max_rps: 5\n",
    )
    assert facts.rate_limit_refusal(target) is None
    started = time.monotonic()
    statuses = facts.rate_limit_statuses(target)
    took = time.monotonic() - started
    assert statuses == [200] * 5 and len(Counting.seen) == 5
    # 5 requests at 5/s cannot take less than 4 gaps of 0.2 s (a busy machine only adds).
    assert took >= 4 / 5 - 0.01


def test_other_checks_refuse_more_than_the_check_cap(counting_entrypoint: str) -> None:
    target = generic(counting_entrypoint)
    with pytest.raises(facts.LoadCapError, match="would send 5000 requests"):
        facts.rotation_sample(target, 5000)
    with pytest.raises(facts.LoadCapError, match="the session check"):
        facts.session_across_servers(target, tries=5000)
    assert Counting.seen == []


def test_the_rate_limit_step_skips_with_the_reason(
    pytester: pytest.Pytester, counting_entrypoint: str
) -> None:
    pytester.makeini((ROOT / "pytest.ini").read_text())
    pytester.makeconftest('pytest_plugins = ["gameday.pytest_plugin", "steps.data"]\n')
    (pytester.path / "limit.feature").write_text(
        "Feature: limits\n  Scenario: rate limit\n"
        "    When a fresh user sends one request more than the rate limit allows\n"
        "    Then every request within the limit succeeds and the next one is refused with 429\n"
    )
    target = pytester.path / "t.yaml"
    target.write_text(
        f"name: t\nprovider: generic\nentrypoint:\n  url: {counting_entrypoint}\n"
        "app:\n  rate_limit: {requests: 1000000}\nload:\n  max_rps: 5\n"
    )
    result = pytester.runpytest("limit.feature", "--target", str(target), "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*the check would send 1000001 requests*"])
    assert Counting.seen == ["/health"]  # the session's entrypoint check, and nothing else


# -- a misspelled Gherkin keyword is an error ---------------------------------------------


def test_a_misspelled_keyword_is_a_collection_error_naming_file_and_line(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini((ROOT / "pytest.ini").read_text())
    pytester.makeconftest('pytest_plugins = ["gameday.pytest_plugin", "steps.data"]\n')
    (pytester.path / "typo.feature").write_text(
        "Feature: typo\n  Scenario: rate limit\n"
        "    Whenn a fresh user sends one request more than the rate limit allows\n"
        "    Then every request within the limit succeeds and the next one is refused with 429\n"
    )
    result = pytester.runpytest("typo.feature", "--collect-only")
    assert result.ret == 2
    result.stdout.fnmatch_lines(
        ["*typo.feature:3: 'Whenn' is not a step keyword (did you mean 'When'?)*"]
    )
    result.stdout.no_fnmatch_line("*Traceback*")


def test_a_feature_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.feature"
    path.write_bytes("Feature: café\n".encode("latin-1"))
    with pytest.raises(GherkinError, match=r"latin1.feature: not UTF-8 text \(byte 0xe9\)"):
        check_feature_file(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Feature: f\n  Scenario: s\n    Whenn x\n    Then y\n", (3, "'Whenn' is not a step")),
        ("Feature: f\n  Scenario: s\n    Given x\n    Thenn y\n", (4, "'Thenn' is not a step")),
        ("Feature: f\n  Background:\n    Gvien x\n", (3, "did you mean 'Given'?")),
        ("Feature: f\n  Scenaro: s\n    Given x\n", (2, "did you mean 'Scenario:'?")),
        ("Feature: f\n  Scenario Outline: s\n    Given <a>\n  Examples:\n    a | b\n", (5, "")),
    ],
)
def test_lines_gherkin_would_ignore_are_found(text: str, expected: tuple[int, str]) -> None:
    found = first_ignored_line(text.splitlines())
    assert found is not None and found[0] == expected[0] and expected[1] in found[1], found


def test_prose_tables_and_doc_strings_are_not_errors() -> None:
    text = (
        "# language: en\n@acceptance\nFeature: f\n  An order is placed; Then it is read.\n\n"
        "  Rule: r\n    Prose of a rule.\n\n"
        '  Scenario: s\n    Given a body\n      """\n      Whenn not a step\n      """\n'
        "    And a table\n      | a | b |\n    * a bullet step\n    But not this\n"
    )
    assert first_ignored_line(text.splitlines()) is None
    for path in (ROOT / "features").rglob("*.feature"):
        assert first_ignored_line(path.read_text().splitlines()) is None, path


# -- a target's name never leaves reports/ -------------------------------------------------


def test_a_target_name_with_dots_and_slashes_stays_inside_reports(tmp_path: Path) -> None:
    reports = tmp_path / "deep" / "reports"
    target = generic("http://127.0.0.1:9").model_copy(update={"name": "../../../escaped"})
    run = Run.start(target, reports)
    report = run.finish()
    assert run.folder.parent == reports and run.folder.name.endswith("-escaped")
    assert report.resolve().is_relative_to(reports.resolve())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]  # nothing beside reports/
    path = baseline_path("../../x/y", "default", tmp_path / "baselines")
    assert path.parent == tmp_path / "baselines" and path.name == "x_y-default.json"


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("lab", "lab"),
        ("../../etc", "etc"),
        ("..", "target"),
        ("/", "target"),
        ("Shop (prod) / eu-1", "Shop_prod_eu-1"),
        ("a" * 300, "a" * 64),
        ("caf\u00e9\nx", "caf_x"),
    ],
)
def test_path_safe_names(name: str, safe: str) -> None:
    assert path_safe(name) == safe
