"""Benchmark: the ledger with 10,000 past runs: appending a run and judging it, the history
table and the trend page over all of them.

Fills a fresh ledger with N past runs of one plan (3 scenarios each, realistic numbers and
verdicts), then times, K times each:
- append: one new run's 3 records, then its regression judgement (the median of the last 10
  passing runs of each scenario), as `gameday run` does at its end;
- history: `gameday history`'s query and table over the last N runs;
- trend: the same records rendered as the HTML trend page.
SQLite by default; --postgres URL for a PostgreSQL ledger:
    .venv/bin/python bench/ledger_trend.py --past 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from gameday.gamedays import judge_regressions
from gameday.ledger import Ledger, RunRecord
from gameday.plan import load_plan
from gameday.trend import history_table, trend_page

ROOT = Path(__file__).resolve().parent.parent
TITLES = ("Database failover under load loses no acknowledged write",
          "A crashed backend process is restarted without users noticing much",
          "The entrypoint answers its health check")  # fmt: skip


def run_records(run_id: str, key: str, ended: float, rng: random.Random) -> list[RunRecord]:
    out = []
    for title in TITLES:
        ttr = rng.gauss(1.3, 0.15)
        verdicts = [
            {"scenario": title, "title": title, "check": "time_to_recover", "ok": True,
             "message": f"ledger: recovered {ttr:.2f} s after the fault began",
             "measured": {"recovery_sec": ttr, "outage_sec": ttr - 0.2}},
            {"scenario": title, "title": title, "check": "availability", "ok": True,
             "message": "GET /health: 99.8% of 400 requests succeeded", "measured":
             {"ratio": 0.998, "total": 400, "failed": 1}},
        ]  # fmt: skip
        out.append(RunRecord(
            run_id=run_id, kind="scenario", plan="nightly", target_name="lab", target_key=key,
            harness_revision="abc1234", deployment_revision="v42", host="bench",
            started_at=ended - 30, ended_at=ended, scenario=f"features/x.feature::{title}",
            title=title, outcome="passed" if rng.random() > 0.05 else "failed", message="",
            duration_sec=30.0, metrics={"time_to_recover": ttr, "availability": 99.8,
                                        "lost_writes": 0.0, "p95": rng.gauss(12, 2)},
            verdicts=verdicts, report=f"/srv/gameday/reports/{run_id}/report.html",
        ))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--past", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL URL (an empty database) instead")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gameday-bench-ledger-"))
    url = args.postgres or f"sqlite:///{folder / 'ledger.sqlite3'}"
    loaded = load_plan("lab-smoke", project=ROOT)
    key = loaded.target.identity()
    rng = random.Random(7)
    t0 = time.monotonic()
    with Ledger.open(url) as ledger:
        batch: list[RunRecord] = []
        for i in range(args.past):
            batch += run_records(f"past-{i:05d}", key, 1_700_000_000 + i * 86400, rng)
            if len(batch) >= 3000:
                ledger.append(batch)
                batch = []
        ledger.append(batch)
    print(f"filled {args.past} runs ({args.past * len(TITLES)} records) in "
          f"{time.monotonic() - t0:.1f} s ({url.split(':')[0]})")  # fmt: skip
    appends, tables, pages, cpu = [], [], [], []
    for k in range(args.repeat):
        c = time.process_time()
        with Ledger.open(url) as ledger:
            t = time.monotonic()
            ledger.append(run_records(f"new-{k}", key, 2_700_000_000 + k, rng))
            judge_regressions(ledger, loaded, f"new-{k}")
            appends.append(time.monotonic() - t)
            t = time.monotonic()
            records = ledger.records(target_key=key, last_runs=args.past, verdicts=False)
            table = history_table(records)
            tables.append(time.monotonic() - t)
            t = time.monotonic()
            page = trend_page(records, page_dir=folder)
            pages.append(time.monotonic() - t)
        cpu.append(time.process_time() - c)
    shutil.rmtree(folder, ignore_errors=True)

    def show(what: str, walls: list[float]) -> None:
        median, low, high = (statistics.median(walls), min(walls), max(walls))
        print(
            f"{what}: median {median * 1000:.0f} ms (min {low * 1000:.0f}, max "
            f"{high * 1000:.0f}, {len(walls)} runs)"
        )

    show("append a run + judge its regressions", appends)
    show(f"history table over the last {args.past} runs ({len(records)} records)", tables)
    show(f"trend page over the last {args.past} runs", pages)
    total = [a + b + c for a, b, c in zip(appends, tables, pages, strict=True)]
    show("append + judge + table + trend page", total)
    show("the same, CPU time of this process (the machine is shared)", cpu)
    print(
        f"table {len(table.splitlines())} lines, page {len(page) / 1e6:.1f} MB; "
        f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
