# The two commands of the README: `make demo` and `make test`. Both install what they need.
PY := .venv/bin
PYTEST_ARGS ?=

.PHONY: setup demo test lint lab-up lab-down lab-status bench

setup:
	@scripts/setup

## Run the scenarios against the embedded lab (started and stopped for the run).
demo: setup
	$(PY)/pytest features/ $(PYTEST_ARGS)

## Lint, type-check, then the harness's own tests and the scenarios on the lab.
## pytest's exit code 5 (nothing collected) is a failure here: a test run that ran nothing.
test: setup lint
	@$(PY)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests"; exit 1; fi; exit $$rc

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
