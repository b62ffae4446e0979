"""The thread-pool schedule of the write probes: a tick's send time is when its worker really
started it, a start that waited for a worker is counted late, and nothing queues out of sight.

Operations here block on events the test controls, so the assertions are on counts and order
(and on lower bounds that the test's own waits guarantee), not on this machine's speed.
"""

from __future__ import annotations

import threading
import time

from gameday.checks.schedule import rate_kept
from gameday.clock import Clock
from gameday.history import ReadBack, Sample
from gameday.probes.schedule import FixedRate, Scheduled, Tick
from gameday.probes.writes import WriteProbe

WAIT_SEC = 30.0  # bound on every wait, so a broken schedule fails instead of hanging


def wait_until(cond: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_SEC
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_tick_that_waited_for_a_worker_is_sent_when_it_started_and_counted_late() -> None:
    clock = Clock()
    release = threading.Event()
    ticks: list[Tick] = []
    lock = threading.Lock()

    def operation(tick: Tick) -> None:
        with lock:
            ticks.append(tick)
        if tick.seq < 4:
            release.wait(WAIT_SEC)

    # timeout x rate is tiny: the smallest pool, 4 workers.
    schedule = FixedRate(operation, rate=100, clock=clock, timeout_sec=0.001, limit=6,
                         late_sec=0.05)  # fmt: skip
    assert schedule.workers == 4
    schedule.start()
    wait_until(lambda: len(ticks) == 4, "4 busy workers")
    time.sleep(0.3)
    # The 4 workers are held: the scheduler waits for one instead of queueing ticks that
    # would look sent on time.
    assert schedule.ticks == 4
    released_at = clock.now()
    release.set()
    schedule.join()
    by_seq = {t.seq: t for t in ticks}
    assert sorted(by_seq) == list(range(6))
    assert all(t.sent >= t.due for t in ticks)
    assert by_seq[4].sent >= released_at and by_seq[5].sent >= released_at
    r = schedule.report()
    assert (r.sent, r.due) == (6, 6)
    assert r.late >= 2  # ticks 4 and 5: due at 40 and 50 ms, started after >= 300 ms
    assert r.worst_late_sec >= 0.3 - 0.05


def test_stop_while_every_worker_is_busy_returns_once_they_end() -> None:
    clock = Clock()
    release = threading.Event()
    schedule = FixedRate(lambda tick: release.wait(WAIT_SEC) and None, rate=100, clock=clock,
                         timeout_sec=0.001)  # fmt: skip
    schedule.start()
    wait_until(lambda: schedule.ticks == 4, "4 busy workers")
    time.sleep(0.2)  # more fall due meanwhile, and cannot start
    stopper = threading.Thread(target=schedule.stop)
    stopper.start()
    time.sleep(0.2)
    assert stopper.is_alive()  # waits for the operations in flight...
    release.set()
    stopper.join(WAIT_SEC)
    assert not stopper.is_alive()  # ...and only those: nothing was queued behind them
    r = schedule.report()
    assert r.sent == 4
    assert r.due > r.sent  # it was due to start more while they were busy
    assert not rate_kept(r).ok


class _Writes(WriteProbe):
    """A write probe whose writes only wait: the schedule under test, no database."""

    def __init__(self, hold: threading.Event | None = None, **kw: object) -> None:
        self._hold = hold
        super().__init__(**kw)  # type: ignore[arg-type]

    def write(self, seq: int) -> tuple[str, str, str | None, int | None]:
        if self._hold is not None:
            self._hold.wait(WAIT_SEC)
        return str(seq), "ok", None, None

    def found_keys(self) -> list[str]:
        return []


def test_write_probe_samples_are_sent_at_real_starts_and_its_report_passes() -> None:
    clock = Clock()
    records: list[Sample | ReadBack] = []
    probe = _Writes(name="w", rate=50, clock=clock, record=records.append, timeout_sec=1.0,
                    limit=10)  # fmt: skip
    probe.start()
    probe.join()
    samples = [r for r in records if isinstance(r, Sample)]
    assert sorted(s.seq for s in samples) == list(range(10))
    r = probe.schedule_report()
    assert (r.sent, r.due, r.unit, r.probe) == (10, 10, "write", "w")
    assert r.first_due is not None
    assert all(s.sent >= r.first_due + s.seq / 50 for s in samples)
    assert rate_kept(r, max_late_ratio=1.0).ok
    assert isinstance(probe, Scheduled)


def test_write_probe_that_cannot_keep_up_says_so() -> None:
    clock = Clock()
    hold = threading.Event()
    records: list[Sample | ReadBack] = []
    probe = _Writes(hold, name="w", rate=100, clock=clock, record=records.append,
                    timeout_sec=0.001)  # fmt: skip
    probe.start()
    time.sleep(0.5)  # 4 workers held: ~50 writes fell due, 4 started
    hold.set()
    probe.stop()
    r = probe.schedule_report()
    assert r.sent == len(records)
    assert r.due >= 50 and r.sent < r.due
    verdict = rate_kept(r)
    assert not verdict.ok
    assert verdict.message.startswith("w: asked 100/s, sent ")


def test_settled_until_is_the_start_of_the_oldest_operation_still_running() -> None:
    clock = Clock()
    release = threading.Event()
    started: list[float] = []

    def operation(tick: Tick) -> None:
        started.append(tick.sent)
        if tick.seq == 0:
            release.wait(10)  # the first write hangs; the next ones finish at once

    schedule = FixedRate(operation, rate=50, clock=clock, timeout_sec=1, limit=10).start()
    try:
        deadline = time.monotonic() + 10
        while len(started) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(started) == 10
        # Nine later writes finished; the record is still only complete before the first.
        assert schedule.settled_until() == started[0]
    finally:
        release.set()
        schedule.join()
    assert schedule.settled_until() >= started[-1]
