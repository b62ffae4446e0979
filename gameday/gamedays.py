"""The commands of scheduled game days: `gameday run PLAN`, `pause`, `resume`, `ack`, `history`.

`gameday run PLAN` runs a plan unattended: it checks the plan (exit 2 on bad input, nothing
touched), refuses when it may not run now (exit 3: outside its windows, the target paused,
another game day holding the target), announces the start, runs pytest underneath on the
plan's scenarios (same features/, same reports/, the ledger plugin takes the lease and
records every scenario), judges the run against the median of the last passing runs, and
announces the end. Exit 0 passed, 1 a scenario failed or a number regressed, 2 bad input,
3 refused. A Ctrl-C or SIGTERM is passed on to pytest once, which heals and stops.

gameday/cli.py parses the arguments; these functions do the work and return the exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from gameday.ledger import (
    DEPLOYMENT_REVISION_ENV,
    LEASE_TTL_ENV,
    LEDGER_URL_ENV,
    PLAN_ENV,
    RUN_INFO_ENV,
    Ledger,
    LedgerError,
    RunRecord,
    iso,
    who_am_i,
)
from gameday.plan import LoadedPlan, PlanError, load_plan, window_problem
from gameday.secrets import redact
from gameday.target import TargetError, load_target

if TYPE_CHECKING:
    from gameday.trend import Regression

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
#: after the plan's timeout, how long pytest gets to heal after SIGTERM before SIGKILL
STOP_GRACE_SEC = 600.0

Log = Callable[[str], None]


def _err(line: str) -> None:
    print(f"gameday: {redact(line)}", file=sys.stderr, flush=True)


def _out(line: str) -> None:
    print(f"gameday: {redact(line)}", flush=True)


# -- before a run ------------------------------------------------------------------------------


@dataclass
class Ready:
    """A plan that may run now, and the ledger it records into."""

    loaded: LoadedPlan
    ledger_url: str | None = field(repr=False)  # it may hold a password
    ledger_source: str | None = None


def ledger_of(loaded: LoadedPlan) -> tuple[str | None, str | None]:
    """The plan's own ledger URL (and how to name it in errors), else the environment's."""
    if loaded.plan.ledger:
        return loaded.plan.ledger, f"{loaded.source}: ledger"
    return None, None


def prepare(
    plan: str, *, ignore_window: bool, breaks: bool | None = None, err: Log = _err
) -> Ready | int:
    """Load and check the plan and the ledger; refuse when it may not run now. Returns the
    ready plan, or the exit code (2 bad input, 3 refused) after saying why in one line."""
    try:
        loaded = load_plan(plan)
        url, source = ledger_of(loaded)
        ledger = Ledger.open(url, source=source)
    except (PlanError, LedgerError, TargetError) as exc:
        err(str(exc))
        return EXIT_BAD_INPUT
    with ledger:
        if not ignore_window:
            problem = window_problem(loaded.plan, datetime.now(UTC))
            if problem:
                err(f"refused: {loaded.source}: {problem} (--ignore-window runs it anyway)")
                return EXIT_REFUSED
        if loaded.destructive if breaks is None else breaks:
            target = loaded.target
            pause = ledger.paused(target)
            if pause is not None:
                err(f"refused: {pause.describe()}")
                return EXIT_REFUSED
            held = ledger.lease_problem(target)
            if held:
                err(f"refused: {held}")
                return EXIT_REFUSED
    return Ready(loaded, url, source)


def deployment_revision(loaded: LoadedPlan) -> str:
    """The deployed revision as the plan says to read it; never fails a run ("unknown: why")."""
    how = loaded.plan.deployment_revision
    if how is None:
        return ""
    try:
        if how.url is not None:
            import httpx

            response = httpx.get(how.url, timeout=5)
            response.raise_for_status()
            if how.json_field:
                return str(response.json()[how.json_field])[:200]
            return response.text.strip().splitlines()[0][:200]
        assert how.command is not None
        out = subprocess.run(
            shlex.split(how.command), capture_output=True, text=True, timeout=15, check=True
        )
        return out.stdout.strip().splitlines()[0][:200]
    except Exception as exc:
        return redact(f"unknown ({type(exc).__name__}: {exc})".splitlines()[0])[:200]


# -- the run ---------------------------------------------------------------------------------


def cmd_run(plan: str, *, ignore_window: bool = False, check: bool = False) -> int:
    """`gameday run PLAN`: see the module docstring."""
    ready = prepare(plan, ignore_window=ignore_window)
    if isinstance(ready, int):
        return ready
    loaded = ready.loaded
    if check:
        _describe(loaded)
        return EXIT_OK
    return _run(ready)


def _describe(loaded: LoadedPlan) -> None:
    p = loaded.plan
    _out(f"{loaded.source}: ok: plan {p.name} on target {loaded.target.name} "
         f"({loaded.target.identity()})")  # fmt: skip
    for s in loaded.scenarios:
        mark = " (destructive)" if s.destructive else ""
        _out(f"  scenario: {s.title}{mark}  [{s.nodeid}]")
    receivers = ", ".join(r.name or r.kind for r in p.notify) or "none"
    _out(f"  notify: {receivers}; regression: median of the last {p.regression.last_runs} "
         f"passing runs (judged from {p.regression.min_runs})")  # fmt: skip
    if p.drill is not None:
        _out(f"  drill: {p.drill.fault} {p.drill.params or ''}, healed at "
             f"{p.drill.deadline_sec:g} s if people have not")  # fmt: skip
    _out("  may run now: yes")


def _run(ready: Ready) -> int:
    from gameday.notify import Notice, notify

    loaded = ready.loaded
    plan = loaded.plan
    host = socket.gethostname()
    revision = deployment_revision(loaded)
    notify(
        plan.notify,
        Notice(
            "start", plan.name, loaded.target.name, host,
            summary=f"{len(loaded.scenarios)} scenario(s): "
            + "; ".join(s.title for s in loaded.scenarios),
            at=iso(time.time()),
        ),
        log=_out,
    )  # fmt: skip
    # pytest tells us what its run was (id, folder, why it stopped) through a pipe: nothing
    # on disk to leave behind if we are killed.
    info_read, info_write = os.pipe()
    os.set_blocking(info_read, False)
    env = dict(os.environ)
    env.update(
        {
            PLAN_ENV: plan.name,
            RUN_INFO_ENV: f"fd:{info_write}",
            LEASE_TTL_ENV: f"{plan.lease_ttl_sec:g}",
            DEPLOYMENT_REVISION_ENV: revision,
        }
    )
    if ready.ledger_url:
        env[LEDGER_URL_ENV] = ready.ledger_url
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
           *loaded.pytest_args()]  # fmt: skip
    shown = " ".join(shlex.quote(a) for a in cmd[3:])
    _out(f"running {len(loaded.scenarios)} scenario(s) of {loaded.source} on "
         f"{loaded.target.name}: pytest {shown}")  # fmt: skip
    try:
        code = run_pytest(cmd, env=env, timeout_sec=plan.timeout_sec, pass_fds=(info_write,))
    finally:
        os.close(info_write)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(info_read, 65536):
            chunks.append(chunk)
    os.close(info_read)
    info: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        info = json.loads(b"".join(chunks) or b"{}")
    return _finish(ready, code, info, host)


def run_pytest(
    cmd: Sequence[str], *, env: dict[str, str], timeout_sec: float, pass_fds: Sequence[int] = ()
) -> int:
    """Run pytest in its own session; pass our first SIGINT/SIGTERM/SIGHUP (and each later
    one) on to it, so it heals and stops; stop it after `timeout_sec` the same way."""
    # Its own session: a Ctrl-C in the terminal reaches only us, and we pass it on once (a
    # second signal during a heal would abandon the heal). If we are killed, it is told to
    # stop (SIGTERM: it heals) rather than run on with nobody to read its outcome.
    proc = subprocess.Popen(
        list(cmd), env=env, start_new_session=True, preexec_fn=_terminate_with_parent,
        pass_fds=tuple(pass_fds),
    )  # fmt: skip

    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signum)

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        try:
            return proc.wait(timeout=timeout_sec)
        except subprocess.TimeoutExpired:
            _err(f"the run took longer than the plan's timeout ({timeout_sec:g} s): stopping it "
                 "(its faults heal)")  # fmt: skip
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_SEC)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return EXIT_FAILED
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _terminate_with_parent() -> None:
    with contextlib.suppress(Exception):  # Linux only; elsewhere the run simply goes on
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _failures(records: Sequence[RunRecord]) -> list[str]:
    out: list[str] = []
    for r in records:
        if r.outcome in ("passed", "skipped"):
            continue
        bad = [v for v in r.verdicts if not v.get("ok")]
        if bad:
            out += [f"{r.title}: {v.get('message', '')}" for v in bad]
        else:
            out.append(f"{r.title}: {r.outcome}: {r.message}")
    return out


def judge_regressions(ledger: Ledger, loaded: LoadedPlan, run_id: str) -> list[Regression]:
    """Compare the run's passing scenarios with their last passing runs; mark the ledger."""
    from gameday.trend import regressions

    rules = loaded.plan.regression
    current = ledger.records(run_id=run_id)
    past = {
        r.title: ledger.records(
            target_key=r.target_key, title=r.title, passing_only=True, exclude_run=run_id,
            last_runs=rules.last_runs,
        )
        for r in current
    }  # fmt: skip
    found = regressions(current, past, rules.judged(), min_runs=rules.min_runs)
    by_title: dict[str, list[str]] = {}
    for reg in found:
        by_title.setdefault(reg.title, []).append(str(reg))
    for title, lines in by_title.items():
        ledger.mark_regression(run_id, title, "; ".join(lines))
    return found


