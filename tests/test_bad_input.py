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

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "bad_targets"
HANG_SEC = 30.0
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


def run(case: Case, command: str) -> Outcome:
    if command == "gameday":
        argv = [sys.executable, "-m", "gameday.cli", "target", "check", case.path]
    else:
        argv = [
            sys.executable, "-m", "pytest", "features/acceptance", "--target", case.path,
            "-p", "no:cacheprovider",
        ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAMEDAY_CORPUS_")}
    started = time.monotonic()
    proc = subprocess.Popen(
        [*case.prefix, *argv], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
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


def run_corpus(cases: list[Case], workers: int = WORKERS) -> dict[tuple[str, str], Outcome]:
    """Every case with both commands, a few at a time (the machine is shared)."""
    jobs = [(c, command) for c in cases for command in ("gameday", "pytest")]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = pool.map(lambda job: run(*job), jobs)
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
    (name, command), slowest = max(outcomes.items(), key=lambda item: item[1].seconds)
    took = f"{slowest.seconds:.2f} s"
    print(f"\nbad-input corpus: {len(cases)} cases; slowest: {name} ({command}), {took}")
    yield {c.name: c for c in cases}, outcomes


def test_the_corpus_has_at_least_60_bad_files() -> None:
    assert len(corpus_cases()) + len(SPECIAL) >= 60
    # One line per file: the expected words cannot span lines, and no two files are the same.
    texts = [p.read_bytes() for p in CORPUS.glob("*.yaml")]
    assert len(set(texts)) == len(texts)


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
