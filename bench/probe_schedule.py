"""Benchmark: the HTTP probe at a fixed rate against the lab's entrypoint, by its real starts,
compared with wrk on one connection on the same endpoint in the same run.

Each run, one after the other (never at once, they share the machine):
1. the probe at `--rate` for `--seconds`: achieved rate and rate error from the samples' send
   times, which are the requests' real starts; the jitter of those starts against their due
   times (p50, p99); the late starts (> 10 ms) its `rate_kept` verdict counts; the harness
   process's CPU as a share of one core;
2. wrk, one thread, one connection: the endpoint's closed-loop rate; and
3. the probe's ceiling: the probe asked for far more than it can do, one request in flight
   (one connection, as wrk): the most it sends.
   2 and 3 alternate in `--rounds` rounds of `--wrk-seconds` each: this machine's speed drifts
   by tens of percent within a minute, and a ratio of two rates measured minutes apart
   measured the drift. A run's rates and ratio are the medians of its rounds.
Ratios to wrk are per run, then the median. Medians over runs with the spread (min - max),
and the machine's load (`uptime`) before and after.

    .venv/bin/python bench/probe_schedule.py --rate 100 --seconds 60 --runs 3
    .venv/bin/python bench/probe_schedule.py --rate 1000 --seconds 60 --runs 3

Needs wrk (`apt-get install wrk`, in scripts/setup). Starts the lab of $GAMEDAY_LAB_BASE_PORT
if needed (and stops it after, if it started it).
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import time
from collections import Counter

from gameday.checks.schedule import rate_kept
from gameday.clock import Clock
from gameday.history import Sample
from gameday.probes.http import HttpProbe
from gameday.target import Target, load_target
from lab import control
from lab.layout import LabLayout

# The ceiling run asks for this much: far above what one connection can carry here.
CEILING_RATE = 50_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rank(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


def probe_run(target: Target, path: str, rate: int, seconds: int) -> dict[str, float]:
    clock = Clock()
    samples: list[Sample] = []
    probe = HttpProbe(target, path=path, rate=rate, clock=clock, record=samples.append,
                      limit=rate * seconds)  # fmt: skip
    cpu0, wall0 = _cpu(), time.monotonic()
    probe.start()
    probe.join()
    wall, cpu = time.monotonic() - wall0, _cpu() - cpu0
    report = probe.schedule_report()
    assert report.first_due is not None and len(samples) == report.sent
    sent = sorted(s.sent for s in samples)
    achieved = (len(sent) - 1) / (sent[-1] - sent[0])
    jitter = sorted((s.sent - (report.first_due + s.seq / rate)) * 1000 for s in samples)
    failures = Counter(s.error for s in samples if not s.ok)
    verdict = rate_kept(report)
    print(f"  probe: {verdict.message}; failures {dict(failures) or 0}", flush=True)
    return {
        "achieved_rate": achieved,
        "rate_error_pct": abs(achieved - rate) / rate * 100,
        "jitter_p50_ms": _rank(jitter, 50),
        "jitter_p99_ms": _rank(jitter, 99),
        "jitter_max_ms": jitter[-1],
        "late_gt_10ms": float(report.late),
        "cpu_pct_of_core": cpu / wall * 100,
        "cpu_us_per_request": cpu / len(samples) * 1e6,
        "ok_ratio": sum(s.ok for s in samples) / len(samples),
    }


def wrk_c1(url: str, seconds: int) -> float:
    """wrk's requests per second on one connection, one thread."""
    out = subprocess.run(
        ["wrk", "-t1", "-c1", f"-d{seconds}s", url],
        capture_output=True, text=True, check=True, timeout=seconds + 30,
    ).stdout  # fmt: skip
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        print(f"  wrk: {errors.group(0)}", flush=True)
    return float(found.group(1))


def probe_ceiling(target: Target, path: str, seconds: int) -> float:
    """The most the probe sends with one request in flight (one connection, as wrk -c1)."""
    clock = Clock()
    samples: list[Sample] = []
    probe = HttpProbe(target, path=path, rate=CEILING_RATE, clock=clock, record=samples.append,
                      max_in_flight=1)  # fmt: skip
    probe.start()
    time.sleep(seconds)
    probe.stop()
    sent = sorted(s.sent for s in samples)
    return (len(sent) - 1) / (sent[-1] - sent[0])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=int, default=2, help="each round's wrk and ceiling")
    parser.add_argument("--rounds", type=int, default=5, help="wrk and ceiling alternating")
    parser.add_argument("--path", default=None, help="default: the target's health path")
    args = parser.parse_args()
    layout = LabLayout.from_env()
    started = not control.is_running(layout)
    control.up(layout)
    target = load_target("lab")
    path = args.path or target.entrypoint.health_path
    url = target.entrypoint.url.rstrip("/") + path
    print(f"load before: {uptime()}", flush=True)
    results = []
    try:
        for i in range(args.runs):
            r = probe_run(target, path, args.rate, args.seconds)
            rounds = [(wrk_c1(url, args.wrk_seconds), probe_ceiling(target, path,
                                                                   args.wrk_seconds))
                      for _ in range(args.rounds)]  # fmt: skip
            r["wrk_c1_rps"] = statistics.median(w for w, _ in rounds)
            r["ceiling_rps"] = statistics.median(c for _, c in rounds)
            r["ratio_rate_to_wrk"] = r["achieved_rate"] / r["wrk_c1_rps"]
            r["ratio_ceiling_to_wrk"] = statistics.median(c / w for w, c in rounds)
            results.append(r)
            print(f"run {i + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in r.items()), flush=True)
    finally:
        if started:
            control.down(layout)
    print(f"load after: {uptime()}")
    print(f"median of {args.runs} runs, GET {url} at {args.rate}/s for {args.seconds} s "
          f"(wrk and ceiling alternating, {args.rounds} x {args.wrk_seconds} s each), "
          "[min - max]:")  # fmt: skip
    for key in results[0]:
        values = [r[key] for r in results]
        print(f"  {key:22s} {statistics.median(values):10.3f}  "
              f"[{min(values):.3f} - {max(values):.3f}]")  # fmt: skip


if __name__ == "__main__":
    main()
