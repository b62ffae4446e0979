#!/bin/sh
# stop-server of the foreign deployment: stop-server.sh inject|heal|check [ARGS...] [--base-port N]
# (what it does: tests/foreign/faults.py; check exits 0 while the fault is in effect)
exec "$(dirname "$0")/_run.sh" stop-server "$@"
