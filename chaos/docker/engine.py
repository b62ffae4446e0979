"""Docker hosts: reaching a server's engine, its compose project's containers, their health.

Shared by the Docker faults (chaos/docker/servers.py, cache.py, postgres.py): real containers
stopped, killed, paused and restarted.

Each server of a `provider: docker` target names its Docker Engine (`unix://`, `tcp://` with
TLS files, `ssh://user@host`, as `DOCKER_HOST` takes them) and its compose project; the
server's containers are the ones labelled `com.docker.compose.project=<project>`. Everything
goes through the Docker Engine API with the docker SDK (the engine may be Docker or podman's
Docker-compatible service).

Before any fault acts, the engine must answer (`preflight`): a wrong or unreachable address is
refused in one line naming the server and the address, and nothing is touched. The containers
a fault will change, and the state each was in, are written to the undo journal *before* the
first one is changed, so `gameday heal` in a new process can start exactly those again.

Heal starts containers in dependency order (compose's `com.docker.compose.depends_on` label,
else the server's `start_order`, else by service name) and waits, one by one, until each is
healthy: the engine's healthcheck status when the container defines a healthcheck (or the
container's own healthcheck command, run by the harness, for engines that do not schedule
healthchecks, such as podman without systemd), else running.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from chaos.base import Fault, FaultError, FaultRefused, one_line
from gameday.target import DockerHost, Server, Target
from gameday.wait import poll_until

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_DEPENDS_ON = "com.docker.compose.depends_on"

MODES = ("graceful", "kill", "pause")
# How long the engine may take to report a killed container as no longer running.
STOPPED_TIMEOUT_SEC = 30.0
PROMOTE_TIMEOUT_SEC = 60.0
# A failover manager first has to notice the primary is gone, then to promote: longer.
FAILOVER_TIMEOUT_SEC = 120.0
_DOWN = ("exited", "dead", "created", "removing")


# -- the engine ------------------------------------------------------------------------------


def docker_server(target: Target, name: str) -> tuple[Server, DockerHost]:
    """The server called `name` and its Docker part; FaultRefused if there is none."""
    for server in target.servers:
        if server.name == name:
            if server.docker is None:
                raise FaultRefused(f"server {name!r} of {target.name} has no docker section")
            return server, server.docker
    known = ", ".join(s.name for s in target.servers) or "none"
    raise FaultRefused(f"target {target.name} has no server {name!r} (servers: {known})")


def connect(server: Server) -> Any:
    """A docker.DockerClient for the server's engine, which has answered a ping.

    Raises FaultRefused, one line naming the server and the address, when the engine cannot
    be reached (wrong address, engine down, TLS or SSH refused).
    """
    import docker
    import docker.tls

    host = server.docker
    if host is None:
        raise FaultRefused(f"server {server.name!r} has no docker section")
    where = f"server {server.name}: Docker engine at {host.engine}"
    tls: Any = False
    if host.tls is not None:
        for label, path in (("ca", host.tls.ca), ("cert", host.tls.cert), ("key", host.tls.key)):
            if not os.path.isfile(path):
                raise FaultRefused(f"{where}: TLS {label} file {path} does not exist")
        tls = docker.tls.TLSConfig(
            client_cert=(host.tls.cert, host.tls.key), ca_cert=host.tls.ca, verify=host.tls.verify
        )
    reach: dict[str, Any] = {
        "base_url": host.engine,
        "tls": tls,
        # Short while finding out whether the engine answers at all...
        "timeout": host.connect_timeout_sec,
        # ssh:// through the system's ssh client: the user's keys, agent and ~/.ssh/config,
        # as the docker CLI uses them.
        "use_ssh_client": host.engine.startswith("ssh://"),
    }
    try:
        client = docker.DockerClient(version=_api_version(reach), **reach)
    except Exception as exc:
        raise FaultRefused(f"{where} cannot be reached: {_reason(exc)}") from None
    # ...then long enough for `docker stop` to wait out the container's stop timeout.
    # A promotion (`pg_ctl promote -w`) is one exec call that may take its whole timeout.
    client.api.timeout = max(
        host.connect_timeout_sec + host.stop_timeout_sec + 30.0, PROMOTE_TIMEOUT_SEC + 15.0
    )
    return client


def _api_version(reach: dict[str, Any]) -> str:
    """The API version to speak: the engine's, from the Api-Version header of its ping (but
    no newer than this SDK knows).

    Not the SDK's own detection (GET /version): podman answers that by running conmon and
    runc to report their versions, 4-6 s on a busy machine, past connect_timeout_sec, when
    its ping takes milliseconds.
    """
    import docker.constants
    import docker.utils

    with docker.APIClient(version=docker.constants.MINIMUM_DOCKER_API_VERSION, **reach) as api:
        answer = api.get(f"{api.base_url}/_ping")
        answer.raise_for_status()
    newest = str(docker.constants.DEFAULT_DOCKER_API_VERSION)
    version = str(answer.headers.get("Api-Version") or docker.constants.MINIMUM_DOCKER_API_VERSION)
    return version if docker.utils.version_lt(version, newest) else newest


def _reason(exc: BaseException) -> str:
    text = one_line(exc)
    # requests nests the cause deep in its message; the innermost errno text is what helps.
    inner = re.findall(r"\[Errno -?\d+\] ([^'\")]+)|FileNotFoundError\(2, '([^']+)'", text)
    if inner:
        found: list[str] = [a or b for a, b in inner]
        return found[-1]
    return text[:200]


@contextmanager
def engine(server: Server) -> Iterator[Any]:
    client = connect(server)
    try:
        yield client
    finally:
        client.close()


@dataclass(frozen=True)
class Member:
    """A container of a server's compose project, as the engine last reported it."""

    id: str
    name: str
    service: str
    status: str
    depends_on: tuple[str, ...]

    def record(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "service": self.service, "status": self.status}


