"""pytest wiring: options, `.feature` collection, the target and the lab for a session.

`pytest features/` collects Gherkin files directly (no test module per feature), loads the
target named by `--target` (default: the lab), starts the lab when the target is the lab and it
is not running, and refuses in one line (exit code 2) a broken target file or an entrypoint that
does not answer, before any scenario runs. Harness tests that collect no scenario never touch a
target.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

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
    notes: list[str] = field(default_factory=list)


SESSION_KEY = pytest.StashKey[GamedaySession]()


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
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"gameday: {line}")

    if target.provider == "lab":
        _ensure_lab(state, target, say)
    problem = entrypoint_problem(target)
    if problem:
        pytest.exit(f"{target.source}: entrypoint.url: {problem}", returncode=EXIT_BAD_INPUT)
    say(f"target {target.name} ({target.provider}) at {redact(target.entrypoint.url)}")


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
    try:
        httpx.get(url, timeout=target.entrypoint.timeout_sec)
    except Exception as exc:  # whatever stops us reaching it is the one line to show
        return f"{redact(url)} does not answer ({type(exc).__name__}: {exc})"
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(SESSION_KEY, None)
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
