"""The foreign deployment (tests/foreign/) and its runbook, driven through gameday's real
command fault: it comes up whole, every fault is in effect after inject and gone after heal,
a clean failover loses no acknowledged note, and a crash of the primary while its
asynchronous standby lags loses some, which a direct query confirms (the ground truth the
harness's loss check is compared with in test_foreign_features.py).
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from chaos.base import FaultRefused
from chaos.command import CommandFault
from gameday.target import Entrypoint, Target
from tests.foreign import deployment as d
from tests.foreign.fixture import foreign, healthy_foreign
from tests.foreign.target import fault_params

pytestmark = pytest.mark.slow
__all__ = ["foreign", "healthy_foreign"]  # fixtures, imported to be found
ROOT = Path(__file__).resolve().parent.parent
WRITES_PER_SEC = 20
WRITER_MAX_SEC = 120  # every writer loop ends by then, whatever happens


def target_of(layout: d.Layout) -> Target:
    """The target as today's gameday can load it: the entrypoint is all a command fault
    needs (foreign.yaml's new fields arrive with the engine's generalisation)."""
    return Target(name="foreign", provider="generic", entrypoint=Entrypoint(url=layout.entry_url))


def command_fault(layout: d.Layout, name: str, step: dict[str, str] | None = None) -> CommandFault:
    return CommandFault(target_of(layout), fault_params(layout, name, step=step or {}))


def put(layout: d.Layout, note_id: str, text: str) -> tuple[int, str | None]:
    req = urllib.request.Request(
        f"{layout.entry_url}/v1/notes/{note_id}", data=json.dumps({"text": text}).encode(),
        method="PUT", headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=5) as answer:
            return answer.status, answer.headers.get("X-Node")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Node")


def notes_present(layout: d.Layout, node: str, ids: list[str]) -> set[str]:
    with d.pg_connect(layout, node, dbname="notes") as conn:
        rows = conn.execute("SELECT id FROM notes WHERE id = ANY(%s)", (ids,)).fetchall()
    return {r[0] for r in rows}


@dataclass
class Writer:
    """Notes PUT through the entrypoint at a fixed pace; `acked` maps each id answered
    200/201 to the monotonic time the answer arrived."""

    layout: d.Layout
    acked: dict[str, float] = field(default_factory=dict)
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        tag = uuid.uuid4().hex[:8]
        deadline = time.monotonic() + WRITER_MAX_SEC
        for seq in range(WRITES_PER_SEC * WRITER_MAX_SEC):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            note_id = f"t-{tag}-{seq}"
            try:
                code, _ = put(self.layout, note_id, f"note {seq}")
            except OSError:
                code = 0
            if code in (200, 201):
                self.acked[note_id] = time.monotonic()
            else:
                self.failed += 1
            time.sleep(1 / WRITES_PER_SEC)

    def acked_after(self, t: float) -> int:
        return sum(1 for at in self.acked.values() if at > t)


@pytest.fixture
def writer(healthy_foreign: d.Layout) -> Iterator[Writer]:
    w = Writer(healthy_foreign)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        yield w
    finally:
        w._stop.set()
        thread.join(timeout=30)


def wait_acks(w: Writer, after: float, count: int, timeout: float = 60) -> None:
    d.wait_for(f"{count} notes acknowledged after the fault", lambda: w.acked_after(after) >= count,
               timeout)  # fmt: skip


# -- the deployment --------------------------------------------------------------------------


def test_the_deployment_comes_up_whole(healthy_foreign: d.Layout) -> None:
    layout = healthy_foreign
    rows = d.status(layout)
    assert all(ok for _, ok, _ in rows), rows
    # nginx balances round robin: answers alternate between the two nodes.
    nodes = [d.http_get(layout.entry_url + "/healthz")[1].get("X-Node") for _ in range(20)]
    assert Counter(nodes) == {"node-1": 10, "node-2": 10}, nodes
    assert all(a != b for a, b in itertools.pairwise(nodes)), nodes
    code, _, body = d.http_get(layout.status_url)
    assert code == 200 and b"Active connections" in body
    primary = d.load_state(layout).pg_primary
    standby = d.other(d.PG_NODES, primary)
    assert d.replication(layout, primary) == {standby: ("streaming", "async")}
    info = d.redis_client(layout, layout.cache_port).info("replication")
    assert info["role"] == "master" and info["connected_slaves"] == 1, info
    assert info["slave0"]["state"] == "online", info


def test_the_notes_api(healthy_foreign: d.Layout) -> None:
    layout = healthy_foreign
    note_id = f"api-{uuid.uuid4().hex[:8]}"
    assert put(layout, note_id, "first")[0] == 201
    assert put(layout, note_id, "second")[0] == 200
    code, headers, body = d.http_get(f"{layout.entry_url}/v1/notes/{note_id}")
    assert code == 200 and json.loads(body)["text"] == "second"
    assert headers["X-Node"] in d.NODES
    code, headers, _ = d.http_get(f"{layout.entry_url}/v1/notes/never-{note_id}")
    assert code == 404 and headers["X-Node"] in d.NODES
    bad = urllib.request.Request(f"{layout.entry_url}/v1/notes/{note_id}", data=b"[]",
                                 method="PUT")  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=5)
    assert refused.value.code == 400
    # Written on the primary, streamed to the standby.
    standby = d.other(d.PG_NODES, d.load_state(layout).pg_primary)
    d.wait_for("the note on the standby",
               lambda: notes_present(layout, standby, [note_id]) == {note_id}, 10)  # fmt: skip


def test_the_database_wants_its_password_over_tcp(healthy_foreign: d.Layout) -> None:
    port = healthy_foreign.pg_port(d.load_state(healthy_foreign).pg_primary)
    url = f"host=127.0.0.1 port={port} dbname=notes user=notes connect_timeout=3"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(f"{url} password=wrong").close()
    with psycopg.connect(url, password=d.password(healthy_foreign)) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("notes",)


# -- each fault round-trips through gameday's command fault ----------------------------------


def _snapshot(layout: d.Layout) -> dict[str, object]:
    state = d.load_state(layout)
    return {"pg": state.pg_primary, "redis": state.redis_master,
            **{n: d.pid_of(layout, n) for n in d.NODES}}  # fmt: skip


def _answers(layout: d.Layout, count: int = 10) -> Counter[tuple[int, str | None]]:
    seen: Counter[tuple[int, str | None]] = Counter()
    for _ in range(count):
        code, headers, _ = d.http_get(layout.entry_url + "/healthz", timeout=5)
        seen[code, headers.get("X-Node")] += 1
    return seen


CASES = [
    ("database-failover", {}),
    ("database-crash", {}),
    ("stop-server", {"server": "node-1", "mode": "stop"}),
    ("stop-server", {"server": "node-2", "mode": "kill"}),
    ("kill-backend", {"server": "node-2"}),
    ("cache-failover", {}),
    ("cache-crash", {}),
    ("zone-outage", {"zone": "a"}),
]


@pytest.mark.parametrize(("name", "step"), CASES, ids=[f"{n}-{'-'.join(s.values())}".strip("-")
                                                        for n, s in CASES])  # fmt: skip
def test_a_fault_round_trips(healthy_foreign: d.Layout, name: str, step: dict[str, str]) -> None:
    layout = healthy_foreign
    fault = command_fault(layout, name, step)
    before = _snapshot(layout)
    fault.preflight()  # the check says: not in effect on a whole deployment
    try:
        fault.inject()  # returns once the check says the fault is in effect
        after = _snapshot(layout)
        if name.startswith("database"):
            assert fault.in_effect()
            assert after["pg"] != before["pg"]
            assert d.pg_role(layout, str(after["pg"])) == "primary"
            assert d.pg_role(layout, str(before["pg"])) == "down"
        elif name.startswith("cache"):
            assert fault.in_effect()
            assert after["redis"] != before["redis"]
            assert d.endpoint_port(layout) == layout.redis_port(str(after["redis"]))
            assert d.redis_client(layout, layout.cache_port).set("gameday:probe", "1")
        elif name == "zone-outage":  # zone a: node-1, pg-a, redis-a
            assert fault.in_effect()
            assert (after["pg"], after["redis"]) == ("pg-b", "redis-b")
            assert d.pg_role(layout, "pg-a") == "down" and d.redis_role(layout, "redis-a") == "down"
            assert _answers(layout) == {(200, "node-2"): 10}
        elif name == "stop-server":
            assert fault.in_effect()
            survivor = d.other(d.NODES, step["server"])
            # Passive health: the stopped node's refusals are retried on the other one.
            assert _answers(layout) == {(200, survivor): 10}
        else:  # kill-backend: the supervisor restarts it; the check may already say healed
            assert before[step["server"]] is not None
    finally:
        fault.heal()
    assert not fault.in_effect()
    assert d.healthy(layout), d.status(layout)
    # Healed means back in rotation: nginx rests a node that refused a request for 3 s after
    # it answers again, and a heal that returned then would leave the entrypoint without it.
    back = step.get("server") or ("node-1" if name == "zone-outage" else None)
    if back is not None:
        assert (200, back) in _answers(layout, 4), _answers(layout, 4)
    healed = _snapshot(layout)
    if name == "kill-backend":
        assert healed[step["server"]] not in (None, before[step["server"]])  # a new process
    if name.startswith("database"):  # roles stay swapped; the old primary follows the new
        primary = str(healed["pg"])
        assert primary != before["pg"]
        assert d.replication(layout, primary) == {str(before["pg"]): ("streaming", "async")}
    # Heal again from a new process, as `gameday heal` would: nothing to do, still whole.
    again = subprocess.run(shlex.split(fault.heal_command), cwd=ROOT, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert d.healthy(layout), d.status(layout)


def test_bad_arguments_exit_2_and_change_nothing(healthy_foreign: d.Layout) -> None:
    layout = healthy_foreign
    before = _snapshot(layout)
    script = ROOT / "tests/foreign/faults"
    base = ["--base-port", str(layout.base_port)]
    for argv in (
        [script / "stop-server.sh", "inject", "node-3", *base],
        [script / "stop-server.sh", "inject", "node-1", "pause", *base],
        [script / "database-crash.sh", "inject", "--lag", "soon", *base],
        [script / "database-failover.sh", "inject", "extra", *base],
    ):
        proc = subprocess.run([str(a) for a in argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        assert proc.returncode == 2, (argv, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert _snapshot(layout) == before
    assert d.healthy(layout)


def test_a_fault_on_a_broken_pair_is_refused(healthy_foreign: d.Layout) -> None:
    layout = healthy_foreign
    crash = command_fault(layout, "database-crash")
    crash.preflight()
    crash.inject()
    try:
        failover = command_fault(layout, "database-failover")
        with pytest.raises(FaultRefused, match="already in effect"):
            failover.preflight()
        # Without gameday's preflight the script refuses by itself, and changes nothing.
        primary = d.load_state(layout).pg_primary
        proc = subprocess.run(shlex.split(failover.inject_command), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 1
        assert "refusing to break an unhealthy deployment further" in proc.stderr
        assert d.load_state(layout).pg_primary == primary
    finally:
        crash.heal()
    assert d.healthy(layout)


# -- repairs on a busy machine ---------------------------------------------------------------


def _zombie() -> subprocess.Popen[bytes]:
    """A child that has exited and that we have not waited for, PostgreSQL's user's like a
    postmaster (another user's pid is no postmaster of PostgreSQL's: it ignores it)."""
    child = subprocess.Popen(["true"], **d._pg_user())
    d.wait_for("the child exits", lambda: (d._proc_stat(child.pid) or ("Z",))[0] == "Z", 30)
    return child


def test_a_killed_postmaster_nobody_reaped_does_not_block_its_restart(
    healthy_foreign: d.Layout,
) -> None:
    layout = healthy_foreign
    # Nothing of the deployment is our child: init reaps what a fault kills.
    for name in (*d.PG_NODES, *d.REDIS_NODES, "nginx", "node-1-supervisor"):
        pid = d.pid_of(layout, name)
        assert pid is not None, name
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        assert ppid != os.getpid(), name
    primary = d.load_state(layout).pg_primary
    standby = d.other(d.PG_NODES, primary)
    socket_lock = layout.pg_sock / f".s.PGSQL.{layout.pg_port(standby)}.lock"
    d.stop_pg(layout, standby)
    # The lock files a SIGKILLed postmaster leaves, naming a pid that is alive: refused...
    holder = subprocess.Popen(["sleep", "60"], **d._pg_user())  # PostgreSQL's user, as its own
    try:
        for lock in (socket_lock, layout.pg_data(standby) / "postmaster.pid"):
            lock.write_text(f"{holder.pid}\n")
            d._chown_pg(lock)
        with pytest.raises(d.DeploymentError, match="lock file"):
            d.start_pg(layout, standby)
    finally:
        holder.kill()
        holder.wait()
    # ...and naming a zombie, which PostgreSQL takes for a live postmaster: started.
    zombie = _zombie()
    try:
        for lock in (socket_lock, layout.pg_data(standby) / "postmaster.pid"):
            lock.write_text(f"{zombie.pid}\n")
            d._chown_pg(lock)
        d.start_pg(layout, standby)
    finally:
        zombie.wait()
    assert d.follows(layout, standby, primary, 60)
    assert d.healthy(layout), d.status(layout)


def test_a_standby_whose_wal_diverged_is_replaced_by_a_fresh_copy(
    healthy_foreign: d.Layout,
) -> None:
    layout = healthy_foreign
    primary = d.load_state(layout).pg_primary
    standby = d.other(d.PG_NODES, primary)
    d.stop_pg(layout, standby)
    data = layout.pg_data(standby)
    # What pg_rewind's first step does to a standby's data: single-user crash recovery, which
    # writes checkpoint records of its own on the primary's timeline.
    (data / "standby.signal").unlink()
    proc = subprocess.run(
        [str(d.PG_BIN / "postgres"), "--single", "-D", str(data), "template1"], input="",
        capture_output=True, text=True, timeout=120, cwd="/", **d._pg_user(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    d._write_pg_config(layout, standby, primary=primary)
    d.start_pg(layout, standby)
    assert d.pg_role(layout, standby) == "standby"
    assert not d.follows(layout, standby, primary, 10)  # it streams, and replays nothing
    d.repair_database(layout)
    assert d.database_pair(layout)[0], d.database_pair(layout)
    assert d.follows(layout, standby, primary, 60)


# -- acknowledged writes across database faults ----------------------------------------------


def test_a_clean_failover_loses_no_acknowledged_note(writer: Writer) -> None:
    layout = writer.layout
    wait_acks(writer, 0, 20)
    fault = command_fault(layout, "database-failover")
    fault.preflight()
    try:
        fault.inject()
        injected = time.monotonic()
        wait_acks(writer, injected, 20)  # writes work again on the new primary
    finally:
        writer._stop.set()
        fault.heal()
    acked = list(writer.acked)
    primary = d.load_state(layout).pg_primary
    missing = set(acked) - notes_present(layout, primary, acked)
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged notes lost: {sorted(missing)[:20]}"
    )
    assert len(acked) >= 40


def test_a_crash_under_lag_loses_acknowledged_notes_a_query_confirms(writer: Writer) -> None:
    layout = writer.layout
    wait_acks(writer, 0, 20)
    old_primary = d.load_state(layout).pg_primary
    fault = CommandFault(
        target_of(layout), fault_params(layout, "database-crash", step={}, crash_lag_sec=2)
    )
    fault.preflight()
    try:
        started = time.monotonic()
        fault.inject()
        injected = time.monotonic()
        wait_acks(writer, injected, 20)
    finally:
        writer._stop.set()
    new_primary = d.load_state(layout).pg_primary
    assert new_primary != old_primary
    acked = list(writer.acked)
    missing = set(acked) - notes_present(layout, new_primary, acked)
    # The walsender was paused for 2 s at 20 writes/s: about 40 acknowledged notes exist only
    # on the killed primary, and every lost one was acknowledged while the fault was injected.
    assert len(missing) >= 10, f"only {len(missing)} lost of {len(acked)}"
    assert all(started <= writer.acked[m] <= injected for m in missing)
    fault.heal()
    assert d.healthy(layout)
    # The old primary was rewound: the lost notes are gone from it too, nowhere to be found.
    d.wait_for("the rewound standby replays the new primary's notes", lambda: notes_present(
        layout, old_primary, acked) == set(acked) - missing, 30)  # fmt: skip


# -- stopping leaves nothing behind ----------------------------------------------------------

CHILD = """
import os, sys, time
from tests.foreign import deployment as d
layout = d.Layout(int(sys.argv[1]))
d.up(layout)
d.record_pid(layout, "owner", os.getpid())
print("up", flush=True)
time.sleep(300)
"""


def test_down_after_a_kill_9_of_the_owner_leaves_nothing(foreign: d.Layout) -> None:
    # A second deployment in the upper half of the block (it uses offsets 0..22).
    layout = d.Layout(foreign.base_port + 25)
    env = {**os.environ, d.PASSWORD_VAR: d.CANARY_PASSWORD}
    owner = subprocess.Popen([sys.executable, "-c", CHILD, str(layout.base_port)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
        assert d.healthy(layout)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert d.healthy(layout)  # everything outlives its owner...
        proc = subprocess.run([sys.executable, "-m", "tests.foreign", "down", "--base-port",
                               str(layout.base_port)], cwd=ROOT, capture_output=True,
                              text=True, timeout=180)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        # ...and `down` finds it all from the folder: no process, no file, no port left.
        assert not layout.folder.exists()
        assert d._our_processes(layout) == []
        for port in (layout.entry_port, layout.pg_port("pg-a"), layout.redis_port("redis-b"),
                     layout.cache_port, layout.node_port("node-2")):  # fmt: skip
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        d.down(layout)
