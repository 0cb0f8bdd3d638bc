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

# `make faults PARTITIONS=720` runs the scenarios at the seed's scale (tests/integration/conftest.py).
faults: $(STAMP) test-deps
	TEST_PARTITIONS=$(PARTITIONS) $(PY) -m pytest -m faults -s tests/integration

# rowstream against the naive pipeline; figures printed and written to .local/bench/bench.json.
# `make bench ARGS=--quick` is the tiny run of the smoke test; `ARGS=--help` lists the options.
bench: $(STAMP) test-deps
	$(PY) -m tests.bench $(ARGS)

install: $(STAMP)

# Debian packages the tests use: promtool (package prometheus) checks the alert rules, stunnel4
# puts TLS in front of the test broker, postgresql-15 serves the TLS shard test (the embedded
# wheel's Postgres has no TLS), chromium runs the operator page's browser test, wrk loads the
# ingest tier in the benchmarks. Installed when missing and this runs as root (CI and these
# machines do); otherwise the line says what to do.
test-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v stunnel4 >/dev/null || missing="$$missing stunnel4"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql-15"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; \
	  else echo "missing Debian packages:$$missing (apt-get install$$missing)" >&2; exit 1; fi; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf .local .pytest_cache .hypothesis
