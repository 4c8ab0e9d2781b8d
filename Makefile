# The two commands of the README. Each sets up .venv from pyproject.toml on first use.
PYTHON ?= python3
VENV := .venv
# The jobs call `vsgrid`, so the environment's bin/ comes first on PATH.
RUN := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"
QUICK := --profile profiles/local --configfile config/quick.yaml

.PHONY: quick test bench

quick: $(VENV)/.installed
	$(RUN) snakemake $(QUICK)
	$(RUN) snakemake $(QUICK) --report results/quick/report.html
	@echo
	@cat results/quick/tables/outcome.txt
	@echo
	@cat results/quick/tables/screen_outcome.txt
	@echo
	@echo "The quick grid is done:"
	@echo "  tables   results/quick/tables/   (deltas.csv: every run against its baseline; trust.csv: the models' uncertainty against their errors; screen.csv: level 4; screen_trust.csv: sentinel wells)"
	@echo "  figures  results/quick/figures/  (figure2, 3, 4, 5, 6a, 6b, 10a, 10b, 7, 8, 9, 11 as PNG and PDF)"
	@echo "  report   results/quick/report.html"

test: $(VENV)/.installed
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) snakefmt --check workflow
	$(RUN) pytest

bench: $(VENV)/.installed
	$(VENV)/bin/python bench/synthesize.py
	$(VENV)/bin/python bench/model.py
	$(VENV)/bin/python bench/evaluate.py
	$(VENV)/bin/python bench/workflow.py

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $@
