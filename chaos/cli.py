"""What `gameday faults` and `gameday heal` do; gameday/cli.py parses the arguments."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable

from chaos.base import Fault, FaultError
from chaos.journal import Journal
from chaos.registry import registered
from chaos.runner import heal_pending, install_signal_handlers
from gameday.secrets import redact
from gameday.target import Target

EXIT_OK = 0
EXIT_FAILED = 1
_WIDTH = 100


def _doc(cls: type[Fault]) -> str:
    # cls.__doc__, not inspect.getdoc: a fault without a docstring must not show Fault's.
    return inspect.cleandoc(cls.__doc__) if cls.__doc__ else "(no description)"


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.split("\n\n")[0].split())


def cmd_faults(provider: str | None, *, verbose: bool = False) -> str:
    """The registered faults, per provider, each with the first paragraph of its docstring
    (all of it with `verbose`)."""
    faults = registered()
    providers = sorted({p for _, p in faults})
    if provider is not None:
        if provider not in providers:
            return f"no faults for provider {provider!r} (providers: {', '.join(providers)})"
        providers = [provider]
    out: list[str] = []
    for p in providers:
        names = sorted(n for n, q in faults if q == p)
        width = max(len(n) for n in names)
        out.append(f"{p}:")
        for name in names:
            doc = _doc(faults[(name, p)])
            if verbose:
                out.append(f"  {name}")
                out.extend(f"    {line}".rstrip() for line in doc.splitlines())
                out.append("")
            else:
                head = f"  {name:<{width}}  "
                out.append(
                    textwrap.fill(
                        _first_paragraph(doc),
                        width=_WIDTH,
                        initial_indent=head,
                        subsequent_indent=" " * len(head),
                    )
                )
        if not verbose:
            out.append("")
    return "\n".join(out).rstrip("\n")


def cmd_heal(target: Target, *, force: bool, log: Callable[[str], None]) -> int:
    """Heal what the undo journal of `target` holds; 0 if everything pending was healed."""
    # A Ctrl-C (or SIGTERM) waits for the heal under way: see chaos.runner.
    restore = install_signal_handlers(log=log)
    try:
        healed = heal_pending(target, log=log, force=force)
        swept: list[str] = []
        if target.provider == "lab":
            from chaos.lab import sweep_dead_lab

            swept = sweep_dead_lab(target, log)
    except FaultError as exc:
        log(f"gameday: {redact(str(exc))}")
        return EXIT_FAILED
    finally:
        restore()
    for line in swept:
        log(line)
    if not healed and not swept:
        log(f"nothing to heal for target {target.name} ({target.identity()})")
        # The same name may mean another deployment (a lab on another port block): say so,
        # rather than leave the user thinking that one is clean too.
        for identity, count in Journal(target).elsewhere().items():
            log(
                f"note: {count} fault(s) of another deployment named {target.name} are pending: "
                f"{identity} (heal them with a target for that deployment)"
            )
    elif healed:
        log(f"healed {len(healed)} fault(s) of target {target.name}")
    return EXIT_OK
