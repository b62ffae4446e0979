"""The foreign deployment's runbook: faults with inject, heal and check, as gameday's
command fault runs them (chaos/command.py): `check` exits 0 while the fault is in effect and
1 once it is not; inject and heal exit 0 when done, 1 with one line on stderr when they could
not, 2 on bad arguments. Heals are idempotent and leave the deployment whole again (a
primary with a streaming standby, a Redis master with an online replica, both backends up);
roles stay swapped after a failover, as on any deployment without a preferred primary.

    database-failover  clean switchover: fast shutdown of the primary (which sends all its
                       WAL), wait until the standby has replayed the primary's shutdown
                       checkpoint, promote it; the old primary stays down until heal, which
                       makes it a standby of the new one (pg_rewind, else pg_basebackup)
    database-crash     SIGKILL of the primary's postmaster and its processes under writes,
                       the standby promoted at once. Asynchronous replication: writes the
                       standby had not received are lost. `--lag SEC` pauses the primary's
                       walsender SEC seconds before the crash (a replication link that
                       stalls), so the writes acknowledged in that window are certainly lost
    stop-server NODE [stop|kill]  the backend NODE stopped (SIGTERM) or killed (SIGKILL)
                       and held down until heal
    kill-backend NODE  SIGKILL of the backend; its supervisor restarts it 2 s later
    cache-failover     planned: writes paused on the master, the replica caught up and
                       promoted, the cache endpoint repointed; the old master stays down
                       until heal makes it a replica of the new one
    cache-crash        SIGKILL of the Redis master, the replica promoted at once and the
                       endpoint repointed; heal restarts the old master as a replica
    zone-outage ZONE   everything of zone a (node-1, pg-a, redis-a) or b (node-2, pg-b,
                       redis-b) killed at once and held down; whatever was primary there
                       fails over to the other zone, as database-crash and cache-crash do

The database faults share one check (the promised pair is not whole), and so do the cache
faults: a second fault on a broken pair is refused before it acts.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.foreign import deployment as d

CATCH_UP_SEC = 30.0


class Refused(d.DeploymentError):
    """The deployment is not in the state this fault starts from."""


class BadArguments(d.DeploymentError):
    """Arguments that name nothing this deployment has (exit 2)."""


def _require(ok_why: tuple[bool, str], fault: str) -> None:
    ok, why = ok_why
    if not ok:
        raise Refused(f"{fault}: refusing to break an unhealthy deployment further: {why}")


# -- the database ----------------------------------------------------------------------------


def _checkpoint_lsn(layout: d.Layout, node: str) -> str:
    out = d.run_checked([str(d.PG_BIN / "pg_controldata"), "-D", str(layout.pg_data(node))],
                        as_postgres=True)  # fmt: skip
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in out.splitlines())
    )
    if fields.get("Database cluster state") != "shut down":
        raise d.DeploymentError(f"{node} did not shut down cleanly "
                                f"({fields.get('Database cluster state')})")  # fmt: skip
    return fields["Latest checkpoint location"]


def database_failover(layout: d.Layout) -> None:
    _require(d.database_pair(layout), "database-failover")
    state = d.load_state(layout)
    primary, standby = state.pg_primary, d.other(d.PG_NODES, state.pg_primary)
    # Writes stop reaching the primary: sessions end, the rest of its WAL goes out.
    d.stop_pg(layout, primary)
    lsn = _checkpoint_lsn(layout, primary)

    def caught_up() -> bool:
        rows = d.pg_query(layout, standby,
                          "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) > 0",
                          (lsn,))  # fmt: skip
        return bool(rows[0][0])

    try:
        d.wait_for(f"{standby} replays {primary}'s shutdown checkpoint {lsn}", caught_up,
                   CATCH_UP_SEC)  # fmt: skip
    except d.DeploymentError:
        d.start_pg(layout, primary)  # nothing was switched: the old pair goes on
        raise
    state.pg_primary = standby
    d.save_state(layout, state)  # before promoting: a heal after a crash finishes the job
    d.promote(layout, standby)


def database_crash(layout: d.Layout, lag_sec: float = 0.0) -> None:
    _require(d.database_pair(layout), "database-crash")
    state = d.load_state(layout)
    primary, standby = state.pg_primary, d.other(d.PG_NODES, state.pg_primary)
    paused: int | None = None
    try:
        if lag_sec > 0:
            rows = d.pg_query(layout, primary,
                              "SELECT pid FROM pg_stat_replication WHERE application_name = %s",
                              (standby,))  # fmt: skip
            if not rows:
                raise d.DeploymentError(f"no walsender serves {standby} on {primary}")
            paused = int(rows[0][0])
            os.kill(paused, signal.SIGSTOP)
            time.sleep(lag_sec)
        d.kill_pg(layout, primary)
        paused = None  # died with its postmaster
    finally:
        if paused is not None:  # cut short before the crash: do not leave replication stalled
            with contextlib.suppress(ProcessLookupError):
                os.kill(paused, signal.SIGCONT)
    state.pg_primary = standby
    d.save_state(layout, state)
    d.promote(layout, standby)


def database_in_effect(layout: d.Layout) -> bool:
    return not d.database_pair(layout)[0]


def database_heal(layout: d.Layout) -> None:
    d.repair_database(layout)


# -- the backends ----------------------------------------------------------------------------


def _node(name: str) -> str:
    if name not in d.NODES:
        raise BadArguments(f"no server {name!r} in this deployment (servers: "
                           f"{', '.join(d.NODES)})")  # fmt: skip
    return name


def stop_server(layout: d.Layout, node: str, mode: str = "stop") -> None:
    if mode not in ("stop", "kill"):
        raise BadArguments(f"mode must be stop or kill, not {mode!r}")
    if not d.node_healthy(layout, node):
        raise Refused(f"stop-server: {node} is not healthy before the fault")
    d.held_file(layout, node).touch()  # before the signal: the supervisor must not restart it
    pid = d.pid_of(layout, node)
    if pid is not None:
        d.stop_process(pid, signal.SIGTERM if mode == "stop" else signal.SIGKILL, timeout=15)
    d.wait_for(f"{node} stops answering", lambda: not d.node_healthy(layout, node), 15)


def kill_backend(layout: d.Layout, node: str) -> None:
    if not d.node_healthy(layout, node):
        raise Refused(f"kill-backend: {node} is not healthy before the fault")
    pid = d.pid_of(layout, node)
    if pid is None:
        raise d.DeploymentError(f"kill-backend: no recorded process for {node}")
    d.stop_process(pid, signal.SIGKILL, timeout=10)


def server_in_effect(layout: d.Layout, node: str) -> bool:
    return d.held_file(layout, node).exists() or not d.node_healthy(layout, node)


def server_heal(layout: d.Layout, node: str) -> None:
    d.ensure_backend(layout, node)


# -- the cache -------------------------------------------------------------------------------


def cache_failover(layout: d.Layout) -> None:
    _require(d.cache_pair(layout), "cache-failover")
    state = d.load_state(layout)
    master, replica = state.redis_master, d.other(d.REDIS_NODES, state.redis_master)
    m = d.redis_client(layout, layout.redis_port(master))
    r = d.redis_client(layout, layout.redis_port(replica))
    m.client_pause(10_000, all=False)  # writes wait; reads go on

    def caught_up() -> bool:
        want = int(m.info("replication")["master_repl_offset"])
        return int(r.info("replication")["slave_repl_offset"]) >= want

    d.wait_for(f"{replica} catches up with {master}", caught_up, CATCH_UP_SEC)
    state.redis_master = replica
    d.save_state(layout, state)
    r.replicaof("NO", "ONE")
    d.repoint_cache(layout)
    d.stop_redis(layout, master)


def cache_crash(layout: d.Layout) -> None:
    _require(d.cache_pair(layout), "cache-crash")
    state = d.load_state(layout)
    master, replica = state.redis_master, d.other(d.REDIS_NODES, state.redis_master)
    d.kill_redis(layout, master)
    state.redis_master = replica
    d.save_state(layout, state)
    d.redis_client(layout, layout.redis_port(replica)).replicaof("NO", "ONE")
    d.repoint_cache(layout)


def cache_in_effect(layout: d.Layout) -> bool:
    return not d.cache_pair(layout)[0]


def cache_heal(layout: d.Layout) -> None:
    d.repair_cache(layout)


# -- a whole zone ----------------------------------------------------------------------------


def _zone(name: str) -> int:
    zones = sorted(set(d.ZONES.values()))
    if name not in zones:
        raise BadArguments(f"no zone {name!r} in this deployment (zones: {', '.join(zones)})")
    return zones.index(name)


def zone_outage(layout: d.Layout, index: int) -> None:
    node, pg, cache = d.NODES[index], d.PG_NODES[index], d.REDIS_NODES[index]
    for ok_why in (d.database_pair(layout), d.cache_pair(layout)):
        _require(ok_why, "zone-outage")
    for n in d.NODES:
        if not d.node_healthy(layout, n):
            raise Refused(f"zone-outage: {n} is not healthy before the fault")
    d.held_file(layout, node).touch()
    state = d.load_state(layout)
    pid = d.pid_of(layout, node)
    if pid is not None:
        d.stop_process(pid, signal.SIGKILL, timeout=10)
    d.kill_pg(layout, pg)
    d.kill_redis(layout, cache)
    if state.pg_primary == pg:
        state.pg_primary = d.other(d.PG_NODES, pg)
        d.save_state(layout, state)
        d.promote(layout, state.pg_primary)
    if state.redis_master == cache:
        state.redis_master = d.other(d.REDIS_NODES, cache)
        d.save_state(layout, state)
        d.redis_client(layout, layout.redis_port(state.redis_master)).replicaof("NO", "ONE")
        d.repoint_cache(layout)


def zone_in_effect(layout: d.Layout, index: int) -> bool:
    return (
        server_in_effect(layout, d.NODES[index])
        or database_in_effect(layout)
        or cache_in_effect(layout)
    )


def zone_heal(layout: d.Layout, index: int) -> None:
    d.repair_database(layout)
    d.repair_cache(layout)
    d.ensure_backend(layout, d.NODES[index])


# -- the table the CLI reads -----------------------------------------------------------------


@dataclass(frozen=True)
class Runbook:
    """One fault's three commands, each given the arguments after the action."""

    inject: Callable[[d.Layout, list[str]], None]
    heal: Callable[[d.Layout, list[str]], None]
    check: Callable[[d.Layout, list[str]], bool]


