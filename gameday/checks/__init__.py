"""Checks: pure functions from observations to a `Verdict`.

They do no I/O, so each is tested on hand-built inputs that must make it pass and fail.

The acceptance checks are importable from here (`checks.entrypoint_healthy`); their module is
loaded when first asked for, so that importing one room of checks (`gameday.checks.resilience`)
does not load the others' facts and the target's models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("gameday.checks.acceptance"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
