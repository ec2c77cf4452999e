# The one entry point: `make help`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# pytest-xdist workers for `make test`; each starts its own emulators (tests/conftest.py).
# The suite mostly waits, so more workers than cores pays: 4 measured best on 2 cores.
PYTEST_WORKERS ?= 4
XDIST := -n $(PYTEST_WORKERS) --dist load --maxschedchunk 1

.PHONY: help install services demo test test-unit lint schemas bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml scripts/system-deps.sh
	@scripts/system-deps.sh
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[test]'
	@$(PY) -c "from devstack.emulators import install_duckdb_spatial; install_duckdb_spatial()"
	@touch $(STAMP)

install: $(STAMP) ## create the virtualenv with the worker and its test tools

services: ## start the local PostgreSQL and MariaDB if they are down
	@scripts/services.sh

demo: install services ## emulators + demo source + worker + one real run, end to end
	@$(PY) -m devstack.demo

test: install services ## the whole suite against real services, in parallel (PYTEST_WORKERS=4)
	@$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-unit: install ## only the tests that need no database or emulator (under 30 s)
	@ETL_TEST_NO_SERVICES=1 $(PY) -m pytest -m "not services" $(PYTEST_ARGS)

lint: install ## ruff + strict mypy (worker/, devstack/, bench/, tests/)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/mypy

schemas: install ## regenerate schemas/*.json from the message models
	@$(PY) -m devstack.schemas

bench: install services ## extraction vs the dumps and dlt, parallel readers, MySQL vs its CPU floor (BENCH_ARGS=--quick)
	@$(PY) -m pip install -q -e '.[bench]'
	@$(PY) -m bench.extract $(BENCH_ARGS)
	@$(PY) -m bench.parallel --rows 5000000 $(BENCH_ARGS)
	@$(PY) -m bench.mysql_speed $(BENCH_ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .run
