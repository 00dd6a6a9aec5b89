# crm-tracker: `make demo` runs the product with the demo, `make test` runs every test.
# Both create .venv and install what they need on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help demo up test test-fast lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(STAMP) ## run everything on this machine with demo traffic (embedded broker + SQLite)
	$(VENV)/bin/crm-tracker up --demo

up: $(STAMP) ## run everything on this machine, waiting for real events
	$(VENV)/bin/crm-tracker up

test: $(STAMP) ## the whole test suite (real broker, SQLite and PostgreSQL)
	$(PY) -m pytest

test-fast: $(STAMP) ## unit tests only (no broker)
	$(PY) -m pytest -m "not kafka"

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP) ## throughput benchmark (prints a table and JSON)
	$(PY) bench/throughput.py

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) .crm-data .pytest_cache .ruff_cache
