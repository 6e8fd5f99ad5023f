# One command installs and runs each job: `make test` (lint + the whole suite), `make run`
# (the main job: a fleet simulation against the embedded reference server), `make bench`
# (the CPU-bound benchmarks under pytest-benchmark), `make bench-system` (the whole-system
# benchmark scripts, printing their tables).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install mitm lint test run bench bench-check bench-system

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,test]'
	touch $@

# mitmproxy, the man in the middle of `otasim prove` and tests/security/test_mitm.py, in a venv
# of its own: it pins older cryptography, h11 and Brotli than otasim's (simulator/prove/mitm.py
# finds .venv-mitm/bin/mitmdump, or --mitmdump / OTASIM_MITMDUMP).
MITM_VENV := .venv-mitm
MITM := $(MITM_VENV)/bin/mitmdump

$(MITM):
	python3 -m venv $(MITM_VENV)
	$(MITM_VENV)/bin/python -m pip install -q 'mitmproxy==11.0.2'

mitm: $(MITM)

install: $(STAMP) $(MITM)

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

# Benchmarks are never timing asserts in the suite (`make test` leaves tests/benchmarks out).
# `make bench` runs the CPU-bound ones (tests/benchmarks/test_bench_*.py) under
# pytest-benchmark, saves the run in .benchmarks/ and compares it with the last saved one;
# `make bench-check` compares without saving and fails when a benchmark's best round (min:
# the figure least moved by other load) is more than BENCH_FAIL slower than in the last saved run.
BENCH_FAIL ?= 25%
BENCH := $(VENV)/bin/pytest tests/benchmarks --benchmark-only \
	--benchmark-group-by=group --benchmark-columns=min,median,max,ops,rounds --benchmark-sort=name
SAVED := $(wildcard .benchmarks/*/*.json)

bench: install
	$(BENCH) --benchmark-autosave $(if $(SAVED),--benchmark-compare)

bench-check: install
	$(if $(SAVED),,$(error no saved benchmark run: run `make bench` first))
	$(BENCH) --benchmark-compare --benchmark-compare-fail=min:$(BENCH_FAIL)

# The system benchmarks are scripts that print tables; the HTTP and Locust ones need Debian's
# nginx-light (`apt-get install nginx-light`).
SYSTEM_BENCHES := bench_server bench_fleet bench_http bench_locust

bench-system: install
	@for b in $(SYSTEM_BENCHES); do echo "== $$b"; $(PY) tests/benchmarks/$$b.py || exit 1; done
