"""Benchmark: N back-to-back unattended runs of a short plan on the lab.

Each run is `gameday run PLAN` as a scheduler would start it, into a ledger of the benchmark's
own. Counts what the issue asks: one ledger run per game day (its records), overlaps between
runs (from the ledger's start and end times), faults left behind (the undo journal after each
run, and the lab's health). Starts the lab if needed (and stops it after, if it started it):
    .venv/bin/python bench/gameday_runs.py --runs 10 --plan lab-smoke
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chaos.journal import Journal
from gameday.ledger import Ledger
from gameday.target import load_target
from lab import control, health
from lab.layout import LabLayout

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--plan", default="lab-smoke")
    args = parser.parse_args()
    layout = LabLayout.from_env()
    started_lab = not control.is_running(layout)
    control.up(layout)
    folder = Path(tempfile.mkdtemp(prefix="gameday-bench-runs-"))
    env = {**os.environ, "GAMEDAY_LEDGER_URL": f"sqlite:///{folder / 'ledger.sqlite3'}",
           "GAMEDAY_STATE_DIR": str(folder / "state")}  # fmt: skip
    os.environ.update(env)
    walls: list[float] = []
    codes: list[int] = []
    left: list[int] = []
    try:
        for i in range(args.runs):
            t0 = time.monotonic()
            out = subprocess.run([sys.executable, "-m", "gameday.cli", "run", args.plan],
                                 cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
            walls.append(time.monotonic() - t0)
            codes.append(out.returncode)
            pending = Journal(load_target("lab")).pending()
            left.append(len(pending))
            healthy = all(c.healthy for c in health.components(layout))
            print(f"run {i + 1}: exit {out.returncode}, {walls[-1]:.1f} s, faults left "
                  f"{len(pending)}, lab healthy {healthy}", flush=True)  # fmt: skip
            if out.returncode != 0:
                print(out.stdout[-1500:] + out.stderr[-500:])
    finally:
        if started_lab:
            control.down(layout)
    with Ledger.open() as ledger:
        records = ledger.records()
    shutil.rmtree(folder, ignore_errors=True)
    runs: dict[str, list[float]] = {}
    for r in records:
        span = runs.setdefault(r.run_id, [r.started_at, r.ended_at])
        span[0], span[1] = min(span[0], r.started_at), max(span[1], r.ended_at)
    spans = sorted(runs.values())
    overlaps = sum(1 for a, b in itertools.pairwise(spans) if b[0] < a[1])
    print(
        f"{args.runs} runs of {args.plan}: exit codes {codes}; ledger: {len(runs)} runs, "
        f"{len(records)} records; overlaps {overlaps}; faults left after the runs "
        f"{sum(left)}; wall per run median {statistics.median(walls):.1f} s "
        f"(min {min(walls):.1f}, max {max(walls):.1f}); load {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
