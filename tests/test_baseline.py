"""Load baselines: compare() on hand-made statistics; record/compare on the lab (locust runs
as a subprocess, never imported here)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gameday import baseline as bl
from gameday.baseline import EndpointStats, Tolerances
from lab import control, health
from lab.layout import LabLayout
from tests.conftest import lab_healthy, wait_until

REPO = Path(__file__).resolve().parent.parent


def stats(name: str, *, requests: int = 100, failures: int = 0, rps: float = 10.0,
          p50: float = 20.0, p95: float = 40.0, p99: float = 80.0) -> EndpointStats:  # fmt: skip
    return EndpointStats(name, requests, failures, rps, p50, p95, p99)


def run_of(*entries: EndpointStats) -> dict[str, EndpointStats]:
    return {e.name: e for e in entries}


BASE = run_of(stats("product page"), stats("health", p50=2, p95=4, p99=8), stats("total"))


def failing(rows: list[bl.Comparison]) -> list[tuple[str, str]]:
    return [(r.endpoint, r.metric) for r in rows if not r.ok]


# -- compare(): pure ------------------------------------------------------------------------


def test_same_numbers_pass() -> None:
    rows = bl.compare(BASE, BASE)
    assert failing(rows) == []
    assert len(rows) == 3 * len(bl.METRICS)
    verdict = bl.verdict(rows)
    assert verdict.ok, verdict.message
    assert "within tolerance" in verdict.message


def test_small_changes_within_tolerance_pass() -> None:
    now = run_of(
        stats("product page", p50=23.9, p95=47.9, p99=119, rps=9.1, failures=1),
        stats("health", p50=2, p95=4, p99=8),
        stats("total", p95=44),
    )
    assert failing(bl.compare(BASE, now)) == []


def test_p95_regression_fails_and_names_endpoint_and_numbers() -> None:
    base = run_of(stats("product page", p95=21.0), stats("health"))
    now = run_of(stats("product page", p95=42.0), stats("health", p95=45))
    rows = bl.compare(base, now)
    assert failing(rows) == [("product page", "p95")]
    row = next(r for r in rows if not r.ok)
    assert row.baseline == 21.0 and row.current == 42.0
    assert row.change == pytest.approx(100.0) and row.allowed == 20.0
    verdict = bl.verdict(rows)
    assert not verdict.ok
    assert "product page p95 42.0 ms vs 21.0 ms baseline (+100 %, allowed +20 %)" in (
        verdict.message
    )
    assert "REGRESSION" in bl.table(rows)


def test_worst_regression_named_first() -> None:
    now = run_of(stats("product page", p95=50), stats("health", p50=2, p95=4, p99=30))
    rows = bl.compare(BASE, now)
    assert set(failing(rows)) == {("product page", "p95"), ("health", "p99")}
    # health p99 +275 % past +50 % beats product page p95 +25 % past +20 %
    assert bl.verdict(rows).message.startswith("regression: health p99 30.0 ms vs 8.0 ms")


def test_p99_has_its_own_tolerance() -> None:
    now = run_of(stats("product page", p99=119), stats("health", p50=2, p95=4, p99=8))
    assert failing(bl.compare(BASE, now)) == []
    now = run_of(stats("product page", p99=121), stats("health", p50=2, p95=4, p99=8))
    assert failing(bl.compare(BASE, now)) == [("product page", "p99")]


def test_latency_slack_ignores_tiny_absolute_rises() -> None:
    # 2 -> 4 ms is +100 %, but 2 ms is under the slack: rounding noise, not a regression.
    now = run_of(stats("product page"), stats("health", p50=3, p95=6, p99=10))
    assert failing(bl.compare(BASE, now)) == []
    strict = Tolerances(latency_slack_ms=0)
    assert ("health", "p95") in failing(bl.compare(BASE, now, strict))


def test_throughput_drop() -> None:
    now = run_of(stats("product page", rps=9.0), stats("health", p50=2, p95=4, p99=8))
    assert failing(bl.compare(BASE, now)) == []  # -10 %: allowed
    now = run_of(stats("product page", rps=8.0), stats("health", p50=2, p95=4, p99=8))
    rows = bl.compare(BASE, now)
    assert failing(rows) == [("product page", "rps")]
    assert "product page rps 8.0 req/s vs 10.0 req/s baseline (-20 %, allowed -10 %)" in (
        bl.verdict(rows).message
    )
    # a rise in throughput is never a regression
    now = run_of(stats("product page", rps=30.0), stats("health", p50=2, p95=4, p99=8))
    assert failing(bl.compare(BASE, now)) == []


def test_failure_ratio_rise_in_points() -> None:
    # 0 % -> 1 %: +1 point, allowed
    now = run_of(stats("product page", failures=1), stats("health", p50=2, p95=4, p99=8))
    assert failing(bl.compare(BASE, now)) == []
    # 0 % -> 5 %: +5 points
    now = run_of(stats("product page", failures=5), stats("health", p50=2, p95=4, p99=8))
    rows = bl.compare(BASE, now)
    assert failing(rows) == [("product page", "failures")]
    assert "failure ratio 5.0 % vs 0.0 % baseline (+5.0 points, allowed +1 points)" in (
        bl.verdict(rows).message
    )


def test_overrides_per_endpoint_and_global() -> None:
    base = run_of(stats("product page", p95=20), stats("health", p95=20))
    now = run_of(stats("product page", p95=25), stats("health", p95=25))  # +25 %
    assert set(failing(bl.compare(base, now))) == {("product page", "p95"), ("health", "p95")}
    tol = bl.parse_tolerances(["product page:p95=30"])
    assert failing(bl.compare(base, now, tol)) == [("health", "p95")]
    tol = bl.parse_tolerances(["p95=30"])
    assert failing(bl.compare(base, now, tol)) == []
    # an override wins over the global value, both ways
    tol = bl.parse_tolerances(["p95=30", "health:p95=10,rps=50"])
    assert failing(bl.compare(base, now, tol)) == [("health", "p95")]
    assert tol.allowed("health", "rps") == 50 and tol.allowed("product page", "rps") == 10


@pytest.mark.parametrize(
    "spec", ["p95", "p97=3", "product page:p95=x", ":p95=3", "p95=-1", "rps=inf"]
)
def test_bad_tolerance_specs(spec: str) -> None:
    with pytest.raises(bl.BaselineError, match="--tolerance"):
        bl.parse_tolerances([spec])


def test_too_few_requests_not_judged() -> None:
    base = run_of(stats("product page"), stats("login", requests=19, p95=5), stats("order"))
    now = run_of(stats("product page"), stats("login", requests=50, p95=500), stats("me"))
    rows = bl.compare(base, now)
    assert failing(rows) == []
    skipped = {r.endpoint: r for r in rows if not r.judged}
    assert set(skipped) == {"login", "order", "me"}  # too few, gone, new
    assert "too few requests (19 baseline, 50 now; need 20)" in skipped["login"].note
    assert "too few requests" in bl.table(rows)
    assert "not judged (too few requests): login, me, order" in bl.verdict(rows).message


def test_nothing_judged_is_not_a_pass() -> None:
    tiny = run_of(stats("health", requests=3))
    assert not bl.verdict(bl.compare(tiny, tiny)).ok


def test_percentiles_from_histogram() -> None:
    hist = {1.0: 50, 2.0: 45, 10.0: 4, 100.0: 1}
    assert bl.percentile(hist, 0.5) == 1
    assert bl.percentile(hist, 0.95) == 2
    assert bl.percentile(hist, 0.99) == 10
    assert bl.percentile(hist, 1.0) == 100
    assert bl.percentile({}, 0.5) == 0


def test_parse_locust_json_merges_and_totals() -> None:
    entry = {"start_time": 100.0, "last_request_timestamp": 110.0}
    entries = [
        {**entry, "name": "a", "num_requests": 30, "num_failures": 3,
         "response_times": {"2": 20, "5": 10}},
        {**entry, "name": "b", "num_requests": 70, "num_failures": 0,
         "response_times": {"1": 60, "40": 10}, "start_time": 105.0},
    ]  # fmt: skip
    result = bl.parse_locust_json(entries, 10.0)
    assert result.duration_sec == 10.0
    a = result.endpoints["a"]
    assert (a.requests, a.failures, a.rps, a.p50, a.p95) == (30, 3, 3.0, 2.0, 5.0)
    assert result.total.requests == 100 and result.total.rps == 10.0
    assert result.total.p50 == 1.0 and result.total.p95 == 40.0


def test_baseline_file_round_trip(tmp_path: Path) -> None:
    result = bl.LoadResult(
        {"product page": stats("product page")}, stats("total"), duration_sec=9.5
    )
    conditions = bl.Conditions("lab", 8, 4.0, 10, "abc1234", "2026-11-24T21:00:00+00:00")
    path = bl.save_baseline(bl.Baseline(conditions, result), bl.baseline_path("lab", "x", tmp_path))
    assert path == tmp_path / "lab-x.json"
    raw = json.loads(path.read_text())
    assert raw["endpoints"]["product page"]["failure_ratio"] == 0.0
    loaded = bl.load_baseline(path)
    assert loaded.conditions == conditions and loaded.result == result
    with pytest.raises(bl.BaselineError, match="no such baseline"):
        bl.load_baseline(tmp_path / "lab-missing.json")
    (tmp_path / "lab-bad.json").write_text("{}")
    with pytest.raises(bl.BaselineError, match="not a baseline file"):
        bl.load_baseline(tmp_path / "lab-bad.json")


@pytest.mark.parametrize(
    ("users", "rate", "duration", "word"),
    [(1001, 1, 10, "--users"), (0, 1, 10, "--users"), (10, 0, 10, "--spawn-rate"),
     (10, 1, 3601, "--duration"), (10, 1, 0, "--duration"),
     (10, float("inf"), 10, "--spawn-rate"), (10, float("nan"), 10, "--spawn-rate")],
)  # fmt: skip
def test_load_caps(users: int, rate: float, duration: int, word: str) -> None:
    with pytest.raises(bl.BaselineError, match=word):
        bl.check_load(users, rate, duration)


# -- the CLI, without load ------------------------------------------------------------------


def gameday(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gameday.cli", "baseline", *args],
        cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip


def test_cli_missing_baseline_is_bad_input(tmp_path: Path) -> None:
    proc = gameday("compare", "--baselines-dir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "lab-default.json") in lines[0]


def test_cli_caps_are_bad_input(tmp_path: Path) -> None:
    for args, word in (
        (["--users", "5000", "--spawn-rate", "1", "--duration", "10"], "--users 5000"),
        (["--users", "5", "--spawn-rate", "1", "--duration", "7200"], "--duration 7200"),
        (["--users", "5", "--spawn-rate", "1"], "--duration"),
    ):
        proc = gameday("record", "--baselines-dir", str(tmp_path), *args)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and word in proc.stderr
    proc = gameday("compare", "--baselines-dir", str(tmp_path), "--tolerance", "p97=3")
    assert proc.returncode == 2 and "--tolerance" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_cli_record_refuses_when_every_request_fails(tmp_path: Path) -> None:
    target = tmp_path / "dead.yaml"
    target.write_text("name: dead\nprovider: generic\nentrypoint:\n  url: http://127.0.0.1:9\n")
    proc = gameday(
        "record", "--target", str(target), "--baselines-dir", str(tmp_path / "b"),
        "--users", "2", "--spawn-rate", "2", "--duration", "2", timeout=90,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "requests to http://127.0.0.1:9 failed" in proc.stderr
    assert not (tmp_path / "b" / "dead-default.json").exists()


# -- on the lab -----------------------------------------------------------------------------

# Long enough that the same lab compares clean. The lab answers in a few ms and locust
# rounds to whole ms, and the per-endpoint request counts vary with locust's random task
# choice: the "same lab" check judges only endpoints with many requests (product page and the
# total), with wide latency and throughput tolerances and p99 (one slow request among a few
# hundred) ignored. Measured over 3 runs: p50 2-3 ms, p95 4-10 ms, rps within -17 %.
USERS = 16
DURATION_SEC = 30
SAME_LAB = ("--min-requests", "150", "--latency-slack-ms", "3")
SAME_LAB_TOLERANCES = ("p50=100", "p95=150", "p99=10000", "rps=30", "failures=2")
THROTTLE_STOP_SEC = 0.05
THROTTLE_RUN_SEC = 0.05


@pytest.fixture
def recorded(running_lab: LabLayout, tmp_path: Path) -> Iterator[Path]:
    wait_until("lab healthy", lambda: lab_healthy(running_lab), timeout=90)
    proc = gameday(
        "record", "--baselines-dir", str(tmp_path), "--users", str(USERS),
        "--spawn-rate", str(USERS), "--duration", str(DURATION_SEC),
        timeout=DURATION_SEC + 120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = tmp_path / "lab-default.json"
    assert str(path) in proc.stdout
    raw = json.loads(path.read_text())
    assert raw["conditions"]["users"] == USERS and raw["conditions"]["duration_sec"] == DURATION_SEC
    assert raw["total"]["requests"] > 200 and raw["total"]["failure_ratio"] < 0.02, raw["total"]
    print(proc.stdout)
    yield tmp_path


def _compare(directory: Path, *tolerances: str) -> subprocess.CompletedProcess[str]:
    args = [a for t in tolerances for a in ("--tolerance", t)]
    proc = gameday(
        "compare", "--baselines-dir", str(directory), *SAME_LAB, *args,
        timeout=DURATION_SEC + 120,
    )  # fmt: skip
    print(proc.stdout, proc.stderr)
    return proc


@pytest.mark.lab
@pytest.mark.slow
@pytest.mark.long
def test_lab_same_lab_passes_slowed_lab_fails(running_lab: LabLayout, recorded: Path) -> None:
    same = _compare(recorded, *SAME_LAB_TOLERANCES)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "within tolerance" in same.stdout

    # Slow the lab for real: server1's backend down (half the capacity), and server2's
    # backend throttled to half its time (SIGSTOP 50 ms, SIGCONT 50 ms: what a CPU quota
    # does), for the whole compare run. CPU hogs alone did not move the lab's latency: its
    # backends are mostly idle at this load and the scheduler favours their wake-ups.
    stop = threading.Event()
    throttle = threading.Thread(target=_throttle, args=(running_lab, "backend2", stop))
    try:
        control.stop_programs(running_lab, ["backend1"])
        wait_until("backend1 DOWN in HAProxy", lambda: _backend1_down(running_lab), timeout=30)
        throttle.start()
        slowed = _compare(recorded, *SAME_LAB_TOLERANCES)
    finally:
        stop.set()
        if throttle.is_alive():
            throttle.join(timeout=10)
        _signal_group(running_lab, "backend2", signal.SIGCONT)
        control.start_programs(running_lab, ["backend1"])
        wait_until("lab healthy again", lambda: lab_healthy(running_lab), timeout=90)
    assert slowed.returncode == 1, slowed.stdout + slowed.stderr
    last = slowed.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED: regression: "), last
    assert any(last.startswith(f"FAILED: regression: {e} ") for e in ("product page", "total"))
    assert re.search(r" p(50|95|99) \d+\.\d ms vs \d+\.\d ms baseline \(\+\d+ %", last), last


def _signal_group(layout: LabLayout, program: str, sig: signal.Signals) -> None:
    pid = int(control.processes(layout)[program]["pid"])
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)  # supervisor makes each program a process group leader


def _throttle(layout: LabLayout, program: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + DURATION_SEC + 60  # bounded even if nobody sets stop
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            _signal_group(layout, program, signal.SIGSTOP)
            time.sleep(THROTTLE_STOP_SEC)
            _signal_group(layout, program, signal.SIGCONT)
            time.sleep(THROTTLE_RUN_SEC)
    finally:
        _signal_group(layout, program, signal.SIGCONT)


def _backend1_down(layout: LabLayout) -> bool:
    return health.haproxy_servers(layout).get(("servers", "server1"), "?").startswith("DOWN")
