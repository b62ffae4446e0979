"""The `gameday` command: run the lab, check target files.

Exit codes: 0 done, 1 the operation failed (one line says which component and where its log
is), 2 bad input (one line names the file, field and value). No tracebacks for either.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gameday.secrets import install_log_redaction, redact

if TYPE_CHECKING:
    from gameday.target import Target

# Each command imports what it uses (the lab's database and Redis clients, the target's
# models, locust...) once the arguments are parsed: `gameday --help` and a mistyped option
# answer at once.

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _lab_layout(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from lab.layout import LabLayout

    return LabLayout.from_env(base_port=args.base_port)


def cmd_lab_up(args: argparse.Namespace) -> int:
    from lab import control

    layout = _lab_layout(args)
    elapsed = control.up(layout, progress=print, runtime=args.runtime)
    table, _ = control.status_table(layout)
    print(table)
    print(f"lab is up in {elapsed:.1f} s; entrypoint {layout.entrypoint_url}")
    return 0


def cmd_lab_down(args: argparse.Namespace) -> int:
    from lab import control

    control.down(_lab_layout(args), progress=print)
    return 0


def cmd_lab_status(args: argparse.Namespace) -> int:
    from lab import control

    layout = _lab_layout(args)
    if not control.is_running(layout):
        holder = control.lock_holder(layout)
        orphans = control.orphans_line(layout)
        if orphans:
            print(orphans)
            return EXIT_FAILED  # LSB's status code for "dead, but its pid file remains"
        if holder:
            print(f"lab is not running (yet): {holder} holds {layout.lock_path}")
        else:
            print(f"lab is not running (nothing runs it for {layout.state_dir})")
        return 3
    table, healthy = control.status_table(layout)
    print(table)
    return 0 if healthy else EXIT_FAILED


def cmd_lab_logs(args: argparse.Namespace) -> int:
    from lab import control

    layout = _lab_layout(args)
    names = (
        [args.component] if args.component else sorted(p.stem for p in layout.log_dir.glob("*.log"))
    )
    if not names:
        print(f"no logs under {layout.log_dir} (is the lab up?)", file=sys.stderr)
        return EXIT_FAILED
    paths = [control.log_path(layout, n) for n in names]
    missing = [n for n, p in zip(names, paths, strict=True) if not p.exists()]
    if missing:
        known = ", ".join(sorted(p.stem for p in layout.log_dir.glob("*.log")))
        print(f"gameday: no log for {missing[0]!r} (components: {known})", file=sys.stderr)
        return EXIT_BAD_INPUT
    tail = (
        ["tail", "-n", str(args.lines)] + (["-F"] if args.follow else []) + [str(p) for p in paths]
    )
    os.execvp("tail", tail)


def cmd_lab_target(args: argparse.Namespace) -> int:
    from lab.target import render_docker_target, render_target

    render = render_docker_target if args.runtime == "docker" else render_target
    print(render(_lab_layout(args)), end="")
    return 0


def cmd_target_check(args: argparse.Namespace) -> int:
    from gameday.target import ROLES, load_target

    target = load_target(args.target)
    present = [r for r in ROLES if getattr(target, r)]
    absent = [r for r in ROLES if not getattr(target, r)]
    print(f"{target.source}: ok: target {target.name!r} ({target.provider})")
    print(f"  deployment: {redact(target.identity())}")
    print(f"  entrypoint: {redact(target.entrypoint.url)}{redact(target.entrypoint.health_path)}")
    print(
        f"  roles: {', '.join(present) or 'none'}"
        + (f"; absent: {', '.join(absent)}" if absent else "")
    )
    if target.servers:
        servers = ", ".join(f"{s.name} (zone {s.zone})" for s in target.servers)
        print(f"  servers: {redact(servers)}")
    if target.aws is not None:
        aws = target.aws
        account = aws.account_id or "not set (AWS faults refuse)"
        endpoint = f", endpoint {redact(aws.endpoint_url)}" if aws.endpoint_url else ""
        zones = ", ".join(aws.zones) or "none declared"
        print(f"  aws: account {account}, region {aws.region}{endpoint}; zones: {zones}")
    if target.monitoring is not None:
        print(f"  monitoring: {monitoring_line(target)}")
    for name, fault in target.faults.items():
        where = f" over SSH on {fault.ssh}" if fault.ssh else ""
        print(redact(f"  fault {name}{where}: inject `{fault.inject}`, heal `{fault.heal}`"))
    allowed = "allowed" if target.allow_destructive else "need --allow-destructive"
    print(f"  destructive scenarios: {allowed}")
    if args.scenarios:
        return _print_scenario_plan(args.target, allow_destructive=args.allow_destructive)
    return 0


def monitoring_line(target: Target) -> str:
    """What `target check` says about the monitoring role."""
    m = target.monitoring
    assert m is not None
    parts = []
    if m.prometheus_url:
        parts.append(f"Prometheus {m.prometheus_url}")
    if m.alertmanager_url:
        parts.append(f"Alertmanager {m.alertmanager_url}")
    if m.receiver is not None and m.receiver.listen:
        parts.append(f"receiver: the harness's webhook on {m.receiver.listen}")
    elif m.receiver is not None:
        parts.append(f"receiver: Alertmanager's {m.receiver.integration} notification counters")
    else:
        parts.append("no receiver check")
    if m.cloudwatch_alarms:
        alarms = ", ".join(f"{k}={v}" for k, v in m.cloudwatch_alarms.items())
        parts.append(f"CloudWatch alarms {alarms}")
    return redact("; ".join(parts))


def _print_scenario_plan(target_arg: str, *, allow_destructive: bool) -> int:
    """Which shipped scenarios run on the target, and why the others are skipped: pytest
    collects features/ in plan mode (--gameday-plan), judging each scenario's needs exactly as
    a real run does, and touches nothing."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    features = root / "features"
    if not features.is_dir():
        print("  scenarios: no features/ next to this installation to plan")
        return 0
    name_or_path = target_arg
    if "/" in target_arg or target_arg.endswith((".yaml", ".yml")):
        name_or_path = str(Path(target_arg).resolve())
    with tempfile.TemporaryDirectory(prefix="gameday-plan-") as tmp:
        plan = Path(tmp) / "plan.jsonl"
        command = [
            sys.executable, "-m", "pytest", str(features), "--target", name_or_path,
            "--gameday-plan", str(plan), "-p", "no:cacheprovider", "-q",
        ]  # fmt: skip
        if allow_destructive:
            command.append("--allow-destructive")
        done = subprocess.run(
            command, cwd=root, capture_output=True, text=True, timeout=120, check=False
        )
        lines = plan.read_text().splitlines() if plan.exists() else []
    if done.returncode not in (0, 5) or not lines:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
        print(f"gameday: could not plan the scenarios: {redact(tail[0])}", file=sys.stderr)
        return EXIT_FAILED
    rows = [json.loads(line) for line in lines]
    runs = sum(1 for r in rows if r["runs"])
    print(f"  scenarios: {runs} of {len(rows)} run on this target")
    for r in sorted(rows, key=lambda r: (not r["runs"], r["nodeid"])):
        feature = r["nodeid"].partition("::")[0].removeprefix(str(features) + "/")
        state = "runs   " if r["runs"] else "skipped"
        why = "" if r["runs"] else f": {r['reason']}"
        print(redact(f"    {state} {feature}: {r['title']}{why}"))
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    # The CLI sits above every room; the engine modules themselves never import chaos.
    from chaos.cli import cmd_heal as heal
    from gameday.target import load_target

    target = load_target(args.target)
    return heal(target, force=args.force, log=print)