def _finish(ready: Ready, code: int, info: dict[str, Any], host: str) -> int:
    from gameday.notify import Notice, notify

    loaded = ready.loaded
    plan = loaded.plan
    if code == EXIT_REFUSED or "refused" in info:
        return EXIT_REFUSED  # pytest said why, in one line
    run_id = str(info.get("run_id", ""))
    if code in (2, 4, 5) and not run_id:  # stopped before its run began: its input
        _err(f"pytest exited {code} (bad input) running {loaded.source}")
        return EXIT_BAD_INPUT
    records: list[RunRecord] = []
    found: list[Regression] = []
    if run_id:
        try:
            with Ledger.open(ready.ledger_url, source=ready.ledger_source) as ledger:
                records = ledger.records(run_id=run_id)
                if code == EXIT_OK:
                    found = judge_regressions(ledger, loaded, run_id)
        except LedgerError as exc:
            _err(f"ledger: {exc}")
    for reg in found:
        _err(f"REGRESSION: {reg}")
    stopped = info.get("stopped")
    if code not in (EXIT_OK, EXIT_FAILED) and not stopped:
        stopped = f"interrupted (pytest exited {code})"
    if code == EXIT_OK and not found:
        outcome, result = "passed", EXIT_OK
    elif code == EXIT_OK:
        outcome, result = "regressed", EXIT_FAILED
    else:
        outcome, result = ("aborted" if stopped else "failed"), EXIT_FAILED
    passed = sum(r.outcome == "passed" for r in records)
    summary = f"{passed} of {len(records)} scenario(s) passed"
    if stopped:
        summary += f"; stopped: {stopped}"
    report = str(info.get("report", ""))
    notify(
        plan.notify,
        Notice(
            "end", plan.name, loaded.target.name, host, run_id=run_id, outcome=outcome,
            summary=summary, failures=_failures(records), regressions=[str(r) for r in found],
            report=report, at=iso(time.time()),
        ),
        log=_out,
    )  # fmt: skip
    _out(f"game day {plan.name} on {loaded.target.name}: {outcome.upper()} ({summary})"
         + (f"; report {report}" if report else ""))  # fmt: skip
    return result