def _depends_on(label: str) -> tuple[str, ...]:
    # Compose v2 writes "db:service_healthy:false,cache:service_started:false".
    return tuple(part.split(":", 1)[0] for part in label.split(",") if part.strip())


def members(client: Any, host: DockerHost) -> list[Member]:
    """The project's containers in start order (see `start_order`)."""
    found = client.containers.list(
        all=True, filters={"label": [f"{COMPOSE_PROJECT}={host.project}"]}
    )
    out = [
        Member(
            id=c.id,
            name=c.name,
            service=c.labels.get(COMPOSE_SERVICE, c.name),
            status=c.status,
            depends_on=_depends_on(c.labels.get(COMPOSE_DEPENDS_ON, "")),
        )
        for c in found
        # The filter is the engine's; the label check keeps a lax engine from widening it.
        if c.labels.get(COMPOSE_PROJECT) == host.project
    ]
    return start_order(out, host.start_order)


def start_order(items: Sequence[Member], declared: Sequence[str]) -> list[Member]:
    """Dependencies first: depends_on labels, ties broken by `declared`, then by service."""
    rank = {service: i for i, service in enumerate(declared)}

    def key(m: Member) -> tuple[int, str, str]:
        return (rank.get(m.service, len(rank)), m.service, m.name)

    services = {m.service for m in items}
    pending = sorted(items, key=key)
    done: set[str] = set()
    ordered: list[Member] = []
    while pending:
        ready = [
            m
            for m in pending
            if all(d in done or d not in services or d == m.service for d in m.depends_on)
        ]
        if not ready:
            cycle = ", ".join(sorted({m.service for m in pending}))
            raise FaultRefused(f"the compose depends_on labels form a cycle among: {cycle}")
        # One service at a time, so that replicas of a service all start before dependents.
        service = ready[0].service
        batch = [m for m in pending if m.service == service]
        ordered.extend(batch)
        pending = [m for m in pending if m.service != service]
        done.add(service)
    return ordered


