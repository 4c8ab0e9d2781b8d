# The two commands of the README. Each sets up .venv from pyproject.toml on first use.
PYTHON ?= python3
VENV := .venv

.PHONY: quick test bench

quick: $(VENV)/.installed
	$(VENV)/bin/vsgrid synthesize --config config/quick.yaml

test: $(VENV)/.installed
	$(VENV)/bin/pytest

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/synthesize.py

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@
