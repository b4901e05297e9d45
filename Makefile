# The two commands: `make test` and `make demo`. Both set up what they need and are quick
# when nothing changed (the virtual environment is rebuilt only when the pins change).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip looks for the local CPU build of torch here when the directory exists.
WHEELS := $(wildcard /opt/wheels)
PIP_FLAGS := --disable-pip-version-check -q $(if $(WHEELS),--find-links $(WHEELS))

.PHONY: setup test demo bench lint ui clean-venv llvm npm

setup: $(STAMP) llvm npm

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) torch==2.13.0
	$(BIN)/pip install $(PIP_FLAGS) -r requirements.lock
	$(BIN)/pip install $(PIP_FLAGS) --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Mitsuba's llvm variant needs libLLVM >= 16 (Dr.Jit 1.5 crashes with 14/15).
llvm:
	@$(BIN)/python -m rendering.variant --find-llvm >/dev/null 2>&1 || { \
	  echo "installing Debian's libllvm19 for Mitsuba's llvm variant"; \
	  apt-get update -qq && apt-get install -y -qq libllvm19 >/dev/null; }

# The built-in real envmaps come from npm's @pmndrs/assets (rendering/real_envmaps.py fetches the
# package once with `npm pack` into data/real_envmaps); Debian's npm when none is installed.
npm:
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Debian's npm for the built-in real envmaps"; \
	  apt-get update -qq && apt-get install -y -qq npm >/dev/null; }

# Two pytest workers (pytest-xdist), each taking whole test files so that module fixtures are made
# once: the suite's budget is 10 minutes on 2 cores. The ten slowest tests are listed at the end.
test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=10

# The DVC pipeline on the embedded defaults (ephemeral Prefect API, sqlite MLflow, local DVC
# cache) and params.yaml's profile (tiny). Stages call `drmnet`, so the venv goes first on PATH.
demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(BIN)/drmnet where

bench: setup
	$(BIN)/python benchmarks/render.py
	$(BIN)/python benchmarks/resample.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# MLflow UI on loopback only; `make ui PORT=5001` when 5000 is taken.
PORT ?= 5000
ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(PORT)

clean-venv:
	rm -rf $(VENV)
