"""Steps about the data stores behind the app: orders, replication, cache, sessions, limits."""

from __future__ import annotations

import pytest
from pytest_bdd import parsers, then, when

from gameday import checks, facts
from gameday.target import Cache, Database, Server, Target


def _needs(value: object, what: str, target: Target) -> None:
    if value is None:
        pytest.skip(f"target {target.name!r} declares no {what}")


# -- database ------------------------------------------------------------------------------


@when("I place an order through the entrypoint", target_fixture="order")
def place_order(target: Target, database: Database) -> facts.OrderReadBack:
    _needs(target.app.orders, "app.orders API", target)
    return facts.write_and_read_order(target, database.replica_read_within_sec)


@then("it can be read back from the primary at once and from the replica within the stated lag")
def order_readable(order: facts.OrderReadBack, database: Database) -> None:
    verdict = checks.order_read_back(order, database.replica_read_within_sec)
    assert verdict.ok, verdict.message


@when("I look at the primary's replication", target_fixture="replication")
def look_at_replication(database: Database) -> facts.ReplicationFacts:
    return facts.replication(database)


@then("a standby is streaming with lag under the target's bound, synchronously if declared")
def standby_streaming(replication: facts.ReplicationFacts, database: Database) -> None:
    verdict = checks.standby_streaming(
        replication, synchronous=database.synchronous, max_lag_sec=database.max_replica_lag_sec
    )
    assert verdict.ok, verdict.message


# -- cache ---------------------------------------------------------------------------------


@when("I look at the cache's replication", target_fixture="cache_replication")
def look_at_cache(cache: Cache) -> facts.CacheReplication:
    return facts.cache_replication(cache)


@then("the cache master has an online replica")
def cache_has_replica(cache_replication: facts.CacheReplication) -> None:
    verdict = checks.cache_replicated(cache_replication)
    assert verdict.ok, verdict.message


@then("the failover manager sees the same master")
def sentinels_see_master(
    target: Target, cache: Cache, cache_replication: facts.CacheReplication
) -> None:
    if not cache.sentinels:
        pytest.skip(
            f"target {target.name!r} lists no sentinels (a managed cache fails over itself)"
        )
    verdict = checks.sentinels_agree(facts.sentinel_views(cache), cache_replication.run_id)
    assert verdict.ok, verdict.message


@when(
    parsers.parse("I read {rounds:d} evicted products twice each through the entrypoint"),
    target_fixture="cache_rounds",
)
def read_products(target: Target, cache: Cache, rounds: int) -> list[facts.CacheAsideRound]:
    return facts.cache_aside_rounds(target, cache, rounds)


@then("the first read misses the cache and the second hits it, no slower")
def cache_aside(target: Target, cache_rounds: list[facts.CacheAsideRound]) -> None:
    verdict = checks.cache_aside_works(cache_rounds, target.app.cache_header)
    assert verdict.ok, verdict.message


@when("I read the cache's persistence settings", target_fixture="persistence")
def read_persistence(target: Target, cache: Cache) -> facts.PersistenceFacts:
    _needs(cache.persistence, "cache.persistence", target)
    return facts.cache_persistence(cache)


@then("they match the persistence the target declares")
def persistence_as_declared(cache: Cache, persistence: facts.PersistenceFacts) -> None:
    assert cache.persistence is not None
    verdict = checks.persistence_matches(cache.persistence, persistence)
    assert verdict.ok, verdict.message


# -- sessions and rate limits --------------------------------------------------------------


@when(
    "I sign in through the entrypoint and use the session until another server answers",
    target_fixture="session_trial",
)
def sign_in(target: Target, servers: list[Server]) -> facts.SessionTrial:
    _needs(target.app.sessions, "app.sessions API", target)
    if len(servers) < 2:
        pytest.skip(f"target {target.name!r} has fewer than two servers")
    return facts.session_across_servers(target)


@then("the session is valid on the other server")
def session_valid(session_trial: facts.SessionTrial) -> None:
    verdict = checks.session_shared(session_trial)
    assert verdict.ok, verdict.message


@when(
    "a fresh user sends one request more than the rate limit allows",
    target_fixture="rate_statuses",
)
def exceed_rate_limit(target: Target) -> list[int | None]:
    _needs(target.app.rate_limit, "app.rate_limit", target)
    refusal = facts.rate_limit_refusal(target)  # more requests than the target's caps allow
    if refusal is not None:
        pytest.skip(refusal)
    return facts.rate_limit_statuses(target)


@then("every request within the limit succeeds and the next one is refused with 429")
def refused_after_limit(target: Target, rate_statuses: list[int | None]) -> None:
    assert target.app.rate_limit is not None
    verdict = checks.rate_limited(rate_statuses, target.app.rate_limit.requests)
    assert verdict.ok, verdict.message
