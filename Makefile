# Two commands for a newcomer:  `make lab` opens the lessons, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: lab test unit notebooks bench clean strip

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,lab]'
	touch $(STAMP)

LAB_FLAGS ?=
# Jupyter refuses to run as root unless told; containers and CI machines often are root.
ALLOW_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/lessons $(ALLOW_ROOT) $(LAB_FLAGS)

test: $(STAMP)
	TQDM_DISABLE=1 LDM_EDU_PRESET=tiny MPLBACKEND=Agg $(PY) -m pytest -q tests/ \
		--nbval-lax --nbval-current-env lessons/ -p no:cacheprovider

unit: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m pytest -q tests/

notebooks: $(STAMP)
	TQDM_DISABLE=1 LDM_EDU_PRESET=tiny MPLBACKEND=Agg $(PY) -m pytest -q --nbval-lax --nbval-current-env lessons/

bench: $(STAMP)
	$(PY) bench/run_all.py

strip: $(STAMP)
	$(PY) scripts/strip_notebooks.py lessons/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache checkpoints lessons/checkpoints
