"""Docker resource faults: a server's CPU, memory or disk filled from inside one of its
containers, so that its host's node-exporter sees it (HighCPUUsage, HighMemoryUsage,
HighDiskUsage).

The container is the server's `backend_service` (or the container named by `service`). Each
fault runs a shell command in it through the Docker Engine API (`docker exec`): stress-ng for
CPU and memory (it must be installed in the container's image: a container without it is
refused, in one line; declare a command fault instead), one file for the disk.

Bounds: the target's `stress:` limits, checked before anything runs. Memory is measured from
the container's /proc/meminfo (the host's, as node-exporter sees it) and the disk from `df` on
`path` (default /tmp) inside the container: a fill that would need more than
`stress.max_memory_mb` or `stress.max_disk_mb` is refused rather than shrunk, so a large disk
(the host's own) is never filled. A fill whose filesystem has the size of the one holding the
harness's history, on an engine of this machine, is refused too (it is that disk).
Every stress-ng also ends by itself after `stress.max_seconds`. The container and the pid file
inside it are journaled before anything runs; heal kills that stress-ng (or removes the file),
and a container that is gone or restarted has nothing left to heal.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from chaos.base import Fault, FaultError, FaultRefused
from chaos.docker.engine import DockerFault, Member, engine, members, one_container
from chaos.stress import cpu_workers, refuse_past_cpu_limit
from gameday.wait import poll_until

PIDFILE = "/tmp/gameday-{name}.pid"
FILLER = "gameday-fill"
DEFAULT_PATH = "/tmp"
DEFAULT_PERCENT = "90"
STOP_TIMEOUT_SEC = 15.0
MIB = 1024 * 1024


class _ContainerFault(DockerFault):
    """A resource fault run inside one container of the server (param `server`)."""

    def _member(self, client: Any) -> Member:
        server, host = self._server()
        service = self.params.get("service") or host.backend_service
        if service:
            return one_container(client, host, service, self.label)
        running = [m for m in members(client, host) if m.status == "running"]
        if not running:
            raise FaultRefused(f"{self.label}: server {server.name} has no running container")
        return running[0]

    def _container(self, client: Any) -> Any:
        """The journaled container when there is one (heal), else the server's."""
        cid = self.params.get("container") or self._member(client).id
        return client.containers.get(cid)

    def _exec(self, container: Any, script: str) -> tuple[int, str]:
        result = container.exec_run(["sh", "-c", script], demux=False)
        output = (result.output or b"").decode(errors="replace").strip()
        return int(result.exit_code), output

    def _percent(self) -> float:
        raw = self.params.get("percent") or DEFAULT_PERCENT
        try:
            value = float(raw.rstrip("%"))
        except ValueError:
            raise FaultRefused(f"{self.label}: percent must be a number, not {raw!r}") from None
        limit = self.target.stress.max_percent
        if not 0 < value <= limit:
            raise FaultRefused(
                f"{self.label}: {value:g} % is beyond stress.max_percent ({limit:g})"
            )
        return value

    def preflight(self) -> None:
        """Refuse an unreachable engine, a container that is not running, past the limits."""
        seconds = int(self.params.get("seconds") or self.target.stress.max_seconds)
        if seconds > self.target.stress.max_seconds:
            raise FaultRefused(
                f"{self.label}: {seconds} s is longer than stress.max_seconds "
                f"({self.target.stress.max_seconds})"
            )
        server, _ = self._server()
        with engine(server) as client:
            member = self._member(client)
            if member.status != "running":
                raise FaultRefused(f"{self.label}: container {member.name} is {member.status}")

    def _remember_container(self, client: Any) -> Any:
        member = self._member(client)
        self.remember(container=member.id, container_name=member.name)
        return client.containers.get(member.id)


