"""Benchmark: long histories. Reading, judging and reporting as records and scenarios grow,
and a 1-hour game day at 1,000 records/s ending with its report.

Histories are generated in the project's own record format (each kind of line checked
against `HistoryWriter`'s own serialization): per second of run time, 3 HTTP probes at 50/s,
an order writer at 50/s (ids "gameday-<run>-s<n>-orders-<seq>") and 8 locust request names
sharing 750/s; each scenario has a fault over its middle fifth (failures, slower answers), its
start/end marks and the writer's final read (3 acknowledged writes missing). Some samples
complete out of send order, as slow requests do.

Every measurement runs in a fresh child process: CPU time (user + system) of each step, and the
child's peak RSS (ru_maxrss), so nothing of one measurement is in another's memory.

    .venv/bin/python bench/history_scale.py curves --records 10000,100000,1000000,5000000 \\
        --scenarios 1,12,192
    .venv/bin/python bench/history_scale.py game-day --hours 1 --rate 1000
    .venv/bin/python bench/history_scale.py loss --writes 1000000 --runs 3
    .venv/bin/python bench/history_scale.py polls --before 0,100000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gameday.clock import Clock  # noqa: E402
from gameday.history import (  # noqa: E402
    MARK_SCENARIO_END,
    MARK_SCENARIO_START,
    FaultEvent,
    Mark,
    ReadBack,
    Record,
    RunHeader,
    Sample,
    _line,
)

WORK = Path(os.environ.get("GAMEDAY_BENCH_DIR", "/tmp/gameday-bench-history"))
HTTP_PROBES = ("GET /health", "GET /api/products", "GET /api/cart")
HTTP_RATE, WRITE_RATE, LOCUST_RATE = 50, 50, 750
LOCUST_NAMES = tuple(f"locust GET /page/{i}" for i in range(8))
PER_SEC = len(HTTP_PROBES) * HTTP_RATE + WRITE_RATE + LOCUST_RATE  # 1,000 records/s
SERVERS = ("server1", "server2")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# -- the generator ---------------------------------------------------------------------------


def records(total: int, scenarios: int, run_id: str, seed: int = 7) -> Iterator[Record]:
    """`total` records (about: the marks, events and final reads come on top), split over
    `scenarios` scenarios, at PER_SEC records per second of run time, in completion order."""
    rng = random.Random(seed)
    per_scenario = max(1, total // scenarios)
    seconds = per_scenario / PER_SEC
    t0 = 1.0
    seq = 0
    for n in range(1, scenarios + 1):
        nodeid = f"features/resilience/bench.feature::scenario {n}"
        yield Mark(MARK_SCENARIO_START, t0, {"scenario": nodeid, "title": f"Scenario {n}"})
        fault_start, fault_end = t0 + 0.4 * seconds, t0 + 0.6 * seconds
        yield FaultEvent("database-failover", "inject-start", fault_start)
        acked: list[str] = []
        late: list[Sample] = []
        made = 0
        step = 1.0 / PER_SEC
        t = t0 + 0.001
        while made < per_scenario:
            slot = made % 20
            if slot < 3:
                probe, kind = HTTP_PROBES[slot], "http"
            elif slot == 3:
                probe, kind = "orders", "write"
            else:
                probe, kind = LOCUST_NAMES[made % len(LOCUST_NAMES)], "http"
            during = fault_start <= t <= fault_end
            ok = not (during and rng.random() < 0.3)
            duration = rng.expovariate(1 / (0.02 if during else 0.004))
            seq += 1
            if kind == "write":
                key = f"gameday-{run_id}-s{n}-orders-{seq}"
                sample = Sample(
                    probe, seq, t, duration if ok else None, ok, 201 if ok else None,
                    None if ok else "timeout", None, key, "ok" if ok else "info",
                )  # fmt: skip
                if ok:
                    acked.append(key)
            elif ok:
                sample = Sample(probe, seq, t, duration, True, 200, None, SERVERS[seq % 2])
            else:
                sample = Sample(probe, seq, t, duration, False, 503, "http", SERVERS[seq % 2])
            if rng.random() < 0.02:
                late.append(sample)  # a slow one: appended after a few later ones
            else:
                yield sample
            if len(late) > 3 or (late and rng.random() < 0.3):
                yield late.pop(0)
            made += 1
            t += step
        yield from late
        yield FaultEvent("database-failover", "heal-end", fault_end)
        lost = set(acked[:: max(1, len(acked) // 3)][:3])
        yield ReadBack("orders", t, [k for k in acked if k not in lost])
        yield Mark(MARK_SCENARIO_END, t, {"scenario": nodeid, "outcome": "passed"})
        t0 = t + 1.0


def _fmt(x: float) -> str:
    return repr(float(x))


def fast_line(r: Record) -> bytes:
    """`_line(r)` for the generator's samples, by hand: json.dumps per line would make the
    5M-record file take minutes. Checked against `_line` on every kind of line (`check_lines`)."""
    if not isinstance(r, Sample):
        return _line(r)
    head = f'{{"kind":"sample","probe":"{r.probe}","seq":{r.seq},"sent":{_fmt(r.sent)},'
    parts = [head + ('"ok":true' if r.ok else '"ok":false')]
    if r.duration is not None:
        parts.append(f'"duration":{_fmt(r.duration)}')
    if r.status is not None:
        parts.append(f'"status":{r.status}')
    if r.error is not None:
        parts.append(f'"error":"{r.error}"')
    if r.server is not None:
        parts.append(f'"server":"{r.server}"')
    if r.key is not None:
        parts.append(f'"key":"{r.key}"')
    if r.outcome is not None:
        parts.append(f'"outcome":"{r.outcome}"')
    return (",".join(parts) + "}\n").encode()


def check_lines() -> None:
    seen: set[tuple[Any, ...]] = set()
    for r in records(20_000, 2, "check"):
        shape = (type(r).__name__, getattr(r, "ok", None), getattr(r, "key", None) is None)
        if shape not in seen:
            seen.add(shape)
            assert fast_line(r) == _line(r), (fast_line(r), _line(r))


def generate(total: int, scenarios: int) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"history-{total}-{scenarios}.jsonl"
    if path.exists():
        return path
    check_lines()
    header = RunHeader.create(f"bench-{total}-{scenarios}", "lab", Clock())
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(_line(header))
        batch: list[bytes] = []
        for r in records(total, scenarios, header.run_id):
            batch.append(fast_line(r))
            if len(batch) >= 10_000:
                f.writelines(batch)
                batch.clear()
        f.writelines(batch)
    tmp.rename(path)
    return path


# -- what each child measures ----------------------------------------------------------------


def kept_bytes(history: Any) -> int:
    """What the history's columns and indexes take (array buffers, interned strings), without
    the interpreter's other memory: RSS growth also counts what the read freed but the
    allocator kept."""
    c = history._columns
    arrays = [getattr(c, f) for f in ("probe", "seq", "sent", "duration", "ok", "status",
              "error", "server", "outcome", "key_prefix", "key_counter", "other_at")]  # fmt: skip
    arrays += [*c.order.values(), *c.failed_at.values(), *history._by_probe.values()]
    strings = sum(sys.getsizeof(s) for s in c.strings.names) + sys.getsizeof(c.strings.ids)
    others = sum(sys.getsizeof(r) for r in c.others)
    keys = sum(sys.getsizeof(k) for r in c.others for k in getattr(r, "keys", ()))
    return sum(a.buffer_info()[1] * a.itemsize for a in arrays) + strings + others + keys


def child_curve(path: str) -> dict[str, Any]:
    from gameday.checks.resilience import lost_writes_in
    from gameday.history import read_history
    from gameday.report import write_report

    base = rss()
    c0, w0 = cpu(), time.monotonic()
    history = read_history(path)
    c1, w1 = cpu(), time.monotonic()
    held = rss() - base
    kept = kept_bytes(history)
    scenario_marks = [m for m in history.marks if m.name == MARK_SCENARIO_START]
    last = history.window(scenario_marks[-1].at, None)
    verdict = lost_writes_in(last, "orders")
    c2 = cpu()
    out = Path(path).with_suffix(".report")
    write_report(out, history, [])
    c3, w3 = cpu(), time.monotonic()
    return {
        "records": len(history),
        "read_cpu": c1 - c0,
        "read_wall": w1 - w0,
        "bytes_per_record": held / len(history),
        "kept_per_record": kept / len(history),
        "loss_check_cpu": c2 - c1,
        "loss_verdict": verdict.message[:70],
        "report_cpu": c3 - c2,
        "report_wall": w3 - w1,
        "peak_rss": peak_rss(),
        "load": load(),
    }


def child_game_day(hours: float, rate: int) -> dict[str, Any]:
    # A pytest process of a game day: pytest, the harness's plugin and its steps loaded.
    import pytest  # noqa: F401

    import gameday.pytest_plugin  # noqa: F401
    import steps.faults
    import steps.load  # noqa: F401
    from gameday.run import Run
    from gameday.target import load_target

    target = load_target("lab")
    total = int(hours * 3600 * rate)
    base = rss()
    run = Run.start(target, WORK / "runs")
    c0 = cpu()
    for r in records(total, 12, run.run_id):
        run.record(r)
    c1 = cpu()
    held = rss() - base
    n = len(run.writer)
    w1 = time.monotonic()
    report = run.finish()
    c2, w2 = cpu(), time.monotonic()
    report_mb = report.stat().st_size / 1e6
    history_mb = (report.parent / "history.jsonl").stat().st_size / 1e6
    shutil.rmtree(report.parent)  # hundreds of MB of history: not kept
    return {
        "records": n,
        "append_cpu_us": (c1 - c0) / n * 1e6,
        "bytes_per_record": held / n,
        "finish_cpu": c2 - c1,
        "finish_wall": w2 - w1,
        "report_mb": report_mb,
        "history_mb": history_mb,
        "peak_rss": peak_rss(),
        "load": load(),
    }


def child_loss(path: str) -> dict[str, Any]:
    from gameday.checks.resilience import lost_writes_in
    from gameday.history import read_history

    c0, w0 = cpu(), time.monotonic()
    history = read_history(path)
    c1 = cpu()
    verdict = lost_writes_in(history, "ledger")
    c2, w2 = cpu(), time.monotonic()
    return {
        "read_cpu": c1 - c0,
        "check_cpu": c2 - c1,
        "total_cpu": c2 - c0,
        "total_wall": w2 - w0,
        "verdict": verdict.message[:90],
        "load": load(),
    }


def child_polls(before: int, polls: int) -> dict[str, Any]:
    """A scenario with `before` records ahead of its fault (3 probes and locust users, like
    the generator's), then 10 s of its writer after the fault: the cost of one poll of the
    recovery wait and of an error budget, as the engine makes them."""
    from gameday.run import Run
    from gameday.scenario import Scenario
    from gameday.target import Target

    raw = {"name": "polls", "provider": "generic", "entrypoint": {"url": "http://127.0.0.1:9"}}
    target = Target.model_validate(raw)
    clock = Clock(wall_anchor=time.time() - 10_000, monotonic_anchor=time.monotonic() - 10_000)
    folder = WORK / f"polls-{before}-{os.getpid()}"
    from gameday.history import HistoryWriter

    writer = HistoryWriter(folder / "history.jsonl", RunHeader.create("p", "polls", clock))
    run = Run("p", target, folder, clock, writer)
    scenario = Scenario(run, "bench::polls", "polls", False, lambda _: None, target, started=0.0)

    class Quiet:
        name, rate, timeout_sec = "orders", WRITE_RATE, 0.5

        def start(self) -> None: ...
        def stop(self) -> None: ...

    scenario.probes["orders"] = Quiet()  # type: ignore[assignment]
    made = 0
    for r in records(before * 2, 1, "p"):
        if isinstance(r, Sample) and made < before:
            writer.append(Sample(r.probe, r.seq, r.sent, r.duration, True, r.status, None,
                                 r.server, r.key, "ok" if r.key else None))  # fmt: skip
            made += 1
    # 10 s of writes since the fault, up to now: the probe's record is complete and current.
    fault = clock.now() - 10.2
    writer.append(FaultEvent("database-failover", "inject-start", fault))
    writer.append(FaultEvent("database-failover", "inject-end", fault + 0.5))
    for k in range(10 * WRITE_RATE):  # 10 s of writes after the fault: 2 s failing
        ok = k >= 2 * WRITE_RATE
        writer.append(Sample("orders", 10**7 + k, fault + k / WRITE_RATE, 0.003 if ok else None,
                             ok, error=None if ok else "timeout", key=f"o-{k}",
                             outcome="ok" if ok else "info"))  # fmt: skip
    recovery, budget = [], []
    for _ in range(polls):
        c0 = cpu()
        verdict = scenario.recovered("orders", within_sec=60)
        c1 = cpu()
        failures = scenario.failures("orders", since=fault)
        c2 = cpu()
        recovery.append(c1 - c0)
        budget.append(c2 - c1)
    writer.close()
    shutil.rmtree(folder)
    return {
        "records": len(writer),
        "recovery_poll_ms": statistics.median(recovery) * 1000,
        "budget_poll_ms": statistics.median(budget) * 1000,
        "verdict": verdict.message[:60],
        "failures": failures,
        "load": load(),
    }


def run_child(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "child", *args], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        sys.exit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# -- the modes -------------------------------------------------------------------------------


def curves(totals: list[int], scenarios: list[int]) -> None:
    print(f"history curves on {os.cpu_count()} cores, {platform.platform()}")
    print(
        "records    scen  read CPU s  read us/rec  kept B/rec  RSS B/rec  loss chk s  "
        "report CPU s  peak RSS MB  load (1 5 15)"
    )
    for total in totals:
        for s in scenarios:
            path = generate(total, s)
            m = run_child("curve", str(path))
            print(
                f"{m['records']:>9}  {s:>4}  {m['read_cpu']:>10.2f}  "
                f"{m['read_cpu'] / m['records'] * 1e6:>11.2f}  {m['kept_per_record']:>10.0f}  "
                f"{m['bytes_per_record']:>9.0f}  {m['loss_check_cpu']:>10.2f}  "
                f"{m['report_cpu']:>12.2f}  {m['peak_rss'] / 2**20:>11.0f}  {m['load']}",
                flush=True,
            )


def game_day(hours: float, rate: int, runs: int) -> None:
    results = []
    for i in range(runs):
        m = run_child("game-day", str(hours), str(rate))
        results.append(m)
        print(
            f"run {i + 1}: {m['records']} records appended at {m['append_cpu_us']:.1f} us CPU "
            f"each, {m['bytes_per_record']:.0f} bytes each in memory; finish (report) "
            f"{m['finish_wall']:.1f} s wall, {m['finish_cpu']:.1f} s CPU; peak RSS "
            f"{m['peak_rss'] / 2**20:.0f} MB; history {m['history_mb']:.0f} MB, report "
            f"{m['report_mb']:.1f} MB; {m['load']}",
            flush=True,
        )
    if runs > 1:
        walls = [m["finish_wall"] for m in results]
        peaks = [m["peak_rss"] / 2**20 for m in results]
        print(
            f"median finish {statistics.median(walls):.1f} s wall ({min(walls):.1f}-"
            f"{max(walls):.1f}), median peak RSS {statistics.median(peaks):.0f} MB"
        )


def writer_history(writes: int) -> tuple[RunHeader, Iterator[Sample], ReadBack]:
    """A writer's history: `writes` acknowledged writes, then its final read, 3 missing."""
    header = RunHeader.create(f"bench-writes-{writes}", "lab", Clock())
    keys = [f"gameday-{header.run_id}-s1-ledger-{seq}" for seq in range(writes)]

    def sample(seq: int) -> Sample:
        return Sample("ledger", seq, 1 + seq / 1000, 0.003, True, None, None, None, keys[seq], "ok")

    lost = {keys[7], keys[writes // 2], keys[-1]}
    final = ReadBack("ledger", writes / 1000 + 2, [k for k in keys if k not in lost])
    return header, map(sample, range(writes)), final


def generate_writes(writes: int) -> Path:
    """`writer_history` as JSON lines, written fast (no writer, no column file)."""
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"writes-{writes}.jsonl"
    if path.exists():
        return path
    header, samples, final = writer_history(writes)
    first = next(samples)
    assert fast_line(first) == _line(first)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(_line(header))
        f.write(fast_line(first))
        f.writelines(map(fast_line, samples))
        f.write(_line(final))
    tmp.rename(path)
    return path


def generate_finished_run(writes: int) -> Path:
    """`writer_history` written as a run writes it (each record through
    `HistoryWriter.append`) and finished as a run finishes (its column file written)."""
    from gameday.history import HistoryWriter, columns_path, write_columns

    path = WORK / f"writes-{writes}-run" / "history.jsonl"
    if path.exists() and columns_path(path).exists():
        return path
    shutil.rmtree(path.parent, ignore_errors=True)
    header, samples, final = writer_history(writes)
    with HistoryWriter(path, header) as writer:
        for sample in samples:
            writer.append(sample)
        writer.append(final)
    assert write_columns(writer) is not None
    return path


def polls(befores: list[int], n: int) -> None:
    print("records before the fault   recovery poll (ms CPU)   budget poll (ms CPU)   load")
    for before in befores:
        m = run_child("polls", str(before), str(n))
        print(
            f"{before:>25}   {m['recovery_poll_ms']:>22.2f}   {m['budget_poll_ms']:>20.3f}   "
            f"{m['load']}  ({m['verdict']}; {m['failures']} failures)",
            flush=True,
        )


def loss(writes: int, runs: int) -> None:
    """Both ways a history is read back: a finished run's (its column file next to it) and
    one without its column file (a run killed before it finished: every JSON line parsed)."""
    cases = (("finished run (column file)", generate_finished_run(writes)),
             ("JSON lines only", generate_writes(writes)))  # fmt: skip
    for label, path in cases:
        results = []
        for i in range(1, runs + 1):
            m = run_child("loss", str(path))
            results.append(m)
            print(
                f"{label}, run {i}: read {m['read_cpu']:.2f} s CPU + check "
                f"{m['check_cpu']:.2f} s CPU = {m['total_cpu']:.2f} s CPU, "
                f"{m['total_wall']:.2f} s wall; {m['verdict']}; {m['load']}",
                flush=True,
            )
        cpus = [m["total_cpu"] for m in results]
        walls = [m["total_wall"] for m in results]
        print(
            f"{label}: loss check of {writes} acknowledged writes, the history read included: "
            f"median {statistics.median(walls):.2f} s wall, {statistics.median(cpus):.2f} s CPU "
            f"(read {statistics.median(m['read_cpu'] for m in results):.2f}, check "
            f"{statistics.median(m['check_cpu'] for m in results):.2f})",
            flush=True,
        )


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        mode, args = sys.argv[2], sys.argv[3:]
        if mode == "curve":
            out = child_curve(args[0])
        elif mode == "game-day":
            out = child_game_day(float(args[0]), int(args[1]))
        elif mode == "polls":
            out = child_polls(int(args[0]), int(args[1]))
        else:
            out = child_loss(args[0])
        print(json.dumps(out))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("curves", help="read, loss check and report as records and scenarios grow")
    c.add_argument("--records", default="10000,100000,1000000,5000000")
    c.add_argument("--scenarios", default="1,12,192")
    g = sub.add_parser("game-day", help="a run appending hours of records, then its report")
    g.add_argument("--hours", type=float, default=1.0)
    g.add_argument("--rate", type=int, default=PER_SEC)
    g.add_argument("--runs", type=int, default=1)
    p = sub.add_parser("polls", help="a live wait's poll with 0..N records before the fault")
    p.add_argument("--before", default="0,100000,1000000")
    p.add_argument("--polls", type=int, default=21)
    lo = sub.add_parser("loss", help="the loss check of N acknowledged writes, file read included")
    lo.add_argument("--writes", type=int, default=1_000_000)
    lo.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "curves":
        curves(
            [int(x) for x in args.records.split(",")], [int(x) for x in args.scenarios.split(",")]
        )
    elif args.mode == "game-day":
        game_day(args.hours, args.rate, args.runs)
    elif args.mode == "polls":
        polls([int(x) for x in args.before.split(",")], args.polls)
    else:
        loss(args.writes, args.runs)


if __name__ == "__main__":
    main()
