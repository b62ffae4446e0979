"""`python -m tests.foreign up|down|status` and the fault scripts' entry point.

    python -m tests.foreign up [--base-port N]        start (or repair) the deployment
    python -m tests.foreign down [--base-port N]      stop everything, delete its folder
    python -m tests.foreign status [--base-port N]    one line per part; exit 1 if unhealthy
    python -m tests.foreign fault NAME inject|heal|check [ARGS...] [--base-port N]
    python -m tests.foreign supervise NODE [--base-port N]   (internal: a backend's supervisor)

Fault exit codes follow gameday's command fault: check exits 0 while the fault is in effect
and 1 once it is not; inject and heal exit 0 when done and 1 when they could not (one line
on stderr); bad arguments exit 2. Run from the repository's root.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

from tests.foreign import deployment as d

USAGE = __doc__.split("\n\n")[1]


def _base_port(args: list[str]) -> tuple[int | None, list[str]]:
    rest: list[str] = []
    port: int | None = None
    it = iter(args)
    for arg in it:
        if arg == "--base-port":
            value = next(it, "")
            if not value.isdigit():
                raise d.DeploymentError(f"--base-port must be a port number, not {value!r}")
            port = int(value)
        elif arg == "--tag":
            next(it, None)  # a label for `down`'s sweep, nothing to do here
        else:
            rest.append(arg)
    return port, rest


def main(argv: list[str]) -> int:
    from tests.foreign import faults

    try:
        port, args = _base_port(argv)
        layout = d.Layout.from_env(port)
    except d.DeploymentError as exc:
        print(f"foreign: {exc}", file=sys.stderr)
        return 2
    run: Callable[[], None]
    match args:
        case ["up"]:
            run = partial(d.up, layout)
        case ["down"]:
            run = partial(d.down, layout)
        case ["status"]:
            rows = d.status(layout)
            for name, ok, seen in rows:
                print(f"{name:14} {'ok  ' if ok else 'FAIL'} {seen}")
            return 0 if all(ok for _, ok, _ in rows) else 1
        case ["supervise", node] if node in d.NODES:
            run = partial(d.supervise, layout, node)
        case ["fault", name, "check", *rest] if name in faults.FAULTS:
            try:
                return 0 if faults.FAULTS[name].check(layout, rest) else 1
            except faults.BadArguments as exc:
                print(f"foreign: {name} check: {exc}", file=sys.stderr)
                return 2
        case ["fault", name, "inject" | "heal" as action, *rest] if name in faults.FAULTS:
            book = faults.FAULTS[name]
            run = partial(book.inject if action == "inject" else book.heal, layout, rest)
        case _:
            print(f"usage:\n{USAGE}\nfaults: {', '.join(faults.FAULTS)}", file=sys.stderr)
            return 2
    try:
        run()
    except faults.BadArguments as exc:
        print(f"foreign: {exc}", file=sys.stderr)
        return 2
    except d.DeploymentError as exc:
        print(f"foreign: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
