# The two commands: `make run` (the whole pipeline on the embedded stack) and `make test`.
# Both create the virtual environment and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test check unit integration faults bench install test-deps clean

run: $(STAMP)
	$(PY) -m deploy.stack

test: $(STAMP) test-deps check
	$(PY) -m pytest -m "not long"

# Lint, format and types (configured in pyproject.toml); `ruff format .` fixes the format.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP) test-deps
	$(PY) -m pytest tests/integration

faults: $(STAMP) test-deps
	$(PY) -m pytest -m faults -s tests/integration

# rowstream against the naive pipeline; figures printed and written to .local/bench/bench.json.
# `make bench ARGS=--quick` is the tiny run of the smoke test; `ARGS=--help` lists the options.
bench: $(STAMP)
	$(PY) -m tests.bench $(ARGS)

install: $(STAMP)

# Debian packages the tests use: promtool (package prometheus) checks the alert rules. Installed
# when missing and this runs as root (CI and these machines do); otherwise the line says what to do.
test-deps:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && { \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 || \
	  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }; }; } || \
	  { echo "promtool is missing: install Debian's prometheus package (apt-get install prometheus)" >&2; exit 1; }

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf .local .pytest_cache .hypothesis
