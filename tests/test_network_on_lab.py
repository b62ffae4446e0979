"""Zones on the wire, against the real lab: the egress probe sees each zone's own NAT, and the
network checks fail where the lab deserves it (a NAT shared by both zones, a failover manager
that ignores a partition); a network fault whose run is killed is healed by `gameday heal`.

One lab for all (the session's, on $GAMEDAY_LAB_BASE_PORT); every test leaves it healthy. The
shipped features themselves (features/resilience/nat.feature, zone_loss.feature,
zone_partition.feature) run on it in `make test` too, where they must pass.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from chaos.journal import Journal
from chaos.lab_network import DisableNat, ZonePartition
from chaos.runner import FaultSession, heal_pending
from gameday.checks.network import (
    egress_kept,
    egress_lost,
    one_writer_at_a_time,
    own_nat_per_zone,
    zone_samples,
)
from gameday.clock import Clock
from gameday.history import Sample
from gameday.probes.egress import PROBE_PREFIX, EgressProbe
from gameday.probes.writable import WritableNodesProbe
from gameday.target import Target, load_target
from lab import control, health, network
from lab.layout import SERVERS, LabLayout
from tests.conftest import lab_healthy, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
RATE = 10  # egress requests a second per zone: one every 100 ms


@pytest.fixture
def lab(running_lab: LabLayout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabLayout:
    """The session's lab, with zone networks (else the test skips saying why), an undo journal
    of the test's own, and healthy again after the test whatever it did."""
    if not running_lab.namespaced:
        pytest.skip(f"the lab runs on 127.0.0.1 without zone networks ({running_lab.network_note})")
    monkeypatch.setenv("GAMEDAY_STATE_DIR", str(tmp_path / "state"))
    yield running_lab
    # Whatever the test left in its journal (a run it killed), then the lab's own `up`.
    heal_pending(load_target("lab"), log=print)
    network.ensure(running_lab.net)
    control.up(running_lab)


