"""The ledger's pytest wiring: one game day per target, the kill switch, a record of every run.

Registered beside gameday.pytest_plugin (root conftest.py). For a session that will run
destructive scenarios (opted in, not a dry run), before the lab is started and before any
scenario runs:
- a paused target refuses the session (exit 3, naming the reason and who paused);
- the target's lease is taken, or the session exits at once (exit 3) naming the holder's
  host, pid, run id and since when; a dead holder's lease is taken over, and
  `pytest_gameday_lease_taken` is called so the undo journal is healed first;
- while the session lasts, a thread renews the lease and watches the pause: on a pause (or a
  lost lease) it stops the session the way Ctrl-C does, so every fault in effect heals at
  once, and the session fails naming the pause.
At the end of every session that ran scenarios (destructive or not), one record per scenario
goes to the ledger, with the numbers its verdicts measured; the lease is given back.

`gameday run` passes what the ledger should know through the environment: GAMEDAY_PLAN (the
plan's name), GAMEDAY_DEPLOYMENT_REVISION, and GAMEDAY_RUN_INFO (a file to write the run's
id, folder and outcome to). Any pytest session works without them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gameday.ledger import (
    DEPLOYMENT_REVISION_ENV,
    LEASE_TOKEN_ENV,
    PLAN_ENV,
    RUN_INFO_ENV,
    Lease,
    LeaseHeld,
    LeaseKeeper,
    Ledger,
    LedgerError,
    RunRecord,
    TargetPaused,
    refuse_if_paused,
)
from gameday.pytest_plugin import SESSION_KEY, GamedaySession
from gameday.secrets import redact
from gameday.target import Target, TargetError, load_target

EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3


class LedgerHookSpecs:
    """Hooks this plugin calls (implement them in a plugin or conftest.py)."""

    @pytest.hookspec
    def pytest_gameday_lease_taken(
        self, config: pytest.Config, target: Target, lease: Lease, previous: Lease | None
    ) -> None:
        """This session now holds `target`'s lease; nothing is started or broken yet.

        `previous` is the lease of a run that died holding it (None if the lease was free).
        The place to heal what earlier runs left in the undo journal
        (`chaos.journal.heal_pending`): only one run at a time gets here per target.
        """


@dataclass
class LedgerState:
    """This session's dealings with the ledger; one per session, in config.stash."""

    lease: Lease | None = None
    keeper: LeaseKeeper | None = None
    target: Target | None = None
    #: why the session was stopped early (a pause, a lost lease)
    stopped: str | None = None
    #: node ids of scenarios whose outcome pytest reported in full
    reported: set[str] = field(default_factory=set)
    #: node id -> the scenario's title as written in its feature file
    titles: dict[str, str] = field(default_factory=dict)
    records: int = 0


LEDGER_KEY = pytest.StashKey[LedgerState]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(LedgerHookSpecs)


def pytest_configure(config: pytest.Config) -> None:
    state = config.stash[LEDGER_KEY] = LedgerState()
    config.pluginmanager.register(ScenarioReports(state), "gameday-ledger-reports")


def _is_scenario(item: pytest.Item) -> bool:
    return item.path.suffix == ".feature"


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"gameday: {redact(line)}")


def will_break(session: pytest.Session, state: GamedaySession, target: Target) -> bool:
    """Will this session inject faults? Destructive scenarios, opted in, not a dry run."""
    if state.dry_run or not (state.allow_destructive or target.allow_destructive):
        return False
    return any(
        _is_scenario(i) and i.get_closest_marker("destructive") and not i.get_closest_marker("skip")
        for i in session.items
    )


@pytest.hookimpl(wrapper=True)
def pytest_collection_finish(session: pytest.Session) -> Generator[None, None, None]:
    # A wrapper: this part runs before every other implementation, so the lease is held
    # before the lab is started and before the undo journal is healed (steps.faults does that
    # in its own pytest_collection_finish); a refused run touches nothing.
    config = session.config
    ledger_state = config.stash[LEDGER_KEY]
    state = config.stash.get(SESSION_KEY, None)
    scenarios = any(_is_scenario(i) for i in session.items)
    for item in session.items:
        if _is_scenario(item):
            # pytest-bdd's docstring is "<feature>: <scenario>"; the ledger groups by the latter
            doc = getattr(getattr(item, "obj", None), "__doc__", None) or ""
            ledger_state.titles[item.nodeid] = doc.rpartition(": ")[2] or item.name
    if state is not None and not config.option.collectonly and scenarios:
        _take_lease(session, state, ledger_state)
    result = yield
    if ledger_state.lease is not None and state is not None and state.run is not None:
        try:
            with Ledger.open() as ledger:
                ledger_state.lease = ledger.attach_run(ledger_state.lease, state.run.run_id)
        except LedgerError as exc:
            _say(config, f"ledger: could not name run {state.run.run_id} on the lease: {exc}")
    return result


