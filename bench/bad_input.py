"""Benchmark: the bad-input corpus (tests/bad_targets/ and the special files), its outcomes and
how long each refusal takes, for `gameday target check FILE` and `pytest features/acceptance
--target FILE`.

    .venv/bin/python bench/bad_input.py                 # this checkout
    .venv/bin/python bench/bad_input.py --root DIR      # another checkout (e.g. before a fix);
                                                        # the corpus is copied into it

The goal is one line naming the file, exit code 2, within 2 s. A case still running after
60 s is killed and counted as a hang. Prints one row per case and command, then the totals, the
median and the slowest case, and the machine's load (`uptime`): the machine is shared.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_bad_input as corpus  # noqa: E402 (the corpus and its judge live with the test)

GOAL_SEC = 2.0


def verdict(case: corpus.Case, outcome: corpus.Outcome) -> str:
    """A short word for the outcome: ok, hang, traceback, exit N, wrong reason, not one line."""
    found = corpus.problems(case, outcome)
    if not found:
        return "ok"
    first = found[0]
    if first.startswith("hang"):
        return "hang"
    if any("Traceback" in p or "INTERNALERROR" in p for p in found):
        return "traceback"
    if first.startswith("exit code"):
        return f"exit {outcome.code}"
    if any("does not say" in p for p in found):
        return "wrong reason"  # one line, exit 2, but about something else (accepted the value)
    return "not one line"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to run")
    parser.add_argument("--workers", type=int, default=corpus.WORKERS)
    args = parser.parse_args()
    root = args.root.resolve()
    if root != ROOT:
        shutil.copytree(corpus.CORPUS, root / "tests" / "bad_targets", dirs_exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="gameday-bad-input-"))
    special, sockets = corpus.special_cases(folder)
    cases = corpus.corpus_cases() + special
    started = time.monotonic()
    try:
        outcomes = corpus.run_corpus(cases, workers=args.workers, root=root, every=True)
    finally:
        for s in sockets:
            s.close()
        shutil.rmtree(folder, ignore_errors=True)
    wall = time.monotonic() - started
    by_name = {c.name: c for c in cases}
    print(f"{'case':34} {'gameday target check':>24} {'pytest --target':>24}")
    tally: Counter[tuple[str, str]] = Counter()
    for case in cases:
        cells = []
        for command in ("gameday", "pytest"):
            outcome = outcomes[(case.name, command)]
            word = verdict(by_name[case.name], outcome)
            tally[(command, word)] += 1
            cells.append(f"{word} {outcome.seconds:6.2f} s")
        print(f"{case.name:34} {cells[0]:>24} {cells[1]:>24}")
    print()
    for command in ("gameday", "pytest"):
        seconds = [o.seconds for (_, c), o in outcomes.items() if c == command]
        words = ", ".join(f"{w}: {n}" for (c, w), n in sorted(tally.items()) if c == command)
        over = sum(s > GOAL_SEC for s in seconds)
        print(
            f"{command}: {len(seconds)} cases; {words}; median {statistics.median(seconds):.2f} s, "
            f"max {max(seconds):.2f} s, {over} over the {GOAL_SEC:g} s goal"
        )
    (name, command), slowest = max(outcomes.items(), key=lambda item: item[1].seconds)
    print(
        f"slowest: {name} ({command}) {slowest.seconds:.2f} s; wall time {wall:.0f} s, "
        f"{args.workers} at a time; checkout {root}"
    )
    print("uptime:" + subprocess.run(["uptime"], capture_output=True, text=True).stdout.rstrip())


if __name__ == "__main__":
    main()
