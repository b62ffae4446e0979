"""A real Docker Engine API for the tests: podman's Docker-compatible service, on a socket of
its own, with storage of its own, started for a test session and removed after it.

No image can be pulled here, so the one image is built from a folder: busybox-static for a
shell, and the host's /usr, /lib, /lib64 and /etc bind-mounted read-only so that containers
run the host's own redis-server and postgres (with the host's network: ports 17600-17699).
The settings are the ones ../shared/recipes.md found to work on this machine kind (vfs
storage, runc, cgroupfs, nofile/nproc limits of 1024).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.wait import poll_until

IMAGE = "localhost/gameday-host:latest"
PATH_IN_CONTAINER = "/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
HOST_BINDS = ("/usr", "/lib", "/lib64", "/etc")


class PodmanUnavailable(Exception):
    """podman is not installed and cannot be installed here."""


def ensure_podman() -> None:
    """podman, runc and busybox-static, installed with apt if missing (as scripts/setup does)."""
    if shutil.which("podman") and shutil.which("runc") and Path("/bin/busybox").exists():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PodmanUnavailable("podman is not installed and this user cannot apt-get it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
         "podman", "runc", "busybox-static"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not shutil.which("podman"):
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise PodmanUnavailable(f"apt-get install podman failed: {' '.join(tail)}")


@dataclass
class Podman:
    """One podman API service and its storage, all under `home` (a folder of its own)."""

    home: Path
    service: subprocess.Popen[bytes] | None = None
    created: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.home / "api.sock"

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

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
            raise RuntimeError(f"podman {args[0]} failed: {result.stderr.strip()[-300:]}")
        return result.stdout

    def build_image(self) -> None:
        rootfs = self.home / "rootfs"
        for d in ("bin", "usr", "lib", "lib64", "etc", "proc", "sys", "dev", "var/run", "data"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        (rootfs / "tmp").mkdir(mode=0o1777, exist_ok=True)
        os.chmod(rootfs / "tmp", 0o1777)
        shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
        for name in ("sh", "sleep", "cat", "httpd", "test"):
            (rootfs / "bin" / name).symlink_to("busybox")
        tar = self.home / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            t.add(rootfs, arcname=".")
        self.podman("import", str(tar), IMAGE)

    def start(self) -> None:
        for d in ("root", "run", "tmp"):
            (self.home / d).mkdir(parents=True, exist_ok=True)
        self.build_image()
        log = open(self.home / "service.log", "wb")  # noqa: SIM115 (the service keeps it)
        self.service = subprocess.Popen(
            self.argv("system", "service", "--time=0", self.address),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        if not poll_until(self.socket.exists, timeout=30, interval=0.1):
            self.stop()
            raise RuntimeError(f"podman service did not open {self.socket}")

    @contextlib.contextmanager
    def tcp_service(self, port: int) -> Iterator[str]:
        """A second API service on the same storage, on tcp://127.0.0.1:PORT (no TLS: podman's
        service has none), stopped when the block ends."""
        address = f"tcp://127.0.0.1:{port}"
        service = subprocess.Popen(
            self.argv("system", "service", "--time=0", address),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            if not poll_until(lambda: _port_open(port), timeout=30, interval=0.1):
                raise RuntimeError(f"podman service did not listen on {address}")
            yield address
        finally:
            os.killpg(service.pid, signal.SIGTERM)
            try:
                service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
                service.wait(timeout=10)

    @contextlib.contextmanager
    def client(self) -> Iterator[Any]:
        import docker

        client = docker.DockerClient(base_url=self.address, timeout=60)
        try:
            yield client
        finally:
            client.close()

    def run(
        self,
        *,
        name: str,
        command: list[str],
        project: str | None = None,
        service: str | None = None,
        depends_on: str | None = None,
        user: str | None = None,
        binds: dict[str, str] | None = None,
        healthcheck: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Any:
        """A container of the test image on the host's network, labelled like compose's."""
        from docker.types import Ulimit

        labels = {}
        if project:
            labels["com.docker.compose.project"] = project
        if service:
            labels["com.docker.compose.service"] = service
        if depends_on:
            labels["com.docker.compose.depends_on"] = depends_on
        volumes = {p: {"bind": p, "mode": "ro"} for p in HOST_BINDS}
        volumes.update({h: {"bind": c, "mode": "rw"} for h, c in (binds or {}).items()})
        kwargs: dict[str, Any] = {}
        if healthcheck:
            kwargs["healthcheck"] = {
                "test": ["CMD-SHELL", " ".join(healthcheck)],
                "interval": 1_000_000_000,
                "timeout": 3_000_000_000,
                "retries": 3,
            }
        with self.client() as client:
            container = client.containers.run(
                IMAGE, command, name=name, detach=True, labels=labels, network_mode="host",
                ulimits=[Ulimit(name="nofile", soft=1024, hard=1024),
                         Ulimit(name="nproc", soft=1024, hard=1024)],
                volumes=volumes, user=user or "",
                environment={"PATH": PATH_IN_CONTAINER, **(env or {})}, **kwargs,
            )  # fmt: skip
            self.created.append(container.id)
            return container

    def remove_all(self) -> None:
        with contextlib.suppress(Exception):
            self.podman("rm", "--force", "--all", "--time", "2", timeout=120)

    def stop(self) -> None:
        self.remove_all()
        if self.service is not None and self.service.poll() is None:
            os.killpg(self.service.pid, signal.SIGTERM)
            try:
                self.service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.service.pid, signal.SIGKILL)
                self.service.wait(timeout=10)
        self.service = None
        # podman leaves a conmon per exec session waiting 300 s (--exit-delay) for someone to
        # read its exit code; they are this engine's processes (their command lines name its
        # folder) and end with it.
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        poll_until(lambda: not self.processes(), timeout=10, interval=0.1)
        shutil.rmtree(self.home, ignore_errors=True)

    def processes(self) -> list[int]:
        """Live processes whose command line names this engine's folder (conmon, cleanup)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rpartition(")")[2].split()[:1]
            except OSError:
                continue
            if str(self.home).encode() in cmdline and state != ["Z"]:
                found.append(int(entry.name))
        return found


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_podman() -> Podman:
    ensure_podman()
    # A short path: a unix socket's path is limited to 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="gameday-podman-", dir="/tmp"))
    engine = Podman(home)
    engine.start()
    return engine
