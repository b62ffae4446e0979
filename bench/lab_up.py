"""Benchmark: `lab up` from nothing to all healthy, and `lab down`, median of N cold starts.

Runs on its own port block so a lab on the default block is not disturbed:
    .venv/bin/python bench/lab_up.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from lab import control
from lab.layout import LabLayout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--base-port", type=int, default=17450)
    args = parser.parse_args()
    layout = LabLayout.from_env(
        base_port=args.base_port, state_dir=f"/tmp/gameday-bench-{os.getpid()}"
    )
    ups, downs = [], []
    try:
        for i in range(args.runs):
            ups.append(control.up(layout))
            started = time.monotonic()
            control.down(layout)
            downs.append(time.monotonic() - started)
            print(f"run {i + 1}: up {ups[-1]:.1f} s, down {downs[-1]:.1f} s", flush=True)
    finally:
        control.down(layout)
    print(
        f"lab up: median {statistics.median(ups):.1f} s (min {min(ups):.1f}, max {max(ups):.1f}); "
        f"lab down: median {statistics.median(downs):.1f} s; {args.runs} runs on "
        f"{os.cpu_count()} cores, {platform.platform()}"
    )


if __name__ == "__main__":
    main()
