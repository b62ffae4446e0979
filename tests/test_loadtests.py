"""The locust load tests (loadtests/) against the embedded lab, run as locust subprocesses.

locust is never imported here: it monkey-patches with gevent, which breaks pytest and boto3
in the same process (docs: recipes, "locust inside a pytest project"). We start it headless
and read back its stats (JSON and CSV) and our per-request records (GAMEDAY_RECORDS).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.layout import LabLayout

pytestmark = [pytest.mark.lab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
LOCUST = Path(sys.executable).parent / "locust"

RUN_TIME_SEC = 8
USERS = 6  # at least one of each user class (weights 3:1)
STARTUP_MARGIN_SEC = 20.0  # interpreter and locust start-up, shutdown and file writing
GROUPED_NAMES = {"product list", "product page", "health", "login", "me", "place order", "order"}
SERVERS = {"server1", "server2"}


def _locust(
    tmp_path: Path, host: str, args: list[str], env: dict[str, str], timeout_sec: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run locust headless; return the finished process and how long it took."""
    # Only the variables given here: a GAMEDAY_SHAPE or GAMEDAY_RECORDS of the caller's
    # shell must not change the run (the locustfile reads no other GAMEDAY_ variables).
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GAMEDAY_")}
    full_env.update(env)
    command = [str(LOCUST), "-f", str(LOCUSTFILE), "--host", host, "--headless"]
    command += ["--only-summary", "--loglevel", "INFO", *args]
    started = time.monotonic()
    proc = subprocess.run(
        command,
        cwd=tmp_path,
        env=full_env,
        stdin=subprocess.DEVNULL,  # locust reads keys from a terminal; there is none here
        capture_output=True,
        text=True,
        timeout=timeout_sec,
        check=False,
    )
    return proc, time.monotonic() - started


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _json_total(path: Path) -> int:
    """Total requests from ``--json-file`` (written after the users stopped: final)."""
    return sum(int(entry["num_requests"]) for entry in json.loads(path.read_text()))


def _csv_aggregated(prefix: Path) -> tuple[int, int]:
    """(total requests, time of the write) from the CSVs' last Aggregated rows."""
    with open(f"{prefix}_stats.csv", newline="") as f:
        total = next(
            int(r["Request Count"]) for r in csv.DictReader(f) if r["Name"] == "Aggregated"
        )
    with open(f"{prefix}_stats_history.csv", newline="") as f:
        history = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    assert int(history[-1]["Total Request Count"]) == total
    return total, int(history[-1]["Timestamp"])


def test_records_match_locust_stats_and_show_both_servers(
    running_lab: LabLayout, tmp_path: Path
) -> None:
    records_path = tmp_path / "records.jsonl"
    csv_prefix = tmp_path / "run"
    proc, _ = _locust(
        tmp_path,
        running_lab.entrypoint_url,
        [
            *("-u", str(USERS), "-r", str(USERS), "-t", f"{RUN_TIME_SEC}s"),
            *("--csv", str(csv_prefix), "--json-file", str(tmp_path / "stats")),
        ],
        {"GAMEDAY_RECORDS": str(records_path)},
        timeout_sec=RUN_TIME_SEC + STARTUP_MARGIN_SEC + 30,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    records = _records(records_path)
    json_total = _json_total(tmp_path / "stats.json")
    assert json_total > 15, proc.stderr[-3000:]
    # One line per request: the same count as locust's own final statistics, exactly.
    assert len(records) == json_total

    # locust rewrites the stats CSVs once a second and not again at the end, so the CSV's
    # Aggregated row can lag the final count by up to a second of traffic: every request that
    # ended before that last write is in it, and nothing more than we recorded.
    csv_total, written_at = _csv_aggregated(csv_prefix)
    ended_before_write = sum(1 for r in records if r["t"] + r["duration_ms"] / 1000 < written_at)
    assert ended_before_write <= csv_total <= len(records)
    print(f"locust total {json_total}, CSV Aggregated {csv_total}, records {len(records)}")

    # Grouped names only (no "/api/products/17"); rarer tasks may not come up in 8 s, but
    # every shopper signs in and product pages are two thirds of browsing.
    names = {r["name"] for r in records}
    assert {"login", "product page"} <= names <= GROUPED_NAMES, names
    failed = [r for r in records if r["error"] is not None or r["status"] is None]
    assert not failed, failed[:5]
    assert all(r["status"] < 400 for r in records)
    servers = {str(r["served_by"]).split("/")[0] for r in records}
    assert servers == SERVERS, servers
    assert all(isinstance(r["duration_ms"], float) and r["duration_ms"] >= 0 for r in records)
    assert all(abs(r["t"] - time.time()) < 300 for r in records)


def test_step_shape_ends_by_itself(running_lab: LabLayout, tmp_path: Path) -> None:
    duration_sec = 5.0
    records_path = tmp_path / "records.jsonl"
    proc, elapsed_sec = _locust(
        tmp_path,
        running_lab.entrypoint_url,
        ["--csv", str(tmp_path / "run")],  # no -u/-r/-t: the shape alone drives and ends it
        {
            "GAMEDAY_SHAPE": "step",
            "GAMEDAY_USERS": "4",
            "GAMEDAY_SPAWN_RATE": "4",
            "GAMEDAY_STEP_USERS": "2",
            "GAMEDAY_STEP_SEC": "2",
            "GAMEDAY_DURATION_SEC": str(duration_sec),
            "GAMEDAY_RECORDS": str(records_path),
        },
        timeout_sec=duration_sec + STARTUP_MARGIN_SEC + 30,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Shape test stopping" in proc.stderr
    assert duration_sec <= elapsed_sec <= duration_sec + STARTUP_MARGIN_SEC

    with open(tmp_path / "run_stats_history.csv", newline="") as f:
        users = [int(r["User Count"]) for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    assert 2 in users and max(users) == 4, users  # the ramp went through its steps

    records = _records(records_path)
    assert records
    span_sec = max(r["t"] for r in records) - min(r["t"] for r in records)
    assert span_sec <= duration_sec + 1.0


SHAPE_PROBE = """
import json, sys
from loadtests import shapes
env = json.loads(sys.argv[1])
shape = shapes.selected(env)(env)
print(json.dumps([shape.users_at(t) for t in (0, 4.9, 5, 12, 19.9, 20, 29.9, 30)]))
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GAMEDAY_SHAPE": "steady", "GAMEDAY_USERS": "7"}, [7] * 8),
        (
            {"GAMEDAY_SHAPE": "step", "GAMEDAY_USERS": "5", "GAMEDAY_STEP_USERS": "2"}
            | {"GAMEDAY_STEP_SEC": "5"},
            [2, 2, 4, 5, 5, 5, 5, 5],
        ),
        (
            {"GAMEDAY_SHAPE": "spike", "GAMEDAY_USERS": "3", "GAMEDAY_SPIKE_USERS": "9"},
            [3, 3, 3, 3, 3, 9, 9, 3],
        ),
    ],
)
def test_shapes_follow_their_settings(env: dict[str, str], expected: list[int]) -> None:
    """The shapes' user counts over time (in a subprocess: importing them imports locust)."""
    proc = subprocess.run(
        [sys.executable, "-c", SHAPE_PROBE, json.dumps(env)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == expected
