"""Checks: pure functions from observations to a `Verdict`.

They do no I/O, so each is tested on hand-built inputs that must make it pass and fail.
"""

from gameday.checks.acceptance import (
    all_servers_in_rotation,
    cache_aside_works,
    cache_replicated,
    entrypoint_healthy,
    order_read_back,
    persistence_matches,
    rate_limited,
    sentinels_agree,
    session_shared,
    standby_streaming,
)
from gameday.checks.monitoring import time_to_detect_under

__all__ = [
    "all_servers_in_rotation",
    "cache_aside_works",
    "cache_replicated",
    "entrypoint_healthy",
    "order_read_back",
    "persistence_matches",
    "rate_limited",
    "sentinels_agree",
    "session_shared",
    "standby_streaming",
    "time_to_detect_under",
]
