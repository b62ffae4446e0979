"""Faults of Docker hosts: real containers stopped, killed, paused and restarted.

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

import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from chaos.base import Fault, FaultError, FaultRefused, register
from chaos.journal import one_line
from gameday.target import DockerDatabase, DockerHost, Server, Target
from lab.wait import poll_until

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
    try:
        client = docker.DockerClient(
            base_url=host.engine,
            tls=tls,
            # Short while finding out whether the engine answers at all...
            timeout=host.connect_timeout_sec,
            # ssh:// through the system's ssh client: the user's keys, agent and ~/.ssh/config,
            # as the docker CLI uses them.
            use_ssh_client=host.engine.startswith("ssh://"),
        )
        client.ping()
    except Exception as exc:
        raise FaultRefused(f"{where} cannot be reached: {_reason(exc)}") from None
    # ...then long enough for `docker stop` to wait out the container's stop timeout.
    # A promotion (`pg_ctl promote -w`) is one exec call that may take its whole timeout.
    client.api.timeout = max(
        host.connect_timeout_sec + host.stop_timeout_sec + 30.0, PROMOTE_TIMEOUT_SEC + 15.0
    )
    return client


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


# -- faults ----------------------------------------------------------------------------------


class _DockerFault(Fault):
    providers: ClassVar[tuple[str, ...]] = ("docker",)

    def _server(self) -> tuple[Server, DockerHost]:
        return docker_server(self.target, self.params.get("server", ""))


@register
class StopServer(_DockerFault):
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
                container.reload()
                if container.status == "paused":
                    container.unpause()
                elif container.status != "running":
                    container.start()
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


@register
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


def _cache_server(target: Target, name: str | None) -> Server:
    if name:
        server, host = docker_server(target, name)
        if host.cache_service is None:
            raise FaultRefused(f"server {name!r} declares no docker.cache_service")
        return server
    for server in target.servers:
        if server.docker is not None and server.docker.cache_service is not None:
            return server
    raise FaultRefused(f"no server of {target.name} declares a docker.cache_service")


def _one_container(client: Any, host: DockerHost, service: str, who: str) -> Member:
    found = [m for m in members(client, host) if m.service == service]
    if len(found) != 1:
        raise FaultRefused(
            f"{who}: expected one container of service {service} in project {host.project}, "
            f"found {len(found)}"
        )
    return found[0]


@register
class CacheRestart(_DockerFault):
    """Restart the Redis container: what survives depends on the persistence it runs with.

    Parameters: `server` (default: the first server declaring `docker.cache_service`) and
    `mode`: `kill` (SIGKILL, then start: the case the seed's "at most 1 s of writes lost"
    promise is about) or `graceful` (docker restart: Redis writes its files on SIGTERM).
    The restart is the fault and its own remedy: inject returns once the container is
    healthy again; heal only starts it if something left it stopped.
    """

    name = "cache-restart"
    label = "cache restarted"

    def _cache(self) -> tuple[Server, DockerHost, str]:
        server = _cache_server(self.target, self.params.get("server"))
        assert server.docker is not None and server.docker.cache_service is not None
        return server, server.docker, server.docker.cache_service

    def describe(self) -> str:
        server, host, service = self._cache()
        how = "kill and start" if self.params.get("mode", "kill") == "kill" else "restart"
        return f"{how} the {service} container of server {server.name} (on {host.engine})"

    def preflight(self) -> None:
        """Refuse a bad mode, an unreachable engine, or a cache container that is not running."""
        if self.params.get("mode", "kill") not in ("kill", "graceful"):
            raise FaultRefused(f"mode must be kill or graceful, not {self.params['mode']!r}")
        server, host, service = self._cache()
        with engine(server) as client:
            member = _one_container(client, host, service, f"server {server.name}")
        if member.status != "running":
            raise FaultRefused(f"server {server.name}: {member.name} is {member.status}")

    def inject(self) -> None:
        server, host, service = self._cache()
        who = f"server {server.name}"
        with engine(server) as client:
            member = _one_container(client, host, service, who)
            self.remember(server=server.name, container=member.id)
            container = client.containers.get(member.id)
            if self.params.get("mode", "kill") == "kill":
                container.kill()
                wait_down(container)
                container.start()
            else:
                container.restart(timeout=host.stop_timeout_sec)
            wait_healthy(container, timeout=host.health_timeout_sec, who=who)

    def heal(self) -> None:
        if "container" not in self.params:
            return
        server, host, _ = self._cache()
        with engine(server) as client:
            container = client.containers.get(self.params["container"])
            container.reload()
            if container.status == "paused":
                container.unpause()
            elif container.status != "running":
                container.start()
            wait_healthy(container, timeout=host.health_timeout_sec, who=f"server {server.name}")

    def in_effect(self) -> bool:
        if "container" not in self.params:
            return False
        server, _, _ = self._cache()
        with engine(server) as client:
            return bool(client.containers.get(self.params["container"]).status != "running")


# -- the database: the seed's manual failover ------------------------------------------------


def _pgdata(container: Any, db: DockerDatabase) -> str:
    if db.pgdata:
        return db.pgdata
    for item in (container.attrs.get("Config") or {}).get("Env") or []:
        name, _, value = str(item).partition("=")
        if name == "PGDATA" and value:
            return value
    raise FaultRefused(
        f"container {container.name} has no $PGDATA: set docker.database.pgdata in the target"
    )


def cluster_state(container: Any, db: DockerDatabase) -> str:
    """pg_controldata's "Database cluster state" ("in production", "in archive recovery"...).

    Read from the control file, not through a connection: no password, no socket needed.
    """
    container.reload()
    if container.status != "running":
        return str(container.status)
    result = container.exec_run(["pg_controldata", "-D", _pgdata(container, db)], user=db.user)
    text = str(result.output.decode(errors="replace"))
    if result.exit_code != 0:
        raise FaultError(f"pg_controldata in {container.name} failed: {text.strip()[:200]}")
    for line in text.splitlines():
        if line.startswith("Database cluster state:"):
            return line.split(":", 1)[1].strip()
    raise FaultError(f"pg_controldata in {container.name} printed no cluster state")


@dataclass(frozen=True)
class _Node:
    server: Server
    db: DockerDatabase
    container_id: str
    state: str


def _state_now(container: Any, db: DockerDatabase) -> str:
    """The cluster state, or the reason it cannot be read yet (a container still starting)."""
    try:
        return cluster_state(container, db)
    except FaultError as exc:
        return str(exc)


@register
class DatabaseFailover(_DockerFault):
    """The database primary's container goes, and the replica becomes the primary.

    Stops the primary's PostgreSQL container (gracefully) and returns once the replica runs
    as a primary. Who promotes it is the target's `docker.database.failover`:

    - `manual` (the seed's runbook): gameday runs `pg_ctl promote` in the replica's container
      (as `docker.database.user`). One-way: a promoted replica cannot be demoted, so heal only
      checks that the new primary is up and does NOT start the old primary (it would be a
      second primary: split brain). Rebuild it as a replica by hand (pg_rewind or a new
      pg_basebackup), then start it.
    - `automatic`: a failover manager (pg_auto_failover, Patroni) promotes the replica on its
      own; heal starts the old primary's container and waits until the manager has made it a
      replica again. Roles stay swapped.

    The probes measure how long writes failed; clients find the new primary only if they can
    (a libpq multi-host URL with target_session_attrs=read-write, or a repointed application).
    """

    name = "database-failover"
    label = "database failover"

    def _nodes(self) -> list[_Node]:
        nodes: list[_Node] = []
        for server in self.target.servers:
            host = server.docker
            if host is None or host.database is None:
                continue
            with engine(server) as client:
                member = _one_container(
                    client, host, host.database.service, f"server {server.name}"
                )
                container = client.containers.get(member.id)
                nodes.append(
                    _Node(server, host.database, member.id, cluster_state(container, host.database))
                )
        return nodes

    def _automatic(self) -> bool:
        dbs = [s.docker.database for s in self.target.servers if s.docker and s.docker.database]
        return any(db.failover == "automatic" for db in dbs)

    def describe(self) -> str:
        primary = (
            f" of server {self.params['primary_server']}" if "primary_server" in self.params else ""
        )
        replica = (
            f" of server {self.params['replica_server']}" if "replica_server" in self.params else ""
        )
        if self._automatic():
            return (
                f"stop the database primary container{primary} and wait for the failover manager "
                f"to promote the replica{replica}"
            )
        return (
            f"stop the database primary container{primary} and promote the replica{replica} "
            "(one-way: the old primary stays stopped until it is rebuilt as a replica)"
        )

    def _pair(self) -> tuple[_Node, _Node]:
        nodes = self._nodes()
        primaries = [n for n in nodes if n.state == "in production"]
        replicas = [n for n in nodes if n.state == "in archive recovery"]
        if len(primaries) != 1 or len(replicas) != 1:
            seen = ", ".join(f"{n.server.name}: {n.state}" for n in nodes) or "no docker.database"
            raise FaultRefused(
                f"expected one database primary and one replica to fail over, found {seen}"
            )
        return primaries[0], replicas[0]

    def preflight(self) -> None:
        """Refuse unless exactly one primary and one replica container are running."""
        self._pair()

    def inject(self) -> None:
        primary, replica = self._pair()
        learnt = {
            "primary_server": primary.server.name,
            "primary_container": primary.container_id,
            "replica_server": replica.server.name,
            "replica_container": replica.container_id,
        }
        self.remember(**learnt)
        assert primary.server.docker is not None
        with engine(primary.server) as client:
            container = client.containers.get(primary.container_id)
            container.stop(timeout=primary.server.docker.stop_timeout_sec)
            wait_down(container)
        with engine(replica.server) as client:
            container = client.containers.get(replica.container_id)
            if self._automatic():
                self._wait_state(container, replica.db, "in production", FAILOVER_TIMEOUT_SEC)
                return
            pgdata = _pgdata(container, replica.db)
            result = container.exec_run(
                ["pg_ctl", "promote", "-w", "-t", str(int(PROMOTE_TIMEOUT_SEC)), "-D", pgdata],
                user=replica.db.user,
            )
            if result.exit_code != 0:
                text = result.output.decode(errors="replace").strip()
                raise FaultError(f"pg_ctl promote in {container.name} failed: {text[:200]}")
            self._wait_state(container, replica.db, "in production", PROMOTE_TIMEOUT_SEC)
            self._promoted()

    def _promoted(self) -> None:
        # From here heal must not start the old primary: that would be a second primary.
        self.remember(
            promoted="yes", not_undone="the old primary stays stopped: rebuild it as a replica"
        )

    def _wait_state(self, container: Any, db: DockerDatabase, want: str, timeout: float) -> None:
        last = ""

        def reached() -> bool:
            nonlocal last
            last = _state_now(container, db)
            return last == want

        # Each look is an exec in the container: twice a second is plenty for a failover.
        if not poll_until(reached, timeout=timeout, interval=0.5):
            raise FaultError(f"{container.name} not {want} after {timeout:.0f} s ({last})")

    @contextmanager
    def _container(self, role: str) -> Iterator[tuple[str, DockerDatabase, Any]]:
        """The journaled primary's or replica's container, with its engine open meanwhile."""
        server, host = docker_server(self.target, self.params[f"{role}_server"])
        if host.database is None:
            raise FaultError(f"server {server.name} no longer declares docker.database")
        with engine(server) as client:
            yield (
                server.name,
                host.database,
                client.containers.get(self.params[f"{role}_container"]),
            )

    def heal(self) -> None:
        """manual: only checks the new primary; automatic: the old primary rejoins as replica.

        A manual failover whose promotion never happened (it failed, or the run was killed
        before it) is undone instead: the old primary is started again and must come back as
        the primary, so the deployment is never left without one.
        """
        if "replica_container" not in self.params:
            return
        manual = not self._automatic()
        with self._container("replica") as (_, db, container):
            container.reload()
            if container.status != "running":
                container.start()
            if manual and "promoted" not in self.params:
                if _state_now(container, db) == "in production":
                    self._promoted()  # promoted after all: the journal had not heard yet
                else:
                    self._restart_old_primary()
                    return
            self._wait_state(container, db, "in production", PROMOTE_TIMEOUT_SEC)
        if manual:
            return  # see the docstring: starting the old primary would make two primaries
        # The failover manager makes the old primary a replica of the new one.
        self._restart_old_primary("in archive recovery", FAILOVER_TIMEOUT_SEC)

    def _restart_old_primary(
        self, want: str = "in production", timeout: float = PROMOTE_TIMEOUT_SEC
    ) -> None:
        with self._container("primary") as (name, db, old):
            old.reload()
            if old.status == "paused":
                old.unpause()
            elif old.status != "running":
                old.start()
            self._wait_state(old, db, want, timeout)
            _, host = docker_server(self.target, name)
            wait_healthy(old, timeout=host.health_timeout_sec, who=f"server {name}")

    def in_effect(self) -> bool:
        """manual: True once the replica was promoted, which is permanent; automatic: True
        until the old primary runs again as a replica."""
        if "replica_container" not in self.params:
            return False
        if self._automatic():
            with self._container("primary") as (_, db, old):
                return cluster_state(old, db) != "in archive recovery"
        with self._container("replica") as (_, db, container):
            return cluster_state(container, db) == "in production"
