"""Inject faults and always heal them.

`inject` journals a fault (on disk) before it acts and heals it at once if injecting fails.
A `FaultSession` holds the faults of one scenario and heals every one of them on exit,
whatever ended the scenario: its end, a failed assertion, an exception, Ctrl-C or SIGTERM.
A `Watchdog` heals a fault early when an `AbortCondition` fires (time limit, error budget).
After a SIGKILL, the undo journal is what is left: `gameday heal` (chaos.journal.heal_pending).

Signals. Python turns SIGINT into KeyboardInterrupt, which unwinds the stack through every
`finally` and `__exit__`: that is where faults heal. SIGTERM (systemd, docker stop, CI
cancelling a job) and SIGHUP (the operator's SSH session dropping) would kill the process
outright instead, leaving the fault in effect; `install_signal_handlers` makes them raise
`Terminated`, a KeyboardInterrupt, so they unwind the same way (pytest then stops the session
rather than failing one test and going on to break the target again). While the main thread
heals, the first signal is held back until the heal is done, so that a second Ctrl-C from an
impatient operator, or docker's SIGTERM during a Ctrl-C, cannot cut a heal in half; a second
signal during the same heal abandons it (the journal keeps it for `gameday heal`).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Protocol

from chaos.base import Fault, FaultError, one_line
from chaos.journal import Entry, Journal, pid_alive
from chaos.registry import fault_class
from gameday.clock import Clock
from gameday.history import MARK_HEAL_FAILED, FaultEvent, HistoryWriter, Mark
from gameday.secrets import redact
from gameday.target import Target

Log = Callable[[str], None]

__all__ = [
    "AbortCondition",
    "ActiveFault",
    "ErrorBudget",
    "FaultSession",
    "Terminated",
    "TimeLimit",
    "Watchdog",
    "heal_pending",
    "healing",
    "inject",
    "install_signal_handlers",
    "safe_log",
]


def safe_log(log: Log) -> Log:
    """`log`, made unable to raise: after SIGHUP the terminal is gone and writing to it fails,
    and a log line must never be what stops a heal."""

    def say(message: str) -> None:
        with contextlib.suppress(Exception):
            log(message)

    return say


def _stderr(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # the terminal may be gone (SIGHUP)
        print(f"gameday: {message}", file=sys.stderr, flush=True)


# -- signals ---------------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived. A KeyboardInterrupt, so it unwinds (and heals) like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Main-thread state shared with the signal handler (which always runs in the main thread).
_heal_depth = 0
_deferred: int | None = None
_signal_log: Log = _stderr


def _interrupt(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _deferred
    if _heal_depth > 0 and _deferred is None:
        _deferred = signum
        _signal_log(
            f"{signal.Signals(signum).name} received while healing: stopping once the heal is "
            "done (send it again to abandon the heal; `gameday heal` can finish it later)"
        )
        return
    _deferred = None
    raise _interrupt(signum)


def install_signal_handlers(*, log: Log | None = None) -> Callable[[], None]:
    """Make SIGINT, SIGTERM and SIGHUP unwind the main thread (so faults heal); returns a
    function that puts the previous handlers back.

    A signal the process ignores (SIG_IGN: started under nohup, or in the background by a
    non-interactive shell) stays ignored, except SIGTERM. Outside the main thread, where
    Python cannot set handlers, this does nothing.
    """
    global _signal_log
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous_log = _signal_log
    if log is not None:
        _signal_log = safe_log(log)
    previous: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
    for signum in _HANDLED:
        current = signal.getsignal(signum)
        if current == signal.SIG_IGN and signum != signal.SIGTERM:
            continue
        previous[signum] = current
        signal.signal(signum, _on_signal)

    def restore() -> None:
        global _signal_log
        _signal_log = previous_log
        for signum, handler in previous.items():
            # None: set outside Python, cannot be put back; the default is the closest.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    return restore


class _Healing:
    def __enter__(self) -> None:
        global _heal_depth
        self._main = threading.current_thread() is threading.main_thread()
        if self._main:
            _heal_depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _heal_depth, _deferred
        if not self._main:
            return
        _heal_depth -= 1
        if _heal_depth == 0 and _deferred is not None:
            signum, _deferred = _deferred, None
            if not isinstance(exc, KeyboardInterrupt):  # already unwinding for a signal
                raise _interrupt(signum)


def healing() -> _Healing:
    """Context manager: hold signals back (see the module docstring) while it heals."""
    return _Healing()


# -- one fault -------------------------------------------------------------------------------


class ActiveFault:
    """A fault that was injected (or, in a dry run, would have been) and is not healed yet.

    `heal()` is idempotent and thread-safe: the session, a watchdog and an inject that failed
    may all call it; the fault heals once. A heal that raises leaves the journal entry
    pending (for a later `heal()` or `gameday heal`) and propagates.
    """

    def __init__(
        self,
        fault: Fault,
        *,
        journal: Journal | None,
        history: HistoryWriter | None,
        clock: Clock,
        dry_run: bool,
        log: Log,
    ) -> None:
        self.fault = fault
        self.journal = journal
        self.entry: Entry | None = None  # set once the journal holds it
        self.history = history
        self.clock = clock
        self.dry_run = dry_run
        self.log = safe_log(log)
        self._lock = threading.RLock()
        self._healed = False

    @property
    def label(self) -> str:
        return self.fault.label

    @property
    def healed(self) -> bool:
        return self._healed

    def heal(self) -> None:
        with healing(), self._lock:
            if self._healed:
                return
            if self.dry_run:
                self.log(f"dry run: would heal {self.label}")
                self._healed = True
                return
            if self.entry is None:  # never journaled, so never injected: nothing to undo
                self._healed = True
                return
            self.event("heal-start")
            try:
                self.fault.heal()
            except BaseException as exc:
                self._record(Mark(MARK_HEAL_FAILED, self.clock.now(), self._detail(exc)))
                self.log(
                    f"healing {self.label} failed: {one_line(exc)}; the undo journal keeps it "
                    f"(`gameday heal --target {self.fault.target.name}` retries)"
                )
                raise
            self._healed = True
            self.fault.on_remember = None
            try:
                self._journal().done(self.entry)
            except OSError as exc:  # healed all the same; a later `gameday heal` is harmless
                self.log(f"could not mark {self.label} healed in the undo journal: {exc}")
            self.event("heal-end")

    def abort(self, reason: str) -> bool:
        """Heal early because an abort condition fired; False if it was already healed."""
        with self._lock:
            if self._healed:
                return False
            self.log(f"aborting {self.label}: {reason}; healing now")
            self.event("abort", reason=reason)
            self.heal()
            return True

    def event(self, phase: str, **detail: str) -> None:
        """Record a FaultEvent; a history that cannot take it never stops a heal."""
        clean = {k: redact(v) for k, v in detail.items()}
        self._record(FaultEvent(self.label, phase, self.clock.now(), clean))

    def _detail(self, exc: BaseException) -> dict[str, str]:
        return {"fault": self.label, "error": one_line(exc)}

    def _record(self, record: FaultEvent | Mark) -> None:
        if self.history is None:
            return
        try:
            self.history.append(record)
        except (ValueError, OSError) as exc:
            self.log(f"could not record {record} in the history: {exc}")

    def _journal(self) -> Journal:
        assert self.journal is not None, "only a dry run has no journal"
        return self.journal

    def _begin(self, run_id: str) -> None:
        self.entry = self._journal().begin(self.fault, run_id)
        self.fault.on_remember = self._remember

    def _remember(self, params: dict[str, str]) -> None:
        assert self.entry is not None
        self.entry = self._journal().update(self.entry, params)

    def __repr__(self) -> str:
        state = "healed" if self._healed else "active"
        return f"<ActiveFault {self.label!r} {state}{' (dry run)' if self.dry_run else ''}>"


def inject(
    fault: Fault,
    *,
    journal: Journal,
    run_id: str,
    history: HistoryWriter | None,
    clock: Clock,
    dry_run: bool,
    log: Log,
) -> ActiveFault:
    """Journal the fault, then inject it; if injecting fails (or is interrupted), heal at once
    and re-raise. `preflight` runs first: a refusal propagates and nothing is journaled.
    A dry run only says what it would do."""
    return _inject(
        fault,
        journal=journal,
        run_id=run_id,
        history=history,
        clock=clock,
        dry_run=dry_run,
        log=log,
        on_active=None,
    )


def _inject(
    fault: Fault,
    *,
    journal: Journal,
    run_id: str,
    history: HistoryWriter | None,
    clock: Clock,
    dry_run: bool,
    log: Log,
    on_active: Callable[[ActiveFault], object] | None,
) -> ActiveFault:
    log = safe_log(log)
    active = ActiveFault(
        fault, journal=None if dry_run else journal, history=history, clock=clock,
        dry_run=dry_run, log=log,
    )  # fmt: skip
    if dry_run:
        log(f"dry run: would {redact(fault.describe())}")
        if on_active is not None:
            on_active(active)
        return active
    fault.preflight()
    # Known to the session before anything is on disk: from here on, whatever happens, the
    # session's exit heals it (a no-op if the journal never took it).
    if on_active is not None:
        on_active(active)
    try:
        with healing():  # journaled and known as journaled, or neither
            active._begin(run_id)
        active.event("inject-start", action=fault.describe())
        fault.inject()
    except BaseException as exc:
        if active.entry is not None:
            log(f"injecting {fault.label} failed ({one_line(exc)}); healing at once")
            try:
                active.heal()
            except BaseException as heal_exc:
                exc.add_note(
                    f"healing it at once failed too: {one_line(heal_exc)}; "
                    f"`gameday heal --target {fault.target.name}` retries"
                )
        raise
    active.event("inject-end")
    return active


# -- abort conditions and the watchdog ---------------------------------------------------------


class AbortCondition(Protocol):
    """A reason to heal a fault early: `check()` returns it (one line), or None."""

    def check(self) -> str | None: ...


@dataclass
class TimeLimit:
    """The fault may stay in effect `seconds` from `since` (clock time; default: now)."""

    seconds: float
    clock: Clock
    since: float | None = None

    def __post_init__(self) -> None:
        if self.since is None:
            self.since = self.clock.now()

    def check(self) -> str | None:
        assert self.since is not None
        elapsed = self.clock.now() - self.since
        if elapsed >= self.seconds:
            return f"time limit of {self.seconds:g} s reached ({elapsed:.1f} s in effect)"
        return None


@dataclass
class ErrorBudget:
    """At most `budget` failures (as counted by `count_failures`) while the fault is in effect:
    one more and the budget is spent."""

    count_failures: Callable[[], int]
    budget: int

    def check(self) -> str | None:
        failures = self.count_failures()
        if failures > self.budget:
            return f"error budget spent: {failures} failures, {self.budget} allowed"
        return None


class Watchdog:
    """While a fault is active, checks abort conditions every `interval_sec` in a thread and
    heals the fault early (an "abort" event with the reason, then the heal) when one fires.

    A condition that raises counts as fired: when the watchdog cannot tell how bad things
    are, it heals. It stops after firing, once the fault is healed, or on `stop()`.
    """

    def __init__(
        self,
        active: ActiveFault,
        conditions: Sequence[AbortCondition],
        interval_sec: float,
        log: Log,
    ) -> None:
        if interval_sec <= 0:
            raise ValueError(f"interval_sec must be > 0, got {interval_sec}")
        self.active = active
        self.conditions = list(conditions)
        self.interval_sec = interval_sec
        self.log = safe_log(log)
        #: the reason it fired, if it did
        self.fired: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"watchdog {active.label}", daemon=True
        )

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        self._stop.set()
        if wait and self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _reason(self) -> str | None:
        for condition in self.conditions:
            try:
                reason = condition.check()
            except Exception as exc:
                return f"abort condition {type(condition).__name__} failed: {one_line(exc)}"
            if reason:
                return reason
        return None

    def _run(self) -> None:
        try:
            while not self._stop.is_set() and not self.active.healed:
                reason = self._reason()
                if reason is not None and not self._stop.is_set():
                    self.fired = reason
                    try:
                        self.active.abort(reason)
                    except BaseException as exc:  # the session retries at its end
                        self.log(f"early heal of {self.active.label} failed: {one_line(exc)}")
                    return
                self._stop.wait(self.interval_sec)
        finally:
            # A condition may hold a connection it opened in this thread (the ledger's pause
            # switch): it is closed here, where it was opened.
            for condition in self.conditions:
                close = getattr(condition, "close", None)
                if callable(close):
                    with contextlib.suppress(Exception):
                        close()


# -- a scenario's faults ---------------------------------------------------------------------


class FaultSession:
    """The faults of one scenario; on exit heals all of them, newest first, whatever happened.

    Every heal is attempted even if an earlier one failed; then the first failure is raised
    (the scenario's own exception, if any, is its context). With `signals` (the default) the
    session installs `install_signal_handlers` for its duration, in the main thread.
    """

    def __init__(self, *, log: Log = _stderr, signals: bool = True) -> None:
        self.log = safe_log(log)
        self.signals = signals
        self.active: list[ActiveFault] = []
        self.watchdogs: list[Watchdog] = []
        self._restore: Callable[[], None] | None = None

    def __enter__(self) -> FaultSession:
        if self.signals:
            self._restore = install_signal_handlers(log=self.log)
        return self

    def add(self, active: ActiveFault) -> ActiveFault:
        self.active.append(active)
        return active

    def inject(
        self,
        fault: Fault,
        *,
        journal: Journal,
        run_id: str,
        history: HistoryWriter | None,
        clock: Clock,
        dry_run: bool,
    ) -> ActiveFault:
        """`inject`, with the fault held by the session before it acts (no gap to leak in)."""
        return _inject(
            fault, journal=journal, run_id=run_id, history=history, clock=clock,
            dry_run=dry_run, log=self.log, on_active=self.add,
        )  # fmt: skip

    def watch(
        self,
        active: ActiveFault,
        conditions: Sequence[AbortCondition],
        *,
        interval_sec: float = 1.0,
    ) -> Watchdog:
        """Start a watchdog on an active fault; the session stops it when it ends."""
        watchdog = Watchdog(active, conditions, interval_sec, self.log)
        self.watchdogs.append(watchdog)
        return watchdog.start()

    def heal_all(self) -> None:
        """Stop the watchdogs and heal every fault, newest first; raise the first failure."""
        with healing():
            for watchdog in self.watchdogs:
                watchdog.stop(wait=False)
            errors: list[BaseException] = []
            for active in reversed(self.active):
                try:
                    active.heal()
                except BaseException as exc:  # the others still heal
                    errors.append(exc)
            for watchdog in self.watchdogs:
                watchdog.stop(timeout=5.0)
            if errors:
                raise errors[0]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.heal_all()
        finally:
            if self._restore is not None:
                self._restore()
                self._restore = None


# -- after a crash: what the journal holds ---------------------------------------------------


def heal_pending(
    target: Target, *, log: Log, force: bool = False, journal: Journal | None = None
) -> list[str]:
    """Heal every fault the journal of `target`'s deployment holds as begun and not healed.

    Each entry is rebuilt with `fault_class(entry.fault, target.provider).from_undo(...)`,
    healed and marked done; the return value describes what was healed. Refused, unless
    `force`: an entry whose run is still alive (its pid exists: that run is in the middle of
    the fault and will heal it), and an entry journaled before deployments had identities
    (nothing proves it was made on this deployment). An entry made on another deployment is
    always refused. A refused entry or a heal that fails stays pending, is reported in one
    line and the others are still healed; then FaultError sums up.
    """
    log = safe_log(log)
    journal = journal if journal is not None else Journal(target)
    entries = journal.pending()
    for lineno in journal.damaged:
        log(f"warning: {journal.path}:{lineno} is damaged and was skipped")
    healed: list[str] = []
    failures: list[str] = []
    for entry in entries:
        what = f"{entry.fault} (begun {entry.at} by run {entry.run_id}, pid {entry.pid})"
        refusal = _refusal(entry, journal.identity, force)
        if refusal:
            failures.append(f"{what}: {refusal}")
            log(f"refused: {failures[-1]}")
            continue
        try:
            if entry.provider != target.provider:
                raise FaultError(
                    f"journaled for a {entry.provider} target, but {target.name} is now "
                    f"{target.provider}"
                )
            fault = fault_class(entry.fault, target.provider).from_undo(target, entry.params)
            description = redact(fault.describe())
            log(f"healing: {description} ({what})")
            with healing():
                fault.heal()
        except Exception as exc:
            failures.append(f"{what}: {one_line(exc)}")
            log(f"heal failed: {failures[-1]}")
            continue
        journal.done(entry)
        healed.append(description)
        log(f"healed: {description}")
    if failures:
        raise FaultError(
            f"{len(failures)} of {len(entries)} pending faults of target {target.name} "
            f"({target.identity()}) not healed (still in {journal.path}): " + "; ".join(failures)
        )
    return healed


def _refusal(entry: Entry, identity: str, force: bool) -> str | None:
    if entry.identity and entry.identity != identity:
        # Never forced: healing on the wrong deployment is exactly what must not happen.
        return f"made on {entry.identity}, not on {identity}"
    if force:
        return None
    if pid_alive(entry.pid):
        return (
            "that process is still running, in the middle of this fault; it heals it itself "
            "(use --force only if that process is not gameday)"
        )
    if not entry.identity:
        return (
            "journaled before journals named their deployment: if it was made on "
            f"{identity}, heal it with --force"
        )
    return None
