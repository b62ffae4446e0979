"""The Docker cache faults: the Redis container restarted, or the master's crashed and kept
down."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from chaos.base import Fault, FaultRefused
from chaos.docker.engine import (
    DockerFault,
    docker_server,
    engine,
    one_container,
    resume,
    wait_down,
    wait_healthy,
)
from gameday.target import DockerHost, Server, Target


def _stopped(server: Server, container_id: str) -> bool:
    with engine(server) as client:
        return bool(client.containers.get(container_id).status != "running")


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


class CacheRestart(DockerFault):
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
            member = one_container(client, host, service, f"server {server.name}")
        if member.status != "running":
            raise FaultRefused(f"server {server.name}: {member.name} is {member.status}")

    def inject(self) -> None:
        server, host, service = self._cache()
        who = f"server {server.name}"
        with engine(server) as client:
            member = one_container(client, host, service, who)
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
            resume(container)
            wait_healthy(container, timeout=host.health_timeout_sec, who=f"server {server.name}")

    def in_effect(self) -> bool:
        if "container" not in self.params:
            return False
        server, _, _ = self._cache()
        return _stopped(server, self.params["container"])


def _redis_role(container: Any, host: DockerHost, password: str | None) -> str:
    """ "master" or "slave" as the Redis in the container says (`redis-cli role`), or why not."""
    environment = {"REDISCLI_AUTH": password} if password else {}
    result = container.exec_run(
        ["redis-cli", "-p", str(host.cache_port), "role"], environment=environment
    )
    text = str(result.output.decode(errors="replace")).strip()
    if result.exit_code != 0 or not text:
        return f"unreadable ({text.splitlines()[-1][:100] if text else 'no answer'})"
    return text.splitlines()[0].strip()


class CacheCrash(DockerFault):
    """Crash the Redis master: SIGKILL its container and keep it down.

    The master is the server whose `docker.cache_service` container says `role` master
    (asked with redis-cli inside it, on `docker.cache_port`). What happens next is the
    deployment's: a Sentinel promotes the replica; without a failover manager nobody does,
    and the cache stays without a master until the heal (that is what the scenario then
    shows). Heal starts the container again and waits for its health; a Sentinel makes it a
    replica of the new master.
    """

    name = "cache-crash"
    label = "cache master crash"

    def _caches(self) -> list[tuple[Server, DockerHost, str]]:
        out = []
        for server in self.target.servers:
            host = server.docker
            if host is not None and host.cache_service is not None:
                out.append((server, host, host.cache_service))
        if not out:
            raise FaultRefused(f"no server of {self.target.name} declares a docker.cache_service")
        return out

    def _password(self) -> str | None:
        cache = self.target.cache
        return urlsplit(cache.url).password if cache is not None else None

    def describe(self) -> str:
        where = self.params.get("server", "the server whose Redis is master")
        return f"SIGKILL the Redis master's container ({where}) and keep it down"

    def _master(self) -> tuple[Server, DockerHost, str]:
        roles = []
        for server, host, service in self._caches():
            with engine(server) as client:
                member = one_container(client, host, service, f"server {server.name}")
                role = (
                    _redis_role(client.containers.get(member.id), host, self._password())
                    if member.status == "running"
                    else member.status
                )
            if role == "master":
                return server, host, str(member.id)
            roles.append(f"{server.name}: {role}")
        raise FaultRefused(f"no Redis master among the cache containers ({', '.join(roles)})")

    def preflight(self) -> None:
        """Refuse unless exactly one cache container runs as master."""
        self._master()

    def inject(self) -> None:
        server, _, container_id = self._master()
        self.remember(server=server.name, container=container_id)
        with engine(server) as client:
            container = client.containers.get(container_id)
            container.kill()
            wait_down(container)

    def heal(self) -> None:
        if "container" not in self.params:
            return
        server, host = docker_server(self.target, self.params["server"])
        with engine(server) as client:
            container = client.containers.get(self.params["container"])
            resume(container)
            wait_healthy(container, timeout=host.health_timeout_sec, who=f"server {server.name}")

    def in_effect(self) -> bool:
        if "container" not in self.params:
            return False
        server, _ = docker_server(self.target, self.params["server"])
        return _stopped(server, self.params["container"])


FAULTS: tuple[type[Fault], ...] = (CacheRestart, CacheCrash)
