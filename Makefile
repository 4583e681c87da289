# dilran-lite: entry points on a fresh machine.
#   make book     -> install into .venv, build the book (_build/html) from the outputs saved in the
#                    notebooks; runs no notebook and changes no tracked file (about a minute)
#   make execute  -> re-execute the notebooks in place, full mode on the atlas (the published
#                    pages); refuses without the atlas unless ALLOW_PHANTOM=1; QUICK=1 for quick mode
#   make test     -> install into .venv, run ruff, the unit tests (with the standalone chapters
#                    and the exercise notebooks, run with their scaffolds and their solutions),
#                    the notebooks (nbval, quick mode) and the browser test
#   make test NO_ATLAS=1 -> as a clean clone sees it: DILRAN_DATA unset, ../shared not used, an
#                    empty HOME and cache, no download; the slow tests are left to the atlas run
#                    (CI runs both: .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NO_ATLAS ?= 0
QUICK ?= 0
ALLOW_PHANTOM ?= 0
# Tests read the atlas from ../shared/data when that folder is beside the checkout; elsewhere set
# DILRAN_DATA or run `dilran-lite download`.
SHARED_DATA := $(abspath ../shared/data)
ifeq ($(NO_ATLAS),1)
unexport DILRAN_DATA
NO_ATLAS_HOME := $(abspath _build/no-atlas-home)
export HOME := $(NO_ATLAS_HOME)
export XDG_CACHE_HOME := $(NO_ATLAS_HOME)/.cache
export TORCH_HOME := $(NO_ATLAS_HOME)/.cache/torch
export DILRAN_NO_SHARED := 1
export DILRAN_FETCH := 0
else ifeq ($(origin DILRAN_DATA), undefined)
ifneq ($(wildcard $(SHARED_DATA)/harvard-mri-ct),)
export DILRAN_DATA := $(SHARED_DATA)
endif
endif
# Notebooks under test run in quick mode and never download (the standalone test serves its own
# mirror on 127.0.0.1).
NBVAL := DILRAN_QUICK=1 DILRAN_FETCH=0 $(PY) -m pytest

.PHONY: install test unit notebooks solutions browser book execute sync vendor lint bench results clean home

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

# Without the atlas the slow tests (standalone chapters, exercise notebooks, grading) are left to
# the atlas configuration: they would only repeat it on the phantom.
UNIT_MARKS := $(if $(filter 1,$(NO_ATLAS)),not browser and not slow,not browser)

unit: install home
	DILRAN_QUICK=1 $(PY) -m pytest tests -m "$(UNIT_MARKS)"

notebooks: install home
	$(NBVAL) notebooks

# The exercises (chapters 2-8 and 12) with their solutions filled in, under nbval. `make test` runs them
# through tests/test_exercises_notebooks.py instead, which also asserts every check's verdict
# (not done yet with the scaffolds, passed with the solutions).
solutions: install home
	DILRAN_SOLUTIONS=1 $(NBVAL) $(sort $(wildcard notebooks/0[2-8]_*.ipynb)) notebooks/12_volumes.ipynb

home:
ifeq ($(NO_ATLAS),1)
	rm -rf $(NO_ATLAS_HOME) && mkdir -p $(NO_ATLAS_HOME)
endif

sync: install
	$(PY) scripts/sync_notebooks.py

vendor: install
	bash scripts/vendor_assets.sh

browser: install vendor
	bash scripts/install_chromium.sh
	$(PY) -m pytest tests -m browser

test: install
	$(PY) -m ruff check .
	$(PY) scripts/sync_notebooks.py --check
	$(MAKE) unit
	$(MAKE) notebooks
	$(MAKE) browser

book: install vendor
	$(VENV)/bin/jupyter-book build . --all -W -n --keep-going

execute: install
	DILRAN_QUICK=$(QUICK) $(PY) scripts/execute_notebooks.py notebooks \
		$(if $(filter 1,$(ALLOW_PHANTOM)),--allow-phantom)

bench: install
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.bench_metrics

results: install
	$(PY) -m dilran_lite.experiments --out dilran_lite/results

clean:
	rm -rf _build _vendor .pytest_cache
