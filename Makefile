# fastpost: `make run` serves the API with demo data; `make test` runs the whole suite.
# Both set up the virtual environment themselves; `make help` lists every target.

# The first Python 3.11+ on PATH (a bare `python3` may be older).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	>/dev/null 2>&1 && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1

.DEFAULT_GOAL := help
.PHONY: help run test check lint format typecheck migrate seed bench lab clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml Makefile
	@test -n "$(PYTHON)" || { echo "fastpost needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# The otel, bench and granian extras too: the tracing, bench, lab, Locust and granian tests
# (and mypy) use them.
$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet -e '.[dev,otel,bench,granian]'
	@touch $@

# psutil, matplotlib, Locust, httpx, requests: for `fastpost bench`, `fastpost lab`, loadtests/.
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@

run: $(VENV)/.installed ## Set up, migrate, load demo data if empty, serve on http://127.0.0.1:8000
	$(BIN)/fastpost db upgrade
	$(BIN)/fastpost seed --if-empty
	$(BIN)/fastpost serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: $(VENV)/.dev-installed ## Install dev dependencies and run the whole test suite
	$(BIN)/pytest

bench: $(VENV)/.bench-installed ## Load-test a fastpost it starts itself, SLO report (BENCH_ARGS="--scenario read ...")
	$(BIN)/fastpost bench $(or $(BENCH_ARGS),--scenario mixed)

lab: $(VENV)/.bench-installed ## Each anti-pattern beside its fix, measured (LAB_ARGS="--only 1,4 ...")
	$(BIN)/fastpost lab $(LAB_ARGS)

check: lint typecheck ## Lint and type-check

lint: $(VENV)/.dev-installed ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed ## Format the code with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(VENV)/.dev-installed ## mypy (strict on src/)
	$(BIN)/mypy

migrate: $(VENV)/.installed ## Apply database migrations
	$(BIN)/fastpost db upgrade

seed: $(VENV)/.installed ## Load demo data (see `fastpost seed --help` for sizes)
	$(BIN)/fastpost seed

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
