"""A run to be killed: injects a command fault (a flag file exists) and sleeps.

usage: python tests/chaos_victim.py FLAG READY [--no-signals]

With the journal in $GAMEDAY_STATE_DIR. Writes READY once the fault is injected; exits 130
when a signal made it unwind (after healing), printing what interrupted it.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

from chaos.command import CommandFault
from chaos.journal import Journal
from chaos.runner import FaultSession
from gameday.clock import Clock
from gameday.target import Target

VICTIM_TARGET = "victim"


def main(argv: list[str]) -> int:
    # As when started from an interactive shell, whatever the test runner's own disposition.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    flag, ready = Path(argv[1]), Path(argv[2])
    signals = "--no-signals" not in argv
    target = Target.model_validate(
        {"name": VICTIM_TARGET, "provider": "generic", "entrypoint": {"url": "http://127.0.0.1:9"}}
    )
    q = shlex.quote(str(flag))
    fault = CommandFault(
        target, {"inject": f"touch {q}", "heal": f"rm -f {q}", "check": f"test -f {q}"}
    )
    try:
        with FaultSession(log=lambda m: print(m, flush=True), signals=signals) as session:
            session.inject(
                fault,
                journal=Journal(target),
                run_id="victim-run",
                history=None,
                clock=Clock(),
                dry_run=False,
            )
            ready.write_text(str(os.getpid()))
            time.sleep(120)
    except KeyboardInterrupt as exc:
        print(f"interrupted: {type(exc).__name__}", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
