# Two commands do everything: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: demo demo-real test bench lint docs install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rotation-dl demo experiment=demo

demo-real: $(STAMP)
	@test -d "$${ROTATION_DL_DATA_ROOT:-../shared/data}" || { echo "no real data at $${ROTATION_DL_DATA_ROOT:-../shared/data} (set ROTATION_DL_DATA_ROOT)"; exit 2; }
	$(VENV)/bin/rotation-dl demo experiment=demo_real

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PIP) install -q -e ".[bench]"
	$(PY) scripts/bench_ingest.py
	$(PY) scripts/bench_train.py
	$(PY) scripts/bench_eval.py
	$(PY) scripts/bench_infer.py
	$(PY) scripts/bench_stock.py
	$(PY) scripts/bench_cycle.py

lint: $(STAMP)
	$(PY) -m ruff check rotation_dl tests scripts
	$(PY) -m ruff format --check rotation_dl tests scripts
	$(VENV)/bin/lint-imports --config pyproject.toml

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
	@echo "documentation site: $(CURDIR)/site/index.html"

clean:
	rm -rf outputs .pytest_cache site
