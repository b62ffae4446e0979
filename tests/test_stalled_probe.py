"""A probe that stalls during a fault is an outage, never "recovery 0 s, no outage seen".

The audit saw it on the lab's cache-crash game day: the cache writer's calls hung while the
master was gone, the few writes that had succeeded just before the crash were all the judge
saw, and it passed at once. Here a real Redis is frozen (SIGSTOP: every write blocks in its
call until the probe's socket timeout cuts it) right after the fault begins, and the engine's
own recovery wait must see the outage and measure its end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gameday.history import FaultEvent
from gameday.run import Run
from gameday.scenario import Scenario
from gameday.target import Target

REDIS_SERVER = shutil.which("redis-server")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]
RATE = 50  # writes per second: a write every 20 ms
FROZEN_SEC = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    assert REDIS_SERVER is not None
    port = _free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    try:
        yield proc, port
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait()


def _scenario(tmp_path: Path, port: int) -> Scenario:
    raw = {
        "name": "frozen-cache",
        "provider": "generic",
        "entrypoint": {"url": "http://127.0.0.1:9"},
        "cache": {"url": f"redis://127.0.0.1:{port}/0"},
    }
    target = Target.model_validate(raw).model_copy(update={"source": "tests/inline"})
    run = Run.start(target, tmp_path / "reports")
    return Scenario.begin(run, "t::frozen", "frozen cache", dry_run=False, say=lambda _: None)


def _fault_begins(scenario: Scenario) -> None:
    now = scenario.run.clock.now()
    scenario.run.record(FaultEvent("cache master crash", "inject-start", now))
    scenario.run.record(FaultEvent("cache master crash", "inject-end", now + 0.001))


def test_a_writer_frozen_in_its_calls_is_an_outage_until_the_cache_answers_again(
    tmp_path: Path, redis_process: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = redis_process
    scenario = _scenario(tmp_path, port)
    scenario.start_writer("cache", RATE)
    try:
        time.sleep(1.0)  # a steady state of acknowledged writes
        _fault_begins(scenario)
        os.kill(proc.pid, signal.SIGSTOP)  # every write now blocks in its call
        thawed = threading.Timer(FROZEN_SEC, os.kill, (proc.pid, signal.SIGCONT))
        thawed.start()
        verdict = scenario.recovered("cache", within_sec=30)
        thawed.join()
    finally:
        scenario.end("passed")
        scenario.run.finish()
    assert verdict.ok, verdict.message
    # Not "recovery 0 s, no outage seen": the writes failed while the cache was frozen. By
    # send time (how the checks time every request), the first write that succeeded was
    # sent at most one socket timeout (2 s) before the cache answered again.
    assert "no outage seen" not in verdict.message
    assert verdict.measured["recovery_sec"] >= FROZEN_SEC - 2.0 - 0.5, verdict.message
    assert verdict.measured["outage_sec"] > 0.5, verdict.message


def test_a_writer_frozen_to_the_end_has_not_recovered(
    tmp_path: Path, redis_process: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = redis_process
    scenario = _scenario(tmp_path, port)
    scenario.start_writer("cache", RATE)
    try:
        time.sleep(1.0)
        _fault_begins(scenario)
        os.kill(proc.pid, signal.SIGSTOP)
        verdict = scenario.recovered("cache", within_sec=2)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        scenario.end("failed")
        scenario.run.finish()
    assert verdict.ok is False
    assert "not recovered by the end" in verdict.message, verdict.message
