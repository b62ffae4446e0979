"""Benchmark: the trivial experiment, gameday against Chaos Toolkit, side by side.

The experiment: an HTTP steady-state probe (GET /health answers 200), a command fault held
2 seconds (it touches a flag file), the steady state again, and its rollback (the flag
removed). gameday runs it as bench/trivial/trivial.feature against a generic target written
here; Chaos Toolkit (`chaos run`) as the equivalent experiment JSON written here. Both hit one
small HTTP server this script serves on 127.0.0.1, both start as fresh processes, and they
alternate run by run so that the machine's load falls on both alike.

Chaos Toolkit is installed (from PyPI, with pip) into its own venv, /tmp/ctk-venv, when that
is missing; it is never a dependency of this project.

Wall and CPU (user + system of the tool's process and its children) per run; "beyond the
hold" is wall minus the 2 s the fault is held. Medians, and gameday / Chaos Toolkit ratios.

    .venv/bin/python bench/vs_chaostoolkit.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FEATURE = ROOT / "bench" / "trivial" / "trivial.feature"
CTK_VENV = Path(os.environ.get("CTK_VENV", "/tmp/ctk-venv"))
HOLD_SEC = 2.0


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def ensure_chaostoolkit() -> Path:
    chaos = CTK_VENV / "bin" / "chaos"
    if not chaos.exists():
        print(f"installing chaostoolkit into {CTK_VENV} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(CTK_VENV)], check=True)
        subprocess.run([str(CTK_VENV / "bin" / "pip"), "install", "-q", "chaostoolkit"], check=True)
    return chaos


def experiment(url: str, flag: Path) -> dict[str, object]:
    hypothesis = {
        "title": "the entrypoint answers its health check",
        "probes": [
            {
                "type": "probe",
                "name": "health",
                "tolerance": 200,
                "provider": {"type": "http", "url": f"{url}/health", "timeout": 2},
            }
        ],
    }
    return {
        "version": "1.0.0",
        "title": "A command fault held 2 seconds is rolled back",
        "description": "the same experiment as bench/trivial/trivial.feature",
        "steady-state-hypothesis": hypothesis,
        "method": [
            {
                "type": "action",
                "name": "touch-flag",
                "provider": {"type": "process", "path": "touch", "arguments": [str(flag)]},
                "pauses": {"after": HOLD_SEC},
            }
        ],
        "rollbacks": [
            {
                "type": "action",
                "name": "remove-flag",
                "provider": {"type": "process", "path": "rm", "arguments": ["-f", str(flag)]},
            }
        ],
    }


def target_yaml(url: str, flag: Path) -> str:
    return (
        "name: trivial\n"
        "provider: generic\n"
        "allow_destructive: true\n"
        f"entrypoint:\n  url: {url}\n  health_path: /health\n"
        "faults:\n"
        "  touch-flag:\n"
        f"    inject: touch {flag}\n"
        f"    heal: rm -f {flag}\n"
    )


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        sys.exit(f"{command[0]} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    return wall, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    chaos = ensure_chaostoolkit()
    version = subprocess.run([str(chaos), "--version"], capture_output=True, text=True).stdout
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    work = Path(tempfile.mkdtemp(prefix="gameday-vs-ctk-"))
    flag = work / "fault-flag"
    (work / "experiment.json").write_text(json.dumps(experiment(url, flag), indent=2))
    (work / "trivial.yaml").write_text(target_yaml(url, flag))
    # As installed tools run: with their bytecode cached (these machines set
    # PYTHONDONTWRITEBYTECODE=1, which would make gameday compile its modules on every run
    # while Chaos Toolkit's venv has its .pyc files from pip). One run each first, not counted.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(
        GAMEDAY_STATE_DIR=str(work / "state"),
        GAMEDAY_REPORTS_DIR=str(work / "reports"),
    )
    gameday = [
        sys.executable, "-m", "pytest", str(FEATURE), "--target", str(work / "trivial.yaml"),
        "-q", "-p", "no:cacheprovider",
    ]  # fmt: skip
    ctk = [
        str(chaos), "--no-version-check", "--no-log-file", "--settings",
        str(work / "settings.yaml"), "run", "--journal-path", str(work / "journal.json"),
        str(work / "experiment.json"),
    ]  # fmt: skip
    (work / "settings.yaml").write_text("{}\n")
    results: dict[str, list[tuple[float, float]]] = {"gameday": [], "chaostoolkit": []}
    try:
        timed(gameday, env, ROOT)
        timed(ctk, env, work)
        for i in range(args.runs):
            for name, command, cwd in (("gameday", gameday, ROOT), ("chaostoolkit", ctk, work)):
                wall, cpu, _ = timed(command, env, cwd)
                if flag.exists():
                    sys.exit(f"{name} left the fault in place: {flag} exists")
                results[name].append((wall, cpu))
                print(
                    f"run {i + 1} {name:>12}: {wall:.2f} s wall ({wall - HOLD_SEC:.2f} s beyond "
                    f"the hold), {cpu:.2f} s CPU; load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    med = {
        name: (statistics.median(w for w, _ in r), statistics.median(c for _, c in r))
        for name, r in results.items()
    }
    (gw, gc), (cw, cc) = med["gameday"], med["chaostoolkit"]
    print(
        f"median of {args.runs} on {os.cpu_count()} cores ({platform.platform()}), "
        f"{version.strip()}:\n"
        f"  gameday      {gw:.2f} s wall ({gw - HOLD_SEC:.2f} s beyond the hold), {gc:.2f} s CPU\n"
        f"  chaostoolkit {cw:.2f} s wall ({cw - HOLD_SEC:.2f} s beyond the hold), {cc:.2f} s CPU\n"
        f"  gameday / chaostoolkit: {gw / cw:.2f}x wall, {(gw - HOLD_SEC) / (cw - HOLD_SEC):.2f}x "
        f"beyond the hold, {gc / cc:.2f}x CPU; load {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()
