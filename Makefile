# Everyday tasks. `make help` lists them. ENV selects the environment (dev).
ENV ?= dev
PYTHON := .venv/bin/python
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.DEFAULT_GOAL := help
.PHONY: help setup synth render test lint imports bench

help: ## List the tasks
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: ## Install what rendering needs (venv, cdk8s CLI)
	@bash scripts/setup.sh synth

synth: setup ## Render every env into dist/<env>/ with `cdk8s synth`
	npx --no-install cdk8s synth
	@echo "rendered: $$(ls -d dist/*/ | tr '\n' ' ')"

render: setup ## Render one env only: make render ENV=prod
	$(PYTHON) main.py --env $(ENV)

test: ## Install everything the tests need, then run them all
	@bash scripts/setup.sh test
	$(PYTHON) -m pytest

lint: ## ruff and mypy over the Python code
	@bash scripts/setup.sh test
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

imports: setup ## Regenerate imports/ offline (K8S_VERSION=1.33.0, CRDS_DIR=../shared/crds)
	$(PYTHON) scripts/gen_imports.py $(if $(K8S_VERSION),--k8s-version $(K8S_VERSION)) $(if $(CRDS_DIR),--crds-dir $(CRDS_DIR))

bench: setup ## Measure rendering speed (bench/synth.py)
	$(PYTHON) bench/synth.py
