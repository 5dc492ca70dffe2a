# Two commands for a newcomer:  `make lab` opens the lessons, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: lab test unit notebooks bench clean strip test-browser browser-deps html html-deps html-check gallery pretrain

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

# Everything: unit tests, the JupyterLab server check, every lesson in JupyterLab in headless
# Chromium (tests/test_browser.py) and the static site (tests/test_site.py), and every lesson
# through nbval. -rs prints why a test was skipped (e.g. no Chromium when not root).
test: $(STAMP) browser-deps html-deps
	TQDM_DISABLE=1 LDM_EDU_PRETRAINED= LDM_EDU_PRESET=tiny MPLBACKEND=Agg $(PY) -m pytest -q -rs tests/ \
		--nbval-lax --nbval-current-env lessons/ -p no:cacheprovider

unit: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m pytest -q -rs -m "not browser" tests/

# --- a real browser, and the course as a website ----------------------------------------------
# Debian's Chromium drives both tests through Playwright (never `playwright install`: no browser
# is downloaded). As root, missing apt packages are installed; otherwise the browser tests skip and
# say why, and `make html` shows formulas as LaTeX source.
BROWSER_STAMP := $(VENV)/.browser-installed
$(BROWSER_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[dev,lab,browser]'
	touch $@

define apt_ensure
	@missing=""; for pair in $(1); do file=$${pair%%=*}; pkg=$${pair#*=}; \
		{ command -v "$$file" >/dev/null 2>&1 || [ -e "$$file" ]; } || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing (apt):$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "NOTE: not installed:$$missing (needs root and apt); $(2)"; fi; \
	fi
endef

browser-deps: $(BROWSER_STAMP)
	$(call apt_ensure,chromium=chromium chromedriver=chromium-driver,the browser tests will be skipped)

test-browser: browser-deps
	TQDM_DISABLE=1 $(PY) -m pytest -q -rs tests/test_browser.py tests/test_site.py -p no:cacheprovider

html-deps: $(BROWSER_STAMP)
	$(call apt_ensure,/usr/share/javascript/mathjax/MathJax.js=libjs-mathjax,formulas will show as LaTeX source)

# `make html`: execute every lesson and write a static, offline site to build/html/ (open
# build/html/index.html). Preset: LDM_EDU_PRESET, default `pretrained`: every training replays the
# shipped weights (weights/), so the whole course builds in about 12 minutes on 2 cores and shows the
# best models the course has. `LDM_EDU_PRESET=tiny make html` is quick and rough; `cpu` takes as long
# as running every lesson.
HTML_PRESET := $(or $(LDM_EDU_PRESET),pretrained)
html: html-deps
	TQDM_DISABLE=1 $(PY) scripts/build_html.py --preset $(HTML_PRESET)

# README's gallery: one figure per lesson from the site `make html` built (scripts/build_html.py GALLERY)
gallery: html
	cp build/html/gallery/lesson*.png docs/img/

# open every page of the built site in headless Chromium (images load, no request leaves the machine)
html-check: browser-deps
	LDM_EDU_SITE_DIR=build/html $(PY) -m pytest -q -rs tests/test_site.py -p no:cacheprovider

# Rebuild the shipped weights (weights/, docs/MODEL_CARD.md): every lesson, or `make pretrain LESSONS="04 05"`.
# Runs each lesson in the `pretrained` preset and records every fit(); takes far longer than the `cpu` preset.
LESSONS ?=
pretrain: $(STAMP)
	$(PY) -m ldm_edu.pretrain $(LESSONS)

notebooks: $(STAMP)
	TQDM_DISABLE=1 LDM_EDU_PRETRAINED= LDM_EDU_PRESET=tiny MPLBACKEND=Agg $(PY) -m pytest -q --nbval-lax --nbval-current-env lessons/

bench: $(STAMP)
	$(PY) bench/run_all.py

strip: $(STAMP)
	$(PY) scripts/strip_notebooks.py lessons/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache checkpoints lessons/checkpoints build
