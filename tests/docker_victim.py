"""A run to be killed: stops a Docker server through the undo journal, then sleeps.

usage: python tests/docker_victim.py TARGET_FILE SERVER READY

With the journal in $GAMEDAY_STATE_DIR. Writes READY once the fault is injected.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from chaos.journal import Journal
from chaos.registry import fault_class
from chaos.runner import FaultSession
from gameday.clock import Clock
from gameday.target import load_target


def main(argv: list[str]) -> int:
    target = load_target(argv[1])
    fault = fault_class("stop-server", "docker")(target, {"server": argv[2], "mode": "graceful"})
    with FaultSession(log=lambda m: print(m, flush=True)) as session:
        session.inject(
            fault, journal=Journal(target), run_id="docker-victim", history=None,
            clock=Clock(), dry_run=False,
        )  # fmt: skip
        Path(argv[3]).write_text(str(os.getpid()))
        time.sleep(120)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
