"""Probes: act on the target on a schedule and record what happened. They never assert."""
