"""A Docker Engine API on this machine: podman's Docker-compatible service, self-contained.

The service, its storage and its one image live under one folder (`home`), so it collides
with nothing else on the machine, and removing the folder removes everything. No image can
be pulled here: the image is built from a folder holding busybox-static for a shell, and
containers bind-mount the host's /usr, /lib, /lib64 and /etc read-only to run the host's own
programs (redis-server, postgres, haproxy, Python) on the host's network. The settings are
the ones found to work on this machine kind (vfs storage, runc, cgroupfs; nofile/nproc limits
of 1024 for containers).

Used by the lab's Docker mode (lab/docker_runtime.py) and by the harness's tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.wait import poll_until

IMAGE = "localhost/gameday-host:latest"
HOST_BINDS = ("/usr", "/lib", "/lib64", "/etc")
BUSYBOX = Path("/bin/busybox")
ULIMITS = {"nofile": 1024, "nproc": 1024}


class EngineError(Exception):
    """The podman service could not be started or used; one line."""


class PodmanService:
    """One podman API service and its storage, all under `home`."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.home / "api.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.home / "service.pid"

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root", str(self.home / "root"),
            "--runroot", str(self.home / "run"),
            "--tmpdir", str(self.home / "tmp"),
            "--storage-driver=vfs",
            "--runtime", "runc",
            "--cgroup-manager=cgroupfs",
            "--events-backend=file",
            *args,
        ]  # fmt: skip

    def podman(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise EngineError(f"podman {args[0]} failed: {result.stderr.strip()[-300:]}")
        return result.stdout

    def build_image(self) -> None:
        """The one image: busybox's shell and tools, mount points for the host's folders."""
        if not BUSYBOX.exists():
            raise EngineError(f"{BUSYBOX} is missing: install busybox-static (make setup)")
        rootfs = self.home / "rootfs"
        for d in ("bin", "usr", "lib", "lib64", "etc", "proc", "sys", "dev", "var/run"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        (rootfs / "tmp").mkdir(exist_ok=True)
        os.chmod(rootfs / "tmp", 0o1777)
        shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
        for name in ("sh", "sleep", "cat", "httpd", "test", "["):
            link = rootfs / "bin" / name
            if not link.is_symlink():
                link.symlink_to("busybox")
        tar = self.home / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            t.add(rootfs, arcname=".")
        self.podman("import", str(tar), IMAGE)

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def is_running(self) -> bool:
        return self.pid() is not None and self.socket.exists()

    def start(self) -> None:
        """Start the service (in its own session: it outlives this process) if not running."""
        if self.is_running():
            return
        if shutil.which("podman") is None:
            raise EngineError("podman is not installed: run `make setup` (apt: podman runc)")
        for d in ("root", "run", "tmp"):
            (self.home / d).mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        self.build_image()
        with open(self.home / "service.log", "ab") as log:
            self._proc = subprocess.Popen(
                self.argv("system", "service", "--time=0", self.address),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pidfile.write_text(str(self._proc.pid))
        if not poll_until(self.socket.exists, timeout=30, interval=0.1):
            self.stop()
            raise EngineError(f"podman service did not open {self.socket}")

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        import docker

        client = docker.DockerClient(base_url=self.address, timeout=60)
        try:
            yield client
        finally:
            client.close()

    def stop(self) -> None:
        """Remove every container, stop the service and what it left running."""
        if self.home.exists() and shutil.which("podman"):
            with contextlib.suppress(EngineError, subprocess.TimeoutExpired):
                self.podman("rm", "--force", "--all", "--time", "5", timeout=120)
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=20)
            poll_until(lambda: self.pid() is None, timeout=20, interval=0.1)
        # podman leaves a conmon per exec session waiting 300 s (--exit-delay) for someone to
        # read its exit code; they belong to this engine (their command lines name its folder)
        # and end with it.
        for leftover in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
        poll_until(lambda: not self.processes(), timeout=10, interval=0.1)
        self.pidfile.unlink(missing_ok=True)

    def processes(self) -> list[int]:
        """Live processes whose command line names this engine's folder (service, conmon)."""
        needle = str(self.home).encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rpartition(")")[2].split()[:1]
            except OSError:
                continue
            if needle in cmdline and state != ["Z"]:
                found.append(int(entry.name))
        return found


def ulimits() -> list[Any]:
    from docker.types import Ulimit

    return [Ulimit(name=n, soft=v, hard=v) for n, v in ULIMITS.items()]


def host_volumes(rw: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """The host folders a container needs to run host programs (read-only), plus `rw`."""
    volumes = {p: {"bind": p, "mode": "ro"} for p in HOST_BINDS}
    volumes.update({h: {"bind": c, "mode": "rw"} for h, c in (rw or {}).items()})
    return volumes
