# medlabel developer entry point: `make demo` and `make test` work on a fresh machine with Python 3.11.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8501
API_PORT ?= 8502
export MEDLABEL_DATA_DIR ?= $(CURDIR)/medlabel-data

.PHONY: setup system-deps demo test test-fast lint clean bench-peers

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## setup: install medlabel and its development tools into .venv
setup: $(STAMP)

## system-deps: Debian packages the tests need (chromium for Playwright; GL/GLib for OpenCV; nginx for the
## sticky-proxy test of docs/deploy.md; docker-compose to validate docker-compose.yml, no daemon needed), as root only
system-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  ldconfig -p | grep -q 'libGL.so.1' || missing="$$missing libgl1"; \
	  ldconfig -p | grep -q 'libglib-2.0.so.0' || missing="$$missing libglib2.0-0"; \
	  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	  command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else \
	  [ -x /usr/bin/chromium ] || echo "note: /usr/bin/chromium missing; browser tests will skip (apt-get install chromium)"; \
	fi

## demo: install, create the SQLite database, load demo users/project, serve the portal on http://localhost:8501
## and the API on http://localhost:8502/api/v1 (stopped with the portal)
demo: setup
	$(BIN)/medlabel init
	$(BIN)/medlabel demo
	$(BIN)/medlabel api --port $(API_PORT) & api=$$!; trap "kill $$api 2>/dev/null" EXIT INT TERM; \
	  $(BIN)/medlabel serve --port $(PORT)

## test: install everything, lint (ruff, import contracts, mypy --strict) and run the whole suite (SQLite,
## PostgreSQL, browser, benchmarks)
test: setup system-deps lint
	$(BIN)/python -m pytest

## test-fast: the suite without browser and slow tests
test-fast: setup
	$(BIN)/python -m pytest -m "not browser and not slow and not bench"

## lint: ruff, the import-linter contracts, and mypy --strict on the packages listed in pyproject.toml [tool.mypy]
## (cached in .mypy_cache: a few seconds after the first run)
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

clean:
	rm -rf $(VENV) medlabel-data .pytest_cache .mypy_cache

## bench-peers: a separate virtualenv with dicognito and pydicom's deid (pinned) for `medlabel bench deid`
## (pydicom's package is also called `deid`, so it cannot share .venv with medlabel)
bench-peers:
	@test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet 'dicognito==0.19.0' 'deid==0.4.13'
