"""Benchmark: the HTTP probe's schedule at a fixed rate against the lab's entrypoint.

Achieved rate vs asked, send-time jitter (actual send - due time) and the harness's CPU.
    .venv/bin/python bench/probe_schedule.py --rate 100 --seconds 60 --runs 3
Starts the default lab if needed (and stops it after, if it started it).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import threading
import time

from gameday.clock import Clock
from gameday.history import Sample
from gameday.probes.http import HttpProbe
from gameday.probes.schedule import FixedRate, Tick
from gameday.target import load_target
from lab import control
from lab.layout import LabLayout


def one_run(rate: int, seconds: int) -> dict[str, float]:
    target = load_target("lab")
    clock = Clock()
    samples: list[Sample] = []
    ticks: list[Tick] = []
    lock = threading.Lock()

    def record(sample: Sample) -> None:
        with lock:
            samples.append(sample)

    probe = HttpProbe(target, path="/health", rate=rate, clock=clock, record=record,
                      limit=rate * seconds)  # fmt: skip
    # Observe the scheduler's ticks (due vs sent) without changing what the probe does.
    send = probe._send

    def observed(tick: Tick) -> None:
        with lock:
            ticks.append(tick)
        send(tick)

    probe._scheduler = FixedRate(observed, rate=rate, clock=clock, timeout_sec=2.0,
                                 limit=rate * seconds, name="bench")  # fmt: skip
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    probe.start()
    probe.join()
    wall = time.monotonic() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    sent = sorted(t.sent for t in ticks)
    achieved = (len(sent) - 1) / (sent[-1] - sent[0])
    jitter = sorted((t.sent - t.due) * 1000 for t in ticks)
    return {
        "achieved_rate": achieved,
        "rate_error_pct": abs(achieved - rate) / rate * 100,
        "jitter_p50_ms": jitter[len(jitter) // 2],
        "jitter_p99_ms": jitter[int(len(jitter) * 0.99) - 1],
        "cpu_pct_of_core": cpu / wall * 100,
        "ok_ratio": sum(s.ok for s in samples) / len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    layout = LabLayout.from_env()
    started = not control.is_running(layout)
    control.up(layout)
    results = []
    try:
        for i in range(args.runs):
            r = one_run(args.rate, args.seconds)
            results.append(r)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    finally:
        if started:
            control.down(layout)
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"median of {args.runs} runs at {args.rate}/s for {args.seconds} s: "
        + ", ".join(f"{k} {v:.3f}" for k, v in med.items())
        + f"; {os.cpu_count()} cores, {platform.platform()}"
    )


if __name__ == "__main__":
    main()
