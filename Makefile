# One place for every command: humans, the README and .ci/run use these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install up test lint format unit services prometheus browser grafana-types compose clean

$(STAMP): pyproject.toml
	scripts/python-venv $(PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/pip install --quiet --editable . --group dev
	touch $(STAMP)

install: $(STAMP)  ## a virtualenv with seriatim and its dev tools

services:  ## PostgreSQL and RabbitMQ running: Debian's packages installed if missing, then started
	scripts/services

prometheus:  ## a Prometheus binary for the dashboard test (Debian's package)
	scripts/prometheus

browser:  ## Debian's chromium for the console's browser tests (Playwright drives it)
	scripts/browser

compose:  ## a compose CLI to check compose.yaml offline, where docker exists (Debian's docker-compose)
	scripts/compose

GRAFANA_CHECK := deploy/grafana/check
GRAFANA_TYPES := $(GRAFANA_CHECK)/node_modules/.package-lock.json

$(GRAFANA_TYPES): $(GRAFANA_CHECK)/package.json $(GRAFANA_CHECK)/package-lock.json
	@command -v npm >/dev/null || { echo 'grafana-types: needs Node.js (>= 18) and npm; install them (Debian: nodejs npm)' >&2; exit 1; }
	cd $(GRAFANA_CHECK) && npm ci --no-audit --no-fund
	touch $(GRAFANA_TYPES)

grafana-types: $(GRAFANA_TYPES)  ## Grafana's dashboard types and tsc, pinned (npm ci), for the dashboard type check

up: install services  ## the whole system on this machine (Ctrl-C stops it)
	$(BIN)/seriatim up

lint: install  ## format check, lint, types and import layers
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install services prometheus browser grafana-types compose lint  ## everything CI runs: the suite, then again on quorum queues
	$(BIN)/pytest --durations=25
	SERIATIM_QUEUE_TYPE=quorum $(BIN)/pytest --durations=25 tests/integration tests/fault

unit: install grafana-types  ## the unit tests alone (no services needed)
	$(BIN)/pytest tests/unit

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
