# One command installs and runs each job: `make test` (lint + the whole suite), `make run`
# (the main job: a fleet simulation against the embedded reference server), `make bench`
# (every benchmark script, printing its figures).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install lint test run bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The real Capgo CLI for tests/interop (see its README), installed from its lockfile when npm is
# there. Not `npm ci`: @capgo/cli lists macOS-only optional packages the registry does not have.
INTEROP_NPM := tests/interop/node_modules/.package-lock.json
$(INTEROP_NPM): tests/interop/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm install --prefix tests/interop --no-save --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: the Capgo CLI interop test will be skipped"; fi

test: lint $(INTEROP_NPM)
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: install
	$(VENV)/bin/otasim run $(ARGS)

# The benchmarks are scripts that print figures (never timing asserts in the suite).
# The HTTP and Locust ones need Debian's nginx-light (`apt-get install nginx-light`).
BENCHES := bench_verify bench_agent bench_server bench_fleet bench_http bench_locust

bench: install
	@for b in $(BENCHES); do echo "== $$b"; $(PY) tests/benchmarks/$$b.py || exit 1; done
