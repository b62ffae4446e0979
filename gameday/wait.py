"""The one polling loop of the engine and of chaos: ask until yes or the time is up.

The lab keeps its own copy (lab/wait.py) so that it stands alone; everything else waits here.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_SEC = 0.2


def poll_until(ready: Callable[[], bool], *, timeout: float, interval: float = POLL_SEC) -> bool:
    """Ask `ready` until it says yes (True) or `timeout` seconds pass (False).

    Exceptions from `ready` propagate: the caller decides which errors mean "not yet".
    """
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
