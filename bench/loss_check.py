"""Benchmark: verify 1,000,000 acknowledged writes against the database (the loss check).

Inserts a million ledger rows in bulk (as if a probe had written them), deletes a few,
then times the final read (one query) plus `lost_writes` on the sets.
    .venv/bin/python bench/loss_check.py --rows 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import psycopg

from gameday.checks.resilience import lost_writes
from gameday.target import load_target
from lab import control
from lab.layout import LabLayout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    layout = LabLayout.from_env()
    started = not control.is_running(layout)
    control.up(layout)
    target = load_target("lab")
    assert target.database is not None
    url = target.database.writer_url
    run_id = f"bench-{os.getpid()}"
    acknowledged = [str(i) for i in range(args.rows)]
    times = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS gameday_ledger (run_id text NOT NULL, probe text"
                " NOT NULL, seq bigint NOT NULL, sent_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (run_id, probe, seq))"
            )
            conn.execute(
                "INSERT INTO gameday_ledger (run_id, probe, seq)"
                " SELECT %s, 'ledger', g FROM generate_series(0, %s) g",
                (run_id, args.rows - 1),
            )
            conn.execute(
                "DELETE FROM gameday_ledger WHERE run_id = %s AND seq IN (7, 500000, 999999)",
                (run_id,),
            )
        for i in range(args.runs):
            t0 = time.monotonic()
            with psycopg.connect(url, autocommit=True) as conn:
                found = [
                    str(r[0])
                    for r in conn.execute(
                        "SELECT seq FROM gameday_ledger WHERE run_id = %s AND probe = 'ledger'",
                        (run_id,),
                    )
                ]
            verdict = lost_writes(acknowledged, [], found, probe="ledger")
            times.append(time.monotonic() - t0)
            print(f"run {i + 1}: {times[-1]:.2f} s: {verdict.message[:90]}", flush=True)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM gameday_ledger WHERE run_id = %s", (run_id,))
        if started:
            control.down(layout)
    print(
        f"{args.rows} acknowledged writes verified: median {statistics.median(times):.2f} s "
        f"(min {min(times):.2f}, max {max(times):.2f}); {args.runs} runs on {os.cpu_count()} "
        f"cores, {platform.platform()}"
    )


if __name__ == "__main__":
    main()
