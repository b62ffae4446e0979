"""Faults of Docker hosts, one module per service: servers, cache, postgres; the engine."""
