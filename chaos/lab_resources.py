"""Resource faults of the lab: a server's CPU, memory or disk filled, so that the seed's
HighCPUUsage, HighMemoryUsage and HighDiskUsage can be made to fire, and to resolve.

A lab server owns one CPU, 1 GiB of memory and a 64 MiB disk of its own (lab/layout.py); its
monitoring reads those envelopes (lab/hostview.py, node-exporter on the server's tmpfs).
- `cpu-stress`: stress-ng's CPU workers, counted as the server's processes (their pid file is
  in `<lab>/<server>/faults/`);
- `memory-pressure`: stress-ng's VM worker holding as much memory as brings the server to
  `percent` (default 90) of its envelope, then sleeping (it does not burn CPU too);
- `disk-fill`: one file on the server's own tmpfs, up to `percent` (default 90) of it.

Every fault is bounded by the target's `stress:` limits before it acts (workers, MiB, percent,
seconds) and stress-ng ends by itself after `stress.max_seconds` even if nobody heals it.
What heal needs (the pid file, the pid and its start time, the filler's path) is journaled
before the fault acts, so `gameday heal` in another process stops exactly that stress-ng, and
never a process that merely reuses its pid. The disk filled is never the one the harness
writes its history or journal to: the fault refuses when they share a device.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import ClassVar

from chaos.base import Fault, FaultError, FaultRefused
from chaos.lab import layout_of, server_named
from chaos.stress import cpu_workers, refuse_past_cpu_limit
from gameday.target import Target
from gameday.wait import poll_until
from lab import control, health, monitoring
from lab.layout import SERVER_CPUS, LabLayout, LabServer

STRESS_NG = "/usr/bin/stress-ng"
FILLER = "gameday-fill"
START_TIMEOUT_SEC = 10.0
STOP_TIMEOUT_SEC = 10.0
# Memory is allocated at page speed; on a busy machine 900 MB takes a few seconds.
MEMORY_FILL_TIMEOUT_SEC = 60.0
DEFAULT_PERCENT = "90"
MIB = 1024 * 1024


def _start_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        )
    except OSError:
        return ""


def autogroup_nice(pid: int) -> int | None:
    """The nice value of the process's autogroup (its session's scheduling weight)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split("nice")[1])
    except (OSError, IndexError, ValueError):
        return None


def set_autogroup_nice(pid: int, nice: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))


