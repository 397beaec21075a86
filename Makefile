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
# Every install is held to the versions main was tested with (`make constraints` renews it).
CONSTRAINTS := constraints.txt

.DEFAULT_GOAL := help
.PHONY: help run test check lint format typecheck migrate seed bench lab faults docs clean constraints

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml Makefile $(CONSTRAINTS)
	@test -n "$(PYTHON)" || { echo "fastpost needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e .
	@touch $@

# The otel, bench, granian and sentry extras too: the tracing, bench, lab, Locust, granian
# and error-tracking tests (and mypy) use them.
$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,otel,bench,granian,sentry]'
	@touch $@

# psutil, matplotlib, Locust, httpx, requests: for `fastpost bench`, `fastpost lab`, loadtests/.
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[bench]'
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

# The guide's plots (docs/img/): a small lab and a short bench (their reports stay in
# reports/docs/), then matplotlib. A few minutes; run it on a quiet machine, the figures are
# its measurements.
docs: $(VENV)/.bench-installed ## Draw the guide's plots in docs/img/ from a small lab and bench run
	@mkdir -p reports/docs docs/img
	$(BIN)/fastpost lab --only 1,2,3,4,6,8 --pages 1,100,1000 --json reports/docs/lab.json
	$(BIN)/fastpost bench --scenario mixed --duration 5 --fixed-duration 10 --out reports/docs/bench
	$(BIN)/python docs/plots.py --lab reports/docs/lab.json --bench reports/docs/bench --out docs/img

# The fault suite's short version runs in `make test` (tests/faults); this is the long one.
faults: $(VENV)/.dev-installed ## Faults under load, long version: Reliability's table (FAULTS_ARGS="--seconds 10")
	$(BIN)/python -m tests.faults $(FAULTS_ARGS)

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

# After a change of dependencies in pyproject.toml: install, then pin what is installed.
constraints: $(VENV)/.dev-installed ## Pin the venv's versions (every extra) into constraints.txt
	{ echo "# Made by \`make constraints\` with $$($(BIN)/python -V) from pyproject.toml (every extra)."; \
	  echo "# \`make\` and .ci/run install with -c $(CONSTRAINTS): a fresh clone tests what main tested."; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > $(CONSTRAINTS)

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
