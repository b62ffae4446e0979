"""The lab's lifecycle, on real services: up, idempotent up, status, failures named, down,
and the lab surviving its own crash (supervisord SIGKILLed) and its neighbours (two `up` at
once, other labs and hosts: loopback only, nothing left in /tmp/pg_autoctl).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import configs, control, health, monitoring, network
from lab.layout import SERVERS, LabLayout
from tests.conftest import wait_until

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
# A block of its own, next to the shared lab's (whatever block $GAMEDAY_LAB_BASE_PORT names),
# so these tests never disturb it.
OWN_BASE_PORT = LabLayout.from_env().base_port + 50


@pytest.fixture
def own_layout(tmp_path_factory: pytest.TempPathFactory) -> LabLayout:
    # Not under pytest's tmp_path: the postgres user must be able to reach the folder.
    layout = LabLayout.from_env(
        base_port=OWN_BASE_PORT, state_dir=f"/tmp/gameday-test-lab-{os.getpid()}"
    )
    yield layout
    control.down(layout)


# -- ground truth from /proc, independent of how lab/control.py finds the lab's processes --


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, session id, start time) of a live process; None if gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def lab_tree(layout: LabLayout) -> dict[int, int]:
    """supervisord and every process descended from it (pid -> start time), taken while
    supervisord lives: the lab's processes by the plainest definition there is."""
    root = int(layout.supervisor_pidfile.read_text())
    table = {int(e.name): _stat(int(e.name)) for e in Path("/proc").iterdir() if e.name.isdigit()}
    tree = {root}
    grew = True
    while grew:
        more = {pid for pid, st in table.items() if st and st[0] in tree} - tree
        tree |= more
        grew = bool(more)
    return {pid: st[2] for pid in tree if (st := table.get(pid))}


def survivors(tree: dict[int, int]) -> list[int]:
    """Processes of `tree` still alive (the same process: a reused pid starts later)."""
    return [pid for pid, start in tree.items() if (st := _stat(pid)) and st[2] == start]


def pg_autoctl_tmp_files(layout: LabLayout) -> list[str]:
    """What pg_autoctl left of this lab in its default runtime folder, /tmp/pg_autoctl."""
    root = Path("/tmp/pg_autoctl")
    return sorted(str(p) for p in root.rglob("*") if layout.state_dir.name in str(p))


def leftovers(layout: LabLayout, tree: dict[int, int], supervisord: int) -> list[str]:
    if layout.namespaced:
        # Its services lived on addresses of its namespaces: none may be left, nor a veth,
        # nor the host's route (knocking on the addresses would go out to the real network).
        found = network.leftovers(layout.net)
    else:
        found = [f"port {p}" for p in layout.all_ports() if health.port_open(p)]
    found += [f"pid {p}" for p in survivors(tree)]
    # supervisord's session (its pid) outlives it: no process may still belong to it.
    found += [
        f"pid {e.name} of supervisord's session"
        for e in Path("/proc").iterdir()
        if e.name.isdigit() and (st := _stat(int(e.name))) and st[1] == supervisord
    ]
    if layout.state_dir.exists():
        found.append(f"folder {layout.state_dir}")
    found += pg_autoctl_tmp_files(layout)
    return found


