"""pytest wiring of the faults: the `faults` fixture, and what a run does about signals and
about faults a killed run left behind.

- When a session runs scenarios, SIGTERM and SIGHUP become interrupts like Ctrl-C for the
  whole session (chaos.runner.install_signal_handlers), so a CI job cancelled mid-fault
  unwinds through the heals and pytest writes the report and exits 2 (interrupted).
- Before the first destructive scenario (or the first fault, whichever comes first), the undo
  journal of the target's deployment is replayed: what a killed run left is healed.
- The kill switch and the lease are in force for every fault (chaos.gates): a paused target,
  or one another game day holds, refuses the fault; a pause heals a fault within a second.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from chaos import gates
from chaos.runner import install_signal_handlers
from chaos.scenario import PendingHeal, ScenarioFaults
from gameday.pytest_plugin import SESSION_KEY, live_writer
from gameday.scenario import Scenario

HEAL_KEY = pytest.StashKey[PendingHeal]()
RESTORE_KEY = pytest.StashKey[Callable[[], None]]()

gates.register()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    state = session.config.stash.get(SESSION_KEY, None)
    if state is None or state.target is None or state.run is None:
        return
    say = live_writer(session.config)
    session.config.stash[RESTORE_KEY] = install_signal_handlers(log=say)
    pending = PendingHeal(state.target, say)
    session.config.stash[HEAL_KEY] = pending
    if state.dry_run:
        pending.done = True  # a dry run changes nothing, healing included
        return
    if any(
        i.get_closest_marker("destructive") and not i.get_closest_marker("skip")
        for i in session.items
    ):
        pending()


def pytest_unconfigure(config: pytest.Config) -> None:
    restore = config.stash.get(RESTORE_KEY, None)
    if restore is not None:
        restore()


@pytest.fixture
def faults(request: pytest.FixtureRequest, scenario: Scenario) -> Iterator[ScenarioFaults]:
    """The scenario's faults; healed at the end of the scenario, before its probes stop."""
    pending = request.config.stash.get(HEAL_KEY, None)
    with ScenarioFaults(scenario, healed_before=pending or (lambda: None)) as session:
        yield session