def cmd_faults(args: argparse.Namespace) -> int:
    from chaos.cli import cmd_faults as faults

    print(faults(args.provider, verbose=args.verbose))
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    """`baseline record|compare`: its own errors map to exit 2 (bad input) or 1 (run failed)."""
    import shutil
    import tempfile
    from pathlib import Path

    from gameday import baseline as bl
    from gameday.target import TargetError, load_target

    try:
        target = load_target(args.target)
        if args.min_requests < 1 or not args.latency_slack_ms >= 0:
            print("gameday: --min-requests must be 1 or more, --latency-slack-ms 0 or more",
                  file=sys.stderr)  # fmt: skip
            return EXIT_BAD_INPUT
        tolerances = bl.parse_tolerances(
            args.tolerance or [],
            bl.Tolerances(min_requests=args.min_requests, latency_slack_ms=args.latency_slack_ms),
        )
        path = bl.baseline_path(target.name, args.name, bl.baselines_dir(args.baselines_dir))
        if args.baseline_command == "record":
            missing = [o for o in ("users", "spawn_rate", "duration") if getattr(args, o) is None]
            if missing:
                flag = "--" + missing[0].replace("_", "-")
                print(f"gameday: baseline record needs {flag}", file=sys.stderr)
                return EXIT_BAD_INPUT
            users, rate, duration = args.users, args.spawn_rate, args.duration
            old = None
        else:
            old = bl.load_baseline(path)
            c = old.conditions
            users = c.users if args.users is None else args.users
            rate = c.spawn_rate if args.spawn_rate is None else args.spawn_rate
            duration = c.duration_sec if args.duration is None else args.duration
        bl.check_load(users, rate, duration, target)
        if not 0 <= args.workers <= 32:
            print(f"gameday: --workers {args.workers}: must be 0..32", file=sys.stderr)
            return EXIT_BAD_INPUT
        spread = f", {args.workers} workers" if args.workers else ""
        print(
            f"locust: {users} users, spawn rate {rate:g}/s, {duration} s against "
            f"{target.name}{spread}"
        )
        workdir = Path(tempfile.mkdtemp(prefix="gameday-baseline-"))
        result = bl.run_locust(
            target, users=users, spawn_rate=rate, duration_sec=duration, workdir=workdir,
            workers=args.workers,
        )  # fmt: skip
        # Kept when locust failed: the error names its log in there.
        shutil.rmtree(workdir, ignore_errors=True)
    except (TargetError, bl.BaselineError) as exc:
        print(f"gameday: {redact(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except bl.LoadRunError as exc:
        print(f"gameday: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    if result.total.requests == 0 or result.total.failures == result.total.requests:
        print(
            f"gameday: all {result.total.requests} requests to {redact(target.entrypoint.url)} "
            "failed; nothing written or compared (is the target up?)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if old is None:
        conditions = bl.new_conditions(target.name, users, rate, duration)
        bl.save_baseline(bl.Baseline(conditions, result), path)
        print(bl.result_table(result))
        t = result.total
        print(
            f"baseline written: {path} ({t.requests} requests, {t.rps:.1f} req/s, "
            f"p95 {t.p95:g} ms, {t.failure_ratio * 100:.1f} % failed; "
            f"revision {conditions.git_revision})"
        )
        return 0
    rows = bl.compare(old.result.all(), result.all(), tolerances)
    print(f"baseline {path} (revision {old.conditions.git_revision}, {old.conditions.date})")
    print(bl.table(rows))
    verdict = bl.verdict(rows)
    print(("ok: " if verdict.ok else "FAILED: ") + verdict.message)
    return 0 if verdict.ok else EXIT_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    if args.drill:  # a drill's fault goes through chaos (journal, heal-always), imported lazily
        from chaos.drill import cmd_drill

        return cmd_drill(args.plan, ignore_window=args.ignore_window, check=args.check)
    from gameday.gamedays import cmd_run as run

    return run(args.plan, ignore_window=args.ignore_window, check=args.check)


def cmd_pause(args: argparse.Namespace) -> int:
    from gameday.gamedays import cmd_pause as pause

    return pause(args.target, reason=args.reason, by=args.by)


def cmd_resume(args: argparse.Namespace) -> int:
    from gameday.gamedays import cmd_resume as resume

    return resume(args.target, by=args.by)


def cmd_ack(args: argparse.Namespace) -> int:
    from gameday.gamedays import cmd_ack as ack

    return ack(args.target, by=args.by, note=args.note)


def cmd_history(args: argparse.Namespace) -> int:
    from gameday.gamedays import cmd_history as history

    return history(target_name=args.target, scenario=args.scenario, last=args.last, html=args.html)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gameday",
        description=(
            "Chaos and acceptance tests for live web deployments. Scenarios run with "
            "`pytest features/ [--target NAME|PATH]`; this command manages the embedded lab "
            "and checks target files."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lab = sub.add_parser(
        "lab",
        help="the embedded CloudMart lab (HAProxy, 2 backends, pg_auto_failover, Redis+Sentinel)",
        description="Run the embedded lab on 127.0.0.1, in a block of ports from --base-port.",
    )
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    def lab_cmd(name: str, func: object, help_: str) -> argparse.ArgumentParser:
        p = lab_sub.add_parser(name, help=help_, description=help_)
        p.add_argument(
            "--base-port",
            type=int,
            default=None,
            help="first port of the lab's block of 50 (default $GAMEDAY_LAB_BASE_PORT or 17400)",
        )
        p.set_defaults(func=func)
        return p

    up = lab_cmd(
        "up", cmd_lab_up, "start the lab (idempotent) and wait until every part is healthy"
    )
    up.add_argument(
        "--runtime",
        choices=["supervisor", "docker"],
        default=None,
        help="run the programs under supervisord (default) or each in a container on a Docker "
        "Engine API (podman, started by the lab), grouped by compose-style project labels",
    )
    lab_cmd("down", cmd_lab_down, "stop every process of the lab and remove its folder")
    lab_cmd("status", cmd_lab_status, "a table of components, roles, ports and health")
    logs = lab_cmd("logs", cmd_lab_logs, "show the logs of one component or all")
    logs.add_argument("component", nargs="?", help="e.g. haproxy, postgres1, redis2, backend1")
    logs.add_argument("-n", "--lines", type=int, default=40, help="lines to show (default 40)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep following")
    target_cmd = lab_cmd("target", cmd_lab_target, "print the target file for a lab on --base-port")
    target_cmd.add_argument(
        "--runtime",
        choices=["supervisor", "docker"],
        default="supervisor",
        help="docker: the target of a lab started with --runtime docker (provider: docker)",
    )

    tgt = sub.add_parser(
        "target",
        help="check target files",
        description="Validate a target file and show which roles it binds.",
    )
    tgt_sub = tgt.add_subparsers(dest="target_command", required=True, metavar="ACTION")
    check = tgt_sub.add_parser(
        "check",
        help="validate a target (name in targets/ or a path) and show what runs on it",
        description=(
            "Validate a target file, show the roles, servers and faults it declares, and "
            "which shipped scenarios of features/ run on it (each skipped one with its reason)."
        ),
    )
    check.add_argument("target", help="a name from targets/ (e.g. lab) or a path to a YAML file")
    check.add_argument(
        "--no-scenarios", dest="scenarios", action="store_false",
        help="only validate the file; do not plan the scenarios (faster)",
    )  # fmt: skip
    check.add_argument(
        "--allow-destructive", action="store_true",
        help="plan as if the run had --allow-destructive",
    )  # fmt: skip
    check.set_defaults(func=cmd_target_check)

    heal = sub.add_parser(
        "heal",
        help="heal what a killed run left behind (replays the undo journal)",
        description=(
            "Every fault is written to an undo journal before it acts. A run that was killed "
            "(kill -9, a lost machine) leaves its faults there; this heals them. The next "
            "run does the same before its first destructive scenario."
        ),
    )
    heal.add_argument("--target", default="lab", help="target name or path (default: lab)")
    heal.add_argument(
        "--force", action="store_true",
        help="heal even faults of a run that still seems alive (its pid exists)",
    )  # fmt: skip
    heal.set_defaults(func=cmd_heal)

    faults = sub.add_parser(
        "faults", help="list the fault types, per provider", description="List fault types."
    )
    faults.add_argument("--provider", choices=["lab", "docker", "aws", "generic"])
    faults.add_argument("-v", "--verbose", action="store_true", help="full documentation")
    faults.set_defaults(func=cmd_faults)

    base = sub.add_parser(
        "baseline",
        help="record a load baseline with locust, or compare a new run against it",
        description=(
            "Run loadtests/locustfile.py headless against the target's entrypoint. record: "
            "write baselines/<target>-<name>.json; compare: run again under the baseline's "
            "conditions (unless overridden) and exit 1 on a regression past the tolerances."
        ),
    )
    base_sub = base.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    for action, help_ in (
        ("record", "run locust and write the baseline"),
        ("compare", "run locust and compare with the baseline (exit 1 on a regression)"),
    ):
        p = base_sub.add_parser(action, help=help_, description=help_)
        p.add_argument("--target", default="lab", help="target name or path (default: lab)")
        p.add_argument("--users", type=int, help="simulated users (at most 1000)")
        p.add_argument("--spawn-rate", type=float, help="users started per second")
        p.add_argument("--duration", type=int, help="run time in seconds (at most 3600)")
        p.add_argument(
            "--workers", type=int, default=0,
            help="run locust distributed: a master and this many local worker processes "
            "(default 0: one process; docs/load.md shows workers on other hosts)",
        )  # fmt: skip
        p.add_argument("--name", default="default", help="baseline name (default: default)")
        p.add_argument(
            "--baselines-dir",
            help="folder of baselines (default $GAMEDAY_BASELINES_DIR or baselines/)",
        )
        p.add_argument(
            "--tolerance", action="append", metavar="SPEC",
            help='[ENDPOINT:]METRIC=NUMBER, e.g. "p95=30" or "product page:p95=30,rps=20"; '
            "METRIC: p50, p95, p99 (rise %%), rps (drop %%), failures (rise, %% points); "
            "defaults p50/p95 +20, p99 +50, rps -10, failures +1",
        )  # fmt: skip
        p.add_argument(
            "--min-requests", type=int, default=20,
            help="endpoints with fewer requests in either run are not judged (default 20)",
        )  # fmt: skip
        p.add_argument(
            "--latency-slack-ms", type=float, default=2.0,
            help="a latency rise smaller than this is never a regression (default 2 ms)",
        )  # fmt: skip
        p.set_defaults(func=cmd_baseline)
    _add_gameday_commands(sub)
    return parser


def _add_gameday_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Scheduled game days (docs/gamedays.md): run, pause, resume, ack, history."""
    run = sub.add_parser(
        "run",
        help="run a game-day plan unattended (gamedays/NAME.yaml): exit 0/1/2/3",
        description=(
            "Run the plan's scenarios with pytest, one game day per target at a time, record "
            "every scenario in the ledger and fail on a regression against the last passing "
            "runs. Exit 0 passed, 1 failed or regressed, 2 bad input, 3 refused (outside the "
            "plan's windows, target paused, another game day holds the target)."
        ),
    )
    run.add_argument("plan", help="a plan name from gamedays/ or a path to a plan file")
    run.add_argument(
        "--drill", action="store_true",
        help="inject the plan's drill fault and leave it to people: time to detect (gameday "
        "ack or the first alert), to mitigate and to restore; heals at the plan's deadline",
    )  # fmt: skip
    run.add_argument(
        "--ignore-window", action="store_true", help="run even outside the plan's windows"
    )
    run.add_argument(
        "--check", action="store_true",
        help="check the plan and whether it may run now; run nothing",
    )  # fmt: skip
    run.set_defaults(func=cmd_run)

    pause = sub.add_parser(
        "pause",
        help="the kill switch: no fault on the target, by anyone, until resumed",
        description=(
            "Pause a target in the ledger: every fault is refused, runs refuse to start "
            "(exit 3, naming the reason), and a running game day heals and stops within a "
            "second."
        ),
    )
    pause.add_argument("--target", required=True, help="target name or path")
    pause.add_argument("--reason", required=True, help="why (shown to every refused run)")
    pause.add_argument("--by", help="who pauses (default: user@host)")
    pause.set_defaults(func=cmd_pause)

    resume = sub.add_parser("resume", help="lift a pause", description="Lift a target's pause.")
    resume.add_argument("--target", required=True, help="target name or path")
    resume.add_argument("--by", help="who resumes (default: user@host)")
    resume.set_defaults(func=cmd_resume)

    ack = sub.add_parser(
        "ack",
        help="acknowledge what is happening on a target (ends a drill's time to detect)",
        description="Record that a person noticed; a drill running on the target measures it.",
    )
    ack.add_argument("--target", required=True, help="target name or path")
    ack.add_argument("--by", help="who acknowledges (default: user@host)")
    ack.add_argument("--note", default="", help="what you saw")
    ack.set_defaults(func=cmd_ack)

    history = sub.add_parser(
        "history",
        help="the ledger's records: a table, or a trend page with --html",
        description="Show the recorded runs, oldest first; --html writes the trend page.",
    )
    history.add_argument("--target", help="only this target (name or path)")
    history.add_argument("--scenario", help="only scenarios whose title contains this")
    history.add_argument("--last", type=int, help="only the last N runs")
    history.add_argument(
        "--html", nargs="?", const="", metavar="PATH",
        help="also write the trend page (default: trend.html in the reports folder)",
    )  # fmt: skip
    history.set_defaults(func=cmd_history)


class _NotRaised(Exception):
    pass


def _lab_error() -> type[Exception]:
    """lab.control's LabError, once a command has imported lab.control (only then can it be
    raised): importing it up front cost every command, `gameday run` refusing in under a
    second included, a third of a second."""
    module = sys.modules.get("lab.control")
    return module.LabError if module is not None else _NotRaised


def main(argv: Sequence[str] | None = None) -> int:
    install_log_redaction()
    args = build_parser().parse_args(argv)
    from chaos.base import FaultError
    from gameday.target import TargetError
    from lab.layout import LayoutError

    try:
        return int(args.func(args))
    except (TargetError, LayoutError) as exc:
        print(f"gameday: {redact(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (_lab_error(), ValueError, FaultError) as exc:
        print(f"gameday: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("gameday: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
