"""pytest wiring: options, `.feature` collection, the target and the lab for a session.

`pytest features/` collects Gherkin files directly (no test module per feature), loads the
target named by `--target` (default: the lab), starts the lab when the target is the lab and it
is not running, and refuses in one line (exit code 2) a broken target file or an entrypoint that
does not answer, before any scenario runs. Harness tests that collect no scenario never touch a
target.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gameday import facts
from gameday.gherkin import check_feature_file
from gameday.run import Run, ScenarioResult
from gameday.scenario import Scenario
from gameday.secrets import install_log_redaction, redact
from gameday.target import DEFAULT_TARGET, Target, TargetError, load_target

EXIT_BAD_INPUT = 2


@dataclass
class GamedaySession:
    """What this pytest session knows about its target; one per session, in config.stash."""

    target_name: str
    allow_destructive: bool
    dry_run: bool
    keep_lab: bool
    target: Target | None = None
    lab_started: bool = False
    run: Run | None = None
    notes: list[str] = field(default_factory=list)


SESSION_KEY = pytest.StashKey[GamedaySession]()
OUTCOME_KEY = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
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


def pytest_configure(config: pytest.Config) -> None:
    install_log_redaction()
    config.pluginmanager.register(ScenarioOutcomes(config), "gameday-scenario-outcomes")
    config.stash[SESSION_KEY] = GamedaySession(
        target_name=config.getoption("--target"),
        allow_destructive=config.getoption("--allow-destructive"),
        dry_run=config.getoption("--dry-run"),
        keep_lab=config.getoption("--keep-lab"),
    )


# -- collecting .feature files -----------------------------------------------------------------


class FeatureFile(pytest.Module):
    """A Gherkin file collected as if a module had called `scenarios()` on it."""

    def _getobj(self) -> types.ModuleType:
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


# -- the target and the lab for the session ------------------------------------------------


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly or not any(_is_scenario(i) for i in session.items):
        return
    state = session.config.stash[SESSION_KEY]
    try:
        state.target = load_target(state.target_name)
    except TargetError as exc:
        pytest.exit(redact(str(exc)), returncode=EXIT_BAD_INPUT)
    target = state.target
    say = live_writer(session.config)
    if target.provider == "lab":
        _ensure_lab(state, target, say)
    problem = entrypoint_problem(target)
    if problem:
        pytest.exit(f"{target.source}: entrypoint.url: {problem}", returncode=EXIT_BAD_INPUT)
    say(f"target {target.name} ({target.provider}) at {redact(target.entrypoint.url)}")
    _gate_destructive(session, state, target)
    state.run = Run.start(target)
    say(f"run {state.run.run_id}: history in {state.run.folder / 'history.jsonl'}")


def _gate_destructive(session: pytest.Session, state: GamedaySession, target: Target) -> None:
    """Destructive scenarios run only with an opt-in; otherwise they are skipped, saying why."""
    if state.allow_destructive or target.allow_destructive or state.dry_run:
        return
    reason = (
        f"destructive scenario: pass --allow-destructive or set allow_destructive: true "
        f"in {target.source}"
    )
    for item in session.items:
        if _is_scenario(item) and item.get_closest_marker("destructive"):
            item.add_marker(pytest.mark.skip(reason=reason))


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
    if control.is_running(layout):
        return
    say(f"starting the lab on 127.0.0.1:{layout.base_port}.. (gameday lab up)")
    try:
        elapsed = control.up(layout, progress=lambda line: say(f"lab {line}"))
    except control.LabError as exc:
        pytest.exit(f"lab: {exc}", returncode=1)
    state.lab_started = True
    say(f"lab up in {elapsed:.1f} s")


def entrypoint_problem(target: Target) -> str | None:
    """Why the entrypoint cannot be used, or None when it answers at all."""
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
        results = {r.nodeid: r for r in state.run.scenarios}
        result = results.get(report.nodeid)
        if result is None:
            result = ScenarioResult(report.nodeid, report.nodeid.partition("::")[2])
            state.run.scenarios.append(result)
        result.duration_sec += report.duration
        if report.failed:
            result.outcome = "failed"
            lines = report.longreprtext.strip().splitlines()
            result.message = lines[-1] if lines else ""
        elif report.skipped and result.outcome != "failed":
            result.outcome = "skipped"
            longrepr = report.longrepr
            result.message = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(SESSION_KEY, None)
    if state is not None and state.run is not None:
        report = state.run.finish()
        state.notes.append(f"report: {report}")
    if state is None or not state.lab_started:
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
    state = request.config.stash[SESSION_KEY]
    if state.run is None:
        pytest.skip("no run: scenarios need a target loaded at the start of the session")
    say = live_writer(request.config)
    doc = getattr(request.node, "obj", None).__doc__ or request.node.name
    title = doc.rpartition(": ")[2]
    scenario = Scenario.begin(state.run, request.node.nodeid, title, dry_run=state.dry_run, say=say)
    results = {r.nodeid: r for r in state.run.scenarios}
    if request.node.nodeid not in results:
        state.run.scenarios.append(ScenarioResult(request.node.nodeid, title))
    else:
        results[request.node.nodeid].title = title
    yield scenario
    scenario.end(request.node.stash.get(OUTCOME_KEY, "passed"))


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    """The deployment under test, as loaded (and checked) at the start of the session."""
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
