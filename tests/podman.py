"""A real Docker Engine API for the tests: lab.podman's service in a folder of its own,
started for a test session and removed after it, plus compose-labelled containers running
the host's own programs on the host's network (ports 17600-17649).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.podman import IMAGE, PodmanService, host_volumes, ulimits
from lab.wait import poll_until

PATH_IN_CONTAINER = "/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


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


class Podman(PodmanService):
    """The tests' engine: a podman service in a folder of its own, removed at the end."""

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
        labels = {}
        if project:
            labels["com.docker.compose.project"] = project
        if service:
            labels["com.docker.compose.service"] = service
        if depends_on:
            labels["com.docker.compose.depends_on"] = depends_on
        volumes = host_volumes(binds)
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
                ulimits=ulimits(),
                volumes=volumes, user=user or "",
                environment={"PATH": PATH_IN_CONTAINER, **(env or {})}, **kwargs,
            )  # fmt: skip
            return container

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.home, ignore_errors=True)


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
