# One command installs and runs each job: `make test` (lint + the whole suite), `make run`
# (the main job: a fleet simulation against the embedded reference server), `make bench`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lint test run bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: install
	$(VENV)/bin/otasim run $(ARGS)

bench: install
	$(VENV)/bin/pytest tests/benchmarks --benchmark-only $(PYTEST_ARGS)
