# Two entry points for a fresh clone: `make demo` (main job) and `make test` (test suite).
# Each sets up .venv itself: CPU torch 2.13.0 from local disk first (an unpinned torch would pull a
# multi-GB CUDA build), then the package in editable mode with its dev extra.
VENV ?= .venv
PY := $(VENV)/bin/python
# pip repeats "WARNING: Location '...' is ignored" for every package when a configured find-links directory
# does not exist on this machine; drop those lines, keeping pip's exit status (pipefail) and everything else.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
QUIET_PIP := 2>&1 | { grep -v "^WARNING: Location '.*' is ignored" || true; }
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip $(QUIET_PIP)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q -c .ci/constraints.txt torch==2.13.0 $(QUIET_PIP)
	$(PY) -m pip install -q -c .ci/constraints.txt -e '.[dev]' $(QUIET_PIP)
	touch $@

# The extras for building and checking the wheel (build, twine) and for the documentation site (mkdocs).
$(VENV)/.extras: $(VENV)/.installed
	$(PY) -m pip install -q -c .ci/constraints.txt -e '.[dev,release,docs]'
	touch $@

.PHONY: setup extras demo test test-slow bench wheel-test docs
setup: $(VENV)/.installed
extras: $(VENV)/.extras

demo: setup
	$(PY) -m causalinterp demo --out reports

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow

bench: setup
	$(PY) -m benchmarks

# Build the wheel and sdist, twine-check them, install the wheel into a fresh venv outside the repository
# and run the demo, a scan, and `causalinterp init` + pytest there (.ci/wheel_test.sh).
wheel-test: $(VENV)/.extras
	bash .ci/wheel_test.sh $(PY)

# The documentation site, built strictly (any warning fails) into site/; the notebooks are executed.
docs: $(VENV)/.extras
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 MPLBACKEND=Agg $(PY) -m mkdocs build --strict
