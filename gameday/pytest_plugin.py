"""pytest wiring: options, `.feature` collection, the target and the lab for a session.

`pytest features/` collects Gherkin files directly (no test module per feature), loads the
target named by `--target` (default: the lab), starts the lab when the target is the lab and it
is not running, and refuses in one line (exit code 2) a broken target file or an entrypoint that
does not answer, before any scenario runs. Harness tests that collect no scenario never touch a
target.
"""

from __future__ import annotations

import gc
import json
import types
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gameday.secrets import install_log_redaction, redact

# What a session needs only once it has scenarios to run (the target's models, the engine,
# an HTTP client) is imported where it is used: `pytest tests/...` and `--help` do not pay
# for it, and importing this plugin stays cheap.
if TYPE_CHECKING:
    from gameday.run import Run
    from gameday.scenario import Scenario
    from gameday.target import Target

EXIT_BAD_INPUT = 2


@dataclass
class GamedaySession:
    """What this pytest session knows about its target; one per session, in config.stash."""

    target_name: str
    allow_destructive: bool
    dry_run: bool
    keep_lab: bool
    plan_file: str | None = None
    target: Target | None = None
    lab_started: bool = False
    run: Run | None = None
    notes: list[str] = field(default_factory=list)


SESSION_KEY = pytest.StashKey[GamedaySession]()
OUTCOME_KEY = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    from gameday.target import DEFAULT_TARGET

    group = parser.getgroup("gameday", "gameday: the deployment under test")
    group.addoption(
        "--target",
        default=DEFAULT_TARGET,
        metavar="NAME|PATH",
        help="target file: a name from targets/ or a path (default: lab, the embedded lab)",
    )
    group.addoption(
        "--allow-destructive",
        action="store_true",
        help="let @destructive scenarios inject faults (the target may allow it instead)",
    )
    group.addoption(
        "--dry-run",
        action="store_true",
        help="print what each fault would do and change nothing",
    )
    group.addoption(
        "--keep-lab",
        action="store_true",
        help="leave the lab running after the session when this session started it",
    )
    group.addoption(
        "--gameday-plan",
        metavar="FILE",
        default=None,
        help="run nothing: write, for each scenario, whether it would run on the target or "
        "why it would be skipped, as JSON lines (what `gameday target check` shows)",
    )


def pytest_configure(config: pytest.Config) -> None:
    install_log_redaction()
    config.pluginmanager.register(ScenarioOutcomes(config), "gameday-scenario-outcomes")
    config.stash[SESSION_KEY] = GamedaySession(
        target_name=config.getoption("--target"),
        allow_destructive=config.getoption("--allow-destructive"),
        dry_run=config.getoption("--dry-run"),
        keep_lab=config.getoption("--keep-lab"),
        plan_file=config.getoption("--gameday-plan"),
    )


# -- collecting .feature files -----------------------------------------------------------------


class FeatureFile(pytest.Module):
    """A Gherkin file collected as if a module had called `scenarios()` on it."""

    def _getobj(self) -> types.ModuleType:
        from gameday.gherkin import check_feature_file

        check_feature_file(self.path)  # a misspelled keyword is an error, not a skipped step
        module = types.ModuleType(f"feature_{self.path.stem}")
        module.__file__ = str(self.path)
        # scenarios() puts its tests into its caller's module namespace: call it from code
        # executed in ours, with the feature file as the caller's file name.
        code = compile(
            "from pytest_bdd import scenarios\n"
            f"scenarios({str(self.path)!r}, features_base_dir={str(self.path.parent)!r})\n",
            str(self.path),
            "exec",
        )
        exec(code, module.__dict__)
        return module


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix == ".feature":
        return FeatureFile.from_parent(parent, path=file_path)
    return None


def _is_scenario(item: pytest.Item) -> bool:
    return item.path.suffix == ".feature"


def scenario_title(item: pytest.Item) -> str:
    """The scenario's name as the feature file writes it."""
    from pytest_bdd.scenario import scenario_wrapper_template_registry

    func = getattr(item, "obj", None)
    template = scenario_wrapper_template_registry.get(func) if callable(func) else None
    return str(template.name) if template is not None else item.name


