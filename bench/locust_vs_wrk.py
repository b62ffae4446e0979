"""Benchmark: locust's requests per CPU-second against wrk's, on HAProxy's static answer.

wrk (C, event loop) is the ceiling; locust (FastHttpUser, one process) is what the harness
uses. Both hit the lab's ``/lb/static``, which HAProxy answers itself. Each generator's CPU
time comes from its own rusage, so "per core" means requests per CPU-second of the generator
(HAProxy shares the machine and is not counted). A third configuration runs locust with the
per-request records on (GAMEDAY_RECORDS) to measure what recording costs.

    .venv/bin/python bench/locust_vs_wrk.py --seconds 10 --runs 3

Needs wrk (`apt-get install wrk`). Starts the default lab if needed (and stops it after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import control
from lab.configs import STATIC_PATH
from lab.layout import LabLayout

BENCH = Path(__file__).resolve().parent
LOCUSTFILE = BENCH / "static_locustfile.py"


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[str, float, float]:
    """Run a command; its output, wall seconds and CPU seconds (user + system, its own)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{cmd[0]} did not end within {timeout} s")
        time.sleep(0.05)
    wall = time.monotonic() - started
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    return out, wall, usage.ru_utime + usage.ru_stime


def wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out, _, cpu = _run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url], dict(os.environ), seconds + 30
    )
    match = re.search(r"(\d+) requests in ([\d.]+)s", out)
    if not match:
        raise RuntimeError(f"wrk printed no count:\n{out}")
    requests, span = int(match.group(1)), float(match.group(2))
    return {"rps": requests / span, "per_cpu_sec": requests / cpu, "cpu": cpu / span}


def locust(host: str, seconds: int, users: int, records: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="gameday-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAMEDAY_")}
        if records:
            env["GAMEDAY_RECORDS"] = f"{tmp}/records.jsonl"
        cmd = [
            sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", host,
            "--headless", "--only-summary", "-u", str(users), "-r", str(users),
            "-t", f"{seconds}s", "--json-file", f"{tmp}/stats", "--loglevel", "WARNING",
        ]  # fmt: skip
        _, _, cpu = _run(cmd, env, seconds + 60)
        entries = json.loads(Path(f"{tmp}/stats.json").read_text())
        requests = sum(int(e["num_requests"]) for e in entries)
        span = max(float(e["last_request_timestamp"]) - float(e["start_time"]) for e in entries)
        if records:
            lines = len(Path(f"{tmp}/records.jsonl").read_text().splitlines())
            assert lines == requests, f"{lines} records for {requests} requests"
    return {"rps": requests / span, "per_cpu_sec": requests / cpu, "cpu": cpu / span}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--users", type=int, default=20, help="locust users = wrk connections")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is not installed (apt-get install wrk)")
    layout = LabLayout.from_env()
    started_lab = not control.is_running(layout)
    if started_lab:
        control.up(layout)
    url = layout.entrypoint_url + STATIC_PATH
    results: dict[str, list[dict[str, float]]] = {"wrk": [], "locust": [], "locust+records": []}
    try:
        for run in range(args.runs):
            # Interleaved, so a noisy minute hurts all three alike.
            results["wrk"].append(wrk(url, args.seconds, args.users))
            results["locust"].append(locust(layout.entrypoint_url, args.seconds, args.users, False))
            results["locust+records"].append(
                locust(layout.entrypoint_url, args.seconds, args.users, True)
            )
            print(f"run {run + 1}: " + ", ".join(
                f"{k} {v[-1]['rps']:.0f} req/s ({v[-1]['per_cpu_sec']:.0f}/cpu-s)"
                for k, v in results.items()
            ), flush=True)  # fmt: skip
    finally:
        if started_lab:
            control.down(layout)

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}")
    print(f"{args.runs} runs x {args.seconds} s, {args.users} users/connections, medians:")
    for name, runs in results.items():
        per_cpu = [r["per_cpu_sec"] for r in runs]
        print(
            f"  {name:15s} {med(name, 'rps'):8.0f} req/s  {med(name, 'per_cpu_sec'):8.0f} "
            f"req per CPU-second ({min(per_cpu):.0f} - {max(per_cpu):.0f})  "
            f"(generator CPU {med(name, 'cpu') * 100:.0f} %)"
        )
    # Per run, then the median: the pairs ran back to back, under the same noise.
    ratios = [
        lo["per_cpu_sec"] / w["per_cpu_sec"]
        for lo, w in zip(results["locust"], results["wrk"], strict=True)
    ]
    costs = [
        1 - r["per_cpu_sec"] / lo["per_cpu_sec"]
        for r, lo in zip(results["locust+records"], results["locust"], strict=True)
    ]
    print(
        f"  locust / wrk per CPU-second: {statistics.median(ratios):.3f} "
        f"({min(ratios):.3f} - {max(ratios):.3f})"
    )
    print(
        f"  cost of per-request records: {statistics.median(costs) * 100:.1f} % "
        f"({min(costs) * 100:.1f} - {max(costs) * 100:.1f} %) of locust's per-CPU throughput"
    )


if __name__ == "__main__":
    main()
