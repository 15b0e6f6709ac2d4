# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

demo: setup
	$(PY) -m emulator.demo

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

bench: setup
	$(PY) bench/push_bench.py
	$(PY) bench/audit_bench.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis
