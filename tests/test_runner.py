"""Faults always heal: normal end, exception, failed inject, signals, SIGKILL, abort conditions.

The fault is real: a command fault that creates a flag file in tmp_path (touch / rm -f /
test -f), journaled in a temporary state folder.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaos.base import Fault, FaultError, FaultRefused
from chaos.cli import cmd_heal
from chaos.command import CommandFault
from chaos.journal import Journal
from chaos.runner import (
    ErrorBudget,
    FaultSession,
    Terminated,
    TimeLimit,
    heal_pending,
    inject,
    install_signal_handlers,
)
from gameday.clock import Clock
from gameday.history import FaultEvent, HistoryWriter, Mark, RunHeader, read_history
from gameday.target import Target
from tests.conftest import generic_target

pytestmark = pytest.mark.usefixtures("journal_dir", "only_command_fault")

TESTS = Path(__file__).resolve().parent
VICTIM = TESTS / "chaos_victim.py"


@pytest.fixture
def target() -> Target:
    return generic_target("runner-test")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def history(tmp_path: Path, clock: Clock) -> Iterator[HistoryWriter]:
    with HistoryWriter(
        tmp_path / "history.jsonl", RunHeader.create("r", "runner-test", clock)
    ) as w:
        yield w


@pytest.fixture
def logged() -> list[str]:
    return []


def flag_fault(target: Target, flag: Path, **params: str) -> CommandFault:
    q = shlex.quote(str(flag))
    base = {"inject": f"touch {q}", "heal": f"rm -f {q}", "check": f"test -f {q}"}
    return CommandFault(target, {**base, **params})


def phases(path: Path) -> list[tuple[str, str]]:
    return [(e.fault, e.phase) for e in read_history(path).fault_events]


def wait_until(what: str, ready: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not true after {timeout:.0f} s")
        time.sleep(0.02)


# -- in process ------------------------------------------------------------------------------


def test_normal_end_heals_newest_first(
    tmp_path: Path, target: Target, clock: Clock, history: HistoryWriter, logged: list[str]
) -> None:
    journal = Journal(target)
    a, b = tmp_path / "a", tmp_path / "b"
    with FaultSession(log=logged.append) as session:
        session.inject(
            flag_fault(target, a, label="fault a"),
            journal=journal, run_id="r", history=history, clock=clock, dry_run=False,
        )  # fmt: skip
        session.inject(
            flag_fault(target, b, label="fault b"),
            journal=journal, run_id="r", history=history, clock=clock, dry_run=False,
        )  # fmt: skip
        assert a.exists() and b.exists()
        assert len(journal.pending()) == 2
    assert not a.exists() and not b.exists()
    assert journal.pending() == []
    assert phases(history.path) == [
        ("fault a", "inject-start"),
        ("fault a", "inject-end"),
        ("fault b", "inject-start"),
        ("fault b", "inject-end"),
        ("fault b", "heal-start"),
        ("fault b", "heal-end"),
        ("fault a", "heal-start"),
        ("fault a", "heal-end"),
    ]
    start = read_history(history.path).fault_events[0]
    assert start.detail["action"].startswith("run `touch ")


def test_an_exception_in_the_scenario_heals(
    tmp_path: Path, target: Target, clock: Clock, logged: list[str]
) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    with (
        pytest.raises(AssertionError, match="availability 80%"),
        FaultSession(log=logged.append) as s,
    ):
        s.inject(
            flag_fault(target, flag), journal=journal, run_id="r", history=None, clock=clock,
            dry_run=False,
        )  # fmt: skip
        assert flag.exists()
        raise AssertionError("availability 80% < 99%")
    assert not flag.exists()
    assert journal.pending() == []


def test_inject_failing_half_way_heals_at_once(
    tmp_path: Path, target: Target, clock: Clock, history: HistoryWriter, logged: list[str]
) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    half = flag_fault(target, flag, inject=f"sh -c 'touch {flag}; echo half done >&2; exit 3'")
    with pytest.raises(FaultError, match=r"inject `sh -c .*` exited 3: half done"):
        inject(
            half, journal=journal, run_id="r", history=history, clock=clock, dry_run=False,
            log=logged.append,
        )  # fmt: skip
    assert not flag.exists()
    assert journal.pending() == []
    assert [p for _, p in phases(history.path)] == ["inject-start", "heal-start", "heal-end"]
    assert any("healing at once" in line for line in logged)


def test_failed_heal_stays_pending_and_heal_pending_finishes_it(
    tmp_path: Path, target: Target, clock: Clock, history: HistoryWriter, logged: list[str]
) -> None:
    journal = Journal(target)
    flag, gate = tmp_path / "flag", tmp_path / "gate"
    # The heal works only once the gate exists: the first attempt fails.
    fault = flag_fault(target, flag, heal=f"sh -c 'test -f {gate} && rm -f {flag}'")
    with pytest.raises(FaultError, match=r"heal .* exited 1"), FaultSession(log=logged.append) as s:
        s.inject(fault, journal=journal, run_id="r", history=history, clock=clock, dry_run=False)
    assert flag.exists()
    [entry] = journal.pending()
    assert entry.run_id == "r"
    events = read_history(history.path)
    assert [e.phase for e in events.fault_events][-1] == "heal-start"  # never seen healed
    assert [m.name for m in events.marks] == ["heal-failed"]
    assert any("gameday heal --target runner-test" in line for line in logged)

    gate.touch()
    # This process injected it and is alive: only --force may take it over.
    healed = heal_pending(target, log=logged.append, force=True)
    assert healed == [fault.describe()]
    assert not flag.exists()
    assert journal.pending() == []


def test_dry_run_touches_nothing_and_journals_nothing(
    tmp_path: Path, target: Target, clock: Clock, logged: list[str]
) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    with FaultSession(log=logged.append) as s:
        active = s.inject(
            flag_fault(target, flag), journal=journal, run_id="r", history=None, clock=clock,
            dry_run=True,
        )  # fmt: skip
        assert not flag.exists()
    assert active.healed
    assert not flag.exists()
    assert not journal.path.exists()
    assert logged[0].startswith(f"dry run: would run `touch {flag}` on this machine")
    assert logged[1] == "dry run: would heal command touch"


def test_refused_by_preflight_journals_nothing(
    tmp_path: Path, target: Target, clock: Clock, logged: list[str]
) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    flag.touch()  # somebody else's fault is already in effect
    with (
        pytest.raises(FaultRefused, match="already in effect"),
        FaultSession(log=logged.append) as s,
    ):
        s.inject(
            flag_fault(target, flag), journal=journal, run_id="r", history=None, clock=clock,
            dry_run=False,
        )  # fmt: skip
    assert not journal.path.exists()
    assert flag.exists()  # not ours to heal
    assert s.active == []


class LearningFault(Fault):
    """A test fault that learns during inject what heal will need (like a primary's name)."""

    name = "learning-test"
    label = "learning"
    providers = ("generic",)

    def describe(self) -> str:
        return "write a file whose name is learnt while injecting"

    def inject(self) -> None:
        self.remember(learnt=str(Path(self.params["dir"]) / "learnt-name"))
        Path(self.params["learnt"]).touch()

    def heal(self) -> None:
        Path(self.params["learnt"]).unlink(missing_ok=True)

    def in_effect(self) -> bool:
        return Path(self.params["learnt"]).exists()


def test_remembered_params_are_journaled_before_they_are_used(
    tmp_path: Path, target: Target, clock: Clock, logged: list[str]
) -> None:
    journal = Journal(target)
    with FaultSession(log=logged.append) as s:
        s.inject(
            LearningFault(target, {"dir": str(tmp_path)}), journal=journal, run_id="r",
            history=None, clock=clock, dry_run=False,
        )  # fmt: skip
        [entry] = journal.pending()
        assert entry.params == {"dir": str(tmp_path), "learnt": str(tmp_path / "learnt-name")}
        assert (tmp_path / "learnt-name").exists()
    assert not (tmp_path / "learnt-name").exists()
    assert journal.pending() == []


def test_every_heal_is_attempted_and_the_first_failure_raised(
    tmp_path: Path, target: Target, clock: Clock, history: HistoryWriter, logged: list[str]
) -> None:
    journal = Journal(target)
    a, b = tmp_path / "a", tmp_path / "b"
    broken = flag_fault(target, b, label="b", heal="sh -c 'echo stuck >&2; exit 5'")
    with pytest.raises(FaultError, match="exited 5: stuck"), FaultSession(log=logged.append) as s:
        for fault in (flag_fault(target, a, label="a"), broken):
            s.inject(
                fault, journal=journal, run_id="r", history=history, clock=clock, dry_run=False
            )
    assert not a.exists()  # healed although b's heal (tried first) failed
    assert b.exists()
    assert [e.params["label"] for e in journal.pending()] == ["b"]
    heals = [(f, p) for f, p in phases(history.path) if p.startswith("heal")]
    assert heals == [("b", "heal-start"), ("a", "heal-start"), ("a", "heal-end")]


def test_heal_is_idempotent(tmp_path: Path, target: Target, clock: Clock) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    active = inject(
        flag_fault(target, flag), journal=journal, run_id="r", history=None, clock=clock,
        dry_run=False, log=lambda _: None,
    )  # fmt: skip
    active.heal()
    flag.touch()  # a second heal must not act again
    active.heal()
    assert flag.exists()
    flag.unlink()


# -- signals in process ------------------------------------------------------------------------


def test_sigint_inside_pytest_heals(tmp_path: Path, target: Target, clock: Clock) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    with pytest.raises(KeyboardInterrupt), FaultSession(log=lambda _: None) as s:
        s.inject(
            flag_fault(target, flag),
            journal=journal,
            run_id="r",
            history=None,
            clock=clock,
            dry_run=False,
        )
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    assert not flag.exists()
    assert journal.pending() == []


def test_sigterm_during_heal_waits_for_the_heal(
    tmp_path: Path, target: Target, clock: Clock, logged: list[str]
) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    slow = flag_fault(target, flag, heal=f"sh -c 'sleep 1; rm -f {flag}'")
    with pytest.raises(Terminated), FaultSession(log=logged.append) as s:
        s.inject(slow, journal=journal, run_id="r", history=None, clock=clock, dry_run=False)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM)).start()
    assert not flag.exists()
    assert journal.pending() == []
    assert any("SIGTERM received while healing" in line for line in logged)


