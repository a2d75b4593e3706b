# realbogus: `make help` lists the targets.
# The two commands a newcomer needs:  `make train` (set up, simulate the default data, train)
# and `make test` (set up, run the test suite).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SCALE ?= quick

.DEFAULT_GOAL := help
.PHONY: help setup data train test test-all benchmark gallery reproduce-figures clean-venv

help: ## List the targets with their descriptions
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

setup: $(STAMP) ## Create .venv and install the pinned requirements and the package

data: setup ## Simulate the default dataset (data/$(SCALE)/{train,test}.h5; SCALE=smoke|quick|paper)
	$(PY) -m realbogus.simulate data=$(SCALE)

train: setup ## The main job: simulate the default data if missing, train complex + CE+ECH+VAT
	$(PY) -m realbogus.train model=complex loss=ce_ech_vat

test: setup ## Run the test suite (tests marked slow excluded)
	$(PY) -m pytest -m "not slow"

test-all: setup ## Run every test, slow ones included
	$(PY) -m pytest

benchmark: setup ## Print simulation, training and inference throughput on this machine
	$(PY) benchmarks/bench_simulate.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/bench_inference.py

reproduce-figures: setup ## Run (or reuse) every experiment behind the paper's figures; draw them and write the report (SCALE=smoke|quick|paper)
	$(PY) -m realbogus.reproduce scale=$(SCALE)

gallery: setup ## Draw the stamp gallery (simulated kinds next to real ZTF stamps)
	$(PY) -m realbogus.plots.gallery

clean-venv: ## Remove the virtual environment
	rm -rf $(VENV)
