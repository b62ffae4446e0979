"""Docker faults on whole servers and single services: containers stopped, killed, paused."""

from __future__ import annotations

import json

from chaos.base import Fault, FaultError, FaultRefused
from chaos.docker.engine import (
    COMPOSE_PROJECT,
    MODES,
    DockerFault,
    Member,
    engine,
    members,
    resume,
    wait_down,
    wait_healthy,
    wait_in_rotation,
)


class StopServer(DockerFault):
    """Stop a Docker server: every container of its compose project.

    Parameters: `server` and `mode`: `graceful` (docker stop: SIGTERM, then SIGKILL after
    the server's `stop_timeout_sec`), `kill` (SIGKILL at once, as a host losing power; an
    engine restart policy `always` may bring containers back), or `pause` (the processes are
    frozen: connections hang instead of being refused). The ids and prior state of the
    containers are journaled before the first is touched; heal starts (or unpauses) exactly
    those, in dependency order, waiting for each to be healthy.
    """

    name = "stop-server"
    label = "server stopped"

    def _select(self, found: list[Member]) -> list[Member]:
        return found

    def _what(self) -> str:
        return f"every container of server {self.params.get('server')}"

    def _mode(self) -> str:
        return self.params.get("mode", "graceful")

    def describe(self) -> str:
        _, host = self._server()
        verb = {"graceful": "stop", "kill": "kill", "pause": "pause"}.get(self._mode(), "?")
        return f"{verb} {self._what()} (compose project {host.project} on {host.engine})"

    def preflight(self) -> None:
        """Refuse a bad mode, an unreachable engine, no containers or a server already down."""
        if self._mode() not in MODES:
            raise FaultRefused(f"mode must be one of {', '.join(MODES)}, not {self._mode()!r}")
        server, host = self._server()
        with engine(server) as client:
            chosen = self._select(members(client, host))
        if not chosen:
            raise FaultRefused(
                f"{self._what()}: no containers labelled {COMPOSE_PROJECT}={host.project} "
                f"on {host.engine}"
            )
        down = [f"{m.name} ({m.status})" for m in chosen if m.status != "running"]
        if down:
            raise FaultRefused(
                f"{self._what()}: not every container is running, refusing to break it "
                f"further: {', '.join(down)}"
            )

    def inject(self) -> None:
        server, host = self._server()
        with engine(server) as client:
            chosen = [m for m in self._select(members(client, host)) if m.status == "running"]
            # Journaled before the first container changes: heal starts exactly these.
            self.remember(containers=json.dumps([m.record() for m in chosen]))
            # Dependents first (the reverse of start order): the backend goes before its
            # database, as on a host shutting down.
            for m in reversed(chosen):
                container = client.containers.get(m.id)
                if self._mode() == "pause":
                    container.pause()
                elif self._mode() == "kill":
                    container.kill()
                    wait_down(container)
                else:
                    container.stop(timeout=host.stop_timeout_sec)
                    wait_down(container)

    def _recorded(self) -> list[dict[str, str]]:
        raw = self.params.get("containers")
        if not raw:
            return []  # never recorded: inject changed nothing
        records: list[dict[str, str]] = json.loads(raw)
        return records

    def heal(self) -> None:
        records = self._recorded()
        if not records:
            return
        server, host = self._server()
        who = f"server {server.name}"
        with engine(server) as client:
            # Today's dependency order (labels may say more than the journal kept).
            order = {m.id: i for i, m in enumerate(members(client, host))}
            missing: list[str] = []
            for record in sorted(records, key=lambda r: order.get(r["id"], len(order))):
                try:
                    container = client.containers.get(record["id"])
                except Exception:
                    missing.append(record["name"])
                    continue
                resume(container)
                wait_healthy(container, timeout=host.health_timeout_sec, who=who)
        if missing:
            raise FaultError(
                f"{who}: containers gone from {host.engine} (removed?), not started: "
                + ", ".join(missing)
            )
        wait_in_rotation(self.target, server, timeout=host.health_timeout_sec)

    def in_effect(self) -> bool:
        records = self._recorded()
        if not records:
            return False
        server, _ = self._server()
        with engine(server) as client:
            for record in records:
                container = client.containers.get(record["id"])
                if container.status != "running":
                    return True
        return False


class StopService(StopServer):
    """Stop one service of a Docker server: that service's container(s) of its project.

    Parameters: `server`, `service` (the compose service name) and `mode` (graceful, kill
    or pause, as for stop-server). Heal starts them again and waits for their health.
    """

    name = "stop-service"
    label = "service stopped"

    def _select(self, found: list[Member]) -> list[Member]:
        return [m for m in found if m.service == self.params.get("service")]

    def _what(self) -> str:
        return f"service {self.params.get('service')} of server {self.params.get('server')}"


class KillBackend(StopService):
    """SIGKILL the backend container of a Docker server (the target's
    `docker.backend_service`), as a crash of the application process.

    Parameter: `server`. The engine starts it again by itself when the container's restart
    policy says so (`restart: always`, `unless-stopped`, `on-failure`); otherwise it stays
    down until the heal starts it and waits for its health. Either way the scenario measures
    how the load balancer rides out a backend that vanished.
    """

    name = "kill-backend"
    label = "backend killed"

    def _service(self) -> str:
        _, host = self._server()
        if host.backend_service is None:
            raise FaultRefused(
                f"server {self.params.get('server')} declares no docker.backend_service"
            )
        return host.backend_service

    def _select(self, found: list[Member]) -> list[Member]:
        service = self._service()
        return [m for m in found if m.service == service]

    def _what(self) -> str:
        return f"the backend ({self._service()}) of server {self.params.get('server')}"

    def _mode(self) -> str:
        return "kill"


FAULTS: tuple[type[Fault], ...] = (StopServer, StopService, KillBackend)
