"""The seed's six rules, verbatim and with the seed's own timings (15 s scrape, rules every
30 s, `for: 1m`, `for: 5m` and a 5-minute CPU rate, Alertmanager's group_wait 10 s), proven
once on the lab's real exporters: each fires after its `for:` and not before, reaches the
receiver and resolves after the heal.

A Prometheus and an Alertmanager of the seed profile run next to the lab's (on the block's
reserved ports +6 and +7, receiver +8), reading the same exporters, while six faults act at
once: server1's CPU, memory and disk filled, the database primary and the cache master
crashed, server2's node-exporter stopped. About 12 minutes: left out of the default run (marker
`seed_timings`), it runs with GAMEDAY_SEED_TIMINGS=1 (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chaos.journal import Journal
from chaos.registry import fault_for
from chaos.runner import FaultSession
from gameday.checks import monitoring as mc
from gameday.clock import Clock
from gameday.history import Mark, Record
from gameday.monitoring import AlertWatch
from gameday.target import load_target
from lab import control, health, monitoring
from lab.layout import SERVERS, LabLayout
from tests.conftest import lab_healthy, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.seed_timings]
# The seed's worst case: the next scrape (15 s), then the next evaluation (30 s), then `for:`.
SCRAPE_EVAL_SEC = 15 + 30
DOWN_FOR_SEC = 60
RESOURCE_FOR_SEC = 300
MARGIN_SEC = 20  # a busy machine's lateness on top


@pytest.fixture
def seed_stack(running_lab: LabLayout, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Prometheus and Alertmanager with the seed's profile on the lab's exporters."""
    layout = running_lab
    if not control.monitored(layout):
        pytest.skip("the lab runs without monitoring")
    prometheus_port, alertmanager_port, receiver_port = layout.seed_ports
    folder = tmp_path / "seed"
    folder.mkdir()
    monitoring.write_configs(layout)  # alerts-seed.yml, the verbatim rules
    (folder / "prometheus.yml").write_text(
        monitoring.prometheus_yml(
            layout, monitoring.SEED, ports=(prometheus_port, alertmanager_port)
        )
    )
    (folder / "alertmanager.yml").write_text(
        monitoring.alertmanager_yml(monitoring.SEED, f"127.0.0.1:{receiver_port}")
    )
    commands = [
        monitoring.prometheus_command(
            layout, str(folder / "prometheus.yml"), str(folder / "p-data"), prometheus_port
        ),
        monitoring.alertmanager_command(
            str(folder / "alertmanager.yml"), str(folder / "a-data"), alertmanager_port
        ),
    ]
    procs = [
        subprocess.Popen(shlex.split(c), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for c in commands
    ]
    try:
        for port in (prometheus_port, alertmanager_port):
            wait_until(
                f"the seed profile's server on {port}",
                lambda port=port: httpx.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200,
            )
        yield f"http://127.0.0.1:{alertmanager_port}", f"127.0.0.1:{receiver_port}"
    finally:
        for proc in procs:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_seeds_verbatim_rules_fire_after_their_for_and_resolve_on_the_lab(
    running_lab: LabLayout, seed_stack: tuple[str, str]
) -> None:
    alertmanager, receiver = seed_stack
    layout = running_lab
    lab = load_target("lab")
    assert lab.monitoring is not None and lab.monitoring.receiver is not None
    seeded = lab.monitoring.model_copy(
        update={
            "alertmanager_url": alertmanager,
            "receiver": lab.monitoring.receiver.model_copy(update={"listen": receiver}),
        }
    )
    # Faults that last through the seed's five minutes and more.
    target = lab.model_copy(
        update={
            "monitoring": seeded,
            "stress": lab.stress.model_copy(update={"max_seconds": 900}),
        }
    )
    clock = Clock()
    records: list[Record] = []
    watch = AlertWatch(target, clock=clock, record=records.append)
    # Two minutes of steady state first. The verbatim CPU rule divides its 5-minute rate by
    # the whole window: on series younger than about a minute (this Prometheus just started)
    # it reads a mostly idle server as over 80 % busy and goes pending at once. On a young
    # deployment that pending clears before `for: 5m` ends; with a stress right behind it, it
    # would not, and the alert would fire before five minutes of stress.
    time.sleep(120)
    watch.start()
    assert watch.firing() == [], watch.firing()
    node2 = SERVERS[1].node_exporter_program
    replica = next(s for s in SERVERS if health.redis_role(layout, s).get("role") != "master")
    stopped = [node2, replica.redis_program]
    started = clock.now()

    def events() -> list[mc.AlertEvent]:
        return mc.alert_events(r for r in records if isinstance(r, Mark))

    try:
        with FaultSession(log=print, signals=False) as session:
            # Each lab fault refuses a lab already broken: the resource faults first, the
            # database crash last; the test stops the other two programs itself. Each alert is
            # timed from the moment its own cause began.
            began: dict[str, float] = {}
            for name, params, alert in (
                ("cpu-stress", {"server": "server1", "seconds": "900"}, "HighCPUUsage"),
                (
                    "memory-pressure",
                    {"server": "server1", "percent": "90", "seconds": "900"},
                    "HighMemoryUsage",
                ),
                ("disk-fill", {"server": "server1", "percent": "90"}, "HighDiskUsage"),
                ("database-crash", {}, "PostgreSQLDown"),
            ):
                began[alert] = clock.now()
                session.inject(
                    fault_for(target, name, params),
                    journal=Journal(target),
                    run_id="seed-proof",
                    history=None,
                    clock=clock,
                    dry_run=False,
                )
            began["InstanceDown"] = began["RedisDown"] = clock.now()
            control.stop_programs(layout, stopped)

            expected = {
                "InstanceDown": DOWN_FOR_SEC,
                "PostgreSQLDown": DOWN_FOR_SEC,
                "RedisDown": DOWN_FOR_SEC,
                "HighMemoryUsage": RESOURCE_FOR_SEC,
                "HighDiskUsage": RESOURCE_FOR_SEC,
                "HighCPUUsage": RESOURCE_FOR_SEC,
            }
            # The whole wait: the inject itself (memory fills at page speed), the next scrape
            # and evaluation, `for:`, and a busy machine's lateness.
            latest = {a: f + SCRAPE_EVAL_SEC + 60 + MARGIN_SEC for a, f in expected.items()}
            # The CPU rule also needs its 5-minute rate to pass 80 % (about 4 minutes).
            latest["HighCPUUsage"] += 240

            def all_fired() -> bool:
                seen = {e.alert for e in events() if e.kind == "firing" and e.at >= started}
                return set(expected) <= seen

            wait_until("all six alerts to fire", all_fired, timeout=max(latest.values()) + 60)
            detected = {}
            for alert, for_sec in expected.items():
                verdict = mc.alert_fired(
                    events(),
                    alert,
                    fault_start=began[alert],
                    within_sec=latest[alert],
                    wall_anchor=clock.wall_anchor,
                )
                assert verdict.ok, verdict.message
                detected[alert] = verdict
                # Never before its `for:` has passed since the fault made it true.
                assert verdict.measured["time_to_detect_sec"] >= for_sec, verdict.message
                print(verdict.message)
            # Delivered through the seed's route (group_wait 10 s, group_interval 10 s).
            wait_until(
                "every alert at the receiver",
                lambda: all(
                    mc.alert_delivered(
                        events(), a, fired_at=v.measured["fired_at"], within_sec=60
                    ).ok
                    for a, v in detected.items()
                ),
                timeout=90,
            )
            # The stress first: healing the database under it starves the new primary.
            for active in session.active:
                if active.fault.name == "cpu-stress":
                    active.heal()
            session.heal_all()
        control.start_programs(layout, stopped)
        healed = clock.now()

        def all_resolved() -> bool:
            return all(
                mc.alert_resolved(
                    events(),
                    a,
                    fired_at=v.measured["fired_at"],
                    heal=(healed, healed),
                    within_sec=600,
                ).ok
                for a, v in detected.items()
            )

        # The CPU's 5-minute rate takes minutes to fall under 80 %; the others one evaluation.
        wait_until("every alert to resolve", all_resolved, timeout=420)
    finally:
        watch.stop()
        control.start_programs(layout, stopped)
        wait_until("the lab healthy again", lambda: lab_healthy(layout), timeout=300)
