"""Fixed-rate scheduling shared by every probe.

Operation k is due at `start + k / rate`: due times are computed, never accumulated, so the
schedule does not drift, and each operation runs on a worker thread so a slow answer never
delays the next send (concurrency grows to what rate x timeout needs, up to a cap). When the
workers are all busy an operation is still started late rather than skipped, and its lateness
is measured, not hidden.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gameday.clock import Clock

MAX_WORKERS = 256


@dataclass(frozen=True)
class Tick:
    seq: int
    due: float  # clock time the operation was scheduled for
    sent: float  # clock time it was handed to its worker


class FixedRate:
    """Calls `operation(tick)` `rate` times a second until stopped or `limit` ticks are made."""

    def __init__(
        self,
        operation: Callable[[Tick], None],
        *,
        rate: float,
        clock: Clock,
        timeout_sec: float,
        limit: int | None = None,
        name: str = "probe",
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self._operation = operation
        self._interval = 1.0 / rate
        self._clock = clock
        self._limit = limit
        # Enough workers for every request that can be in flight at once (rate x timeout).
        self.workers = min(MAX_WORKERS, max(4, int(rate * timeout_sec) + 4))
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-scheduler", daemon=True)
        self.ticks = 0

    def start(self) -> FixedRate:
        self._thread.start()
        return self

    def _run(self) -> None:
        start = self._clock.now()
        seq = 0
        while not self._stop.is_set() and (self._limit is None or seq < self._limit):
            due = start + seq * self._interval
            delay = due - self._clock.now()
            if delay > 0 and self._stop.wait(delay):
                break
            tick = Tick(seq=seq, due=due, sent=self._clock.now())
            self._pool.submit(self._operation, tick)
            seq += 1
            self.ticks = seq

    def stop(self, wait_sec: float | None = None) -> None:
        """Stop scheduling; wait for operations in flight (they end by their own timeouts)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=wait_sec is None or wait_sec > 0, cancel_futures=False)

    def join(self) -> None:
        """Wait until `limit` ticks have been scheduled and run."""
        self._thread.join()
        self._pool.shutdown(wait=True)
