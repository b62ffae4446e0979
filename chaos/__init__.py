"""Faults: reversible changes to a target (filled in by the resilience engine)."""
