"""Fixtures for the harness's own tests: the shared lab on its default port block."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from lab import control, health
from lab.layout import LabLayout


@pytest.fixture(scope="session")
def running_lab() -> Iterator[LabLayout]:
    """The default lab, running. Started (and stopped after) only if it was not running."""
    layout = LabLayout.from_env()
    started = not control.is_running(layout)
    control.up(layout)
    yield layout
    if started:
        control.down(layout)


def wait_until(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except Exception:  # a service coming back answers with errors for a while
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not true after {timeout:.0f} s")


def lab_healthy(layout: LabLayout) -> bool:
    return all(c.healthy for c in health.components(layout))
