# The two commands of the README: `make demo` and `make test`. Both install what they need.
PY := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup demo test test-long test-all lint lab-up lab-down lab-status bench

setup:
	@scripts/setup

## Run the scenarios against the embedded lab (started and stopped for the run).
demo: setup
	$(PY)/pytest features/ $(PYTEST_ARGS)

## Lint, type-check, then the harness's own tests and the scenarios on the lab: in parallel
## sessions, each on its own lab port block (scripts/test-parallel; TEST_SHARDS=N for another
## count). With PYTEST_ARGS, pytest itself runs them, serially.
## pytest's exit code 5 (nothing collected) is a failure here: a test run that ran nothing.
TEST_SHARDS ?=
PARALLEL = $(PY)/python scripts/test-parallel $(if $(TEST_SHARDS),--shards $(TEST_SHARDS))
SERIAL = $(PY)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc
test: setup lint
	@$(if $(PYTEST_ARGS),$(SERIAL),$(PARALLEL))

## The long tests too (the Docker lab, more failure modes on the lab): GAMEDAY_LONG_TESTS=1.
## Serial: a dozen tests, the Docker lab's on fixed ports.
test-long: setup
	GAMEDAY_LONG_TESTS=1 $(PY)/pytest -m long $(PYTEST_ARGS)

test-all: export GAMEDAY_LONG_TESTS = 1
test-all: setup lint
	@$(if $(PYTEST_ARGS),$(SERIAL),$(PARALLEL))

lint:
	$(PY)/ruff check .
	$(PY)/ruff format --check .
	$(PY)/mypy

lab-up: setup
	$(PY)/gameday lab up

lab-down:
	$(PY)/gameday lab down

lab-status:
	$(PY)/gameday lab status

## Every benchmark of bench/, one command each; their results go into docs/benchmarks.md with
## the machine's load. Long (tens of minutes): each starts the lab on $GAMEDAY_LAB_BASE_PORT
## (default 17400) when it needs one. lab_up.py goes first, before a lab runs on that block.
BENCH_RUNS ?= 3
BENCH_PORT = $${GAMEDAY_LAB_BASE_PORT:-17400}
bench: setup
	$(PY)/python bench/lab_up.py --runs $(BENCH_RUNS) --base-port $(BENCH_PORT)
# Zones on the wire: egress-loss detection on the lab, then lab up with and without namespaces
# and what the lab makes, on the next block (base port + 50).
	$(PY)/python bench/zones.py --trials 10 --ups $(BENCH_RUNS)
	$(PY)/python bench/startup.py --runs 9
	$(PY)/python bench/acceptance.py --runs $(BENCH_RUNS)
	$(PY)/python bench/loss_check.py --runs $(BENCH_RUNS)
# Probes: sending on schedule (issue 12's probe work adds its benchmarks here).
	$(PY)/python bench/probe_schedule.py --rate 100 --seconds 60 --runs $(BENCH_RUNS)
	bench/resilience.sh $(BENCH_RUNS)
	$(PY)/python bench/locust_vs_wrk.py --seconds 10 --runs $(BENCH_RUNS)
# Long histories and start-up against Chaos Toolkit (no lab needed).
	$(PY)/python bench/history_scale.py curves --records 10000,100000,1000000,5000000 --scenarios 1,12,192
	$(PY)/python bench/history_scale.py game-day --hours 1 --rate 1000
	$(PY)/python bench/history_scale.py loss --writes 1000000 --runs $(BENCH_RUNS)
	$(PY)/python bench/vs_chaostoolkit.py --runs 5
	$(PY)/gameday lab down