# -- the target and the lab for the session ------------------------------------------------


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not any(_is_scenario(i) for i in session.items):
        return
    from gameday.run import Run
    from gameday.target import TargetError, load_target

    state = session.config.stash[SESSION_KEY]
    try:
        state.target = load_target(state.target_name)
    except TargetError as exc:
        pytest.exit(redact(str(exc)), returncode=EXIT_BAD_INPUT)
    target = state.target
    if state.plan_file is not None:
        return  # a plan touches nothing: no lab, no entrypoint, no run
    _gate_destructive(session, state, target)
    say = live_writer(session.config)
    if target.provider == "lab":
        _ensure_lab(state, target, say)
    problem = entrypoint_problem(target)
    if problem:
        pytest.exit(f"{target.source}: entrypoint.url: {problem}", returncode=EXIT_BAD_INPUT)
    say(f"target {target.name} ({target.provider}) at {redact(target.entrypoint.url)}")
    if gc.get_freeze_count() == 0:
        # What exists now (modules, the target, step definitions, the collected items) lives
        # for the whole run: moved out of the garbage collector's sight, so that its passes
        # and pytest's gc.collect() at the end do not walk it again (~0.1 s of a short run's
        # CPU). Once per process: a later freeze would also keep any garbage not yet collected.
        gc.freeze()
    state.run = Run.start(
        target, allow_destructive=state.allow_destructive or target.allow_destructive
    )
    for item in session.items:
        if _is_scenario(item):
            state.run.result(item.nodeid, scenario_title(item))
    say(f"run {state.run.run_id}: history in {state.run.folder / 'history.jsonl'}")


def _gate_destructive(session: pytest.Session, state: GamedaySession, target: Target) -> None:
    """Destructive scenarios run only with an opt-in; otherwise they are skipped, saying why.

    This is courtesy, by tag; the opt-in is enforced where a fault is injected
    (chaos.scenario), whatever a feature's tags say.
    """
    if state.allow_destructive or target.allow_destructive or state.dry_run:
        return
    reason = destructive_refusal(target)
    for item in session.items:
        if _is_scenario(item) and item.get_closest_marker("destructive"):
            item.add_marker(pytest.mark.skip(reason=reason))


def destructive_refusal(target: Target) -> str:
    return (
        f"destructive scenario: pass --allow-destructive or set allow_destructive: true "
        f"in {target.source}"
    )


# -- what each scenario needs, asked before it starts ------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_bdd_before_scenario(request: pytest.FixtureRequest, feature: Any, scenario: Any) -> None:
    """Skip a scenario whose steps need what the target lacks, before its first step (so
    before any probe starts or fault is injected), with one line saying what is missing."""
    from pytest_bdd.scenario import get_step_function

    from gameday.needs import declared_needs, first_unmet

    state = request.config.stash.get(SESSION_KEY, None)
    if state is None or state.target is None:
        return
    steps = []
    for step in scenario.steps:
        context = get_step_function(request, step)
        if context is None:
            continue  # pytest-bdd reports the missing step definition itself
        args = context.parser.parse_arguments(step.name) or {}
        steps.append((declared_needs(context.step_func), args))
    reason = first_unmet(state.target, steps)
    if state.plan_file is not None:
        opted_in = state.allow_destructive or state.target.allow_destructive
        if reason is None and request.node.get_closest_marker("destructive") and not opted_in:
            reason = destructive_refusal(state.target)
        _write_plan(state.plan_file, request.node, scenario.name, reason)
        pytest.skip("plan only")
    if reason:
        pytest.skip(reason)


def _write_plan(path: str, node: pytest.Item, title: str, reason: str | None) -> None:
    line = {"nodeid": node.nodeid, "title": title, "runs": reason is None, "reason": reason}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, items: list[pytest.Item]) -> None:
    """In a plan, a scenario skipped by tag (destructive without opt-in) is a plan line too."""
    state = session.config.stash.get(SESSION_KEY, None)
    if state is None or state.plan_file is None:
        return
    open(state.plan_file, "w").close()


def live_writer(config: pytest.Config) -> Callable[[str], None]:
    """A function that prints a `gameday:` line at once, even while a test's output is captured.

    Long faults print progress; pytest would otherwise hold it back until the test ended.
    """
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def say(line: str) -> None:
        if reporter is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"gameday: {redact(line)}")
        else:
            reporter.write_line(f"gameday: {redact(line)}")

    return say


def _ensure_lab(state: GamedaySession, target: Target, say: Any) -> None:
    from lab import control
    from lab.layout import LabLayout

    layout = LabLayout.from_env(base_port=target.lab.base_port if target.lab else None)
    running = control.is_running(layout)
    if running and control.lock_holder(layout) is None:
        return  # running, and no `lab up` or `down` of another process is half way
    say(f"starting the lab on {layout.public_host}:{layout.http_port} (gameday lab up)")
    try:
        elapsed = control.up(layout, progress=lambda line: say(f"lab {line}"))
    except control.LabError as exc:
        pytest.exit(f"lab: {exc}", returncode=1)
    # Only a lab this session started is this session's to stop.
    state.lab_started = not running
    say(f"lab up in {elapsed:.1f} s")


