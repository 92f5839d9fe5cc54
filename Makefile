# Beacon: `make run` to start it, `make test` to test it. Needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
PYTEST_ARGS ?=

.PHONY: run test check bench install install-dev clean lock

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Beacon needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)

$(RUNTIME_STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e .
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]' -e sdk/python
	touch $@

install: $(RUNTIME_STAMP)

install-dev: $(DEV_STAMP)

run: install
	$(BIN)/beacon migrate
	$(BIN)/beacon demo
	$(BIN)/beacon serve --no-migrate

test: install-dev
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

check: install-dev
	$(BIN)/ruff check src tests bench sdk
	$(BIN)/ruff format --check src tests bench sdk
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install-dev
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/import.py
	$(BIN)/python bench/timers.py
	$(BIN)/python bench/segments.py
	$(BIN)/python bench/journeys.py
	$(BIN)/python bench/deliveries.py

# Re-pin every transitive dependency after changing pyproject.toml.
lock: install-dev
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^beacon-cdp' > constraints.txt

clean:
	rm -rf $(VENV) .beacon .mypy_cache .ruff_cache .pytest_cache .coverage
