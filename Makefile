# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# checkov (and the Bicep parser it pins) in a venv of their own: their pins must not move the app's Azure SDKs.
INFRA_VENV := .venv-infra

.PHONY: setup setup-az infra-tools demo test lint bench clean
VENV_AZ := .venv-az

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(VENV)/.installed node_modules/.installed

$(INFRA_VENV)/.installed: requirements-infra.txt
	test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	touch $@

infra-tools: $(INFRA_VENV)/.installed

# The real az CLI in its own venv (it pins other Azure SDK versions than the app); reinstalled only when its pin changes.
$(VENV_AZ)/.installed: requirements-az.txt
	test -x $(VENV_AZ)/bin/python || $(PYTHON) -m venv $(VENV_AZ)
	$(VENV_AZ)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-az.txt
	touch $@

setup-az: $(VENV_AZ)/.installed

demo: setup
	$(PY) -m emulator.demo

test: setup setup-az infra-tools
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

bench: setup
	$(PY) bench/push_bench.py
	$(PY) bench/audit_bench.py

clean:
	rm -rf $(VENV) $(VENV_AZ) $(INFRA_VENV) node_modules .pytest_cache .ruff_cache .hypothesis
