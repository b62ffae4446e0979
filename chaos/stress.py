"""What the resource faults of every provider share: their CPU workers, read from the step's
parameters and bounded by the target's `stress:` limits (the lab's and Docker's cpu-stress)."""

from __future__ import annotations

from chaos.base import Fault, FaultRefused


def cpu_workers(fault: Fault, default: int) -> int:
    """The stress's CPU workers: the step's `workers`, or `default`."""
    try:
        return int(fault.params.get("workers") or default)
    except ValueError:
        raise FaultRefused(f"workers must be a number, not {fault.params['workers']!r}") from None


def refuse_past_cpu_limit(fault: Fault, workers: int) -> None:
    """Refuse before acting when `workers` is not within the target's stress.max_cpu_workers."""
    limit = fault.target.stress.max_cpu_workers
    if not 0 < workers <= limit:
        raise FaultRefused(f"{fault.label}: {workers} workers, stress.max_cpu_workers is {limit}")