def entrypoint_problem(target: Target) -> str | None:
    """Why the entrypoint cannot be used, or None when it answers at all."""
    from gameday import facts

    url = target.entrypoint.url.rstrip("/") + target.entrypoint.health_path
    # Bounded as a whole (entrypoint.timeout_sec): a server trickling bytes is given up on.
    answer = facts.health(target)
    if answer.status is None:
        return f"{redact(url)} does not answer ({answer.error}: {answer.detail})"
    return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if _is_scenario(item) and (report.when == "call" or report.outcome != "passed"):
        item.stash[OUTCOME_KEY] = report.outcome
    return report


class ScenarioOutcomes:
    """Scenario outcomes for the run's JUnit XML (the harness's own tests are not in it)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.nodeid.partition("::")[0].endswith(".feature"):
            return
        state = self.config.stash.get(SESSION_KEY, None)
        if state is None or state.run is None:
            return
        result = state.run.result(report.nodeid)
        result.began = True
        result.duration_sec += report.duration
        if report.failed:
            # A failed teardown (a heal that failed) after a passed call fails the scenario.
            result.outcome = "error" if report.when == "setup" else "failed"
            lines = report.longreprtext.strip().splitlines()
            result.message = lines[-1] if lines else ""
        elif report.skipped and result.outcome not in ("failed", "error"):
            result.outcome = "skipped"
            longrepr = report.longrepr
            result.message = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
        elif report.passed and report.when == "call":
            result.outcome = "passed"


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Generator[None, None, None]:
    """After every fixture's teardown (pytest's own sessionfinish tears them down, and with
    them the faults heal into the history): close the run and write its report, whatever
    the teardown did. A wrapper, so that a heal failing in that teardown (the journal keeps
    the fault, the history its heal-failed mark) cannot cut the report, junit.xml or the lab's
    shutdown short; the failure is said in one line and the session does not exit 0."""
    state = session.config.stash.get(SESSION_KEY, None)
    try:
        yield
    except Exception as exc:
        if state is None:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        state.notes.append(f"the teardown failed: {redact(first)[:300]}")
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    finally:
        if state is not None:
            _finish_session(state, exitstatus)


def _finish_session(state: GamedaySession, exitstatus: int) -> None:
    if state.run is not None and not state.run.writer.closed:
        interrupted = (
            "the run was interrupted (Ctrl-C or SIGTERM)"
            if exitstatus == pytest.ExitCode.INTERRUPTED
            else None
        )
        report = state.run.finish(interrupted=interrupted)
        state.notes.append(f"report: {report}")
    if not state.lab_started:
        return
    if state.keep_lab:
        state.notes.append("the lab is still running (--keep-lab); stop it with `gameday lab down`")
        return
    from lab import control
    from lab.layout import LabLayout

    target = state.target
    layout = LabLayout.from_env(base_port=target.lab.base_port if target and target.lab else None)
    control.down(layout)
    state.notes.append("the lab this session started is down again")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    state = terminalreporter.config.stash.get(SESSION_KEY, None)
    for note in state.notes if state else []:
        terminalreporter.write_line(f"gameday: {note}")


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def scenario(request: pytest.FixtureRequest, target: Target) -> Iterator[Scenario]:
    """This scenario's slice of the run: its probes, its history, its verdicts."""
    from gameday.scenario import Scenario

    state = request.config.stash[SESSION_KEY]
    if state.run is None:
        pytest.skip("no run: scenarios need a target loaded at the start of the session")
    say = live_writer(request.config)
    title = scenario_title(request.node)
    state.run.result(request.node.nodeid, title).began = True
    scenario = Scenario.begin(state.run, request.node.nodeid, title, dry_run=state.dry_run, say=say)
    yield scenario
    scenario.end(request.node.stash.get(OUTCOME_KEY, "interrupted"))


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    """The deployment under test, as loaded (and checked) at the start of the session."""
    from gameday.target import load_target

    state = request.config.stash[SESSION_KEY]
    if state.target is None:
        state.target = load_target(state.target_name)
    return state.target


def _role(target: Target, role: str) -> Any:
    value = getattr(target, role)
    if not value:
        pytest.skip(f"target {target.name!r} has no {role} role")
    return value


@pytest.fixture
def load_balancer(target: Target) -> Any:
    return _role(target, "load_balancer")


@pytest.fixture
def database(target: Target) -> Any:
    return _role(target, "database")


@pytest.fixture
def cache(target: Target) -> Any:
    return _role(target, "cache")


@pytest.fixture
def servers(target: Target) -> Any:
    return _role(target, "servers")