def test_a_second_signal_abandons_the_heal_and_the_journal_keeps_it(
    tmp_path: Path, target: Target, clock: Clock, logged: list[str]
) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    slow = flag_fault(target, flag, heal=f"sh -c 'sleep 2; rm -f {flag}'")
    with pytest.raises(KeyboardInterrupt), FaultSession(log=logged.append) as s:
        s.inject(slow, journal=journal, run_id="r", history=None, clock=clock, dry_run=False)
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        threading.Timer(0.6, os.kill, (os.getpid(), signal.SIGINT)).start()
    assert flag.exists()  # the heal command was killed before it removed the flag
    assert len(journal.pending()) == 1
    heal_pending(target, log=logged.append, force=True)
    assert not flag.exists() and journal.pending() == []


def test_signal_handlers_are_restored() -> None:
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    # Start from known handlers: a session running destructive scenarios has already
    # installed gameday's own, and "changed" must be measured against something else.
    outer = {s: signal.getsignal(s) for s in signals}
    for s in signals:
        signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
    try:
        before = {s: signal.getsignal(s) for s in signals}
        restore = install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
        restore()
        assert {s: signal.getsignal(s) for s in before} == before
        with FaultSession(log=lambda _: None):
            assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
        assert {s: signal.getsignal(s) for s in before} == before
    finally:
        for s, handler in outer.items():
            signal.signal(s, handler)