def _take_lease(session: pytest.Session, state: GamedaySession, ledger_state: LedgerState) -> None:
    config = session.config
    try:
        ledger = Ledger.open()
    except LedgerError as exc:
        pytest.exit(redact(str(exc)), returncode=EXIT_BAD_INPUT)
    with ledger:
        try:
            target = load_target(state.target_name)
        except TargetError:
            return  # gameday.pytest_plugin refuses it in one line, next
        ledger_state.target = target
        if not will_break(session, state, target):
            return
        try:
            refuse_if_paused(target, ledger=ledger)
            joined = ledger.joinable(target)
            if joined is not None:
                run = joined.run_id or "(starting)"
                _say(config, f"part of the game day of run {run} (pid {joined.holder.pid}) "
                     "that started this session: under its lease")  # fmt: skip
                return
            lease, previous = ledger.acquire(
                target, plan=os.environ.get(PLAN_ENV, ""), ttl_sec=None
            )
        except (TargetPaused, LeaseHeld) as exc:
            _write_run_info(config, {"refused": str(exc)})
            pytest.exit(f"refused: {exc}", returncode=EXIT_REFUSED)
        except LedgerError as exc:
            pytest.exit(redact(str(exc)), returncode=EXIT_BAD_INPUT)
    ledger_state.lease = lease
    os.environ[LEASE_TOKEN_ENV] = lease.token  # for the processes this session starts
    if previous is not None:
        died = previous.describe(lease.since)
        _say(config, f"took over the lease of a game day that died holding it ({died})")
    _say(config, f"lease on {target.name} ({target.identity()}) held until the session ends")
    ledger_state.keeper = LeaseKeeper(
        lease, target, url=None, on_stop=lambda reason: _stop(session, reason)
    ).start()
    config.hook.pytest_gameday_lease_taken(
        config=config, target=target, lease=lease, previous=previous
    )


def _stop(session: pytest.Session, reason: str) -> None:
    """From the keeper's thread: stop the session now, the way Ctrl-C does, so that every
    fault in effect heals at once (the runner's signal handling holds it back while a heal is
    under way) and no further scenario starts."""
    config = session.config
    config.stash[LEDGER_KEY].stopped = reason
    session.shouldstop = f"stopped: {reason}"
    # A real SIGINT to the main thread: it also wakes a step sleeping through "the fault lasts
    # 30 seconds" (interrupt_main() would wait for the sleep to end). Started with SIGINT
    # ignored (nohup, a background job), the session left it ignored: SIGTERM, always
    # handled, stops it the same way.
    stop = signal.SIGTERM if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else signal.SIGINT
    signal.pthread_kill(threading.main_thread().ident or 0, stop)