def _no_args(name: str, args: list[str]) -> None:
    if args:
        raise BadArguments(f"{name} takes no arguments, not {' '.join(args)!r}")


def _lag(args: list[str]) -> float:
    match args:
        case []:
            return 0.0
        case ["--lag", value] if re.fullmatch(r"\d+(\.\d+)?", value):
            return float(value)
    raise BadArguments(f"database-crash takes [--lag SECONDS], not {' '.join(args)!r}")


def _server(name: str, args: list[str], *, modes: bool) -> tuple[str, str]:
    if len(args) == 1 or (modes and len(args) == 2):
        return _node(args[0]), args[1] if len(args) == 2 else "stop"
    usage = "NODE [stop|kill]" if modes else "NODE"
    raise BadArguments(f"{name} takes {usage}, not {' '.join(args)!r}")


def _failover_inject(layout: d.Layout, args: list[str]) -> None:
    _no_args("database-failover", args)
    database_failover(layout)


def _crash_inject(layout: d.Layout, args: list[str]) -> None:
    database_crash(layout, _lag(args))


def _database_heal(layout: d.Layout, args: list[str]) -> None:
    database_heal(layout)


def _database_check(layout: d.Layout, args: list[str]) -> bool:
    return database_in_effect(layout)


def _stop_inject(layout: d.Layout, args: list[str]) -> None:
    stop_server(layout, *_server("stop-server", args, modes=True))