class _StressNg(_ContainerFault):
    """stress-ng in the container, in the background, its pid in a file there."""

    def _pidfile(self) -> str:
        return PIDFILE.format(name=self.name)

    def _seconds(self) -> int:
        return int(self.params.get("seconds") or self.target.stress.max_seconds)

    def preflight(self) -> None:
        super().preflight()
        server, _ = self._server()
        with engine(server) as client:
            container = self._container(client)
            code, _ = self._exec(container, "command -v stress-ng >/dev/null")
            if code != 0:
                raise FaultRefused(
                    f"{self.label}: stress-ng is not installed in container {container.name} "
                    f"(declare a command fault {self.name} for this server: docs/monitoring.md)"
                )

    def _start(self, client: Any, args: list[str]) -> None:
        container = self._remember_container(client)
        pidfile = self._pidfile()
        self.remember(pidfile=pidfile)
        command = shlex.join(["stress-ng", *args, "--timeout", f"{self._seconds()}s", "--quiet"])
        # Started in the background with nothing left on the exec's streams, so the call
        # returns at once; its pid where heal (in any process) will look.
        code, out = self._exec(
            container, f"{command} >/dev/null 2>&1 </dev/null & echo $! > {pidfile}"
        )
        if code != 0:
            raise FaultError(f"{self.label}: could not start stress-ng: {out[-200:]}")
        if not poll_until(lambda: self._running(container), timeout=10, interval=0.2):
            raise FaultError(f"{self.label}: stress-ng did not keep running in {container.name}")

    def _running(self, container: Any) -> bool:
        pidfile = self._pidfile()
        # A killed stress-ng stays a zombie where PID 1 reaps nothing (no init in the
        # container), and `kill -0` still finds it: a zombie is not running.
        code, _ = self._exec(
            container,
            f"test -s {pidfile} && p=$(cat {pidfile}) && test -r /proc/$p/status "
            "&& ! grep -q '^State:.*Z' /proc/$p/status",
        )
        return code == 0

    def heal(self) -> None:
        server, _ = self._server()
        with engine(server) as client:
            try:
                container = self._container(client)
            except Exception as exc:
                if type(exc).__name__ == "NotFound":
                    return  # the container is gone, and its stress-ng with it
                raise
            if container.status != "running":
                return
            pidfile = self._pidfile()
            self._exec(container, f"test -s {pidfile} && kill $(cat {pidfile}) 2>/dev/null; true")
            if not poll_until(lambda: not self._running(container), timeout=STOP_TIMEOUT_SEC,
                              interval=0.2):  # fmt: skip
                self._exec(container, f"kill -9 $(cat {pidfile}) 2>/dev/null; true")
                if self._running(container):
                    raise FaultError(f"{self.label}: stress-ng still runs in {container.name}")
            self._exec(container, f"rm -f {pidfile}")

    def in_effect(self) -> bool:
        server, _ = self._server()
        with engine(server) as client:
            container = self._container(client)
            return container.status == "running" and self._running(container)


class CpuStress(_StressNg):
    """Stress a Docker server's CPU: stress-ng's CPU workers (`workers`, default 1) inside
    its backend container (or `service`), until healed or for at most `stress.max_seconds`.
    Needs stress-ng in the image. Heal kills them."""

    name = "cpu-stress"
    label = "CPU stressed"

    def workers(self) -> int:
        return cpu_workers(self, 1)

    def describe(self) -> str:
        return (
            f"run {self.workers()} stress-ng CPU worker(s) inside a container of "
            f"{self.params.get('server')} for at most {self._seconds()} s"
        )

    def preflight(self) -> None:
        refuse_past_cpu_limit(self, self.workers())
        super().preflight()

    def inject(self) -> None:
        server, _ = self._server()
        with engine(server) as client:
            self._start(client, ["--cpu", str(self.workers()), "--cpu-load", "100"])


class MemoryPressure(_StressNg):
    """Fill a Docker server's memory to `percent` (default 90) of its host's, as the
    container's /proc/meminfo shows it: stress-ng's VM worker holds the difference inside the
    backend container (or `service`), at most `stress.max_memory_mb`. Needs stress-ng in the
    image. Heal kills it."""

    name = "memory-pressure"
    label = "memory filled"

    def describe(self) -> str:
        return (
            f"hold memory with stress-ng inside a container of {self.params.get('server')} "
            f"until its host uses {self.params.get('percent') or DEFAULT_PERCENT} %"
        )

    def preflight(self) -> None:
        self._percent()
        super().preflight()

    def inject(self) -> None:
        percent = self._percent()
        server, _ = self._server()
        with engine(server) as client:
            container = self._container(client)
            code, out = self._exec(container, "cat /proc/meminfo")
            if code != 0:
                raise FaultRefused(f"{self.label}: cannot read /proc/meminfo in {container.name}")
            info = {
                line.split(":")[0]: int(line.split()[1]) * 1024
                for line in out.splitlines()
                if len(line.split()) >= 2
            }
            total, available = info["MemTotal"], info["MemAvailable"]
            need = int(total * percent / 100 - (total - available))
            limit = self.target.stress.max_memory_mb
            if need <= 0:
                raise FaultRefused(f"{self.label}: the host already uses more than {percent:g} %")
            if need > limit * MIB:
                raise FaultRefused(
                    f"{self.label}: {need // MIB} MiB needed to reach {percent:g} %, "
                    f"stress.max_memory_mb is {limit}"
                )
            self.remember(bytes=str(need))
            self._start(client, ["--vm", "1", "--vm-bytes", str(need), "--vm-keep",
                                 "--vm-hang", "0"])  # fmt: skip


