"""Benchmarks of the lab's monitoring (numbers for docs/benchmarks.md).

    .venv/bin/python bench/monitoring.py detect --runs 5     # on the running lab
    .venv/bin/python bench/monitoring.py stop --runs 5       # on the running lab
    .venv/bin/python bench/monitoring.py steady --seconds 300
    .venv/bin/python bench/monitoring.py lab-up --runs 3 --base-port 18750

- detect: a fault (disk fill, cache crash, in turn) and its alert; the time to detect as the
  harness reports it (its first sighting) against Alertmanager's own timestamp (the alert's
  startsAt, Prometheus's firing time), both from the fault's start. The claim: they agree
  within 1 s.
- stop: a stop condition on the alert; how long after the alert arrived the fault's heal
  began (the claim: within 1 s).
- steady: the lab left alone for N seconds under a light load on its health path; alerts
  seen by the harness and, independently, Prometheus's ALERTS series over the same window.
- lab-up: cold `lab up` with and without monitoring (GAMEDAY_LAB_MONITORING), medians and
  their ratio, on a port block of its own.
Each prints the machine's load (`uptime`) first and last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from chaos.journal import Journal
from chaos.registry import fault_for
from chaos.runner import FaultSession
from gameday.checks import monitoring as mc
from gameday.clock import Clock
from gameday.history import HistoryWriter, Mark, RunHeader
from gameday.monitoring import AlertStop, AlertWatch, settle
from gameday.target import load_target
from lab import control
from lab.layout import LabLayout

FAULTS = (("disk-fill", {"server": "server1"}, "HighDiskUsage"), ("cache-crash", {}, "RedisDown"))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def one_run(i: int, *, stop: bool, folder: Path) -> tuple[str, float, float | None, float | None]:
    """(alert, harness's time to detect, Alertmanager's, stop delay) of one fault."""
    target = load_target("lab")
    name, params, alert = FAULTS[i % len(FAULTS)]
    clock = Clock()
    history = HistoryWriter(folder / f"run{i}.jsonl", RunHeader.create(f"bench{i}", "lab", clock))
    watch = AlertWatch(target, clock=clock, record=history.append)
    watch.start()
    try:
        if settle(watch, 180):
            raise SystemExit(f"alerts still firing before run {i}: {watch.firing()}")
        with FaultSession(log=lambda line: None, signals=False) as session:
            start = clock.now()
            active = session.inject(
                fault_for(target, name, dict(params)),
                journal=Journal(target),
                run_id=f"bench{i}",
                history=history,
                clock=clock,
                dry_run=False,
            )
            if stop:
                session.watch(active, [AlertStop(watch, names=[alert])], interval_sec=0.5)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                events = mc.alert_events(r for r in history.records() if isinstance(r, Mark))
                fired = mc.alert_fired(
                    events, alert, fault_start=start, within_sec=120, wall_anchor=clock.wall_anchor
                )
                aborted = any(
                    r.phase == "abort"
                    for r in history.records()
                    if not isinstance(r, Mark) and hasattr(r, "phase")
                )
                if fired.ok and (aborted or not stop):
                    break
                time.sleep(0.25)
        delay = None
        if stop:
            faults = [r for r in history.records() if hasattr(r, "phase")]
            events = mc.alert_events(r for r in history.records() if isinstance(r, Mark))
            verdict = mc.stopped_by(events, faults, alert, within_sec=1)  # type: ignore[arg-type]
            delay = verdict.measured.get("stop_delay_sec")
        return (
            alert,
            fired.measured["time_to_detect_sec"],
            fired.measured.get("monitoring_detect_sec"),
            delay,
        )
    finally:
        watch.stop()
        history.close()
        layout = LabLayout.from_env()
        control.up(layout)  # the cache crash's heal is `up`; this waits until all is healthy


def detect(runs: int, *, stop: bool) -> None:
    print(uptime())
    folder = Path(tempfile.mkdtemp(prefix="gameday-bench-monitoring-"))
    diffs, delays = [], []
    for i in range(runs):
        alert, harness, monitoring, delay = one_run(i, stop=stop, folder=folder)
        diff = None if monitoring is None else harness - monitoring
        if diff is not None:
            diffs.append(diff)
        if delay is not None:
            delays.append(delay)
        print(
            f"run {i + 1}: {alert}: harness {harness:.2f} s, Alertmanager {monitoring:.2f} s, "
            f"difference {diff:+.2f} s"
            + (f"; stopped {delay:.2f} s after it arrived" if delay is not None else ""),
            flush=True,
        )
    if diffs:
        print(
            f"detect: {len(diffs)} runs, difference median {statistics.median(diffs):+.2f} s, "
            f"largest {max(diffs, key=abs):+.2f} s"
        )
    if delays:
        print(
            f"stop: heal began {statistics.median(delays):.2f} s (median) after the alert "
            f"arrived, at most {max(delays):.2f} s"
        )
    print(uptime())


def steady(seconds: float) -> None:
    print(uptime())
    target = load_target("lab")
    layout = LabLayout.from_env()
    clock = Clock()
    records: list[object] = []
    watch = AlertWatch(target, clock=clock, record=records.append)
    watch.start()
    if settle(watch, 180):
        raise SystemExit(f"alerts firing before the steady state: {watch.firing()}")
    begin = time.time()
    stop = threading.Event()
    answered = [0, 0]

    def load() -> None:  # 10 requests a second on the health path, bounded by `seconds`
        with httpx.Client(timeout=2) as client:
            while not stop.wait(0.1):
                try:
                    ok = client.get(layout.entrypoint_url + "/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                answered[0 if ok else 1] += 1

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(seconds)
    stop.set()
    worker.join()
    watch.stop()
    fired = [r for r in records if isinstance(r, Mark) and r.name == "alert-firing"]
    # Prometheus's own record of the same window: every alert pending or firing in it.
    query = f"count_over_time(ALERTS[{int(time.time() - begin)}s])"
    series = httpx.get(
        f"{layout.prometheus_url}/api/v1/query", params={"query": query}, timeout=10
    ).json()["data"]["result"]
    print(
        f"steady: {seconds:.0f} s, {answered[0]} health requests answered "
        f"({answered[1]} failed); alerts seen firing by the harness: {len(fired)}; "
        f"ALERTS series in Prometheus for the window: {len(series)}"
    )
    for mark in fired:
        print(f"  {mark.detail}")
    print(uptime())


def lab_up(runs: int, base_port: int) -> None:
    print(uptime())
    times: dict[str, list[float]] = {"without": [], "with": []}
    for i in range(runs):
        for mode in ("without", "with"):
            os.environ["GAMEDAY_LAB_MONITORING"] = "1" if mode == "with" else "0"
            layout = LabLayout.from_env(
                base_port=base_port, state_dir=f"/tmp/gameday-bench-up-{os.getpid()}"
            )
            try:
                times[mode].append(control.up(layout))
            finally:
                control.down(layout)
            print(f"run {i + 1} {mode} monitoring: up {times[mode][-1]:.1f} s", flush=True)
    with_, without = statistics.median(times["with"]), statistics.median(times["without"])
    print(
        f"lab up: median {without:.1f} s without monitoring, {with_:.1f} s with; ratio "
        f"{with_ / without:.2f} ({runs} runs each, {os.cpu_count()} cores)"
    )
    print(uptime())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("detect", "stop"):
        sub.add_parser(name).add_argument("--runs", type=int, default=5)
    sub.add_parser("steady").add_argument("--seconds", type=float, default=300)
    up = sub.add_parser("lab-up")
    up.add_argument("--runs", type=int, default=3)
    up.add_argument("--base-port", type=int, required=True)
    args = parser.parse_args()
    if args.what in ("detect", "stop"):
        detect(args.runs, stop=args.what == "stop")
    elif args.what == "steady":
        steady(args.seconds)
    else:
        lab_up(args.runs, args.base_port)


if __name__ == "__main__":
    main()
