"""One scenario of a run: its probes and its slice of the run's history.

Probes started by Given-steps register here and stop by themselves when the scenario ends.
Then-steps read what happened since the scenario started: samples by probe, the fault
window, and wait (bounded) for a verdict to become true, such as "writes succeed again".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gameday.history import FaultEvent, History, Sample
from gameday.run import Run
from gameday.verdict import Verdict

POLL_SEC = 0.25
PROGRESS_SEC = 5.0


class Probe(Protocol):
    name: str

    def start(self) -> Any: ...

    def stop(self) -> None: ...


@dataclass
class Scenario:
    run: Run
    nodeid: str
    title: str
    dry_run: bool
    say: Callable[[str], None]
    started: float = 0.0
    #: unique per scenario of the run: probes put it in every key they write (ledger rows,
    #: idempotency keys, cache keys) so two scenarios never share a write.
    key: str = ""
    probes: dict[str, Probe] = field(default_factory=dict)
    #: how many records the run's history held when the scenario began
    first_record: int = 0

    @classmethod
    def begin(
        cls, run: Run, nodeid: str, title: str, *, dry_run: bool, say: Callable[[str], None]
    ) -> Scenario:
        run.scenarios_begun += 1
        scenario = cls(
            run, nodeid, title, dry_run, say, started=run.clock.now(),
            key=f"{run.run_id}-s{run.scenarios_begun}", first_record=len(run.writer),
        )  # fmt: skip
        run.mark("scenario-start", scenario=nodeid, title=title)
        return scenario

    # -- probes --------------------------------------------------------------------------
    def add_probe(self, probe: Probe) -> Probe:
        if probe.name in self.probes:
            raise ValueError(f"this scenario already runs a probe named {probe.name!r}")
        self.probes[probe.name] = probe
        probe.start()
        return probe

    def probe(self, name: str) -> Probe:
        try:
            return self.probes[name]
        except KeyError:
            running = ", ".join(self.probes) or "none"
            raise LookupError(
                f"no probe {name!r} runs in this scenario (running: {running})"
            ) from None

    def end(self, outcome: str) -> None:
        for probe in self.probes.values():
            probe.stop()
        self.run.mark("scenario-end", scenario=self.nodeid, outcome=outcome)

    # -- what happened -------------------------------------------------------------------
    def history(self) -> History:
        """The run's history so far, limited to this scenario's records.

        From the writer's memory, not the file: recovery polling asks several times a second,
        and with locust users in the background a run's file grows by thousands of lines.
        """
        since = self.started
        records = self.run.writer.records(self.first_record)
        return History(self.run.writer.header, tuple(r for r in records if _time_of(r) >= since))

    def samples(self, probe: str) -> list[Sample]:
        return list(self.history().samples(probe))

    def fault_start(self) -> float | None:
        starts = [e.at for e in self.history().fault_events if e.phase == "inject-start"]
        return min(starts) if starts else None

    def fault_window(self) -> tuple[float, float] | None:
        """From the first inject to the last heal, or to now while the fault is in effect."""
        events: list[FaultEvent] = list(self.history().fault_events)
        starts = [e.at for e in events if e.phase == "inject-start"]
        if not starts:
            return None
        ends = [e.at for e in events if e.phase == "heal-end" and e.at >= max(starts)]
        return (min(starts), max(ends) if ends else self.run.clock.now())

    def wait_for(
        self, judge: Callable[[], Verdict], deadline: float, *, waiting_for: str = ""
    ) -> Verdict:
        """Re-judge until the verdict passes or the clock passes `deadline` (run time).

        Says every few seconds what it is still waiting for, so a long fault shows progress.
        """
        started = last_said = self.run.clock.now()
        while True:
            verdict = judge()
            now = self.run.clock.now()
            if verdict.ok or now >= deadline:
                return verdict
            if waiting_for and now - last_said >= PROGRESS_SEC:
                last_said = now
                self.say(
                    f"still waiting for {waiting_for}: {now - started:.0f} s "
                    f"(gives up in {deadline - now:.0f} s)"
                )
            time.sleep(POLL_SEC)


def _time_of(record: Any) -> float:
    return float(record.sent if isinstance(record, Sample) else record.at)
