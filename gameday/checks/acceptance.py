"""Acceptance checks: is the deployment shaped and behaving as its target says?

Pure functions over facts gathered by `gameday.facts`; each returns a `Verdict` whose message
carries the measured value.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gameday.facts import (
    CacheAsideRound,
    CacheReplication,
    HttpAnswer,
    OrderReadBack,
    PersistenceFacts,
    ReplicationFacts,
    SentinelView,
    SessionTrial,
    median,
)
from gameday.target import Persistence
from gameday.verdict import Verdict, failed, passed


def _describe(answer: HttpAnswer) -> str:
    return f"HTTP {answer.status}" if answer.status is not None else f"no answer ({answer.error})"


def entrypoint_healthy(answer: HttpAnswer, expected_status: int = 200) -> Verdict:
    name = "entrypoint_healthy"
    took = f"in {answer.duration_sec * 1000:.0f} ms"
    if answer.status == expected_status:
        return passed(name, f"{answer.url} answered {expected_status} {took}")
    return failed(
        name, f"{answer.url} answered {_describe(answer)} {took}, expected {expected_status}"
    )


def all_servers_in_rotation(
    expected: Sequence[str],
    answered: Counter[str],
    lb_states: dict[str, str] | None,
    *,
    refused: Counter[str] | None = None,
) -> Verdict:
    """Every expected server answered through the entrypoint (with 200), and the LB reports
    it UP. `answered`: 200s by serving server; `refused`: the other answers by what they were
    ("404", "timeout"), so a message never says "none of 0" when requests got errors."""
    name = "all_servers_in_rotation"
    refused = refused or Counter()
    total = sum(answered.values()) + sum(refused.values())
    seen = ", ".join(f"{s}={n}" for s, n in sorted(answered.items())) or "nobody"
    otherwise = (
        "; " + ", ".join(f"{n} answered {k}" for k, n in sorted(refused.items())) if refused else ""
    )
    problems = [
        f"{s}: 0 of {total} requests answered 200 from it{otherwise}"
        for s in expected
        if answered.get(s, 0) == 0
    ]
    if lb_states is not None:
        for s in expected:
            state = lb_states.get(s, "not listed")
            if not state.startswith("UP"):
                problems.append(f"load balancer reports {s} {state}")
    unknown = sorted(set(answered) - set(expected))
    if unknown:
        problems.append(f"answers from servers the target does not list: {', '.join(unknown)}")
    measured = {"answered": dict(answered), "refused": dict(refused)}
    if problems:
        return failed(name, "; ".join(problems) + f" (200s seen: {seen})", **measured)
    lb = " and the load balancer reports all UP" if lb_states is not None else ""
    return passed(name, f"all of {', '.join(expected)} answered ({seen}){lb}", **measured)


def order_read_back(result: OrderReadBack, replica_within_sec: float) -> Verdict:
    name = "order_read_back"
    if result.order_id is None:
        return failed(
            name, f"creating an order answered {_describe(result.created)}: {result.created.body}"
        )
    assert result.consistent is not None
    if result.consistent.status != 200:
        return failed(
            name,
            f"order {result.order_id} read from the primary answered "
            f"{_describe(result.consistent)}",
        )
    if result.replica_seconds is None:
        return failed(
            name,
            f"order {result.order_id} was not readable from the replica within "
            f"{replica_within_sec:g} s ({result.replica_attempts} attempts)",
        )
    return passed(
        name,
        f"order {result.order_id} read back from the primary at once and from the replica "
        f"after {result.replica_seconds * 1000:.0f} ms",
        replica_seconds=result.replica_seconds,
    )


def standby_streaming(facts: ReplicationFacts, *, synchronous: bool, max_lag_sec: float) -> Verdict:
    name = "standby_streaming"
    if facts.standbys and all(r.state is None for r in facts.standbys):
        return failed(
            name,
            "pg_stat_replication hides the standbys' state from this user: grant it pg_monitor "
            "(RDS: rds_superuser) to check replication",
        )
    streaming = [r for r in facts.standbys if r.state == "streaming"]
    if not streaming:
        listed = ", ".join(f"{r.name}:{r.state}" for r in facts.standbys) or "none"
        return failed(
            name, f"no standby is streaming from the primary (pg_stat_replication: {listed})"
        )
    sync = [r for r in streaming if r.sync_state in ("sync", "quorum")]
    if synchronous and not sync:
        states = ", ".join(f"{r.name}:{r.sync_state}" for r in streaming)
        return failed(
            name,
            f"no synchronous standby (sync states: {states}; synchronous_standby_names="
            f"{facts.synchronous_standby_names!r})",
        )
    best = min(sync or streaming, key=lambda r: r.replay_lag_sec)
    if best.replay_lag_sec > max_lag_sec:
        return failed(
            name, f"standby {best.name} lags {best.replay_lag_sec:.2f} s (> {max_lag_sec:g} s)"
        )
    kind = f"{best.sync_state} " if synchronous else ""
    return passed(
        name,
        f"standby {best.name} streams as {kind}standby, "
        f"replay lag {best.replay_lag_sec * 1000:.0f} ms,"
        f" {best.lag_bytes} bytes behind",
        lag_sec=best.replay_lag_sec,
    )


def cache_replicated(facts: CacheReplication) -> Verdict:
    name = "cache_replicated"
    if facts.role != "master":
        return failed(name, f"the cache endpoint leads to a {facts.role}, not a master")
    online = [r for r in facts.replicas if r.get("state") == "online"]
    if not online:
        states = ", ".join(
            f"{r.get('ip')}:{r.get('port')}={r.get('state')}" for r in facts.replicas
        )
        return failed(name, f"the master has no online replica (replicas: {states or 'none'})")
    r = online[0]
    return passed(
        name,
        f"{len(online)} replica(s) online, e.g. {r.get('ip')}:{r.get('port')} lag {r.get('lag')} s",
    )


def sentinels_agree(views: Sequence[SentinelView], master_run_id: str) -> Verdict:
    """A quorum of sentinels answers, sees the master the endpoint leads to, and not as down."""
    name = "sentinels_agree"
    if not views:
        return failed(name, "the target lists no sentinels")
    answering = [v for v in views if v.error is None]
    quorum = max((v.quorum for v in answering), default=len(views) // 2 + 1)
    unreachable = [f"{v.address}: {v.error}" for v in views if v.error]
    problems = []
    for v in answering:
        if v.master_run_id != master_run_id:
            problems.append(
                f"{v.address} sees master {v.master_address} (another server than the endpoint's)"
            )
        if "down" in v.flags:
            problems.append(f"{v.address} flags the master {v.flags}")
    agreeing = len(answering) - sum(
        1 for v in answering if v.master_run_id != master_run_id or "down" in v.flags
    )
    # An unreachable sentinel is tolerable while a quorum remains; one that disagrees is not.
    if agreeing < quorum or problems:
        return failed(
            name,
            f"{agreeing} of {len(views)} sentinels agree (quorum {quorum}): "
            + "; ".join(problems + unreachable),
        )
    note = f"; unreachable: {'; '.join(unreachable)}" if unreachable else ""
    who = f"{agreeing} of {len(views)}" if unreachable else f"all {len(views)}"
    return passed(
        name,
        f"{who} sentinels see master {answering[0].master_address} "
        f"with {answering[0].other_sentinels} peers each (quorum {quorum}){note}",
    )


# How much slower than the misses the hits may read before the check calls them slower. Two
# requests of a few milliseconds each are compared: on a busy machine scheduling alone moves a
# median of 5 by a few milliseconds or tens of percent (10.1 ms hits against 6.5 ms misses at
# load 27, 8.2 against 7.5 in a CI run at load ~6, with a cache that was working). A cache that
# really makes reads slower (a remote cache, a cold connection per read) is slower by more.
HIT_SLOWER_FACTOR = 1.5
HIT_SLOWER_MS = 2.0


def cache_aside_works(rounds: Sequence[CacheAsideRound], cache_header: str) -> Verdict:
    """After an eviction the first read misses, the second hits and is not slower (medians).

    "Not slower" allows for timing noise: the hits fail it when their median is above
    HIT_SLOWER_FACTOR times the misses' plus HIT_SLOWER_MS.
    """
    name = "cache_aside_works"
    if not rounds:
        return failed(name, "no read rounds were made: nothing shows the cache is used")
    wrong = []
    for r in rounds:
        a = r.first.headers.get(cache_header.lower()) or r.first.headers.get(cache_header)
        b = r.second.headers.get(cache_header.lower()) or r.second.headers.get(cache_header)
        if (a, b) != ("MISS", "HIT"):
            wrong.append(f"product {r.product_id}: {a} then {b}")
    if wrong:
        return failed(name, f"{cache_header} should be MISS then HIT: " + "; ".join(wrong))
    miss = median([r.first.duration_sec for r in rounds]) * 1000
    hit = median([r.second.duration_sec for r in rounds]) * 1000
    allowed = miss * HIT_SLOWER_FACTOR + HIT_SLOWER_MS
    if hit > allowed:
        return failed(
            name,
            f"hits are slower than misses: median {hit:.1f} ms vs {miss:.1f} ms "
            f"(more than the {allowed:.1f} ms timing noise allows)",
            miss_ms=miss, hit_ms=hit,
        )  # fmt: skip
    return passed(
        name, f"{len(rounds)} rounds MISS then HIT; median {miss:.1f} ms miss, {hit:.1f} ms hit",
        miss_ms=miss, hit_ms=hit,
    )  # fmt: skip


def session_shared(trial: SessionTrial) -> Verdict:
    name = "session_shared"
    if trial.login.status != 200:
        return failed(name, f"login answered {_describe(trial.login)}")
    if trial.login.served_by is None:
        return failed(
            name,
            "the login answer names no server (served-by header missing): cannot tell "
            "whether another server accepted the session",
        )
    other = [c for c in trial.checks if c.served_by and c.served_by != trial.login.served_by]
    if not other:
        servers = sorted({c.served_by or "?" for c in trial.checks})
        return failed(
            name,
            f"no other server than {trial.login.served_by} answered in {len(trial.checks)} tries "
            f"(seen: {', '.join(servers) or 'none'})",
        )
    answer = other[-1]
    if answer.status != 200:
        return failed(
            name,
            f"session created on {trial.login.served_by} was refused on {answer.served_by}: "
            f"{_describe(answer)}",
        )
    return passed(
        name, f"session created on {trial.login.served_by} is valid on {answer.served_by}"
    )


def rate_limited(statuses: Sequence[int | None], limit: int) -> Verdict:
    name = "rate_limited"
    within, beyond = statuses[:limit], statuses[limit:]
    early = [i + 1 for i, s in enumerate(within) if s == 429]
    if early:
        return failed(name, f"answered 429 already at request {early[0]} of {limit} allowed")
    bad = Counter(s for s in within if s is None or not 200 <= s < 300)
    if bad:
        return failed(name, f"requests within the limit failed: {dict(bad)}")
    if not beyond or beyond[0] != 429:
        got = beyond[0] if beyond else "nothing"
        return failed(name, f"request {limit + 1} answered {got}, expected 429")
    return passed(name, f"{limit} requests allowed, request {limit + 1} answered 429")


def persistence_matches(declared: Persistence, actual: PersistenceFacts) -> Verdict:
    name = "persistence_matches"
    problems = []
    if actual.appendonly != declared.appendonly:
        problems.append(f"appendonly is {actual.appendonly}, target declares {declared.appendonly}")
    if declared.appendfsync and actual.appendfsync and actual.appendfsync != declared.appendfsync:
        problems.append(
            f"appendfsync is {actual.appendfsync}, target declares {declared.appendfsync}"
        )
    if declared.rdb is not None and actual.rdb is not None and actual.rdb != declared.rdb:
        problems.append(f"RDB snapshots are {'on' if actual.rdb else 'off'}, target declares "
                        f"{'on' if declared.rdb else 'off'}")  # fmt: skip
    if problems:
        return failed(name, "; ".join(problems) + f" (read with {actual.source})")
    return passed(
        name,
        f"appendonly={actual.appendonly} appendfsync={actual.appendfsync} rdb={actual.rdb}"
        f" as declared (read with {actual.source})",
    )
