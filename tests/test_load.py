"""gameday.load without locust running: limits, command lines, records into samples, tails.

The runs against the lab (a master and two workers, counts against HAProxy's, users during a
failover) are in test_load_on_lab.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gameday import baseline as bl
from gameday import load
from gameday.clock import Clock
from gameday.target import Target, TargetError, load_target
from loadtests.pacing import MAX_REQUESTS_PER_USER_SEC


def capped(tmp_path: Path, caps: str) -> Target:
    path = tmp_path / "capped.yaml"
    path.write_text(
        "name: capped\nprovider: generic\nentrypoint: {url: 'http://127.0.0.1:9'}\n" + caps
    )
    return load_target(str(path))


# -- limits --------------------------------------------------------------------------------


def test_target_caps_refuse_more_users_or_requests_than_declared(tmp_path: Path) -> None:
    target = capped(tmp_path, "load: {max_users: 10, max_rps: 50}\n")
    load.check_limits(target, users=10, rps=50)  # at the caps: allowed
    with pytest.raises(load.LoadLimitError) as users:
        load.check_limits(target, users=11)
    assert str(users.value) == f"{target.source}: load.max_users is 10: refusing 11 users"
    with pytest.raises(load.LoadLimitError, match=r"load\.max_rps is 50: refusing .* 51 requests"):
        load.check_limits(target, rps=51)


def test_no_caps_means_the_harness_caps_only(tmp_path: Path) -> None:
    target = capped(tmp_path, "")
    load.check_limits(target, users=load.MAX_USERS, rps=1e6)
    with pytest.raises(load.LoadLimitError, match="harness cap"):
        load.check_limits(target, users=load.MAX_USERS + 1)
    with pytest.raises(load.LoadLimitError, match="3601 s"):
        load.check_limits(target, duration_sec=3601)


@pytest.mark.parametrize(
    ("caps", "message"),
    [("load: {max_users: 0}\n", "load.max_users: Input should be greater than 0"),
     ("load: {max_rps: fast}\n", "load.max_rps: Input should be a valid number"),
     ("load: {users: 5}\n", "load.users: unknown key")],
)  # fmt: skip
def test_a_broken_load_section_is_one_line(tmp_path: Path, caps: str, message: str) -> None:
    with pytest.raises(TargetError) as err:
        capped(tmp_path, caps)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_baseline_runs_obey_the_target_caps(tmp_path: Path) -> None:
    target = capped(tmp_path, "load: {max_users: 4, max_rps: 100}\n")
    with pytest.raises(bl.BaselineError, match="max_users is 4: refusing 5 users"):
        bl.check_load(5, 1, 10, target)
    # 4 users can send at most 4 x MAX_REQUESTS_PER_USER_SEC: under 100 with today's pacing.
    assert 4 * MAX_REQUESTS_PER_USER_SEC <= 100
    bl.check_load(4, 1, 10, target)
    slow = capped(tmp_path, "load: {max_rps: 1}\n")
    with pytest.raises(bl.BaselineError, match="max_rps is 1"):
        bl.check_load(1, 1, 10, slow)


def test_a_plan_is_bounded(tmp_path: Path) -> None:
    for bad in ({"users": 0}, {"users": 1001}, {"run_time_sec": 0}, {"run_time_sec": 3601},
                {"workers": 33}, {"spawn_rate": 0}):  # fmt: skip
        kwargs = {"host": "http://x", "users": 1, "spawn_rate": 1.0, "run_time_sec": 1,
                  "folder": tmp_path, **bad}  # fmt: skip
        with pytest.raises(load.LoadLimitError):
            load.LocustPlan(**kwargs)  # type: ignore[arg-type]


# -- command lines -------------------------------------------------------------------------


def test_a_distributed_plan_is_a_master_and_its_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAMEDAY_SHAPE", "spike")  # the caller's shell must not change the run
    plan = load.LocustPlan(
        host="http://127.0.0.1:17400/", users=6, spawn_rate=3, run_time_sec=20, folder=tmp_path,
        user_classes=("BrowsingUser",), workers=2, records=True,
    )  # fmt: skip
    master, *workers = plan.commands(master_port=5599)
    assert len(workers) == 2
    joined = " ".join(master)
    assert "--master" in master and "--expect-workers 2" in joined
    assert "--master-bind-host 127.0.0.1 --master-bind-port 5599" in joined
    assert "--host http://127.0.0.1:17400 " in joined and "-t 20s" in joined
    assert master[-1] == "BrowsingUser" and workers[0][-1] == "BrowsingUser"
    assert "--worker" in workers[0] and "--master-port" in workers[0]
    assert "--json-file" not in workers[0]  # the master alone writes the statistics
    env = plan.environment()
    assert "GAMEDAY_SHAPE" not in env
    assert env["GAMEDAY_RECORDS"] == str(tmp_path / "records.jsonl")
    single = load.LocustPlan("http://h", 1, 1, 5, tmp_path).commands()
    assert len(single) == 1 and "--master" not in single[0]
    assert "GAMEDAY_RECORDS" not in load.LocustPlan("http://h", 1, 1, 5, tmp_path).environment()


# -- records into the history --------------------------------------------------------------


CLOCK = Clock(wall_anchor=1_000_000.0, monotonic_anchor=50.0)


def record(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "t": 1_000_012.5, "name": "product page", "method": "GET", "status": 200,
        "duration_ms": 4.0, "error": None, "served_by": "server1/az-a",
    }  # fmt: skip
    return {**base, **kw}


def test_a_record_becomes_a_sample_on_the_run_clock() -> None:
    s = load.sample_of(record(), 7, CLOCK)
    assert (s.probe, s.seq, s.sent, s.duration, s.ok) == (
        "locust product page",
        7,
        12.5,
        0.004,
        True,
    )
    assert (s.status, s.error, s.server) == (200, None, "server1/az-a")


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [(503, "HTTPError('503 Server Error')", "http"),
     (201, "place order: 201, id None", "other"),  # a failure the locustfile marked itself
     (None, "ConnectionRefusedError(111, 'Connection refused')", "refused"),
     (None, "timed out", "timeout"),
     (None, "ConnectionResetError(104, 'Connection reset by peer')", "reset"),
     (None, "something new", "other"),
     (None, None, "other")],  # no answer and no error: not a success either
)  # fmt: skip
def test_failed_records_are_failed_samples_with_a_kind(
    status: int | None, error: str | None, kind: str
) -> None:
    s = load.sample_of(record(status=status, error=error, served_by=None), 0, CLOCK)
    assert not s.ok and s.error == kind and s.status == status and s.server is None


def test_the_tail_reads_complete_lines_of_every_worker_file(tmp_path: Path) -> None:
    main = tmp_path / "records.jsonl"
    worker = tmp_path / "records.host_abc.jsonl"
    tail = load.RecordTail(main)
    assert tail.read_new() == []  # no file yet
    main.write_text(json.dumps(record(t=3.0)) + "\n" + json.dumps(record(t=4.0))[:20])
    worker.write_text(json.dumps(record(t=1.0)) + "\n")
    assert [r["t"] for r in tail.read_new()] == [1.0, 3.0]  # sorted; half a line waits
    with main.open("a") as f:
        f.write(json.dumps(record(t=4.0))[20:] + "\n")
    assert [r["t"] for r in tail.read_new()] == [4.0]
    assert tail.read_new() == []  # nothing read twice


# -- judging a load against its baseline ---------------------------------------------------


def result(p95: float, requests: int = 100, failures: int = 0) -> bl.LoadResult:
    page = bl.EndpointStats("product page", requests, failures, 10.0, p95 / 2, p95, p95 * 2)
    return bl.LoadResult({"product page": page}, page, 10.0)


BASE = bl.Baseline(bl.Conditions("lab", 16, 16.0, 30), result(p95=10.0))


def test_latency_within_the_baseline_passes_and_a_slow_endpoint_fails() -> None:
    ok = bl.judge_metric(BASE, result(p95=11.0), "product page", "p95", 20, users=16)
    assert ok.ok, ok.message
    slow = bl.judge_metric(BASE, result(p95=15.0), "product page", "p95", 20, users=16)
    assert not slow.ok
    assert slow.message.startswith("product page p95 15.0 ms vs 10.0 ms baseline (+50 %")


def test_no_evidence_or_other_conditions_is_not_a_pass() -> None:
    missing = bl.judge_metric(BASE, result(p95=10.0), "checkout", "p95", 20)
    assert not missing.ok and "no endpoint 'checkout'" in missing.message
    few = bl.judge_metric(BASE, result(p95=10.0, requests=3), "product page", "p95", 20)
    assert not few.ok and "too few requests" in few.message
    other = bl.judge_metric(BASE, result(p95=10.0), "product page", "p95", 20, users=50)
    assert not other.ok and "recorded with 16 users, this load has 50" in other.message


def test_failure_ratio_of_a_load() -> None:
    assert bl.failure_ratio_at_most(result(10, requests=200, failures=2), 0.01).ok
    bad = bl.failure_ratio_at_most(result(10, requests=200, failures=3), 0.01)
    assert not bad.ok and bad.message.startswith("3 of 200 requests failed (1.50 %, max 1 %)")
    assert not bl.failure_ratio_at_most(result(10, requests=0), 0.5).ok


# -- the records locust writes -------------------------------------------------------------


class _Answer:
    def __init__(self) -> None:
        self.status_code = 503
        self.headers = {"X-Served-By": 'server2/az-b "x"'}


def test_record_lines_are_json_with_every_field() -> None:
    from loadtests.records import record_line

    line = record_line("POST", 'place "order"', 12.3456, _Answer(), None, 1_000_000.25)
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "t": 1_000_000.25, "name": 'place "order"', "method": "POST", "status": 503,
        "duration_ms": 12.346, "error": None, "served_by": 'server2/az-b "x"',
    }  # fmt: skip
    refused = json.loads(
        record_line("GET", "health", None, None, ConnectionRefusedError(111, "refused\n"))
    )
    assert refused["status"] is None and refused["served_by"] is None
    assert refused["error"] == "[Errno 111] refused\n" and refused["duration_ms"] == 0.0
    # The same record read into the history: a refused request, failed.
    assert load.sample_of(refused, 0, CLOCK).error == "refused"