def health(container: Any) -> str:
    """ "healthy", or what it is instead ("exited", "paused", "starting", "unhealthy"...)."""
    container.reload()
    state = container.attrs.get("State") or {}
    status = str(state.get("Status") or container.status)
    if status != "running":
        return status
    test = ((container.attrs.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
    if not test or test[0] == "NONE":
        return "healthy"  # no healthcheck: running is all the engine can tell
    reported = str((state.get("Health") or {}).get("Status") or "starting")
    if reported == "healthy":
        return reported
    # Engines that do not schedule healthchecks (podman without systemd) keep "starting"
    # forever: run the container's own test, as the engine would.
    command: list[str] | str
    if test[0] == "CMD-SHELL":
        command = ["/bin/sh", "-c", " ".join(test[1:])]
    else:
        command = list(test[1:] if test[0] == "CMD" else test)
    result = container.exec_run(command)
    return "healthy" if result.exit_code == 0 else reported


def wait_healthy(container: Any, *, timeout: float, who: str) -> None:
    """Until the container is healthy; at once FaultError if it stops again (it crashed)."""
    last = ""

    def ready() -> bool:
        nonlocal last
        last = health(container)
        if last in ("exited", "dead"):
            tail = container.logs(tail=1).decode(errors="replace").strip()[-200:]
            raise FaultError(
                f"{who}: container {container.name} exited again after its start"
                + (f": {tail}" if tail else "")
            )
        return last == "healthy"

    if not poll_until(ready, timeout=timeout, interval=0.2):
        raise FaultError(
            f"{who}: container {container.name} not healthy after {timeout:.0f} s ({last})"
        )


def resume(container: Any) -> None:
    """Unpause or start the container, whichever it needs (nothing if it runs)."""
    container.reload()
    if container.status == "paused":
        container.unpause()
    elif container.status != "running":
        container.start()


def wait_down(container: Any, *, timeout: float = STOPPED_TIMEOUT_SEC) -> None:
    def down() -> bool:
        container.reload()
        return bool(container.status in _DOWN)

    if not poll_until(down, timeout=timeout, interval=0.1):
        raise FaultError(
            f"container {container.name} still {container.status} after {timeout:.0f} s"
        )


def wait_in_rotation(target: Target, server: Server, *, timeout: float) -> None:
    """Until the load balancer has the server back in rotation (UP), when the target says
    where to read its view; a healthy container is not yet a server taking traffic."""
    lb = target.load_balancer
    if lb is None or not (lb.stats_url or lb.stats_socket):
        return
    from gameday import facts

    last = "not read"

    def up() -> bool:
        nonlocal last
        try:
            states = facts.lb_backend_states(lb)
        except Exception as exc:  # the stats page may hiccup while servers come back
            last = one_line(exc)
            return False
        if server.name not in states:
            last = "absent"
            return True  # the load balancer knows it by another name: nothing to wait for
        last = states[server.name]
        return last == "UP"

    if not poll_until(up, timeout=timeout, interval=0.2):
        raise FaultError(
            f"server {server.name}: containers healthy, but the load balancer still reports it "
            f"{last} after {timeout:.0f} s"
        )


# -- what every Docker fault shares --------------------------------------------------------


class DockerFault(Fault):
    providers: ClassVar[tuple[str, ...]] = ("docker",)

    def _server(self) -> tuple[Server, DockerHost]:
        return docker_server(self.target, self.params.get("server", ""))


def one_container(client: Any, host: DockerHost, service: str, who: str) -> Member:
    found = [m for m in members(client, host) if m.service == service]
    if len(found) != 1:
        raise FaultRefused(
            f"{who}: expected one container of service {service} in project {host.project}, "
            f"found {len(found)}"
        )
    return found[0]