class DiskFill(_ContainerFault):
    """Fill the filesystem holding `path` (default /tmp) inside a Docker server's backend
    container (or `service`) to `percent` (default 90) with one file, at most
    `stress.max_disk_mb` (a larger need is refused, never shrunk). Refused on an engine of
    this machine when that filesystem is the one the harness writes its history to. Heal
    removes the file."""

    name = "disk-fill"
    label = "disk filled"

    def _path(self) -> str:
        return self.params.get("path") or DEFAULT_PATH

    def describe(self) -> str:
        return (
            f"fill {self._path()} inside a container of {self.params.get('server')} to "
            f"{self.params.get('percent') or DEFAULT_PERCENT} % with one file"
        )

    def preflight(self) -> None:
        self._percent()
        super().preflight()

    def _df(self, container: Any) -> tuple[int, int]:
        """(size, used) bytes of the filesystem holding the path, as the container sees it."""
        code, out = self._exec(container, f"df -Pk {shlex.quote(self._path())} | tail -n 1")
        fields = out.split()
        if code != 0 or len(fields) < 4:
            raise FaultRefused(f"{self.label}: cannot read `df {self._path()}` in {container.name}")
        return int(fields[1]) * 1024, int(fields[2]) * 1024

    def inject(self) -> None:
        percent = self._percent()
        server, host = self._server()
        with engine(server) as client:
            container = self._remember_container(client)
            filler = f"{self._path().rstrip('/')}/{FILLER}"
            self.remember(file=filler)
            size, used = self._df(container)
            _refuse_harness_disk(host.engine, size)
            need = int(size * percent / 100 - used)
            limit = self.target.stress.max_disk_mb
            if need <= 0:
                raise FaultRefused(f"{self.label}: {self._path()} is already {percent:g} % full")
            if need > limit * MIB:
                raise FaultRefused(
                    f"{self.label}: {need // MIB} MiB needed to fill {self._path()} to "
                    f"{percent:g} %, stress.max_disk_mb is {limit}"
                )
            blocks = -(-need // MIB)
            code, out = self._exec(
                container, f"dd if=/dev/zero of={shlex.quote(filler)} bs=1M count={blocks} 2>&1"
            )
            if code != 0:
                raise FaultError(f"{self.label}: writing {filler} failed: {out[-200:]}")

    def heal(self) -> None:
        server, _ = self._server()
        with engine(server) as client:
            try:
                container = self._container(client)
            except Exception as exc:
                if type(exc).__name__ == "NotFound":
                    return
                raise
            if container.status != "running":
                container.start()  # a stopped container still holds the file: start, remove
            filler = self.params.get("file") or f"{self._path().rstrip('/')}/{FILLER}"
            code, out = self._exec(container, f"rm -f {shlex.quote(filler)}")
            if code != 0:
                raise FaultError(f"{self.label}: could not remove {filler}: {out[-200:]}")

    def in_effect(self) -> bool:
        server, _ = self._server()
        with engine(server) as client:
            container = self._container(client)
            filler = self.params.get("file") or f"{self._path().rstrip('/')}/{FILLER}"
            code, _ = self._exec(container, f"test -e {shlex.quote(filler)}")
            return code == 0


def _refuse_harness_disk(address: str, size: int) -> None:
    """On an engine of this machine, a filesystem the size of the history's is that disk
    (overlay reports the disk under it): refuse to fill it."""
    if not address.startswith("unix://"):
        return
    from chaos.journal import state_dir
    from gameday.run import reports_dir

    for folder in (reports_dir(), state_dir()):
        probe = folder.resolve()
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        fs = os.statvfs(probe)
        if abs(fs.f_blocks * fs.f_frsize - size) <= size * 0.01:
            raise FaultRefused(
                f"disk filled: the container's filesystem looks like the disk the harness writes "
                f"its history to ({folder}); refusing to fill it"
            )


FAULTS: tuple[type[Fault], ...] = (CpuStress, MemoryPressure, DiskFill)
