"""Fixed-rate scheduling shared by every probe, and the log of how well it was kept.

Operation k is due at `start + k / rate`: due times are computed, never accumulated, so the
schedule does not drift. A sample's send time is when its operation *really* started (for
`FixedRate`: when a worker thread began it), never when it was queued: a probe that falls
behind shows late starts, not on-time starts with long durations. Each start's lateness
against its due time goes into a `ScheduleLog`, whose report `gameday.checks.schedule.rate_kept`
judges ("asked 300/s, sent 255/s; 45 writes late by more than 10 ms").

`FixedRate` runs each operation on a worker thread so that a slow answer never delays the next
start (concurrency grows to what rate x timeout needs, up to a cap). When every worker is busy
the next operation waits for one, and starts late: it is never queued out of sight, never
skipped, and its lateness is measured. The HTTP probe has its own event-loop scheduler
(`gameday.probes.http`) and logs its starts the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gameday.checks.schedule import LATE_SEC, ScheduleReport, due_count
from gameday.clock import Clock

MAX_WORKERS = 256
# How often a scheduler waiting for a free worker looks whether it was stopped meanwhile.
STOP_POLL_SEC = 0.1


@runtime_checkable
class Scheduled(Protocol):
    """A probe that runs on a schedule and can say how well it kept it (the HTTP probe and
    the write probes; locust users in the background are not scheduled, and are not one):
    `isinstance(probe, Scheduled)` then `rate_kept(probe.schedule_report())`."""

    name: str

    def schedule_report(self) -> ScheduleReport: ...


@dataclass(frozen=True)
class Tick:
    seq: int
    due: float  # clock time the operation was scheduled for
    sent: float  # clock time it really started (>= due)


class ScheduleLog:
    """What a probe's schedule did so far: O(1) per start, constant memory, thread-safe.

    `begin(first_due)` once, `started(due, sent)` at every real start, `end(at)` when the
    schedule stops; `report(now)` at any time (an unended log reports up to `now`).
    """

    def __init__(
        self,
        probe: str,
        *,
        rate: float,
        limit: int | None = None,
        unit: str = "operation",
        late_sec: float = LATE_SEC,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.probe = probe
        self.rate = rate
        self.unit = unit
        self.late_sec = late_sec
        self._limit = limit
        self._lock = threading.Lock()
        self._first_due: float | None = None
        self._ended: float | None = None
        self._sent = 0
        self._late = 0
        self._worst = 0.0

    def begin(self, first_due: float) -> None:
        with self._lock:
            self._first_due = first_due

    def started(self, due: float, sent: float) -> None:
        lateness = sent - due
        with self._lock:
            self._sent += 1
            if lateness > self.late_sec:
                self._late += 1
            if lateness > self._worst:
                self._worst = lateness

    def end(self, at: float) -> None:
        with self._lock:
            if self._ended is None:
                self._ended = at

    @property
    def first_due(self) -> float | None:
        return self._first_due

    def report(self, now: float) -> ScheduleReport:
        with self._lock:
            first, ended = self._first_due, self._ended
            if first is not None and ended is None:
                ended = now
            due = 0
            if first is not None and ended is not None:
                # A start can never come before its due time, so `sent` bounds `due` from
                # below whatever rounding did to the clock readings.
                due = max(self._sent, due_count(first, ended, self.rate, self._limit))
            return ScheduleReport(
                probe=self.probe, unit=self.unit, asked_rate=self.rate, first_due=first,
                ended=ended, due=due, sent=self._sent, late=self._late, late_sec=self.late_sec,
                worst_late_sec=self._worst,
            )  # fmt: skip


class FixedRate:
    """Calls `operation(tick)` `rate` times a second until stopped or `limit` ticks are made.

    `log` records every real start; `workers` is the most operations in flight at once.
    """

    def __init__(
        self,
        operation: Callable[[Tick], None],
        *,
        rate: float,
        clock: Clock,
        timeout_sec: float,
        limit: int | None = None,
        name: str = "probe",
        unit: str = "operation",
        late_sec: float = LATE_SEC,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self._operation = operation
        self._interval = 1.0 / rate
        self._clock = clock
        self._limit = limit
        # Enough workers for every operation that can be in flight at once (rate x timeout).
        self.workers = min(MAX_WORKERS, max(4, int(rate * timeout_sec) + 4))
        self._free = threading.Semaphore(self.workers)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{name}-scheduler", daemon=True)
        self.log = ScheduleLog(name, rate=rate, limit=limit, unit=unit, late_sec=late_sec)
        self.ticks = 0
        # seq -> real start of the operations running now: what the record does not hold yet.
        self._in_flight: dict[int, float] = {}
        self._flight_lock = threading.Lock()

    def start(self) -> FixedRate:
        self._thread.start()
        return self

    def _run(self) -> None:
        start = self._clock.now()
        self.log.begin(start)
        seq = 0
        try:
            while not self._stop.is_set() and (self._limit is None or seq < self._limit):
                due = start + seq * self._interval
                delay = due - self._clock.now()
                if delay > 0 and self._stop.wait(delay):
                    break
                # Wait for a free worker rather than queue behind busy ones: a queued
                # operation would start late out of sight, and the queue could grow for as
                # long as the probe runs (and hold up `stop`).
                if not self._wait_for_worker():
                    break
                self._pool.submit(self._begin, seq, due)
                seq += 1
                self.ticks = seq
        finally:
            self.log.end(self._clock.now())

    def _wait_for_worker(self) -> bool:
        while not self._free.acquire(timeout=STOP_POLL_SEC):
            if self._stop.is_set():
                return False
        return True

    def _begin(self, seq: int, due: float) -> None:
        try:
            sent = self._clock.now()
            with self._flight_lock:
                self._in_flight[seq] = sent
            self.log.started(due, sent)
            self._operation(Tick(seq=seq, due=due, sent=sent))
        finally:
            with self._flight_lock:
                self._in_flight.pop(seq, None)
            self._free.release()

    def settled_until(self) -> float:
        """The send time before which every operation started has finished (and recorded its
        sample): the start of the oldest one still running, else now. A live check judging
        later samples could call an outage over while a write sent earlier still hangs."""
        with self._flight_lock:
            oldest = min(self._in_flight.values(), default=None)
        return self._clock.now() if oldest is None else oldest

    def report(self) -> ScheduleReport:
        return self.log.report(self._clock.now())

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