class ScenarioReports:
    """Which scenarios pytest reported in full: one cut short by a stop or Ctrl-C was not,
    and must not be recorded as passed."""

    def __init__(self, state: LedgerState) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.nodeid.partition("::")[0].endswith(".feature"):
            return
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.state.reported.add(report.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
    config = session.config
    stopped = config.stash[LEDGER_KEY].stopped if LEDGER_KEY in config.stash else None
    if stopped is not None:
        _say(config, f"{stopped}: healing and stopping")
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        # Interrupted (Ctrl-C, SIGTERM, the kill switch): heal now, by tearing the scenario's
        # fixtures down before gameday.pytest_plugin closes the run's history, so the heal is
        # in the history and the report. pytest's own sessionfinish does this later, after
        # the history is closed, and the scenario fixture then fails on the closed history.
        try:
            session._setupstate.teardown_exact(None)
        except Exception as exc:  # pytest's own teardown will meet it again and report it
            _say(config, f"tearing the interrupted scenario down failed: {redact(str(exc))}")
    # After every other implementation: the faults have healed and the report is written.
    result = yield
    ledger_state = config.stash.get(LEDGER_KEY, None)
    state = config.stash.get(SESSION_KEY, None)
    if ledger_state is None:
        return result
    if ledger_state.keeper is not None:
        ledger_state.keeper.stop()
    try:
        if state is not None and state.run is not None and not state.dry_run:
            _append_records(session, state, ledger_state)
    finally:
        _release(config, ledger_state)
    if ledger_state.stopped is not None:
        _say(config, f"the run was stopped: {ledger_state.stopped}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if state is not None and state.run is not None:
        _write_run_info(
            config,
            {
                "run_id": state.run.run_id,
                "folder": str(state.run.folder.resolve()),
                "report": str((state.run.folder / "report.html").resolve()),
                "records": ledger_state.records,
                "stopped": ledger_state.stopped,
                "exitstatus": int(session.exitstatus),
            },
        )
    return result


def _release(config: pytest.Config, ledger_state: LedgerState) -> None:
    lease = ledger_state.lease
    if lease is None:
        return
    if os.environ.get(LEASE_TOKEN_ENV) == lease.token:
        del os.environ[LEASE_TOKEN_ENV]
    try:
        with Ledger.open() as ledger:
            ledger.release(lease)
    except Exception as exc:  # it expires by itself: say so, never fail the run for it
        _say(config, f"ledger: could not give the lease back ({exc}); it expires by itself")
    ledger_state.lease = None


def _append_records(
    session: pytest.Session, state: GamedaySession, ledger_state: LedgerState
) -> None:
    run = state.run
    assert run is not None
    target = ledger_state.target or run.target
    records = run_records(
        run,
        target,
        reported=ledger_state.reported,
        titles=ledger_state.titles,
        stopped=ledger_state.stopped,
        plan=os.environ.get(PLAN_ENV, ""),
        deployment_revision=os.environ.get(DEPLOYMENT_REVISION_ENV, ""),
    )
    try:
        with Ledger.open() as ledger:
            ledger.append(records)
    except Exception as exc:
        _say(session.config, f"ledger: could not record this run: {redact(str(exc))}")
        return
    ledger_state.records = len(records)
    if records:
        _say(session.config, f"ledger: {len(records)} record(s) of run {run.run_id}")


def run_records(
    run: Any,
    target: Target,
    *,
    reported: set[str],
    stopped: str | None,
    titles: dict[str, str] | None = None,
    plan: str,
    deployment_revision: str,
) -> list[RunRecord]:
    """One record per scenario of a finished run (`gameday.run.Run`): its outcome (a
    scenario cut short by a stop or Ctrl-C is "aborted", not "passed"), its verdicts and the
    numbers they measured, its own start and end."""
    from gameday.baseline import git_revision
    from gameday.trend import scenario_latencies, verdict_metrics

    # The run's writer kept every record (as columns): reading the file back would cost a
    # second copy of a long game day's history at its very end (~6 s of CPU and ~60 bytes a
    # record for a million records).
    history = run.writer.history()
    anchor = run.clock.wall_anchor
    spans: dict[str, list[float]] = {}
    for mark in history.marks:
        node = mark.detail.get("scenario")
        if node and mark.name in ("scenario-start", "scenario-end"):
            spans.setdefault(node, []).append(anchor + mark.at)
    now = time.time()
    revision = git_revision()
    host = socket.gethostname()
    out: list[RunRecord] = []
    for result in run.scenarios:
        verdicts = [v.to_dict() for v in run.verdicts if v.scenario == result.nodeid]
        metrics = scenario_latencies(history, result.nodeid)
        metrics.update(verdict_metrics(verdicts))
        outcome, message = result.outcome, result.message
        # The run marks a scenario it never heard the end of "error" (main's Run.finish);
        # unreported by pytest, it was cut short: "aborted", with why.
        if result.nodeid not in reported and outcome in ("passed", "error"):
            outcome = "aborted"
            message = f"stopped before it ended: {stopped}" if stopped else "interrupted"
        span = spans.get(result.nodeid, [])
        started = min(span) if span else anchor
        ended = max(span) if len(span) > 1 else now
        out.append(
            RunRecord(
                run_id=run.run_id, kind="scenario", plan=plan, target_name=target.name,
                target_key=target.identity(), harness_revision=revision,
                deployment_revision=deployment_revision, host=host, started_at=started,
                ended_at=ended, scenario=result.nodeid,
                title=(titles or {}).get(result.nodeid) or result.title or result.nodeid,
                outcome=outcome, message=message, duration_sec=result.duration_sec,
                metrics=metrics, verdicts=verdicts,
                report=str((run.folder / "report.html").resolve()),
            )
        )  # fmt: skip
    return out


def _write_run_info(config: pytest.Config, info: dict[str, Any]) -> None:
    """For `gameday run`: the pipe it handed us ("fd:N"), or a file."""
    where = os.environ.get(RUN_INFO_ENV)
    if not where:
        return
    data = json.dumps(info).encode()
    try:
        if where.startswith("fd:"):
            os.write(int(where.removeprefix("fd:")), data)
        else:
            Path(where).write_bytes(data)
    except (OSError, ValueError) as exc:
        _say(config, f"could not write the run's summary to {where}: {exc}")
