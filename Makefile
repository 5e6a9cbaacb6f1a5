# vpr: `make train` and `make test` set up .venv themselves on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export WANDB_SILENT := true

.PHONY: help setup train test test-full lint format table bench evidence city clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cpu,slurm]'
	@touch $(STAMP)

setup: $(STAMP) ## create .venv from pyproject.toml (torch, lightning, hydra, faiss-cpu, submitit, ...)

train: $(STAMP) ## the main job on the synthetic city: generate, cluster, untrained test, train, test
	$(PY) train.py experiment=city_main $(ARGS)

# Test processes (pytest-xdist): one per CPU this process may use, at most 4 (each runs scripts of its own, DDP tests
# two processes). A test file stays on one process, its module fixtures (one training run shared by its tests) built
# once. TEST_WORKERS=0: one process, the tests in file order (as ARGS=-n0 does).
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; n = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(); print(min(4, n or 1))" 2>/dev/null || echo 2)
XDIST = -n $(TEST_WORKERS) --dist loadfile

test: $(STAMP) ## the test suite (CPU, no network), in parallel processes: make test [TEST_WORKERS=N] [ARGS=...]
	$(PY) -m pytest -q -m "not slow" $(XDIST) $(ARGS)

test-full: $(STAMP) ## every test, slow ones included (TEST_WORKERS and ARGS as for test)
	$(PY) -m pytest -q $(XDIST) $(ARGS)

SOURCES := vpr tests train.py eval.py cluster.py retrieve.py

lint: $(STAMP) ## ruff: the lint rules, and the formatting checked (make format applies it)
	$(VENV)/bin/ruff check $(SOURCES)
	$(VENV)/bin/ruff format --check $(SOURCES)

format: $(STAMP) ## ruff format, and the lint rules' fixes (import order)
	$(VENV)/bin/ruff format $(SOURCES)
	$(VENV)/bin/ruff check --fix $(SOURCES)

table: $(STAMP) ## results table + Recall@N plot of a sweep: make table [DIR=outputs/train/multiruns/<date>] (default: latest)
	$(PY) -m vpr.report $(or $(DIR),$(LATEST_SWEEP),outputs/train/multiruns) $(ARGS)

# The newest sweep with at least one job folder (a sweep Hydra refused leaves a folder holding multirun.yaml alone).
LATEST_SWEEP = $(lastword $(sort $(dir $(patsubst %/,%,$(dir $(wildcard outputs/train/multiruns/*/*/config.yaml))))))

EVIDENCE_VARIANTS := city_baseline,city_baseline_stml,city_deattention,city_deattention_features,city_deattention_stml
EVIDENCE_LEVELS := default-occlusion-low,default,default-occlusion-high
evidence: $(STAMP) ## does de-attention help? 5 variants x 3 seeds x 3 occlusion levels on the city, then the table
	$(PY) train.py -m experiment=$(EVIDENCE_VARIANTS) seed=1,2,3 data.prepare.preset=$(EVIDENCE_LEVELS) logger=csv $(ARGS)
	$(MAKE) table

bench: $(STAMP) ## speed of training step, encoding, search vs a naive reference: make bench [ARGS='--size paper']
	$(PY) -m vpr.bench $(ARGS)

city: $(STAMP) ## generate the default synthetic city under data/
	$(PY) -m vpr.data.synthetic --out data/city_default_seed0 --preset default

clean: ## remove run outputs (keeps .venv and data)
	rm -rf outputs multirun .pytest_cache