class Recorder:
    """Samples of probes started together, on one clock."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.samples: list[Sample] = []
        self._lock = threading.Lock()

    def record(self, sample: object) -> None:
        assert isinstance(sample, Sample)
        with self._lock:
            self.samples.append(sample)

    def egress(self, target: Target) -> list[EgressProbe]:
        return [
            EgressProbe(target, zone=z, rate=RATE, clock=self.clock, record=self.record).start()
            for z in target.egress_zones()
        ]


def session() -> FaultSession:
    return FaultSession(log=lambda line: print(line, flush=True), signals=False)


def inject(faults: FaultSession, target: Target, fault: object, clock: Clock) -> None:
    faults.inject(
        fault,  # type: ignore[arg-type]
        journal=Journal(target), run_id="test-network", history=None, clock=clock,
        dry_run=False,
    )  # fmt: skip


def test_a_nat_shared_by_both_zones_fails_the_own_nat_check_and_cuts_zone_b_too(
    lab: LabLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = load_target("lab")
    plan = lab.net
    rec = Recorder()
    probes = rec.egress(target)
    try:
        time.sleep(1.5)
        # As built: each zone through its own NAT.
        as_built = own_nat_per_zone(zone_samples(rec.samples, PROBE_PREFIX))
        assert as_built.ok, as_built.message
        assert f"zone a through {plan.nat_public_address('a')}" in as_built.message
        assert f"zone b through {plan.nat_public_address('b')}" in as_built.message

        # Zone b's route table sends it to zone a's NAT (the one-NAT-for-all saving).
        shared_from = rec.clock.now()
        subprocess.run(
            ["ip", "-n", plan.netns("vpc"), "route", "replace", "default",
             "via", plan.nat_inside_address("a"), "table", str(plan.zone_table("b"))],
            check=True,
        )  # fmt: skip
        time.sleep(1.5)
        shared = own_nat_per_zone(
            {z: [s for s in ss if s.sent > shared_from + 0.2]
             for z, ss in zone_samples(rec.samples, PROBE_PREFIX).items()}
        )  # fmt: skip
        assert not shared.ok
        assert f"zones a and b both leave through {plan.nat_public_address('a')}" in shared.message
        rows = {c.name: c for c in health.components(lab)}
        assert not rows["nat-b"].healthy and "not its own NAT's" in rows["nat-b"].detail

        # The lab refuses faults while unhealthy; this test breaks it on purpose.
        monkeypatch.setattr(DisableNat, "preflight", lambda self: None)
        with session() as faults:
            inject(faults, target, DisableNat(target, {"zone": "a"}), rec.clock)
            took_hold = rec.clock.now()
            time.sleep(2.0)
            healing = rec.clock.now()
        # The heal is the lab's `up`: zone b's table is its own NAT's again, and healthy.
        assert lab_healthy(lab)
    finally:
        for probe in probes:
            probe.stop()
    by_zone = zone_samples(rec.samples, PROBE_PREFIX)
    lost = egress_lost(by_zone["a"], zone="a", fault_start=took_hold, took_hold=took_hold,
                       end=healing, within_sec=2)  # fmt: skip
    assert lost.ok, lost.message
    kept = egress_kept(by_zone["b"], zone="b", window=(took_hold, healing))
    assert not kept.ok
    assert "zone b lost egress during the fault" in kept.message


def test_a_failover_that_ignores_the_partition_shows_two_masters_and_names_them(
    lab: LabLayout,
) -> None:
    target = load_target("lab")
    rec = Recorder()
    probe = WritableNodesProbe(
        target, role="cache", run_id="test-split", rate=5, clock=rec.clock, record=rec.record
    ).start()
    roles = {s: health.redis_role(lab, s).get("role") for s in SERVERS}
    master = next(s for s, role in roles.items() if role == "master")
    replica = next(s for s in SERVERS if s != master)
    try:
        time.sleep(1.0)
        with session() as faults:
            inject(faults, target, ZonePartition(target, {"zone": "a", "peer": "b"}), rec.clock)
            split_at = rec.clock.now()
            # A failover manager on the replica's side that takes the partition for the
            # master's death: it promotes the replica, while the master still takes writes.
            client = redis.Redis(host=lab.server_host(replica), port=lab.redis_port(replica))
            client.replicaof("NO", "ONE")
            client.close()
            time.sleep(3.0)
            healing = rec.clock.now()
        # Healed: Sentinel puts one of them back under the other, and the lab is healthy.
        assert lab_healthy(lab)
    finally:
        probe.stop()
    verdict = one_writer_at_a_time(rec.samples, store="cache", window=(split_at, healing))
    assert not verdict.ok
    both = sorted(f"{lab.server_host(s)}:{lab.redis_port(s)}" for s in SERVERS)
    assert f"two cache nodes accepted writes at once (split brain): {both[0]} and {both[1]}" in (
        verdict.message
    )


def test_a_run_killed_during_a_partition_is_healed_by_gameday_heal(
    lab: LabLayout, tmp_path: Path
) -> None:
    env = {**os.environ, "GAMEDAY_STATE_DIR": str(tmp_path / "state")}
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "features/resilience/zone_partition.feature"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        # Both zones' rules in place: the fault's inject is over, its heal not begun.
        wait_until(
            "the run split the zones", lambda: network.split_zones(lab.net) == ["a", "b"], 180
        )
        os.killpg(run.pid, signal.SIGKILL)
        run.communicate(timeout=30)
        assert network.split_zones(lab.net) == ["a", "b"]  # nothing healed it

        heal = subprocess.run(
            [sys.executable, "-m", "gameday.cli", "heal", "--target", "lab"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert heal.returncode == 0, heal.stdout + heal.stderr
        assert "healed: split zone a from zone b" in heal.stdout
        assert network.split_zones(lab.net) == []
        assert lab_healthy(lab)
        assert Journal(load_target("lab")).pending() == []
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate(timeout=30)


@pytest.fixture(autouse=True)
def _no_stray_probe_threads() -> Iterator[None]:
    before = threading.active_count()
    yield
    wait_until("probe threads ended", lambda: threading.active_count() <= before + 2, 30)
