#!/usr/bin/env bash
# Benchmark: wall time of the whole resilience suite on the lab, and recovery-time accuracy
# against pg_auto_failover's own record, each over N runs. Usage: bench/resilience.sh [N]
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
now() { .venv/bin/python -c 'import time; print(time.monotonic())'; }
.venv/bin/gameday lab up >/dev/null
for i in $(seq "$runs"); do
  start=$(now)
  result=$(.venv/bin/pytest features/resilience/ -q -p no:cacheprovider | tail -1)
  echo "suite run $i: $(.venv/bin/python -c "print(f'{$(now) - $start:.1f}')") s wall: $result"
done
for i in $(seq "$runs"); do
  .venv/bin/pytest tests/test_resilience_on_lab.py -k pg_auto_failover_events -s -q \
    -p no:cacheprovider | grep -o "recovery: .*"
done
