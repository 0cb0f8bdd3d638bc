# The two commands: `make run` (the whole pipeline on the embedded stack) and `make test`.
# Both create the virtual environment and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test unit integration faults bench install clean

run: $(STAMP)
	$(PY) -m deploy.stack

test: $(STAMP)
	$(PY) -m pytest -m "not long"

unit: $(STAMP)
	$(PY) -m pytest tests/unit

integration: $(STAMP)
	$(PY) -m pytest tests/integration

faults: $(STAMP)
	$(PY) -m pytest -m faults -s tests/integration

# rowstream against the naive pipeline; figures printed and written to .local/bench/bench.json.
# `make bench ARGS=--quick` is the tiny run of the smoke test; `ARGS=--help` lists the options.
bench: $(STAMP)
	$(PY) -m tests.bench $(ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

clean:
	rm -rf .local .pytest_cache .hypothesis
