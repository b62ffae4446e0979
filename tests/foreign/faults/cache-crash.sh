#!/bin/sh
# cache-crash of the foreign deployment: cache-crash.sh inject|heal|check [ARGS...] [--base-port N]
# (what it does: tests/foreign/faults.py; check exits 0 while the fault is in effect)
exec "$(dirname "$0")/_run.sh" cache-crash "$@"