# -- the kill switch and acknowledgements -----------------------------------------------------


def _open_for(target_name: str) -> tuple[Any, Ledger] | int:
    try:
        target = load_target(target_name)
        ledger = Ledger.open()
    except (TargetError, LedgerError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    return target, ledger


def cmd_pause(target_name: str, *, reason: str, by: str | None) -> int:
    """`gameday pause`: no fault on this target from now on, by anyone; running game days
    heal and stop within a second."""
    if not reason.strip():
        _err("--reason: say why (it is shown to every run that is refused)")
        return EXIT_BAD_INPUT
    opened = _open_for(target_name)
    if isinstance(opened, int):
        return opened
    target, ledger = opened
    with ledger:
        pause = ledger.pause(target, reason=reason.strip(), by=by or who_am_i())
        held = ledger.lease_problem(target)
    print(f"paused: target {target.name} ({target.identity()}) by {pause.by}: {pause.reason}")
    if held:
        print(f"a game day is running on it ({held.split(': ', 1)[1]}): it heals and stops "
              "within a second")  # fmt: skip
    print(f"no fault will be injected on it until `gameday resume --target {target_name}`")
    return EXIT_OK


def cmd_resume(target_name: str, *, by: str | None) -> int:
    opened = _open_for(target_name)
    if isinstance(opened, int):
        return opened
    target, ledger = opened
    with ledger:
        lifted = ledger.resume(target, by=by or who_am_i())
    if lifted is None:
        print(f"target {target.name} was not paused")
    else:
        print(f"resumed: target {target.name} (paused by {lifted.by} since {iso(lifted.since)}: "
              f"{lifted.reason})")  # fmt: skip
    return EXIT_OK


def cmd_ack(target_name: str, *, by: str | None, note: str) -> int:
    """`gameday ack`: a person has noticed (a drill's time to detect ends here)."""
    opened = _open_for(target_name)
    if isinstance(opened, int):
        return opened
    target, ledger = opened
    with ledger:
        event = ledger.ack(target, by=by or who_am_i(), note=note)
    print(f"acknowledged: target {target.name} by {event.who} at {iso(event.at)}")
    return EXIT_OK


# -- history -------------------------------------------------------------------------------


def cmd_history(
    *, target_name: str | None, scenario: str | None, last: int | None, html: str | None
) -> int:
    """`gameday history`: a table of the ledger's records; `--html` writes the trend page."""
    from gameday.trend import history_table, trend_page

    if last is not None and last < 1:
        _err(f"--last {last}: give 1 or more runs")
        return EXIT_BAD_INPUT
    try:
        key = load_target(target_name).identity() if target_name else None
        ledger = Ledger.open()
    except (TargetError, LedgerError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    with ledger:
        records = ledger.records(
            target_key=key, title_contains=scenario, last_runs=last, verdicts=False
        )
    if not records:
        print("no runs recorded" + (" for that target" if key else "") + " yet")
        return EXIT_OK
    print(history_table(records))
    if html is not None:
        from gameday.run import reports_dir

        path = Path(html) if html else reports_dir() / "trend.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(trend_page(records, page_dir=path.resolve().parent))
        print(f"trend page: {path.resolve()}")
    return EXIT_OK
