"""The Docker database fault: the primary's container goes and the replica is promoted,
by gameday (the seed's manual runbook) or by a failover manager."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from chaos.base import Fault, FaultError, FaultRefused
from chaos.docker.engine import (
    FAILOVER_TIMEOUT_SEC,
    PROMOTE_TIMEOUT_SEC,
    DockerFault,
    docker_server,
    engine,
    one_container,
    resume,
    wait_down,
    wait_healthy,
)
from gameday.target import DockerDatabase, Server
from gameday.wait import poll_until

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


# pg_controldata's states of a whole pair, sorted: one primary and one replica.
SETTLED = ["in archive recovery", "in production"]


def _last_log_line(container: Any) -> str:
    """The container's last non-empty log line, shortened: often the reason it is stuck."""
    try:
        text = container.logs(tail=5).decode(errors="replace")
    except Exception:  # the engine's logs are a hint for a message, never a second failure
        return ""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    return lines[-1][-200:] if lines else ""


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


class DatabaseFailover(DockerFault):
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
                member = one_container(client, host, host.database.service, f"server {server.name}")
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
            self._take_down(container, primary.server.docker.stop_timeout_sec)
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

    def _take_down(self, container: Any, timeout_sec: int) -> None:
        container.stop(timeout=timeout_sec)

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
        """manual: only checks the new primary; automatic: the pair is whole again.

        A manual failover whose promotion never happened (it failed, or the run was killed
        before it) is undone instead: the old primary is started again and must come back as
        the primary, so the deployment is never left without one.
        """
        if "replica_container" not in self.params:
            return
        if self._automatic():
            self._heal_automatic()
            return
        with self._container("replica") as (_, db, container):
            resume(container)
            if "promoted" not in self.params:
                if _state_now(container, db) == "in production":
                    self._promoted()  # promoted after all: the journal had not heard yet
                else:
                    self._restart_old_primary()
                    return
            self._wait_state(container, db, "in production", PROMOTE_TIMEOUT_SEC)
        # See the docstring: starting the old primary would make two primaries.

    def _heal_automatic(self) -> None:
        """Both containers run and the failover manager has made them a primary and a replica.

        Whichever way round: the manager may have promoted the replica (the old primary must
        then rejoin as its replica, rewound), or never have promoted it (a standby it did not
        trust, a fault healed before it acted), and then the old primary simply carries on.
        """
        with self._container("primary") as (name, old_db, old):
            with self._container("replica") as (_, db, replica):
                resume(replica)
                resume(old)
                seen: dict[str, str] = {}

                def settled() -> bool:
                    seen[old.name] = _state_now(old, old_db)
                    seen[replica.name] = _state_now(replica, db)
                    return sorted(seen.values()) == SETTLED

                # Each look is two execs: twice a second is plenty for a failover manager.
                if not poll_until(settled, timeout=FAILOVER_TIMEOUT_SEC, interval=0.5):
                    states = ", ".join(f"{c} {s}" for c, s in seen.items())
                    said = _last_log_line(old)
                    raise FaultError(
                        "the failover manager did not make the database a primary and a "
                        f"replica again within {FAILOVER_TIMEOUT_SEC:.0f} s ({states})"
                        + (f"; {old.name} last logged: {said}" if said else "")
                    )
            _, host = docker_server(self.target, name)
            wait_healthy(old, timeout=host.health_timeout_sec, who=f"server {name}")

    def _restart_old_primary(self) -> None:
        with self._container("primary") as (name, db, old):
            resume(old)
            self._wait_state(old, db, "in production", PROMOTE_TIMEOUT_SEC)
            _, host = docker_server(self.target, name)
            wait_healthy(old, timeout=host.health_timeout_sec, who=f"server {name}")

    def in_effect(self) -> bool:
        """manual: True once the replica was promoted, which is permanent; automatic: True
        until both run again, as one primary and one replica."""
        if "replica_container" not in self.params:
            return False
        if self._automatic():
            with self._container("primary") as (_, old_db, old):
                old_state = cluster_state(old, old_db)
            with self._container("replica") as (_, db, replica):
                return sorted([old_state, cluster_state(replica, db)]) != SETTLED
        with self._container("replica") as (_, db, container):
            return cluster_state(container, db) == "in production"


class DatabaseCrash(DatabaseFailover):
    """The database primary crashes: its container is SIGKILLed (no shutdown checkpoint, no
    goodbye to the replica), then the replica becomes the primary as for database-failover:
    promoted by gameday (`failover: manual`) or by the failover manager (`automatic`). With
    asynchronous replication the writes the replica had not received are lost; the
    scenario's loss check says which."""

    name = "database-crash"
    label = "database primary crash"

    def describe(self) -> str:
        return (
            super().describe().replace("stop the database primary", "SIGKILL the database primary")
        )

    def _take_down(self, container: Any, timeout_sec: int) -> None:
        container.kill()


FAULTS: tuple[type[Fault], ...] = (DatabaseFailover, DatabaseCrash)
