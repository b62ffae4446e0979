"""Which fault a name means on a target: the registry of built-in faults, and the target's own.

A fault name is a capability ("database-failover", "stop-server": gameday.target.FAULT_NAMES).
A target provides it when it declares a command fault under that name in its `faults:` (which
wins: the deployment's own runbook beats a guess), or when its provider has a built-in fault of
that name. `provided` says which, or why not in one line; `fault_for` builds it.

Provider modules list their fault classes in a module-level `FAULTS` and never import this
module, so the import graph has no cycle: registry -> providers -> base.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Literal

from chaos.base import Fault, FaultError
from gameday.target import FAULT_NAMES, Target

# One module per provider and service; importing them is deferred to the first lookup
# (boto3 and the docker SDK are slow to import and most runs use one provider).
PROVIDER_MODULES = (
    "chaos.command",
    "chaos.lab",
    "chaos.lab_network",
    "chaos.lab_resources",
    "chaos.docker.servers",
    "chaos.docker.cache",
    "chaos.docker.postgres",
    "chaos.docker.resources",
    "chaos.aws.ec2",
    "chaos.aws.elasticache",
    "chaos.aws.nat",
    "chaos.aws.rds",
    "chaos.aws.zone",
)
COMMAND = "command"

_registry: dict[tuple[str, str], type[Fault]] | None = None


def registered() -> dict[tuple[str, str], type[Fault]]:
    """(fault name, provider) -> class, for every built-in fault."""
    global _registry
    if _registry is None:
        found: dict[tuple[str, str], type[Fault]] = {}
        for module in PROVIDER_MODULES:
            for cls in importlib.import_module(module).FAULTS:
                if cls.name != COMMAND and cls.name not in FAULT_NAMES:
                    raise ValueError(f"{cls.__name__}: {cls.name!r} is not in FAULT_NAMES")
                for provider in cls.providers:
                    key = (cls.name, provider)
                    if key in found and found[key] is not cls:
                        raise ValueError(f"fault {cls.name!r} for {provider!r} registered twice")
                    found[key] = cls
        _registry = found
    return dict(_registry)


def fault_class(name: str, provider: str) -> type[Fault]:
    """The built-in class of `name` for `provider`; FaultError (one line) if there is none."""
    faults = registered()
    try:
        return faults[(name, provider)]
    except KeyError:
        known = sorted(n for n, p in faults if p == provider)
        raise FaultError(
            f"no fault {name!r} for a {provider} target (known: {', '.join(known) or 'none'})"
        ) from None


Source = Literal["declared", "built-in"]

# What a provider cannot do, and why, where "declare it" alone would leave the user guessing.
NOT_OFFERED = {
    ("database-crash", "aws"): (
        "RDS cannot crash its primary on demand; a reboot with failover is a planned failover, "
        "the database-failover scenario"
    ),
    ("kill-backend", "aws"): (
        "the AWS APIs cannot kill one process on an instance; a command fault can, through SSM "
        "or SSH"
    ),
    ("zone-partition", "aws"): (
        "AWS has no call that splits two zones of a VPC; a command fault can (network ACLs "
        "denying each zone's subnets, or iptables on the instances over SSM)"
    ),
    ("zone-partition", "docker"): (
        "the Docker Engine API cannot drop traffic between hosts; a command fault can "
        "(iptables on each host over SSH)"
    ),
    ("disable-nat", "docker"): (
        "a Docker host's egress is the host's own (no NAT of the zone to reach through the "
        "Engine API); a command fault can (iptables on the host over SSH)"
    ),
    ("zone-outage", "docker"): (
        "the Docker Engine API stops containers, it cannot cut a zone's network; use "
        "stop-server per server, or a command fault"
    ),
}


def provided(target: Target, name: str) -> tuple[Source | None, str]:
    """Whether `target` provides fault `name`: ("declared"|"built-in", what it is), or
    (None, the one line saying how to get it)."""
    if name in target.faults:
        return "declared", f"declared command fault {name!r}"
    builtin = registered().get((name, target.provider))
    if builtin is not None:
        why_not = builtin.unavailable(target)
        if why_not is None:
            return "built-in", f"{target.provider} fault {name!r}"
        return None, (
            f"target {target.name!r} cannot provide {name!r} ({why_not}): declare it under "
            "faults: (docs/resilience.md)"
        )
    why = NOT_OFFERED.get((name, target.provider))
    return None, (
        f"target {target.name!r} provides no {name!r}"
        + (f" ({why})" if why else "")
        + ": declare it under faults: (docs/resilience.md)"
    )


def fault_for(target: Target, name: str, params: Mapping[str, str]) -> Fault:
    """The fault `name` of `target`, built with the step's `params` (server, zone, mode...).

    A declared command fault gets the params substituted into its command lines (`{server}`);
    a built-in one receives them as they are. FaultError when the target does not provide it.
    """
    source, what = provided(target, name)
    if source == "declared":
        from chaos.command import CommandFault

        return CommandFault.declared(target, name, params)
    if source == "built-in":
        return fault_class(name, target.provider)(target, dict(params))
    raise FaultError(what)