# -- abort conditions ------------------------------------------------------------------------


def test_time_limit_heals_early_and_records_why(
    tmp_path: Path, target: Target, clock: Clock, history: HistoryWriter, logged: list[str]
) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    with FaultSession(log=logged.append) as s:
        active = s.inject(
            flag_fault(target, flag), journal=journal, run_id="r", history=history, clock=clock,
            dry_run=False,
        )  # fmt: skip
        watchdog = s.watch(active, [TimeLimit(0.3, clock)], interval_sec=0.05)
        assert flag.exists()
        wait_until("the time limit healed the fault", lambda: not flag.exists(), timeout=10)
        wait_until("the heal is complete", lambda: active.healed)
        assert journal.pending() == []
        assert watchdog.fired is not None and watchdog.fired.startswith("time limit of 0.3 s")
    events = read_history(history.path).fault_events
    assert [e.phase for e in events] == [
        "inject-start", "inject-end", "abort", "heal-start", "heal-end",
    ]  # fmt: skip
    abort = events[2]
    assert abort.detail["reason"].startswith("time limit of 0.3 s reached")
    assert abort.at >= events[1].at + 0.3


def test_error_budget_heals_only_once_spent(
    tmp_path: Path, target: Target, clock: Clock, history: HistoryWriter, logged: list[str]
) -> None:
    journal = Journal(target)
    flag = tmp_path / "flag"
    failures = [0]
    with FaultSession(log=logged.append) as s:
        active = s.inject(
            flag_fault(target, flag), journal=journal, run_id="r", history=history, clock=clock,
            dry_run=False,
        )  # fmt: skip
        s.watch(active, [ErrorBudget(lambda: failures[0], budget=2)], interval_sec=0.05)
        failures[0] = 2
        time.sleep(0.4)
        assert flag.exists()  # 2 failures are within the budget
        failures[0] = 3
        wait_until("the error budget healed the fault", lambda: active.healed, timeout=10)
        assert not flag.exists()
    [abort] = [e for e in read_history(history.path).fault_events if e.phase == "abort"]
    assert abort.detail == {"reason": "error budget spent: 3 failures, 2 allowed"}
    assert isinstance(abort, FaultEvent)
    assert not any(isinstance(r, Mark) for r in read_history(history.path))


# -- other processes: SIGKILL, SIGTERM, SIGINT, and pytest interrupted -------------------------


