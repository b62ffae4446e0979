"""Locust as the harness runs it: one process or a master and workers, bounded, as subprocesses.

locust is never imported here (its gevent monkey-patching breaks boto3 and pytest in the same
process): `LocustPlan` says what to run, `LocustProcesses` starts and always stops the
processes, and `BackgroundLoad` runs a plan for the length of a scenario while it tails the
users' per-request records (loadtests/records.py) into the run's history. Each locust request
becomes a `Sample` of probe ``locust <name>`` ("locust product page"), timed on the run's
clock, so locust traffic lands on the same timeline as the probes and the faults.

Limits: `check_limits` refuses a load larger than the target's ``load:`` section allows, and
the harness-wide caps below hold for every target.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gameday.clock import Clock
from gameday.history import MARK_LOCUST_SUMMARY, ErrorKind, Mark, Record, Sample
from gameday.target import Target
from loadtests.pacing import MAX_REQUESTS_PER_USER_SEC
from loadtests.records import FLUSH_INTERVAL_SEC, RECORDS_ENV

REPO_DIR = Path(__file__).resolve().parent.parent
LOCUSTFILE = REPO_DIR / "loadtests" / "locustfile.py"

# Harness-wide caps, whatever the target says.
MAX_USERS = 1000
MAX_DURATION_SEC = 3600
MAX_WORKERS = 32
# Users finish their task within this after a stop (locust's --stop-timeout).
STOP_TIMEOUT_SEC = 10
# How long a master waits for its workers to connect before it gives up.
WORKERS_CONNECT_SEC = 30
# After SIGTERM: locust stops its users, writes its statistics and exits; then SIGKILL.
TERMINATE_GRACE_SEC = 15.0
TAIL_INTERVAL_SEC = 0.25

LOCUST_PROBE_PREFIX = "locust "
# The journeys of loadtests/locustfile.py, by the words a scenario uses.
USER_CLASSES: dict[str, tuple[str, ...]] = {
    "browsing": ("BrowsingUser",),
    "shopping": ("ShoppingUser",),
    "all": ("BrowsingUser", "ShoppingUser"),
}


class LoadLimitError(Exception):
    """The load asked for is more than the target or the harness allows (one line)."""


class LoadRunError(Exception):
    """locust did not start, did not end, or wrote no statistics (one line)."""


def check_limits(
    target: Target, *, users: int = 0, rps: float = 0.0, duration_sec: float = 0.0
) -> None:
    """Refuse a load over the harness caps or the target's `load.max_users` / `load.max_rps`.

    `rps` is the ceiling of the whole load asked for: the probes' rates plus
    `MAX_REQUESTS_PER_USER_SEC` per locust user.
    """
    where = f"{target.source or target.name}: load"
    if users < 0 or users > MAX_USERS:
        raise LoadLimitError(f"{users} users: must be 0..{MAX_USERS} (harness cap)")
    if duration_sec < 0 or duration_sec > MAX_DURATION_SEC:
        raise LoadLimitError(f"{duration_sec:g} s of load: must be 0..{MAX_DURATION_SEC} s")
    cap = target.load
    if cap.max_users is not None and users > cap.max_users:
        raise LoadLimitError(f"{where}.max_users is {cap.max_users}: refusing {users} users")
    if cap.max_rps is not None and rps > cap.max_rps:
        raise LoadLimitError(
            f"{where}.max_rps is {cap.max_rps:g}: refusing a load of up to {rps:g} requests/s"
        )


def journeys_refusal(target: Target) -> str | None:
    """Why loadtests/locustfile.py's journeys cannot run against `target`, or None.

    They browse, sign in and order through the reference CloudMart API; a target whose `app:`
    declares another API (or none) would get nothing but 404s from them.
    """
    from gameday.target import App

    reference = App()
    app = target.app
    if (app.product_path, app.sessions, app.orders) == (
        reference.product_path,
        reference.sessions,
        reference.orders,
    ):
        return None
    return (
        f"target {target.name!r}: the locust journeys (loadtests/locustfile.py) speak the "
        "reference CloudMart API and the target's app: declares another; run a locustfile of "
        "your own (docs/load.md)"
    )


def users_ceiling_rps(users: int) -> float:
    """The most requests per second `users` CloudMart users can send (loadtests/pacing.py)."""
    return users * MAX_REQUESTS_PER_USER_SEC


# -- command lines -------------------------------------------------------------------------


@dataclass(frozen=True)
class LocustPlan:
    """One headless locust run: users, how long, where its files go, how many workers."""

    host: str
    users: int
    spawn_rate: float
    run_time_sec: int
    folder: Path
    user_classes: tuple[str, ...] = ()
    workers: int = 0
    records: bool = False
    locustfile: Path = LOCUSTFILE

    def __post_init__(self) -> None:
        if not 1 <= self.users <= MAX_USERS:
            raise LoadLimitError(f"{self.users} users: must be 1..{MAX_USERS} (harness cap)")
        if not (math.isfinite(self.spawn_rate) and self.spawn_rate > 0):
            raise LoadLimitError(f"spawn rate {self.spawn_rate:g}: must be more than 0")
        if not 1 <= self.run_time_sec <= MAX_DURATION_SEC:
            raise LoadLimitError(
                f"{self.run_time_sec} s: must be 1..{MAX_DURATION_SEC} s (harness cap)"
            )
        if not 0 <= self.workers <= MAX_WORKERS:
            raise LoadLimitError(f"{self.workers} workers: must be 0..{MAX_WORKERS}")

    @property
    def stats_file(self) -> Path:
        """locust's final statistics (--json-file), written by the master or the one process."""
        return self.folder / "stats.json"

    @property
    def records_file(self) -> Path:
        """Per-request records; with workers, one file per worker beside this name."""
        return self.folder / "records.jsonl"

    @property
    def deadline_sec(self) -> float:
        """How long the run may take at most, start-up and shutdown included."""
        return self.run_time_sec + STOP_TIMEOUT_SEC + WORKERS_CONNECT_SEC + 30

    def commands(self, master_port: int = 0) -> list[list[str]]:
        """The command lines: the one process (or the master) first, then each worker."""
        base = [sys.executable, "-m", "locust", "-f", str(self.locustfile)]
        main = [
            *base,
            *("--host", self.host.rstrip("/"), "--headless", "--only-summary"),
            *("-u", str(self.users), "-r", f"{self.spawn_rate:g}"),
            *("-t", f"{self.run_time_sec}s", "--stop-timeout", str(STOP_TIMEOUT_SEC)),
            *("--json-file", str(self.stats_file.with_suffix(""))),
        ]
        if not self.workers:
            return [main + list(self.user_classes)]
        main += [
            *("--master", "--master-bind-host", "127.0.0.1"),
            *("--master-bind-port", str(master_port)),
            *("--expect-workers", str(self.workers)),
            *("--expect-workers-max-wait", str(WORKERS_CONNECT_SEC)),
            *self.user_classes,
        ]
        worker = [
            *base,
            *("--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)),
            *self.user_classes,
        ]
        return [main] + [list(worker) for _ in range(self.workers)]

    def environment(self) -> dict[str, str]:
        """The caller's environment without GAMEDAY_ settings that would change the run."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAMEDAY_")}
        if self.records:
            env[RECORDS_ENV] = str(self.records_file)
        return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocustProcesses:
    """The processes of a plan, started together and always stopped together.

    Workers start first so the master finds them; each process is its own process group, so a
    stop reaches what it started too. `stop()` is idempotent: SIGTERM (locust stops its users
    and writes its statistics), then SIGKILL after `TERMINATE_GRACE_SEC`.
    """

    def __init__(self, plan: LocustPlan) -> None:
        self.plan = plan
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> LocustProcesses:
        plan = self.plan
        plan.folder.mkdir(parents=True, exist_ok=True)
        plan.stats_file.unlink(missing_ok=True)
        commands = plan.commands(free_port() if plan.workers else 0)
        # Workers before the master: the master then counts them in as soon as it binds.
        order = [*range(1, len(commands)), 0]
        started: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for i in order:
                # The child keeps its own descriptor of the log; ours can close at once.
                log = plan.folder / ("locust.log" if i == 0 else f"worker-{i}.log")
                with log.open("wb") as out:
                    started[i] = subprocess.Popen(
                        commands[i],
                        cwd=REPO_DIR,
                        env=plan.environment(),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
        finally:
            self.procs = [started[i] for i in sorted(started)]
        return self

    @property
    def main(self) -> subprocess.Popen[bytes]:
        return self.procs[0]

    def wait(self, timeout: float) -> int:
        """Wait for the master (or the one process) to end; LoadRunError if it does not."""
        try:
            code = self.main.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LoadRunError(
                f"locust did not end within {timeout:.0f} s (log: {self.plan.folder}/locust.log)"
            ) from None
        # Workers quit when their master says so; give them their grace, then stop them.
        for proc in self.procs[1:]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=TERMINATE_GRACE_SEC)
        return code

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE_SEC
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> LocustProcesses:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_stats(plan: LocustPlan) -> list[dict[str, Any]]:
    """locust's final statistics (entries of --json-file); LoadRunError if missing or broken."""
    if not plan.stats_file.exists():
        raise LoadRunError(f"locust wrote no statistics (log: {plan.folder}/locust.log)")
    try:
        entries = json.loads(plan.stats_file.read_text())
    except json.JSONDecodeError as exc:
        raise LoadRunError(f"{plan.stats_file}: not JSON: {exc}") from None
    if not isinstance(entries, list):
        raise LoadRunError(f"{plan.stats_file}: not a list of statistics entries")
    return entries


def run(plan: LocustPlan) -> list[dict[str, Any]]:
    """Run a plan to its end; locust's final statistics entries."""
    with LocustProcesses(plan) as procs:
        code = procs.wait(plan.deadline_sec)
    # 1 means some requests failed: the statistics say which; anything else is a crash.
    if code not in (0, 1):
        raise LoadRunError(f"locust exited with code {code} (log: {plan.folder}/locust.log)")
    return read_stats(plan)


# -- per-request records into the history --------------------------------------------------


_TIMEOUT = re.compile(r"timed? ?out|timeout", re.IGNORECASE)
_REFUSED = re.compile(r"refused", re.IGNORECASE)
_RESET = re.compile(r"reset|closed|disconnect|broken pipe|EOF", re.IGNORECASE)
_DNS = re.compile(r"name or service|getaddrinfo|resolve", re.IGNORECASE)


def error_kind_of(status: int | None, error: str | None) -> ErrorKind | None:
    """The history's error kind for a locust record (None when the request succeeded)."""
    if error is None and (status is None or status < 400):
        return None if status is not None else "other"
    if status is not None and status >= 400:
        return "http"
    text = error or ""
    for pattern, kind in (
        (_TIMEOUT, "timeout"), (_REFUSED, "refused"), (_RESET, "reset"), (_DNS, "dns"),
    ):  # fmt: skip
        if pattern.search(text):
            return kind  # type: ignore[return-value]
    return "other"


def sample_of(record: Mapping[str, Any], seq: int, clock: Clock) -> Sample:
    """One record of loadtests/records.py as a history sample on the run's clock.

    Records carry wall-clock send times from the locust process on the same host; the clock's
    anchor maps them onto run time (a wall-clock step during the run would shift them).
    """
    status = record.get("status")
    error = record.get("error")
    kind = error_kind_of(status if isinstance(status, int) else None, error)
    duration_ms = record.get("duration_ms")
    return Sample(
        probe=LOCUST_PROBE_PREFIX + str(record["name"]),
        seq=seq,
        sent=float(record["t"]) - clock.wall_anchor,
        duration=float(duration_ms) / 1000 if isinstance(duration_ms, int | float) else None,
        ok=kind is None,
        status=status if isinstance(status, int) else None,
        error=kind,
        server=record.get("served_by") or None,
    )


@dataclass
class RecordTail:
    """Reads the new complete lines of a records file (and its workers' files) on each call."""

    path: Path
    _offsets: dict[Path, int] = field(default_factory=dict)

    def files(self) -> list[Path]:
        siblings = self.path.parent.glob(f"{self.path.stem}.*{self.path.suffix}")
        return sorted({p for p in [self.path, *siblings] if p.exists()})

    def read_new(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for path in self.files():
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next call
            for line in chunk[:end].splitlines():
                if line.strip():
                    out.append(json.loads(line))
            self._offsets[path] = offset + end
        out.sort(key=lambda r: float(r["t"]))
        return out


class BackgroundLoad:
    """Locust users for the length of a scenario, merged live into the run's history.

    A probe to the scenario (`name`, `start`, `stop`): started by a Given-step, stopped when the
    scenario ends. Bounded by `plan.run_time_sec` even if nobody stops it.
    """

    name = "locust"

    def __init__(self, plan: LocustPlan, *, clock: Clock, record: Callable[[Record], None]) -> None:
        self.plan = plan
        self.clock = clock
        self.record = record
        self.merged = 0
        self.stats: list[dict[str, Any]] = []
        self._procs = LocustProcesses(plan)
        self._tail = RecordTail(plan.records_file)
        self._stop = threading.Event()
        self._sending = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="locust-tail", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> BackgroundLoad:
        self._procs.start()
        self._thread.start()
        return self

    def _merge(self) -> None:
        with self._lock:  # the tail thread and the final drain in stop()
            for rec in self._tail.read_new():
                self.record(sample_of(rec, self.merged, self.clock))
                self.merged += 1
            if self.merged:
                self._sending.set()

    def wait_sending(self, timeout: float) -> bool:
        """Until the first request is in the history (locust takes seconds to start)."""
        return self._sending.wait(timeout)

    def settle(self) -> None:
        """Merge what locust has sent so far: lines wait up to a flush interval in locust."""
        time.sleep(FLUSH_INTERVAL_SEC + TAIL_INTERVAL_SEC)
        self._merge()

    def _follow(self) -> None:
        while not self._stop.wait(TAIL_INTERVAL_SEC):
            self._merge()

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._procs.stop()
        self._stop.set()
        self._thread.join(timeout=5)
        self._merge()
        with contextlib.suppress(LoadRunError):
            self.stats = read_stats(self.plan)
        total = sum(int(e.get("num_requests", 0)) for e in self.stats)
        failures = sum(int(e.get("num_failures", 0)) for e in self.stats)
        self.record(
            Mark(
                name=MARK_LOCUST_SUMMARY,
                at=self.clock.now(),
                detail={
                    "users": str(self.plan.users),
                    "requests": str(total),
                    "failures": str(failures),
                    "records": str(self.merged),
                },
            )
        )
