"""Load shapes for the CloudMart locustfile, each configured by environment variables.

Every shape is bounded: ``tick()`` returns ``None`` once ``GAMEDAY_DURATION_SEC`` has passed,
which makes a headless locust stop and quit by itself. Variables (defaults in brackets):

- ``GAMEDAY_USERS`` [10]: users of the steady shape, the top of the step ramp, the spike's base.
- ``GAMEDAY_SPAWN_RATE`` [5]: users started (or stopped) per second.
- ``GAMEDAY_DURATION_SEC`` [60]: length of the whole run.
- ``GAMEDAY_STEP_USERS`` [2] / ``GAMEDAY_STEP_SEC`` [10]: step ramp: add this many users every
  this many seconds, up to ``GAMEDAY_USERS``.
- ``GAMEDAY_SPIKE_USERS`` [3 x GAMEDAY_USERS] / ``GAMEDAY_SPIKE_AT_SEC`` [20] /
  ``GAMEDAY_SPIKE_SEC`` [10]: spike: run this many users from this second for this long.

This module is loaded only by locust (it imports locust, which monkey-patches with gevent).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from locust import LoadTestShape

MAX_USERS = 1000  # a guard against typos: the lab is a few processes on one host
MAX_DURATION_SEC = 3600.0

SHAPE_ENV = "GAMEDAY_SHAPE"


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r} is outside {low:g}..{high:g}")
    return value


def _users(env: Mapping[str, str], name: str, default: int) -> int:
    value = _number(env, name, default, 0, MAX_USERS)
    if value != int(value):
        raise ValueError(f"{name}={env[name]!r} is not a whole number of users")
    return int(value)


class _EnvShape(LoadTestShape):
    """Common settings: users, spawn rate and the duration after which the run ends."""

    abstract = True

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__()
        env = os.environ if env is None else env
        self.users = _users(env, "GAMEDAY_USERS", 10)
        self.spawn_rate_per_sec = _number(env, "GAMEDAY_SPAWN_RATE", 5.0, 0.1, 1000.0)
        self.duration_sec = _number(env, "GAMEDAY_DURATION_SEC", 60.0, 1.0, MAX_DURATION_SEC)

    def users_at(self, run_time_sec: float) -> int:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        run_time_sec = self.get_run_time()
        if run_time_sec >= self.duration_sec:
            return None
        return self.users_at(run_time_sec), self.spawn_rate_per_sec


class SteadyShape(_EnvShape):
    """GAMEDAY_USERS users for the whole duration."""

    def users_at(self, run_time_sec: float) -> int:
        return self.users


class StepRampShape(_EnvShape):
    """GAMEDAY_STEP_USERS more users every GAMEDAY_STEP_SEC, up to GAMEDAY_USERS."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        env = os.environ if env is None else env
        self.step_users = _users(env, "GAMEDAY_STEP_USERS", 2)
        self.step_sec = _number(env, "GAMEDAY_STEP_SEC", 10.0, 0.5, MAX_DURATION_SEC)

    def users_at(self, run_time_sec: float) -> int:
        steps = int(run_time_sec // self.step_sec) + 1
        return min(self.users, steps * self.step_users)


class SpikeShape(_EnvShape):
    """GAMEDAY_USERS users, with GAMEDAY_SPIKE_USERS from GAMEDAY_SPIKE_AT_SEC for SPIKE_SEC."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        super().__init__(env)
        env = os.environ if env is None else env
        self.spike_users = _users(env, "GAMEDAY_SPIKE_USERS", min(MAX_USERS, 3 * self.users))
        self.spike_at_sec = _number(env, "GAMEDAY_SPIKE_AT_SEC", 20.0, 0.0, MAX_DURATION_SEC)
        self.spike_sec = _number(env, "GAMEDAY_SPIKE_SEC", 10.0, 0.5, MAX_DURATION_SEC)

    def users_at(self, run_time_sec: float) -> int:
        in_spike = self.spike_at_sec <= run_time_sec < self.spike_at_sec + self.spike_sec
        return self.spike_users if in_spike else self.users


SHAPES: dict[str, type[_EnvShape]] = {
    "steady": SteadyShape,
    "step": StepRampShape,
    "spike": SpikeShape,
}


def selected(env: Mapping[str, str] | None = None) -> type[_EnvShape] | None:
    """The shape class named by GAMEDAY_SHAPE, or None when it is unset or empty."""
    env = os.environ if env is None else env
    name = env.get(SHAPE_ENV, "").strip().lower()
    if not name:
        return None
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"{SHAPE_ENV}={name!r}: expected one of {', '.join(SHAPES)}") from None
