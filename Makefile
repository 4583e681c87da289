# dilran-lite: two entry points on a fresh machine.
#   make book  -> install into .venv, execute the notebooks, build the book (_build/html)
#   make test  -> install into .venv, run ruff, the unit tests, the notebooks (nbval) and the browser test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The notebooks run in quick mode unless told otherwise (DILRAN_QUICK=0 make book).
DILRAN_QUICK ?= 1
export DILRAN_QUICK
# Tests (and, for the developers, the book's outputs) read the atlas from ../shared/data when that
# folder is beside the checkout; elsewhere set DILRAN_DATA or run `dilran-lite download`.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(origin DILRAN_DATA), undefined)
ifneq ($(wildcard $(SHARED_DATA)/harvard-mri-ct),)
export DILRAN_DATA := $(SHARED_DATA)
endif
endif

.PHONY: install test unit notebooks browser book vendor lint bench results clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

lint: install
	$(PY) -m ruff check .

unit: install
	$(PY) -m pytest tests -m "not browser"

notebooks: install
	$(PY) -m pytest notebooks

vendor: install
	bash scripts/vendor_assets.sh

browser: install vendor
	bash scripts/install_chromium.sh
	$(PY) -m pytest tests -m browser

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest tests -m "not browser"
	$(PY) -m pytest notebooks
	$(MAKE) browser

book: install vendor
	$(PY) scripts/execute_notebooks.py notebooks
	$(VENV)/bin/jupyter-book build . --all -W -n --keep-going

bench: install
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.bench_metrics

results: install
	$(PY) -m dilran_lite.experiments --out results

clean:
	rm -rf _build _vendor .pytest_cache
