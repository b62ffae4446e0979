"""Cache keys written and read back around a restart (the persistence trial).

`write_keys` SETs numbered keys on the cache one after another for a while and records when
each reply came (the run's clock); `keys_present` reads which of them the cache still has.
`gameday.checks.cache.writes_survive_restart` judges the two against the restart's time.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

from gameday.checks.cache import CacheWrite
from gameday.clock import Clock
from gameday.probes.schedule import FixedRate, Tick
from gameday.secrets import redis_client

KEY_TTL_SEC = 3600
SOCKET_TIMEOUT_SEC = 2.0


def write_keys(
    url: str, *, seconds: float, clock: Clock, rate: float = 200.0, prefix: str = "gameday:persist"
) -> list[CacheWrite]:
    """SET keys for `seconds` at about `rate` a second; only acknowledged writes are returned.

    A write that fails is not acknowledged, so it is nobody's loss: it is left out.
    """
    import redis

    run = uuid.uuid4().hex[:8]
    client = redis_client(url, socket_timeout=SOCKET_TIMEOUT_SEC)
    del url  # a traceback with locals (pytest -l) would print it, password and all
    writes: list[CacheWrite] = []
    lock = threading.Lock()

    def write(tick: Tick) -> None:
        key = f"{prefix}:{run}:{tick.seq}"
        try:
            client.set(key, f"{clock.now():.6f}", ex=KEY_TTL_SEC)
        except redis.RedisError:
            return
        with lock:
            writes.append(CacheWrite(key, clock.now()))

    # The probes' own schedule: a refused connection fails at once and must not speed it up.
    schedule = FixedRate(
        write, rate=rate, clock=clock, timeout_sec=SOCKET_TIMEOUT_SEC,
        limit=max(1, round(rate * seconds)), name="cache-keys", unit="write",
    )  # fmt: skip
    try:
        schedule.start().join()
    finally:
        client.close()
    return sorted(writes, key=lambda w: w.acked_at)


def keys_present(url: str, keys: Sequence[str]) -> set[str]:
    """Which of `keys` the cache has now."""
    client = redis_client(url, socket_timeout=SOCKET_TIMEOUT_SEC)
    del url  # a traceback with locals (pytest -l) would print it, password and all
    try:
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            values = client.mget(chunk)
            found.update(k for k, v in zip(chunk, values, strict=True) if v is not None)
        return found
    finally:
        client.close()
