"""Benchmark: wall time of `pytest features/ -m acceptance` against a running lab, median of N.

Starts the default lab if needed (and stops it after, if it started it):
    .venv/bin/python bench/acceptance.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lab import control
from lab.layout import LabLayout

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    layout = LabLayout.from_env()
    started_lab = not control.is_running(layout)
    control.up(layout)
    walls = []
    try:
        for i in range(args.runs):
            started = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "features/", "-m", "acceptance", "-q",
                 "-p", "no:cacheprovider"],
                cwd=ROOT, capture_output=True, text=True,
            )  # fmt: skip
            walls.append(time.monotonic() - started)
            if proc.returncode != 0:
                sys.exit(f"run {i + 1} failed:\n{proc.stdout[-2000:]}")
            print(f"run {i + 1}: {walls[-1]:.2f} s ({proc.stdout.strip().splitlines()[-1]})")
    finally:
        if started_lab:
            control.down(layout)
    print(
        f"pytest features/ -m acceptance: median {statistics.median(walls):.2f} s wall "
        f"(min {min(walls):.2f}, max {max(walls):.2f}); {args.runs} runs on "
        f"{os.cpu_count()} cores, {platform.platform()}"
    )


if __name__ == "__main__":
    main()