def _stop_heal(layout: d.Layout, args: list[str]) -> None:
    server_heal(layout, _server("stop-server", args, modes=True)[0])


def _stop_check(layout: d.Layout, args: list[str]) -> bool:
    return server_in_effect(layout, _server("stop-server", args, modes=True)[0])


def _kill_inject(layout: d.Layout, args: list[str]) -> None:
    kill_backend(layout, _server("kill-backend", args, modes=False)[0])


def _kill_heal(layout: d.Layout, args: list[str]) -> None:
    server_heal(layout, _server("kill-backend", args, modes=False)[0])


def _kill_check(layout: d.Layout, args: list[str]) -> bool:
    return server_in_effect(layout, _server("kill-backend", args, modes=False)[0])


def _cache_failover_inject(layout: d.Layout, args: list[str]) -> None:
    _no_args("cache-failover", args)
    cache_failover(layout)


def _cache_crash_inject(layout: d.Layout, args: list[str]) -> None:
    _no_args("cache-crash", args)
    cache_crash(layout)


def _cache_heal(layout: d.Layout, args: list[str]) -> None:
    cache_heal(layout)


def _cache_check(layout: d.Layout, args: list[str]) -> bool:
    return cache_in_effect(layout)


def _zone_args(args: list[str]) -> int:
    if len(args) != 1:
        raise BadArguments(f"zone-outage takes ZONE, not {' '.join(args)!r}")
    return _zone(args[0])


def _zone_inject(layout: d.Layout, args: list[str]) -> None:
    zone_outage(layout, _zone_args(args))


def _zone_heal(layout: d.Layout, args: list[str]) -> None:
    zone_heal(layout, _zone_args(args))


def _zone_check(layout: d.Layout, args: list[str]) -> bool:
    return zone_in_effect(layout, _zone_args(args))


FAULTS: dict[str, Runbook] = {
    "database-failover": Runbook(_failover_inject, _database_heal, _database_check),
    "database-crash": Runbook(_crash_inject, _database_heal, _database_check),
    "stop-server": Runbook(_stop_inject, _stop_heal, _stop_check),
    "kill-backend": Runbook(_kill_inject, _kill_heal, _kill_check),
    "cache-failover": Runbook(_cache_failover_inject, _cache_heal, _cache_check),
    "cache-crash": Runbook(_cache_crash_inject, _cache_heal, _cache_check),
    "zone-outage": Runbook(_zone_inject, _zone_heal, _zone_check),
}
