"""Faults of the embedded lab: real processes die, real roles move.

Every lab fault heals the same way: the lab's own idempotent `up`, which starts whatever is
down in dependency order and waits until every component is healthy again. Roles may have
swapped after a heal (node_2 primary, redis2 master); `gameday lab status` shows it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from typing import ClassVar

from chaos.base import Fault, FaultError, FaultRefused
from gameday.target import Target
from gameday.wait import poll_until
from lab import control, health
from lab.layout import SERVERS, LabLayout, LabServer

HEAL_TIMEOUT_SEC = 120.0
FAILOVER_COMPLETE_TIMEOUT_SEC = 120.0


def layout_of(target: Target) -> LabLayout:
    return LabLayout.from_env(base_port=target.lab.base_port if target.lab else None)


def server_named(name: str) -> LabServer:
    for s in SERVERS:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in SERVERS)
    raise FaultRefused(f"the lab has no server {name!r} (servers: {known})")


def kill_program(layout: LabLayout, program: str) -> None:
    """SIGKILL a program's whole process group and keep it down, as if its host died.

    supervisor starts each program in its own process group, so the keeper and the postgres
    it runs die together. supervisor is told to stop the program first (without waiting):
    killed the other way round, it restarts the program within a second, before a stop can
    land, and the "crashed" Redis master comes back with its data before Sentinel notices.
    """
    info = control.processes(layout).get(program)
    if info is None or not info.get("pid"):
        return
    pgid = os.getpgid(info["pid"])
    control.stop_programs(layout, [program], wait=False)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    stopped = ("STOPPED", "EXITED", "FATAL")
    if poll_until(
        lambda: control.processes(layout)[program]["statename"] in stopped,
        timeout=10, interval=0.05,
    ):  # fmt: skip
        return
    raise FaultError(f"{program} did not stop after SIGKILL")


def sweep_dead_lab(target: Target, log: Callable[[str], None]) -> list[str]:
    """After the journal's faults are healed: a lab of `target` whose supervisord was killed
    leaves processes and its network (namespaces, veths, rules) behind; stop and remove them
    (the folder stays for the next `lab up`). A running lab is left alone."""
    try:
        return control.sweep(layout_of(target), progress=log)
    except (control.LabError, OSError) as exc:
        raise FaultError(f"the dead lab's leftovers: {exc}") from None


class _LabFault(Fault):
    providers: ClassVar[tuple[str, ...]] = ("lab",)

    @property
    def layout(self) -> LabLayout:
        return layout_of(self.target)

    def preflight(self) -> None:
        """Refuse to break a lab that is not running or not healthy."""
        layout = self.layout
        if not control.is_running(layout):
            raise FaultRefused(f"the lab on port {layout.base_port} is not running")
        unhealthy = [c for c in health.components(layout) if not c.healthy]
        if unhealthy:
            names = ", ".join(f"{c.name} ({c.detail or 'not healthy'})" for c in unhealthy)
            raise FaultRefused(f"the lab is not healthy, refusing to break it further: {names}")

    def heal(self) -> None:
        try:
            control.up(self.layout)
        except control.LabError as exc:
            raise FaultError(f"healing {self.label}: {exc}") from None


class DatabaseFailover(_LabFault):
    """Planned database failover: pg_auto_failover promotes the standby.

    Runs `pgautofailover.perform_failover()` on the lab's monitor (what `pg_autoctl perform
    failover` does) and returns once the standby has been promoted (at most 120 s), so the
    scenario's Then-steps judge a failover that happened. The old primary becomes the
    standby; heal waits until the pair is settled again as primary + synchronous standby.
    Roles stay swapped.
    """

    name = "database-failover"
    label = "database failover"

    def describe(self) -> str:
        return "perform a planned pg_auto_failover failover of the lab's database"

    def inject(self) -> None:
        import psycopg

        layout = self.layout
        primary = health.pg_primary(layout)
        if primary is None:
            raise FaultRefused("the lab's database has no settled primary to fail over")
        self.remember(old_primary=primary.name)
        with psycopg.connect(layout.monitor_admin_url, autocommit=True, connect_timeout=2) as conn:
            conn.execute("SELECT pgautofailover.perform_failover('default', 0)")

        # Return once the other node is the settled primary: the scenario then judges a
        # failover that happened. The probes measure the outage from the inject-start event.
        def promoted() -> bool:
            # The failover is under way: a monitor too busy to answer one poll in time (a
            # loaded machine) is asked again, not taken for a failed injection.
            try:
                return health.pg_primary(layout) not in (None, primary)
            except psycopg.OperationalError:
                return False

        if poll_until(promoted, timeout=FAILOVER_COMPLETE_TIMEOUT_SEC, interval=0.05):
            return
        raise FaultError(
            "pg_auto_failover did not promote the standby within "
            f"{FAILOVER_COMPLETE_TIMEOUT_SEC:.0f} s"
        )

    def in_effect(self) -> bool:
        states = sorted(n.reported_state for n in health.pg_nodes(self.layout))
        return states != ["primary", "secondary"]


class DatabaseCrash(_LabFault):
    """Unplanned loss of the database primary: its keeper and postgres are SIGKILLed.

    The node stays down, so pg_auto_failover's monitor must notice (health checks every
    second, unhealthy after 3 s in the lab) and promote the standby on its own. Heal starts
    the node again; it rejoins as the standby.
    """

    name = "database-crash"
    label = "database primary crash"

    def describe(self) -> str:
        return "SIGKILL the lab's database primary (keeper and postgres) and keep it down"

    def inject(self) -> None:
        primary = health.pg_primary(self.layout)
        if primary is None:
            raise FaultRefused("the lab's database has no settled primary to crash")
        self.remember(server=primary.name)
        kill_program(self.layout, primary.postgres_program)

    def in_effect(self) -> bool:
        server = server_named(self.params["server"])
        state = control.processes(self.layout)[server.postgres_program]["statename"]
        return bool(state != "RUNNING")


class StopServer(_LabFault):
    """Stop a whole server of the lab: its backend, database node, Redis and Sentinel, and
    its exporters (when the lab runs its monitoring).

    Parameters: `server` (server1 or server2) and `mode`: `graceful` (supervisor stops each
    program with its stop signal) or `kill` (SIGKILL, as a host losing power). Whatever was
    primary or master there fails over to the other server. Heal starts everything again.
    """

    name = "stop-server"
    label = "server stopped"

    def _programs(self) -> list[str]:
        s = server_named(self.params["server"])
        # The backend first: the load balancer sees it gone before its data stores go. The
        # server's exporters go with it, as they would with the host (InstanceDown).
        programs = [s.backend_program, s.sentinel_program, s.redis_program, s.postgres_program]
        running = control.processes(self.layout)
        return programs + [p for p in s.exporter_programs if p in running]

    def describe(self) -> str:
        mode = self.params.get("mode", "graceful")
        return f"stop every process of the lab's {self.params['server']} ({mode})"

    def preflight(self) -> None:
        server_named(self.params.get("server", ""))
        if self.params.get("mode", "graceful") not in ("graceful", "kill"):
            raise FaultRefused(f"mode must be graceful or kill, not {self.params['mode']!r}")
        super().preflight()

    def inject(self) -> None:
        if self.params.get("mode", "graceful") == "kill":
            for program in self._programs():
                kill_program(self.layout, program)
        else:
            control.stop_programs(self.layout, self._programs())

    def in_effect(self) -> bool:
        info = control.processes(self.layout)
        return any(info[p]["statename"] != "RUNNING" for p in self._programs())


class KillBackend(_LabFault):
    """SIGKILL one server's backend process; supervisor restarts it, as a process manager would.

    Parameter: `server`. Measures how the load balancer rides out a crash-restart.
    """

    name = "kill-backend"
    label = "backend killed"

    def describe(self) -> str:
        return f"SIGKILL the backend of the lab's {self.params['server']} (it is restarted)"

    def preflight(self) -> None:
        server_named(self.params.get("server", ""))
        super().preflight()

    def inject(self) -> None:
        program = server_named(self.params["server"]).backend_program
        control.signal_program(self.layout, program, "KILL")

    def in_effect(self) -> bool:
        server = server_named(self.params["server"])
        try:
            health.backend_health(self.layout, server)
        except Exception:  # not answering is exactly "still in effect"
            return True
        return False


class CacheCrash(_LabFault):
    """Crash the Redis master: SIGKILL and keep it down, so Sentinel promotes the replica.

    Heal starts the old master again; Sentinel turns it into a replica of the new master.
    """

    name = "cache-crash"
    label = "cache master crash"

    def describe(self) -> str:
        return "SIGKILL the lab's Redis master and keep it down"

    def inject(self) -> None:
        layout = self.layout
        master = next(
            (s for s in SERVERS if health.redis_role(layout, s).get("role") == "master"), None
        )
        if master is None:
            raise FaultRefused("the lab's cache has no master to crash")
        self.remember(server=master.name)
        kill_program(layout, master.redis_program)

    def in_effect(self) -> bool:
        server = server_named(self.params["server"])
        state = control.processes(self.layout)[server.redis_program]["statename"]
        return bool(state != "RUNNING")


FAULTS: tuple[type[Fault], ...] = (
    DatabaseFailover,
    DatabaseCrash,
    StopServer,
    KillBackend,
    CacheCrash,
)
