"""Fixtures for the harness's own tests: the shared lab on its default port block.

The tests' runs, undo journals and baselines go to a scratch folder of the session (unless
the shell names its own), never to the checkout's reports/ or the user's ~/.local/state:
set here at import, so the pytest subprocesses the tests start inherit it too.
"""

from __future__ import annotations

import atexit
import contextlib
import http.server
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lab.layout import LabLayout
from lab.wait import poll_until

# The lab's clients, the target's models and the fault registry are imported where a fixture
# uses them: every pytest session that passes a path under tests/ (a bad target file of
# tests/bad_targets, the foreign deployment's) loads this file, and those imports were half a
# second of its start-up.
if TYPE_CHECKING:
    from gameday.target import Target
    from tests.podman import Podman

# Tests press Ctrl-C on the runs they start, as a user's terminal does. A test session started
# in the background (`make test &`, a CI runner without a terminal) has SIGINT ignored, which
# every child inherits and the harness rightly leaves ignored: those runs would never hear it.
# Caught here, SIGINT is back to its default in every process the tests start.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_SCRATCH = Path(tempfile.mkdtemp(prefix="gameday-tests-"))
for _var, _sub in (
    ("GAMEDAY_REPORTS_DIR", "reports"),
    ("GAMEDAY_STATE_DIR", "state"),
    ("GAMEDAY_BASELINES_DIR", "baselines"),
):
    os.environ.setdefault(_var, str(_SCRATCH / _sub))


# Removed when the process ends, not at pytest's unconfigure: this module is also imported
# as `tests.conftest` by test modules (a second module object, a second folder) and by the
# processes some tests start; each left an empty folder in /tmp behind.
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)


# Tests that wait out the seed's verbatim alert timings (`for: 5m`, a 5-minute CPU rate: about
# 12 minutes) are left out of the default run, which must fit its time on a 2-core machine;
# the lab profile's short timings prove the same steps there. GAMEDAY_SEED_TIMINGS=1 runs them.
SEED_TIMINGS_ENV = "GAMEDAY_SEED_TIMINGS"


# Tests that prove again, at minutes each, what a shorter test of the default run proves
# already: the same scenarios on the Docker lab, more failure modes of a check on the lab whose
# pure test fails it in milliseconds. `make test` must stay under 20 minutes on a shared 2-core
# machine; `make test-long` (GAMEDAY_LONG_TESTS=1) runs them, `make test-all` runs everything.
LONG_TESTS_ENV = "GAMEDAY_LONG_TESTS"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skips = []
    if os.environ.get(SEED_TIMINGS_ENV) != "1":
        reason = (
            f"waits out the seed's verbatim alert timings (~12 min): {SEED_TIMINGS_ENV}=1 "
            "runs it (docs/monitoring.md)"
        )
        skips.append(("seed_timings", pytest.mark.skip(reason=reason)))
    if os.environ.get(LONG_TESTS_ENV) != "1":
        reason = f"long: left out of make test; make test-long ({LONG_TESTS_ENV}=1) runs it"
        skips.append(("long", pytest.mark.skip(reason=reason)))
    for item in items:
        for marker, skip in skips:
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


class HealthHandler(http.server.BaseHTTPRequestHandler):
    """Answers 200 "ok" to any GET, and logs nothing."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def entrypoint() -> Iterator[str]:
    """A stand-in entrypoint on loopback that answers 200 "ok" to any GET."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def running_lab() -> Iterator[LabLayout]:
    """The default lab, running. Started (and stopped after) only if it was not running."""
    from lab import control

    layout = LabLayout.from_env()
    started = not control.is_running(layout)
    control.up(layout)
    yield layout
    if started:
        control.down(layout)


def lab_target_text() -> str:
    """The target file of the lab on this process's base port (what `--target lab` loads).

    Tests that need a variant of the lab's target start from this text, never from
    targets/lab.yaml, so that a lab on another port block ($GAMEDAY_LAB_BASE_PORT) is the one
    they reach.
    """
    from lab.target import render_target

    return render_target(LabLayout.from_env())


def wait_until(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    def ready_yet() -> bool:
        try:
            return ready()
        except Exception:  # a service coming back answers with errors for a while
            return False

    if not poll_until(ready_yet, timeout=timeout):
        raise AssertionError(f"{what} not true after {timeout:.0f} s")


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port held bound and never listened on: connecting there is refused at once,
    and nobody else takes the port while it is held."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def lab_healthy(layout: LabLayout) -> bool:
    from lab import health

    return all(c.healthy for c in health.components(layout))


# -- a real Docker Engine API (podman's service), for tests marked docker --------------------


@pytest.fixture(scope="session")
def podman_engine() -> Iterator[Podman]:
    """podman's Docker-compatible API on a socket and storage of its own; every container and
    the service itself are removed when the session ends."""
    from tests.podman import PodmanUnavailable, start_podman

    try:
        engine = start_podman()
    except PodmanUnavailable as exc:
        pytest.skip(f"no Docker Engine API: {exc}")
    try:
        yield engine
    finally:
        engine.stop()


# -- for the chaos tests (journal, runner, command fault): opt in with usefixtures ---------


@pytest.fixture
def journal_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An undo journal of the test's own."""
    directory = tmp_path / "state"
    monkeypatch.setenv("GAMEDAY_STATE_DIR", str(directory))
    return directory


@pytest.fixture
def only_command_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the fault registry to the command fault (no lab modules, whatever their state)."""
    import chaos.registry

    monkeypatch.setattr(chaos.registry, "PROVIDER_MODULES", ("chaos.command",))
    monkeypatch.setattr(chaos.registry, "_registry", None)


def generic_target(name: str) -> Target:
    """A target with nothing but an entrypoint nobody listens on (no test reaches it)."""
    from gameday.target import Target

    raw = {"name": name, "provider": "generic", "entrypoint": {"url": "http://127.0.0.1:9"}}
    return Target.model_validate(raw).model_copy(update={"source": "tests/inline"})
