"""Steps about the data stores behind the app: orders, replication, cache, sessions, limits."""

from __future__ import annotations

from pytest_bdd import parsers, then, when

from gameday import checks, facts
from gameday.needs import App, Cache, Check, Role, Servers, needs
from gameday.scenario import Scenario
from gameday.target import Target

# -- database ------------------------------------------------------------------------------


@when("I place an order through the entrypoint", target_fixture="order")
@needs(Role("database"), App("orders"))
def place_order(target: Target) -> facts.OrderReadBack:
    assert target.database is not None
    return facts.write_and_read_order(target, target.database.replica_read_within_sec)


@then("it can be read back from the primary at once and from the replica within the stated lag")
def order_readable(scenario: Scenario, target: Target, order: facts.OrderReadBack) -> None:
    assert target.database is not None
    scenario.judge(checks.order_read_back(order, target.database.replica_read_within_sec))


@when("I look at the primary's replication", target_fixture="replication")
@needs(Role("database"))
def look_at_replication(target: Target) -> facts.ReplicationFacts:
    assert target.database is not None
    return facts.replication(target.database)


@then("a standby is streaming with lag under the target's bound, synchronously if declared")
def standby_streaming(
    scenario: Scenario, target: Target, replication: facts.ReplicationFacts
) -> None:
    db = target.database
    assert db is not None
    scenario.judge(
        checks.standby_streaming(
            replication, synchronous=db.synchronous, max_lag_sec=db.max_replica_lag_sec
        )
    )


# -- cache ---------------------------------------------------------------------------------


@when("I look at the cache's replication", target_fixture="cache_replication")
@needs(Role("cache"))
def look_at_cache(target: Target) -> facts.CacheReplication:
    assert target.cache is not None
    return facts.cache_replication(target.cache)


@then("the cache master has an online replica")
def cache_has_replica(scenario: Scenario, cache_replication: facts.CacheReplication) -> None:
    scenario.judge(checks.cache_replicated(cache_replication))


@then("the failover manager sees the same master")
@needs(Cache("sentinels"))
def sentinels_see_master(
    scenario: Scenario, target: Target, cache_replication: facts.CacheReplication
) -> None:
    assert target.cache is not None
    views = facts.sentinel_views(target.cache)
    scenario.judge(checks.sentinels_agree(views, cache_replication.run_id))


@when(
    parsers.parse("I read {rounds:d} evicted products twice each through the entrypoint"),
    target_fixture="cache_rounds",
)
@needs(Role("cache"), App("products"), App("product_key"))
def read_products(target: Target, rounds: int) -> list[facts.CacheAsideRound]:
    assert target.cache is not None
    return facts.cache_aside_rounds(target, target.cache, rounds)


@then("the first read misses the cache and the second hits it, no slower")
def cache_aside(
    scenario: Scenario, target: Target, cache_rounds: list[facts.CacheAsideRound]
) -> None:
    scenario.judge(checks.cache_aside_works(cache_rounds, target.app.cache_header))


@when("I read the cache's persistence settings", target_fixture="persistence")
@needs(Cache("persistence"))
def read_persistence(target: Target) -> facts.PersistenceFacts:
    assert target.cache is not None
    return facts.cache_persistence(target.cache)


@then("they match the persistence the target declares")
def persistence_as_declared(
    scenario: Scenario, target: Target, persistence: facts.PersistenceFacts
) -> None:
    assert target.cache is not None and target.cache.persistence is not None
    scenario.judge(checks.persistence_matches(target.cache.persistence, persistence))


# -- sessions and rate limits --------------------------------------------------------------


@when(
    "I sign in through the entrypoint and use the session until another server answers",
    target_fixture="session_trial",
)
@needs(App("sessions"), Servers(count=2))
def sign_in(target: Target) -> facts.SessionTrial:
    return facts.session_across_servers(target)


@then("the session is valid on the other server")
def session_valid(scenario: Scenario, session_trial: facts.SessionTrial) -> None:
    scenario.judge(checks.session_shared(session_trial))


@when(
    "a fresh user sends one request more than the rate limit allows",
    target_fixture="rate_statuses",
)
@needs(App("rate_limit"), Check(lambda target, _: facts.rate_limit_refusal(target)))
def exceed_rate_limit(target: Target) -> list[int | None]:
    return facts.rate_limit_statuses(target)


@then("every request within the limit succeeds and the next one is refused with 429")
def refused_after_limit(
    scenario: Scenario, target: Target, rate_statuses: list[int | None]
) -> None:
    assert target.app.rate_limit is not None
    scenario.judge(checks.rate_limited(rate_statuses, target.app.rate_limit.requests))