def listening_sockets(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of `pids` holds, in
    whatever network namespace the process is (its own /proc/PID/net)."""
    found = set()
    for pid in pids:
        found |= _listening(pid)
    return found


def _listening(pid: int) -> set[tuple[str, int]]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    found: set[tuple[str, int]] = set()
    for table, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc/net writes each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


def gameday(*argv: str, layout: LabLayout) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gameday.cli", *argv, "--base-port", str(layout.base_port)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**os.environ, "GAMEDAY_LAB_DIR": str(layout.state_dir)},
    )  # fmt: skip


def kill_supervisord(layout: LabLayout) -> int:
    pid = int(layout.supervisor_pidfile.read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until("supervisord gone", lambda: _stat(pid) is None, timeout=10)
    return pid


def test_up_status_idempotent_up_and_down_leave_nothing(own_layout: LabLayout) -> None:
    elapsed = control.up(own_layout)
    table, healthy = control.status_table(own_layout)
    assert healthy, table
    for name in ("haproxy", "postgres1", "postgres2", "redis1", "redis2", "sentinel3", "backend2"):
        assert name in table
    assert "primary" in table and "secondary" in table and "master" in table

    # Grouped by host, so that a fault can stop "server1" as a unit.
    groups: dict[str, set[str]] = {}
    for info in control.processes(own_layout).values():
        groups.setdefault(info["group"], set()).add(info["name"])
    exporters = {"node-exporter{}", "hostview{}", "pg-exporter{}", "redis-exporter{}"}
    outside = {"outside": {"outside"}} if own_layout.namespaced else {}
    assert groups == {
        "control": {"haproxy", "monitor", "sentinel3"},
        "server1": {"backend1", "postgres1", "redis1", "sentinel1"}
        | {e.format(1) for e in exporters},
        "server2": {"backend2", "postgres2", "redis2", "sentinel2"}
        | {e.format(2) for e in exporters},
        "monitoring": {"prometheus", "alertmanager"},
        **outside,
    }
    if own_layout.namespaced:
        # Every namespace, veth pair (both ends counted), the router's rules and NAT chains,
        # and the one host route the lab makes: nothing else of the machine's.
        made = network.inventory(own_layout.net)
        assert (made.namespaces, made.links, made.routes) == (7, 16, 1), made
    # Each server's disk is a tmpfs of its own, unmounted when the lab goes down.
    if os.geteuid() == 0:
        assert all(monitoring.disk_mounted(own_layout, s) for s in SERVERS)
    disks = [str(own_layout.server_disk(s)) for s in SERVERS]
    tree, supervisord = lab_tree(own_layout), control.supervisor_pid(own_layout)
    assert supervisord in tree
    if os.geteuid() == 0:  # PostgreSQL refuses root: the lab runs it as `postgres`
        owners = set()
        for pid in tree:
            # Gone meanwhile: the PostgreSQL exporter's scrapes come and go as backends.
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                # PostgreSQL itself, not its exporter (which runs as the lab's user)
                if b"postgres" in argv0 and b"exporter" not in argv0:
                    owners.add(Path(f"/proc/{pid}").stat().st_uid)
        assert owners == {pwd.getpwnam("postgres").pw_uid}

    started = time.monotonic()
    control.up(own_layout)  # a second up only checks
    assert time.monotonic() - started < elapsed

    status = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "lab", "status", "--base-port", str(OWN_BASE_PORT)],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "GAMEDAY_LAB_DIR": str(own_layout.state_dir)},
    )  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr

    control.down(own_layout)
    assert leftovers(own_layout, tree, supervisord) == []
    mounted = Path("/proc/mounts").read_text()
    assert not any(f" {d} " in mounted for d in disks), mounted


def test_busy_port_is_refused_before_anything_starts(own_layout: LabLayout) -> None:
    if own_layout.namespaced:
        # What could be in the way of a lab in namespaces is a route into its range.
        lab_range = own_layout.net.lab_range
        subprocess.run(["ip", "route", "add", "blackhole", lab_range], check=True)
        try:
            with pytest.raises(control.LabError) as info:
                control.up(own_layout)
        finally:
            subprocess.run(["ip", "route", "del", "blackhole", lab_range], check=True)
        assert f"the lab's range {lab_range} is already routed on this machine" in str(info.value)
        assert "blackhole" in str(info.value)
        assert not own_layout.state_dir.exists() and network.leftovers(own_layout.net) == []
        return
    with socket.socket() as sock:
        # The previous test's connections may leave the port in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", own_layout.redis_endpoint_port))
        sock.listen()
        with pytest.raises(control.LabError) as info:
            control.up(own_layout)
    assert f"ports {own_layout.redis_endpoint_port} are already in use" in str(info.value)
    assert not own_layout.state_dir.exists()


def test_failed_component_is_named_with_its_log(
    own_layout: LabLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(configs, "haproxy_cfg", lambda layout: "this is not haproxy syntax\n")
    with pytest.raises(control.LabError) as info:
        control.up(own_layout)
    message = str(info.value)
    assert "haproxy" in message
    assert str(own_layout.log_dir / "haproxy.log") in message


def test_every_listening_socket_of_the_lab_is_on_its_own_addresses(own_layout: LabLayout) -> None:
    control.up(own_layout)
    sockets = listening_sockets(list(lab_tree(own_layout)))
    # Every service is reached (so the check below judges all of them) ...
    assert {port for _, port in sockets} == {port for _, port in own_layout.endpoints()}
    # ... each on its host's address (127.0.0.1, or its zone's in its namespace), and none
    # of them, PostgreSQL with trust authentication included, on 0.0.0.0 or [::].
    assert sockets == set(own_layout.endpoints()), sorted(sockets)

    # pg_autoctl's pid files live in the lab's folder, not in /tmp/pg_autoctl.
    assert len(list(own_layout.pg_runtime_dir.rglob("pg_autoctl.pid"))) == 3
    assert pg_autoctl_tmp_files(own_layout) == []
    control.down(own_layout)
    assert pg_autoctl_tmp_files(own_layout) == []


def test_down_after_supervisord_is_killed_stops_every_process_and_up_is_healthy(
    own_layout: LabLayout,
) -> None:
    control.up(own_layout)
    tree = lab_tree(own_layout)
    assert len(tree) > 20  # supervisord, 21 programs, pg_autoctl's and postgres's children
    supervisord = kill_supervisord(own_layout)
    assert len(survivors(tree)) > 20  # supervisord takes none of them along

    status = gameday("lab", "status", layout=own_layout)
    assert status.returncode == 1, status.stdout + status.stderr
    said = re.search(r"supervisord is gone but (\d+) processes of the lab still run", status.stdout)
    assert said and int(said[1]) > 20, status.stdout
    assert "gameday lab down" in status.stdout

    down = gameday("lab", "down", layout=own_layout)
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(own_layout, tree, supervisord) == []

    control.up(own_layout)
    table, healthy = control.status_table(own_layout)
    assert healthy, table


def test_up_right_after_supervisord_is_killed_stops_the_orphans_and_is_healthy(
    own_layout: LabLayout,
) -> None:
    control.up(own_layout)
    tree = lab_tree(own_layout)
    supervisord = kill_supervisord(own_layout)

    said: list[str] = []
    control.up(own_layout, progress=said.append)
    assert any("supervisord is gone but" in line for line in said), said
    table, healthy = control.status_table(own_layout)
    assert healthy, table
    # Started again under a new supervisord: none of the orphans was kept.
    assert survivors(tree) == []
    assert control.supervisor_pid(own_layout) not in (None, supervisord)


def test_a_lab_killed_with_sigkill_leaves_its_network_until_gameday_heal_removes_it(
    own_layout: LabLayout, tmp_path: Path
) -> None:
    if not own_layout.namespaced:
        pytest.skip(f"the lab runs on 127.0.0.1 ({own_layout.network_note})")
    control.up(own_layout)
    tree = lab_tree(own_layout)
    for pid in tree:  # supervisord and every program, as the OOM killer or a reboot would
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until("every process of the lab gone", lambda: survivors(tree) == [], timeout=30)
    # Nothing of the lab runs, but its namespaces, veths, rules and route outlive it.
    assert network.inventory(own_layout.net).namespaces == 7

    heal = subprocess.run(
        [sys.executable, "-m", "gameday.cli", "heal", "--target", "lab"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "GAMEDAY_LAB_BASE_PORT": str(own_layout.base_port),
             "GAMEDAY_LAB_DIR": str(own_layout.state_dir),
             "GAMEDAY_STATE_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    assert heal.returncode == 0, heal.stdout + heal.stderr
    assert f"removed the network of a dead lab ({own_layout.net.prefix}*)" in heal.stdout
    assert network.leftovers(own_layout.net) == []
    assert network.inventory(own_layout.net).total() == 0
    assert own_layout.state_dir.exists()  # its data stays for the next `lab up`


def test_two_ups_at_once_both_end_healthy_without_traceback(own_layout: LabLayout) -> None:
    argv = [sys.executable, "-m", "gameday.cli", "lab", "up", "--base-port", str(OWN_BASE_PORT)]
    env = {**os.environ, "GAMEDAY_LAB_DIR": str(own_layout.state_dir), "PYTHONUNBUFFERED": "1"}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    first = start()
    assert first.stdout is not None
    # The second starts in the middle of the first: supervisord up, nothing healthy yet.
    head = []
    for line in first.stdout:
        head.append(line)
        if "supervisord running" in line:
            break
    second = start()
    out_second = second.communicate(timeout=600)[0]
    out_first = "".join(head) + first.communicate(timeout=600)[0]

    assert first.returncode == 0, out_first
    assert second.returncode == 0, out_second
    assert "Traceback" not in out_first + out_second
    # The second waited for the first, and said whom it waited for.
    assert f"waiting for pid {first.pid} (lab up" in out_second, out_second
    table, healthy = control.status_table(own_layout)
    assert healthy, table


def test_a_held_lock_is_waited_for_with_the_holder_named_then_given_up(
    own_layout: LabLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys; from lab import control; from lab.layout import LabLayout\n"
            f"layout = LabLayout.from_env(base_port={OWN_BASE_PORT})\n"
            "with control.exclusive(layout, 'lab up'):\n"
            "    print('held', flush=True); sys.stdin.read()\n"
        )],
        cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(control, "LOCK_WAIT_SEC", 1.0)
        said: list[str] = []
        with pytest.raises(control.LabError) as info:
            control.up(own_layout, progress=said.append)
        assert f"pid {holder.pid} (lab up, since" in str(info.value)
        assert f"holds {own_layout.lock_path}" in str(info.value)
        assert any(f"waiting for pid {holder.pid} (lab up" in line for line in said), said
        assert not own_layout.state_dir.exists()  # nothing was started
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not own_layout.lock_path.exists()  # the holder cleans up after itself


@pytest.mark.parametrize(
    ("argv", "env", "line"),
    [(["lab", "target", "--base-port", "80"], {},
      "gameday: lab base port 80 (--base-port) is outside 1025..65485"),
     (["lab", "status"], {"GAMEDAY_LAB_BASE_PORT": "abc"},
      "gameday: GAMEDAY_LAB_BASE_PORT='abc' is not a port number")],
)  # fmt: skip
def test_a_bad_base_port_is_bad_input_in_one_line(
    argv: list[str], env: dict[str, str], line: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gameday.cli", *argv], env={**os.environ, **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == line and proc.stdout == ""


def test_a_lab_running_other_programs_is_named_and_left_alone(own_layout: LabLayout) -> None:
    """`up` on a lab started with other programs (monitoring switched off, or an older
    gameday) says so in one line instead of changing groups under running programs."""
    control.up(own_layout)
    without = LabLayout(own_layout.base_port, own_layout.state_dir, monitoring=False)
    with pytest.raises(control.LabError) as info:
        control.up(without)
    assert "runs other programs than this gameday renders" in str(info.value)
    assert "`gameday lab down`, then `gameday lab up`" in str(info.value)
    table, healthy = control.status_table(own_layout)
    assert healthy, table


def test_a_failover_waits_through_a_monitor_too_busy_to_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failover was asked for; one poll of a stalled monitor timing out is not a failed
    injection. (A stand-in monitor: freezing the real one mid-failover takes minutes.)"""
    import psycopg

    from chaos.lab import DatabaseFailover
    from gameday.target import load_target

    class Monitor:
        def __enter__(self) -> Monitor:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def execute(self, sql: str) -> None:
            assert "perform_failover" in sql

    answers: list[object] = [SERVERS[0], psycopg.OperationalError("timeout expired"), SERVERS[1]]

    def pg_primary(layout: LabLayout) -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(psycopg, "connect", lambda *a, **kw: Monitor())
    monkeypatch.setattr(health, "pg_primary", pg_primary)
    DatabaseFailover(load_target("lab"), {}).inject()
    assert answers == []


@pytest.mark.parametrize(
    ("monitor_says", "in_recovery", "sync_standbys", "why"),
    [
        ("primary", False, 1, None),
        ("secondary", True, 0, None),
        ("secondary", False, 0, "accepts writes though the monitor calls it secondary"),
        ("primary", True, 0, "in recovery though the monitor calls it primary"),
        ("primary", False, 0, "no standby streaming synchronously from it"),
    ],
)
def test_a_database_node_that_contradicts_the_monitor_is_named(
    monitor_says: str, in_recovery: bool, sync_standbys: int, why: str | None
) -> None:
    # The real lab's case of the last row: tests/test_acceptance_on_lab.py.
    got = health.disagreement(monitor_says, in_recovery=in_recovery, sync_standbys=sync_standbys)
    assert got == why
