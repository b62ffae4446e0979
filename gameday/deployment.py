"""The deployment as a whole, asked and judged: its servers in rotation and its steady state.

Gathers facts (gameday.facts) and hands them to the pure checks; what the rotation steps and
"Given the deployment is healthy" call.
"""

from __future__ import annotations

from dataclasses import replace

from gameday import checks, facts
from gameday.target import Target
from gameday.verdict import Verdict

# Health checks per server in the steady state's rotation sample.
STEADY_REQUESTS_PER_SERVER = 4


def lb_states_readable(target: Target) -> bool:
    lb = target.load_balancer
    return lb is not None and lb.kind == "haproxy" and bool(lb.stats_url or lb.stats_socket)


def rotation(target: Target, sample: facts.Rotation, *, lb_state: bool = False) -> Verdict:
    """Every server of the target answered some of `sample`; with `lb_state`, the load
    balancer also reports each UP (read now)."""
    states = None
    if lb_state:
        assert target.load_balancer is not None
        states = facts.lb_backend_states(target.load_balancer)
    return checks.all_servers_in_rotation(
        [s.name for s in target.servers], sample.answered, states, refused=sample.refused
    )


def steady_state(target: Target) -> list[Verdict]:
    """What a fault starts from: the entrypoint answers its health check, and every server is
    in rotation (by the served-by header, and by the load balancer's own view where it can be
    read). Each failure says "refusing to start": an unhealthy deployment is not broken more."""
    verdicts = [checks.entrypoint_healthy(facts.health(target))]
    if target.servers:
        sample = facts.rotation_sample(target, STEADY_REQUESTS_PER_SERVER * len(target.servers))
        verdicts.append(rotation(target, sample, lb_state=lb_states_readable(target)))
    return [v if v.ok else replace(v, message=f"refusing to start: {v.message}") for v in verdicts]
