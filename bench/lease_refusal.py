"""Benchmark: how fast a second game day is refused while another holds the target.

The benchmark process takes the lab target's lease itself (a live holder), then times
`gameday run PLAN` from process start to its exit (code 3), N times; for scale, the bare
start of a Python process and of `gameday --help`. Needs no running lab (nothing is touched):
    .venv/bin/python bench/lease_refusal.py --runs 10 --plan lab-smoke
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gameday.ledger import Ledger
from gameday.target import load_target

ROOT = Path(__file__).resolve().parent.parent


def timed(
    cmd: list[str], env: dict[str, str], runs: int, code: int
) -> tuple[list[float], list[float]]:
    """Wall times, and CPU times (user + system) of the process: the machine is shared."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        walls.append(time.monotonic() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if out.returncode != code:
            sys.exit(f"{cmd}: exit {out.returncode}, expected {code}:\n{out.stderr[-1000:]}")
    return walls, cpus


def show(what: str, times: tuple[list[float], list[float]]) -> None:
    walls, cpus = times
    print(f"{what}: wall median {statistics.median(walls) * 1000:.0f} ms (min "
          f"{min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f}); CPU median "
          f"{statistics.median(cpus) * 1000:.0f} ms; {len(walls)} runs")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--plan", default="lab-smoke")
    parser.add_argument("--ledger", help="ledger URL (default: a fresh SQLite file)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gameday-bench-lease-"))
    url = args.ledger or f"sqlite:///{folder / 'ledger.sqlite3'}"
    env = {**os.environ, "GAMEDAY_LEDGER_URL": url, "GAMEDAY_STATE_DIR": str(folder)}
    with Ledger.open(url) as ledger:
        lease, _ = ledger.acquire(load_target("lab"), plan="bench-holder", ttl_sec=3600)
        try:
            python = timed([sys.executable, "-c", "pass"], env, args.runs, 0)
            helps = timed([sys.executable, "-m", "gameday.cli", "--help"], env, args.runs, 0)
            refused = timed([sys.executable, "-m", "gameday.cli", "run", args.plan], env,
                            args.runs, 3)  # fmt: skip
        finally:
            ledger.release(lease)
    shutil.rmtree(folder, ignore_errors=True)
    show("python -c pass", python)
    show("gameday --help", helps)
    show(f"gameday run {args.plan}, refused (exit 3)", refused)
    print(f"ledger {ledger.dialect}; load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
