# crm-tracker: `make demo` runs the product with the demo, `make test` runs every test.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the checkout itself on the path: the dev-only testkit/ and bench/ import without being in the wheel
EDITABLE := --config-settings editable_mode=compat

.DEFAULT_GOAL := help
.PHONY: help demo up test test-fast lint format contract bench drills clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' $(EDITABLE)
	@touch $@

demo: $(STAMP) ## run everything on this machine with demo traffic (embedded broker + SQLite)
	$(VENV)/bin/crm-tracker up --demo

up: $(STAMP) ## run everything on this machine, waiting for real events
	$(VENV)/bin/crm-tracker up

test: $(STAMP) ## the whole test suite (real broker, SQLite and PostgreSQL)
	$(PY) -m pytest

test-fast: $(STAMP) ## unit tests only (neither broker nor PostgreSQL)
	CRM_TEST_NO_SERVERS=1 $(PY) -m pytest -m "not kafka and not postgres"

lint: $(STAMP) ## ruff lint and format check, mypy type check (CI runs it before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

contract: $(STAMP) ## regenerate docs/asyncapi.json and docs/schemas/ from the event models
	$(VENV)/bin/crm-tracker contract --write docs

BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]' $(EDITABLE)
	@touch $@

BENCH_ARGS ?=
RESULTS    ?= bench/results
bench: $(BENCH_STAMP) ## benchmarks: throughput (+ bare faust, aiokafka, Quix peer), latency, API load, memory, up end to end
	@mkdir -p $(RESULTS)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 \
		|| echo "wrk could not be installed: bench/api_load.py falls back to httpx clients"
	$(PY) bench/throughput.py --json $(RESULTS)/throughput.json $(BENCH_ARGS)
	$(PY) bench/latency.py --json $(RESULTS)/latency.json
	$(PY) bench/api_load.py --json $(RESULTS)/api_load.json
	$(PY) bench/memory.py --json $(RESULTS)/memory.json
	$(PY) bench/up_e2e.py --json $(RESULTS)/up_e2e.json

drills: $(BENCH_STAMP) ## fault drills, long versions (on private PostgreSQL servers; see README)
	@mkdir -p $(RESULTS)
	$(PY) bench/drills.py --json $(RESULTS)/drills.json $(DRILL_ARGS)

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) .crm-data .pytest_cache .ruff_cache
