"""Benchmark the lab's zones on the wire (issue 15), three measurements:

1. egress-loss detection: the egress probe of zone a at --rate requests a second; NAT a's rule
   is added (`lab.network.block_nat`) at a moment the bench notes right after the command
   returns; the check's loss moment (`egress_lost`: the first failed request after the zone's
   last answer) minus that moment, per trial. Goal: within one probe interval + 100 ms.
   Runs on the lab of $GAMEDAY_LAB_BASE_PORT (started if it is not running; left running).
2. `lab up` from nothing, with namespaces and without (GAMEDAY_LAB_NETWORK=loopback),
   alternated, on a port block of its own (--up-base-port): the ratio of the medians.
3. what the lab makes: namespaces, veth ends, rules and host routes (`lab.network.inventory`)
   before `lab up`, while up, after `lab down`, and after a kill -9 of every process of the
   lab followed by `gameday heal --target lab`.

    .venv/bin/python bench/zones.py --trials 10 --ups 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gameday.checks.network import egress_lost
from gameday.clock import Clock
from gameday.history import Sample
from gameday.probes.egress import EgressProbe
from gameday.target import load_target
from lab import control, network
from lab.layout import LabLayout

ROOT = Path(__file__).resolve().parent.parent


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def detection(trials: int, rate: int) -> None:
    layout = LabLayout.from_env()
    control.up(layout)
    if not layout.namespaced:
        sys.exit(f"the lab has no zone networks ({layout.network_note})")
    target = load_target("lab")
    plan = layout.net
    interval = 1.0 / rate
    delays: list[float] = []
    from_start: list[float] = []
    for trial in range(trials):
        clock = Clock()
        samples: list[Sample] = []
        probe = EgressProbe(target, zone="a", rate=rate, clock=clock, record=samples.append)
        probe.start()
        try:
            time.sleep(1.0 + (trial % 7) * interval / 7)  # the rule lands anywhere in a tick
            before = clock.now()
            network.block_nat(plan, "a")
            changed = clock.now()
            time.sleep(1.5)
            end = clock.now()
            network.unblock_nat(plan, "a")
            time.sleep(1.5)
        finally:
            network.unblock_nat(plan, "a")
            probe.stop()
        verdict = egress_lost(samples, zone="a", fault_start=before, took_hold=changed,
                              end=end, within_sec=interval + 0.1)  # fmt: skip
        after = verdict.measured.get("after_hold_sec")
        if after is None:
            print(f"trial {trial + 1}: no loss seen: {verdict.message}", flush=True)
            continue
        delays.append(float(after))
        from_start.append(float(after) + changed - before)
        print(
            f"trial {trial + 1}: the iptables command took {1000 * (changed - before):.0f} ms; "
            f"loss seen {1000 * from_start[-1]:+.0f} ms after it began, {1000 * after:+.0f} ms "
            "after it returned", flush=True,
        )  # fmt: skip
    if delays:
        print(
            "egress-loss detection after the rule command began: median "
            f"{1000 * statistics.median(from_start):.0f} ms, max {1000 * max(from_start):.0f} ms; "
            f"after it returned: median {1000 * statistics.median(delays):.0f} "
            f"ms, max {1000 * max(delays):.0f} ms, min {1000 * min(delays):.0f} ms over "
            f"{len(delays)} trials at {rate}/s (bound: {1000 * (interval + 0.1):.0f} ms); "
            f"within the bound: {sum(d <= interval + 0.1 for d in delays)}/{len(delays)}; "
            f"load {uptime()}"
        )


def lab_ups(rounds: int, base_port: int) -> None:
    times: dict[str, list[float]] = {"namespaces": [], "loopback": []}
    for i in range(rounds):
        for mode in ("namespaces", "loopback"):
            os.environ["GAMEDAY_LAB_NETWORK"] = mode
            layout = LabLayout.from_env(
                base_port=base_port, state_dir=f"/tmp/gameday-bench-zones-{base_port}"
            )
            try:
                times[mode].append(control.up(layout))
            finally:
                control.down(layout)
            print(f"round {i + 1}: {mode} up in {times[mode][-1]:.1f} s", flush=True)
    os.environ.pop("GAMEDAY_LAB_NETWORK", None)
    ns, lo = (statistics.median(times[m]) for m in ("namespaces", "loopback"))
    print(
        f"lab up: namespaces median {ns:.1f} s ({min(times['namespaces']):.1f}-"
        f"{max(times['namespaces']):.1f}), loopback median {lo:.1f} s "
        f"({min(times['loopback']):.1f}-{max(times['loopback']):.1f}); ratio {ns / lo:.2f} "
        f"over {rounds} rounds; load {uptime()}"
    )


def counts(base_port: int) -> None:
    folder = f"/tmp/gameday-bench-zones-{base_port}"
    layout = LabLayout.from_env(base_port=base_port, state_dir=folder)

    def show(when: str) -> None:
        made = network.inventory(layout.net)
        print(
            f"{when}: {made.namespaces} namespaces, {made.links} veth ends, {made.rules} rules, "
            f"{made.routes} host routes", flush=True,
        )  # fmt: skip

    show("before lab up")
    control.up(layout)
    show("while up")
    control.down(layout)
    show("after lab down")
    control.up(layout)
    pids = [p.pid for p in control.lab_processes(layout)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(2)
    show(f"after kill -9 of the lab's {len(pids)} processes")
    env = {**os.environ, "GAMEDAY_LAB_BASE_PORT": str(base_port), "GAMEDAY_LAB_DIR": folder}
    subprocess.run(
        [sys.executable, "-m", "gameday.cli", "heal", "--target", "lab"], env=env, cwd=ROOT,
        check=True, capture_output=True,
    )  # fmt: skip
    show("after gameday heal")
    control.down(layout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--rate", type=int, default=10)
    parser.add_argument("--ups", type=int, default=3)
    parser.add_argument(
        "--up-base-port", type=int,
        default=int(os.environ.get("GAMEDAY_LAB_BASE_PORT", "17400")) + 50,
    )  # fmt: skip
    parser.add_argument("--only", choices=("detection", "ups", "counts"))
    args = parser.parse_args()
    if args.only in (None, "detection"):
        detection(args.trials, args.rate)
    if args.only in (None, "counts"):
        counts(args.up_base_port)
    if args.only in (None, "ups"):
        lab_ups(args.ups, args.up_base_port)


if __name__ == "__main__":
    main()