def _victim_target() -> Target:
    raw = {"name": "victim", "provider": "generic", "entrypoint": {"url": "http://127.0.0.1:9"}}
    return Target.model_validate(raw)


def _start_victim(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    flag, ready = tmp_path / "flag", tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, str(VICTIM), str(flag), str(ready), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until("the victim injected its fault", ready.exists)
    except AssertionError:
        proc.kill()
        raise AssertionError(f"victim did not inject: {proc.communicate()[0]}") from None
    assert flag.exists()
    return proc, flag


def test_after_sigkill_the_journal_lets_gameday_heal_heal(tmp_path: Path) -> None:
    proc, flag = _start_victim(tmp_path)
    proc.kill()
    assert proc.wait(timeout=10) == -signal.SIGKILL
    target = _victim_target()
    assert flag.exists()  # nobody healed it
    [entry] = Journal(target).pending()
    assert (entry.run_id, entry.pid, entry.fault) == ("victim-run", proc.pid, "command")

    lines: list[str] = []
    assert cmd_heal(target, force=False, log=lines.append) == 0
    assert not flag.exists()
    assert Journal(target).pending() == []
    assert lines[-1] == "healed 1 fault(s) of target victim"

    assert cmd_heal(target, force=False, log=lines.append) == 0
    assert lines[-1] == "nothing to heal for target victim (generic http://127.0.0.1:9)"


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: signal.Signals(s).name
)
def test_a_signal_heals_before_the_process_exits(tmp_path: Path, signum: int) -> None:
    proc, flag = _start_victim(tmp_path)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, out
    expected = "KeyboardInterrupt" if signum == signal.SIGINT else "Terminated"
    assert f"interrupted: {expected}" in out
    assert not flag.exists()
    assert Journal(_victim_target()).pending() == []


def test_without_the_handlers_sigterm_leaves_the_fault_to_the_journal(tmp_path: Path) -> None:
    # The control: what install_signal_handlers is for.
    proc, flag = _start_victim(tmp_path, "--no-signals")
    proc.terminate()
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert flag.exists()
    assert len(Journal(_victim_target()).pending()) == 1
    assert cmd_heal(_victim_target(), force=False, log=lambda _: None) == 0
    assert not flag.exists()


PYTEST_CASE = """
import os, shlex, time
from pathlib import Path

from chaos.command import CommandFault
from chaos.journal import Journal
from chaos.runner import FaultSession
from gameday.clock import Clock
from gameday.target import Target


def test_sleeps_in_a_fault():
    target = Target.model_validate(
        {"name": "victim", "provider": "generic", "entrypoint": {"url": "http://127.0.0.1:9"}}
    )
    q = shlex.quote(os.environ["FLAG"])
    fault = CommandFault(target, {"inject": f"touch {q}", "heal": f"rm -f {q}",
                                  "check": f"test -f {q}"})
    with FaultSession(log=print, signals=os.environ["SIGNALS"] == "1") as session:
        session.inject(fault, journal=Journal(target), run_id="pytest-run", history=None,
                       clock=Clock(), dry_run=False)
        Path(os.environ["READY"]).write_text("injected")
        time.sleep(120)


def test_never_reached():
    raise AssertionError("pytest went on after the interrupt")
"""

# pytest.main with SIGINT as an interactive shell would leave it, whatever ours is.
PYTEST_MAIN = (
    "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.exit(pytest.main(sys.argv[1:]))"
)


@pytest.mark.parametrize(
    ("signum", "handlers"),
    [(signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, True)],
    ids=["sigint-python-default", "sigint-installed", "sigterm-installed"],
)
def test_pytest_interrupted_heals_before_it_exits(
    tmp_path: Path, journal_dir: Path, signum: int, handlers: bool
) -> None:
    case = tmp_path / "case"
    case.mkdir()
    (case / "test_sleeper.py").write_text(PYTEST_CASE)
    (case / "pytest.ini").write_text("[pytest]\n")
    flag, ready = tmp_path / "flag", tmp_path / "ready"
    env = {
        **os.environ,
        "FLAG": str(flag),
        "READY": str(ready),
        "SIGNALS": "1" if handlers else "0",
        "GAMEDAY_STATE_DIR": str(journal_dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", PYTEST_MAIN, "-p", "no:cacheprovider", "-p", "no:locust",
         "-q", "-c", str(case / "pytest.ini"), "--rootdir", str(case), str(case)],
        cwd=case, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until("the test injected its fault", ready.exists, timeout=60)
    except AssertionError:
        proc.kill()
        raise AssertionError(f"pytest did not inject: {proc.communicate()[0]}") from None
    assert flag.exists()
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out or "Terminated" in out, out
    assert "test_never_reached" not in out and "went on" not in out
    assert not flag.exists()
    assert Journal(_victim_target()).pending() == []
