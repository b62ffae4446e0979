"""A second deployment for the harness's tests, unlike the lab in every choice it makes:
nginx in front, a notes service with its own API and `X-Node` header, PostgreSQL with plain
asynchronous streaming replication and promotion by script, Redis without Sentinel.

`deployment` starts, stops and repairs it; `faults` is its runbook (inject, heal, check);
`foreign.yaml` is its target file, written from docs/ alone; `python -m tests.foreign
up|down|status` drives it by hand. Not shipped: it only proves the harness on a deployment
it was not built for.
"""
