"""A project folder of its own for tests of `gameday run` and the ledger plugin, without the lab.

It holds a copy of the harness's conftest.py and pytest.ini, a few feature files, and a
generic target whose entrypoint is a real HTTP server in the test process and whose faults
are real command faults on files:
- `marker`: creates the file `broken` (healed: removed; in effect while it exists), so
  "nothing injected" is a file that does not exist, and people "restore" by removing it;
- `outage`: makes the entrypoint answer 503 for $OUTAGE_SEC seconds (default 1), after
  which it recovers by itself, so a run's time to recover is what the test chose.
Runs are real processes (`gameday run`, pytest), the ledger a real SQLite file.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GAMEDAY = [sys.executable, "-m", "gameday.cli"]

HOLD_FEATURE = """\
@resilience @destructive
Feature: hold
  Scenario: A marker fault held for a while
    When the fault "marker" is injected
    And the fault lasts {hold} seconds
"""

OUTAGE_FEATURE = """\
@resilience @destructive
Feature: outage
  Scenario: A short outage of the entrypoint recovers
    Given the deployment is healthy
    And a steady load of 20 requests per second on "/health"
    When 1 seconds pass
    And the fault "outage" is injected
    Then "/health" answers again within 30 seconds
"""

OK_FEATURE = """\
@acceptance
Feature: ok
  Scenario: The entrypoint answers its health check
    When I request the health path through the entrypoint
    Then it answers 200

  Scenario: The entrypoint answers a wrong status
    When I request the health path through the entrypoint
    Then it answers 418
"""

TARGET = """\
name: fake
provider: generic
allow_destructive: true
entrypoint:
  url: {url}
  health_path: /health
  timeout_sec: 0.5
faults:
  marker:
    label: marker file
    inject: touch {folder}/broken
    heal: rm -f {folder}/broken
    check: test -e {folder}/broken
  outage:
    label: entrypoint outage
    inject: sh -c 'echo ${{OUTAGE_SEC:-1}} > {folder}/down'
    heal: rm -f {folder}/down
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    down_file: Path
    # When each down file (by its inode and mtime) was first seen, on the monotonic clock the
    # harness times its samples with: an outage timed by the file's wall-clock mtime was 2 %
    # short on this machine, whose wall clock is slewed and stepped (0.976 s for 1 s).
    seen: dict[tuple[int, int], float]

    def do_GET(self) -> None:
        status = 200
        try:
            st = self.down_file.stat()
            seconds = float(self.down_file.read_text().strip() or 0)
            began = self.seen.setdefault((st.st_ino, st.st_mtime_ns), time.monotonic())
            if time.monotonic() < began + seconds:
                status = 503
        except (OSError, ValueError):
            pass
        body = b"ok" if status == 200 else b"down"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", "server1")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Project:
    folder: Path
    url: str
    ledger_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def marker(self) -> Path:
        return self.folder / "broken"

    def write(self, relative: str, text: str) -> Path:
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def gameday(
        self, *args: str, timeout: float = 180, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*GAMEDAY, *args], cwd=self.folder, env={**self.env, **env}, capture_output=True,
            text=True, timeout=timeout,
        )  # fmt: skip

    def popen(
        self, args: list[str], *, ignore_sigint: bool = False, **env: str
    ) -> subprocess.Popen[str]:
        """`ignore_sigint`: started as nohup or a background job starts it."""
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
        return subprocess.Popen(
            args, cwd=self.folder, env={**self.env, **env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True, preexec_fn=ignore,
        )  # fmt: skip

    def pytest_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args]


def start_entrypoint(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = type("Handler", (_Handler,), {"down_file": folder / "down", "seen": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def running_project(folder: Path) -> Iterator[Project]:
    """A fake project whose fake deployment answers while the block runs."""
    server, url = start_entrypoint(folder)
    try:
        yield make_project(folder, url)
    finally:
        server.shutdown()
        server.server_close()


def make_project(folder: Path, url: str, *, hold: float = 2) -> Project:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "conftest.py", folder / "conftest.py")
    shutil.copy(ROOT / "pytest.ini", folder / "pytest.ini")
    ledger = f"sqlite:///{folder / 'ledger.sqlite3'}"
    env = {
        **os.environ,
        "GAMEDAY_LEDGER_URL": ledger,
        "GAMEDAY_STATE_DIR": str(folder / "state"),
        "GAMEDAY_REPORTS_DIR": str(folder / "reports"),
        "PYTHONPATH": str(ROOT),
    }
    project = Project(folder, url, ledger, env)
    project.write("features/hold.feature", HOLD_FEATURE.format(hold=hold))
    project.write("features/outage.feature", OUTAGE_FEATURE)
    project.write("features/ok.feature", OK_FEATURE)
    project.write("targets/fake.yaml", TARGET.format(url=url, folder=folder))
    project.write(
        "gamedays/hold.yaml",
        "target: targets/fake.yaml\nfeatures: [features/hold.feature]\n",
    )
    return project
