"""Interrupts x lab fault types: is every fault healed, and how fast does a run stop?

For each lab fault type and each of SIGINT, SIGTERM and SIGKILL, a one-scenario game day is
started against the lab (`pytest` in a subprocess, the fault held for a minute), the signal is
sent once the fault is in effect, and then:
- SIGINT/SIGTERM: the run must exit 2 (interrupted) with the heal in its history and its
  junit.xml saying "error", never a pass; the seconds from the signal to the exit are kept;
- SIGKILL: nothing heals in the run; `gameday heal --target lab` must, and its seconds are kept.
Either way the lab must be healthy again afterwards (every component of `lab status`).

    .venv/bin/python bench/interrupts.py [--faults a,b] [--signals INT,TERM,KILL]

Prints one row per case and a summary line; run it against a running lab
($GAMEDAY_LAB_BASE_PORT), on a machine whose load it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import control, health  # noqa: E402
from lab.layout import LabLayout  # noqa: E402

STEPS = {
    "database-failover": "the database fails over",
    "database-crash": "the database primary crashes",
    "stop-server": "the first server is killed",
    "kill-backend": "the backend of the last server is killed",
    "cache-crash": "the cache master crashes",
    # The network faults (issue 15): iptables rules and a link inside the lab's namespaces.
    "disable-nat": 'the NAT of zone "a" is disabled',
    "zone-outage": 'zone "a" goes down',
    "zone-partition": 'zones "a" and "b" are partitioned',
}
FEATURE = """\
@resilience @destructive
Feature: interrupted
  Scenario: held
    Given a steady load of 10 requests per second on the health path
    When {step}
    And the fault lasts 60 seconds
"""
PLUGINS = [
    "gameday.pytest_plugin",
    "chaos.pytest_plugin",
    "steps.deployment",
    "steps.data",
    "steps.load",
    "steps.faults",
]


def _healthy(layout: LabLayout) -> bool:
    try:
        return all(c.healthy for c in health.components(layout))
    except Exception:
        return False


def _wait_healthy(layout: LabLayout, timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _healthy(layout):
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def _in_effect(reports: Path) -> bool:
    for history in reports.glob("*/history.jsonl"):
        if '"phase":"inject-end"' in history.read_text():
            return True
    return False


def one_case(fault: str, sig: signal.Signals, layout: LabLayout) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="gameday-interrupt-") as tmp:
        folder = Path(tmp)
        feature = folder / "held.feature"
        feature.write_text(FEATURE.format(step=STEPS[fault]))
        env = {
            **os.environ,
            "GAMEDAY_STATE_DIR": str(folder / "state"),
            "GAMEDAY_REPORTS_DIR": str(folder / "reports"),
        }
        args = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pytest.ini"), "--rootdir",
                str(folder), "-p", "no:cacheprovider", "-q", str(feature)]  # fmt: skip
        for plugin in PLUGINS:
            args += ["-p", plugin]
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while not _in_effect(folder / "reports"):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.communicate()[0] if proc.poll() is not None else ""
                proc.kill()
                return {"fault": fault, "signal": sig.name, "ok": False,
                        "why": f"the fault never took effect: {out[-300:]}"}  # fmt: skip
            time.sleep(0.1)
        time.sleep(1.0)
        sent = time.monotonic()
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=600)
        stopped = time.monotonic() - sent
        row: dict[str, object] = {"fault": fault, "signal": sig.name, "exit": proc.returncode}
        row["signal_to_exit_sec"] = round(stopped, 2)
        if sig == signal.SIGKILL:
            healed = time.monotonic()
            heal = subprocess.run(
                [sys.executable, "-m", "gameday.cli", "heal", "--target", "lab"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            row["heal_exit"] = heal.returncode
            row["heal_sec"] = round(time.monotonic() - healed, 2)
            ok = heal.returncode == 0 and "healed 1 fault" in heal.stdout
        else:
            (run,) = list((folder / "reports").iterdir())
            if not (run / "junit.xml").exists():
                row["ok"] = False
                row["why"] = f"no junit.xml; the run said: {out[-1500:]}"
                row["lab_healthy_after_sec"] = _wait_healthy(layout, 180)
                control.up(layout)
                return row
            suite = ET.parse(run / "junit.xml").getroot()
            phases = [
                json.loads(line).get("phase")
                for line in (run / "history.jsonl").read_text().splitlines()
            ]
            row["junit"] = f"errors={suite.get('errors')} failures={suite.get('failures')}"
            row["heal_in_history"] = "heal-end" in phases
            ok = (
                proc.returncode == 2
                and suite.get("errors") == "1"
                and "heal-end" in phases
                and "Traceback" not in out
            )
        settled = _wait_healthy(layout, 180)
        row["lab_healthy_after_sec"] = None if settled is None else round(settled, 1)
        row["ok"] = ok and settled is not None
        return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(STEPS))
    parser.add_argument("--signals", default="INT,TERM,KILL")
    args = parser.parse_args()
    # Started with `&` or nohup, this process ignores SIGINT and so would every run it starts
    # (an ignored signal is inherited across exec): gameday leaves an ignored SIGINT ignored,
    # and the SIGINT cases would measure a run that never saw the signal.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    layout = LabLayout.from_env()
    control.up(layout)
    print(f"load before: {os.getloadavg()}")
    rows = []
    for fault in args.faults.split(","):
        for name in args.signals.split(","):
            row = one_case(fault, signal.Signals[f"SIG{name}"], layout)
            rows.append(row)
            print(json.dumps(row), flush=True)
    good = sum(1 for r in rows if r["ok"])
    stops = sorted(
        float(r["signal_to_exit_sec"])  # type: ignore[arg-type]
        for r in rows
        if r["signal"] != "SIGKILL" and "signal_to_exit_sec" in r
    )
    median = stops[len(stops) // 2] if stops else float("nan")
    print(f"load after: {os.getloadavg()}")
    print(
        f"{good} of {len(rows)} interrupted faults healed and reported truthfully; "
        f"signal to exit (SIGINT/SIGTERM, heal included): median {median:.1f} s, "
        f"max {max(stops, default=float('nan')):.1f} s"
    )
    return 0 if good == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
