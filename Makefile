# sigvault task runner. The two set-up commands of the README:
#   make demo   # create .venv, install the runtime (no torch), run the demo on synthetic signatures
#   make test   # install the test dependencies into the same .venv and run the whole test suite
# Other targets: train, bench, lint, clean, distclean. `make help` lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TRAIN_VENV ?= .venv-train
TRAIN_BIN := $(TRAIN_VENV)/bin
TRAIN_CONFIG ?= training/configs/default.toml
TRAIN_RUNS ?= ../runs/ship
MODEL_OUT ?= $(TRAIN_RUNS)/model
# The demo keeps its own vault here (never the user's SIGVAULT_HOME), and starts afresh on every run.
DEMO_HOME ?= demo-home
PIP_FLAGS ?= --quiet --disable-pip-version-check
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help demo test train bench lint clean distclean venv

help:
	@echo "make demo       install the runtime into $(VENV) and run the demo (vault in ./$(DEMO_HOME))"
	@echo "make test       install the test extra into $(VENV) and run the whole test suite"
	@echo "make train      install the train extra (torch, timm) into $(TRAIN_VENV), train the model of $(TRAIN_CONFIG) into $(MODEL_OUT)"
	@echo "make bench      speed figures of the product on this machine (benchmarks/run.py; BENCH_ARGS=...)"
	@echo "make lint       ruff and mypy"
	@echo "make clean      remove caches, build output and the demo vault; distclean also removes the venvs"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	@echo "installing sigvault and its runtime dependencies into $(VENV) (no torch; the first time takes a minute or two)"
	$(BIN)/python -m pip install $(PIP_FLAGS) -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	@echo "installing sigvault with its test dependencies into $(VENV)"
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[test]'
	@touch $@ $(VENV)/.installed-runtime

$(VENV)/.installed-lint: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[test,lint]'
	@touch $@ $(VENV)/.installed-test $(VENV)/.installed-runtime

venv: $(VENV)/.installed-runtime

demo: $(VENV)/.installed-runtime
	SIGVAULT_HOME=$(DEMO_HOME) $(BIN)/sigvault demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(TRAIN_BIN)/python:
	$(PYTHON) -m venv $(TRAIN_VENV)

$(TRAIN_VENV)/.installed-train: pyproject.toml | $(TRAIN_BIN)/python
	@echo "installing sigvault[train] (torch, timm: several GB) into $(TRAIN_VENV)"
	$(TRAIN_BIN)/python -m pip install $(PIP_FLAGS) -e '.[train]'
	@touch $@

# Trains every member of the model's ensemble, exports and fuses them into $(MODEL_OUT) (SIGVAULT_MODEL=$(MODEL_OUT)
# to use it; `make train MODEL_OUT=sigvault/weights` replaces the shipped model). A rerun resumes.
train: $(TRAIN_VENV)/.installed-train
	$(TRAIN_BIN)/python -m training.splits --config $(TRAIN_CONFIG) --out ../cache/splits
	$(TRAIN_BIN)/python -m training.ship --config $(TRAIN_CONFIG) --runs $(TRAIN_RUNS) --out $(MODEL_OUT)

# Speed figures (runtime only). `make bench BENCH_ARGS="--large 1000000"` for the big-vault figure;
# benchmarks/audit_bench.py measures `sigvault audit` the same way.
bench: $(VENV)/.installed-runtime
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

lint: $(VENV)/.installed-lint
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf build dist wheelhouse *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis $(DEMO_HOME)
	find . -name __pycache__ -type d -not -path './.venv*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(TRAIN_VENV)
