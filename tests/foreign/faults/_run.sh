#!/bin/sh
# Runs one fault of the foreign deployment's runbook (tests/foreign/faults.py) with the
# repository's .venv: _run.sh NAME inject|heal|check [ARGS...] [--base-port N]
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
exec "$root/.venv/bin/python" -m tests.foreign fault "$@"