class _ResourceFault(Fault):
    """A fault on one server's resources (param `server`), healed by undoing exactly it."""

    providers: ClassVar[tuple[str, ...]] = ("lab",)
    #: the file (in the server's faults folder) that names the fault's process
    pidfile_name: ClassVar[str] = ""
    #: run stress-ng as if it had its server's CPU to itself (see CpuStress)
    boost: ClassVar[bool] = False

    def __init__(self, target: Target, params: dict[str, str]) -> None:
        super().__init__(target, params)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def layout(self) -> LabLayout:
        return layout_of(self.target)

    @property
    def server(self) -> LabServer:
        return server_named(self.params.get("server", ""))

    def seconds(self) -> int:
        return int(self.params.get("seconds") or self.target.stress.max_seconds)

    def preflight(self) -> None:
        self.server  # noqa: B018 (refuses an unknown server, in one line)
        limit = self.target.stress.max_seconds
        if self.seconds() > limit:
            raise FaultRefused(
                f"{self.label}: {self.seconds()} s is longer than stress.max_seconds ({limit})"
            )
        if not control.is_running(self.layout):
            raise FaultRefused(f"the lab on port {self.layout.base_port} is not running")
        if not control.monitored(self.layout):
            raise FaultRefused(
                "the lab runs without monitoring (GAMEDAY_LAB_MONITORING=0, or Docker mode): "
                "nothing would see this fault"
            )
        unhealthy = [c for c in health.components(self.layout) if not c.healthy]
        if unhealthy:
            names = ", ".join(f"{c.name} ({c.detail or 'not healthy'})" for c in unhealthy)
            raise FaultRefused(f"the lab is not healthy, refusing to break it further: {names}")

    # -- stress-ng as the server's process ---------------------------------------------------

    @property
    def folder(self) -> Path:
        return self.layout.server_faults_dir(self.server)

    def _start(self, argv: list[str]) -> None:
        """Start stress-ng in a session of its own, journaled: first where its pid will be
        written, then the pid and start time (before anything else happens)."""
        if not Path(STRESS_NG).exists():
            raise FaultRefused(f"{self.label}: stress-ng is not installed (make setup)")
        pidfile = self.folder / self.pidfile_name
        self.remember(pidfile=str(pidfile))
        self.folder.mkdir(parents=True, exist_ok=True)
        # --temp-path names the server: a heal that finds no pid file still finds it.
        argv = [
            STRESS_NG,
            *argv,
            "--timeout",
            f"{self.seconds()}s",
            "--temp-path",
            str(self.folder),
            "--quiet",
        ]
        self._proc = subprocess.Popen(
            argv,
            cwd=self.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        pid = self._proc.pid
        start = _start_ticks(pid)
        if start is None:
            raise FaultError(f"{self.label}: stress-ng exited at once ({' '.join(argv)})")
        self.remember(pid=str(pid), start=str(start))
        pidfile.write_text(f"{pid} {start}\n")
        if self.boost:
            set_autogroup_nice(pid, STRESS_NICE)
        if not poll_until(lambda: self._workers(pid) > 0, timeout=START_TIMEOUT_SEC, interval=0.1):
            raise FaultError(
                f"{self.label}: stress-ng started no worker within {START_TIMEOUT_SEC:.0f} s"
            )

    @staticmethod
    def _workers(pid: int) -> int:
        count = 0
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    raw = Path(f"/proc/{entry.name}/stat").read_text()
                    if int(raw[raw.rindex(")") + 2 :].split()[1]) == pid:
                        count += 1
        return count

    def _ours(self) -> list[int]:
        """The live stress-ng processes of this fault on this server: the journaled one (if
        its start time still matches) and any whose command line names the server's folder."""
        found = set()
        pid, start = self.params.get("pid"), self.params.get("start")
        pidfile = Path(self.params.get("pidfile") or self.folder / self.pidfile_name)
        if pid is None:
            with contextlib.suppress(OSError, ValueError):
                pid, start = pidfile.read_text().split()[:2]
        if pid is not None and start is not None and _start_ticks(int(pid)) == int(start):
            found.add(int(pid))
        marker = f"--temp-path {self.folder} "
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and marker in _cmdline(int(entry.name)) + " ":
                found.add(int(entry.name))
        return sorted(found)

    def _stop(self) -> None:
        for pid in self._ours():
            # Its own session and process group: the workers go with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=STOP_TIMEOUT_SEC)
        if not poll_until(lambda: not self._ours(), timeout=STOP_TIMEOUT_SEC, interval=0.1):
            raise FaultError(f"{self.label}: stress-ng still runs after SIGKILL")
        with contextlib.suppress(OSError):
            Path(self.params.get("pidfile") or self.folder / self.pidfile_name).unlink()

    def heal(self) -> None:
        self._stop()

    def in_effect(self) -> bool:
        return bool(self._ours())


# A server owns its CPU. With autogroups (kernel.sched_autogroup_enabled), each session gets
# a fair share of the machine whatever its processes' nice values: on this busy machine a
# stress-ng got 25 % of a core, not the core a server of its own would give it. Its session's
# weight is raised (measured: 93 %), and the lab's own session (supervisord's: every program
# of the lab) is raised too while the stress lasts, or the stress would starve the lab's
# monitoring of the very CPU it needs to see the stress (Prometheus scraped every 5-9 s).
STRESS_NICE = -19
LAB_NICE_UNDER_STRESS = -10


class CpuStress(_ResourceFault):
    """Stress a lab server's CPU: stress-ng's CPU workers (one per CPU the server owns, or
    `workers`) at full load, counted as the server's processes, until healed or for at most
    `stress.max_seconds`. As root, the stress and the lab are given the scheduling weight of
    machines of their own while it lasts (restored by heal). Heal kills the workers.
    HighCPUUsage fires on that server."""

    name = "cpu-stress"
    label = "CPU stressed"
    pidfile_name = "cpu-stress.pid"
    boost = os.geteuid() == 0

    def _lab_session(self) -> int | None:
        return control.supervisor_pid(self.layout)

    def inject(self) -> None:
        lab = self._lab_session()
        if self.boost and lab is not None:
            before = autogroup_nice(lab)
            if before is not None:
                self.remember(lab_pid=str(lab), lab_nice=str(before))
                set_autogroup_nice(lab, min(before, LAB_NICE_UNDER_STRESS))
        self._start(["--cpu", str(self.workers()), "--cpu-load", "100"])

    def heal(self) -> None:
        self._stop()
        lab, nice = self.params.get("lab_pid"), self.params.get("lab_nice")
        if lab is not None and nice is not None and self._lab_session() == int(lab):
            set_autogroup_nice(int(lab), int(nice))

    def workers(self) -> int:
        return cpu_workers(self, SERVER_CPUS)

    def describe(self) -> str:
        return (
            f"run {self.workers()} stress-ng CPU worker(s) on the lab's "
            f"{self.params.get('server')} for at most {self.seconds()} s"
        )

    def preflight(self) -> None:
        refuse_past_cpu_limit(self, self.workers())
        super().preflight()


def _percent(fault: Fault) -> float:
    raw = fault.params.get("percent") or DEFAULT_PERCENT
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise FaultRefused(f"{fault.label}: percent must be a number, not {raw!r}") from None
    limit = fault.target.stress.max_percent
    if not 0 < value <= limit:
        raise FaultRefused(f"{fault.label}: {value:g} % is beyond stress.max_percent ({limit:g})")
    return value


class MemoryPressure(_ResourceFault):
    """Fill a lab server's memory to `percent` (default 90) of what it owns: stress-ng's VM
    worker allocates the difference (as its monitoring measures the server's use), touches it
    and sleeps, until healed or for at most `stress.max_seconds`; at most
    `stress.max_memory_mb`. Heal kills it. HighMemoryUsage fires on that server."""

    name = "memory-pressure"
    label = "memory filled"
    pidfile_name = "memory-pressure.pid"

    def describe(self) -> str:
        return (
            f"hold memory with stress-ng until the lab's {self.params.get('server')} uses "
            f"{self.params.get('percent') or DEFAULT_PERCENT} % of its memory"
        )

    def _usage(self) -> tuple[float, float]:
        """(used, total) bytes of the server, as its monitoring reads them."""
        found = health.metrics(
            self.layout.server_host(self.server), self.layout.hostview_port(self.server)
        )
        total = found["node_memory_MemTotal_bytes"]
        return total - found["node_memory_MemAvailable_bytes"], total

    def preflight(self) -> None:
        _percent(self)
        super().preflight()

    def inject(self) -> None:
        percent = _percent(self)
        used, total = self._usage()
        need = int(total * percent / 100 - used)
        if need <= 0:
            raise FaultRefused(
                f"{self.label}: {self.params.get('server')} already uses "
                f"{used / total * 100:.0f} % of its memory"
            )
        limit = self.target.stress.max_memory_mb
        if need > limit * MIB:
            raise FaultRefused(
                f"{self.label}: {need // MIB} MiB needed, stress.max_memory_mb is {limit}"
            )
        self.remember(bytes=str(need))
        self._start(["--vm", "1", "--vm-bytes", str(need), "--vm-keep", "--vm-hang", "0"])

        def full() -> bool:
            used_now, _ = self._usage()
            return used_now >= total * (percent - 2) / 100

        if not poll_until(full, timeout=MEMORY_FILL_TIMEOUT_SEC, interval=0.5):
            used_now, _ = self._usage()
            raise FaultError(
                f"{self.label}: the server uses {used_now / total * 100:.0f} % after "
                f"{MEMORY_FILL_TIMEOUT_SEC:.0f} s, not {percent:g} %"
            )


class DiskFill(_ResourceFault):
    """Fill a lab server's own disk (its tmpfs) to `percent` (default 90) with one file,
    at most `stress.max_disk_mb`. Refused when the server has no disk of its own (the lab
    mounts one per server when it runs as root) and when that disk is the one the harness
    writes its history or undo journal to. Heal removes the file. HighDiskUsage fires."""

    name = "disk-fill"
    label = "disk filled"

    def describe(self) -> str:
        return (
            f"fill the lab's {self.params.get('server')} disk to "
            f"{self.params.get('percent') or DEFAULT_PERCENT} % with one file"
        )

    @property
    def disk(self) -> Path:
        return self.layout.server_disk(self.server)

    def preflight(self) -> None:
        _percent(self)
        self.server  # noqa: B018
        if not monitoring.disk_mounted(self.layout, self.server):
            raise FaultRefused(
                f"{self.label}: the lab's {self.server.name} has no disk of its own "
                f"({self.disk} is not a mount: the lab mounts one tmpfs per server as root)"
            )
        refuse_harness_disk(self.disk)
        super().preflight()

    def filler(self) -> Path:
        return Path(self.params.get("path") or self.disk / FILLER)

    def inject(self) -> None:
        percent = _percent(self)
        refuse_harness_disk(self.disk)
        path = self.disk / FILLER
        self.remember(path=str(path))
        fs = os.statvfs(self.disk)
        size, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
        need = int(size * percent / 100 - (size - free))
        limit = self.target.stress.max_disk_mb
        if need > limit * MIB:
            raise FaultRefused(
                f"{self.label}: {need // MIB} MiB needed, stress.max_disk_mb is {limit}"
            )
        if need <= 0:
            raise FaultRefused(f"{self.label}: the disk is already {percent:g} % full")
        with open(path, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, need)

    def heal(self) -> None:
        self.filler().unlink(missing_ok=True)

    def in_effect(self) -> bool:
        return self.filler().exists()


def refuse_harness_disk(disk: Path) -> None:
    """Refuse to fill `disk` when the run's history or the undo journal live on it: a full
    disk there would lose the very record of the game day (and the heals it needs)."""
    from chaos.journal import state_dir
    from gameday.run import reports_dir

    fill_dev = os.stat(disk).st_dev
    for what, folder in (("history (reports)", reports_dir()), ("undo journal", state_dir())):
        probe = Path(folder).resolve()
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if os.stat(probe).st_dev == fill_dev:
            raise FaultRefused(
                f"disk filled: {disk} is the disk the harness writes its {what} to ({folder}); "
                "refusing to fill it"
            )


FAULTS: tuple[type[Fault], ...] = (CpuStress, MemoryPressure, DiskFill)
