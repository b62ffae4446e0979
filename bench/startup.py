"""Benchmark: start-up cost, CPU time (user + system) of fresh processes, median of N.

`gameday --help`, `import gameday.pytest_plugin`, and a bare `python -c pass` for scale. Run
twice: as the machine runs them (this project's machines set PYTHONDONTWRITEBYTECODE=1, so
every process compiles the project's modules again) and with bytecode caching (as an installed
gameday runs: the first run writes __pycache__/, the rest read it).

    .venv/bin/python bench/startup.py --runs 9
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COMMANDS = {
    "gameday --help": [str(BIN / "gameday"), "--help"],
    "import gameday.pytest_plugin": [sys.executable, "-c", "import gameday.pytest_plugin"],
    "python -c pass": [sys.executable, "-c", "pass"],
}
GOALS = {"gameday --help": 0.25, "import gameday.pytest_plugin": 0.35}


def cpu_of(command: list[str], env: dict[str, str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    plain = dict(os.environ)
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    settings = [
        (f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')}", plain),
        ("bytecode cached", cached),
    ]
    print(f"start-up CPU, median of {args.runs} on {os.cpu_count()} cores, {platform.platform()}")
    for label, env in settings:
        for name, command in COMMANDS.items():
            cpu_of(command, env)  # warm the page cache (and write __pycache__ where allowed)
            cpus = sorted(cpu_of(command, env) for _ in range(args.runs))
            goal = f" (goal <= {GOALS[name]} s)" if name in GOALS else ""
            print(
                f"  {label:>28}  {name:<30} {statistics.median(cpus):.3f} s CPU "
                f"({cpus[0]:.3f}-{cpus[-1]:.3f}){goal}"
            )
    print("load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
