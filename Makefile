# service-builder: MLflow registry -> KServe serverless endpoints.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.DEFAULT_GOAL := help
.PHONY: help install controlplane test lint bench demo e2e e2e-down images base-image clean

help: ## List the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements-dev.txt adapter/requirements.txt custom_predictor/requirements.txt custom_predictor/requirements-torch.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# Tests run both images' pins (constraints take no extras): what passes here is what the images ship.
	cat custom_predictor/requirements.txt adapter/requirements.txt | sed 's/\[[^]]*\]//' > $(VENV)/constraints.txt
	$(PIP) install -q -c $(VENV)/constraints.txt -e '.[adapter,predictor,dev]'
	$(PY) scripts/cached_extra.py custom_predictor/requirements-torch.txt
	touch $@

install: $(VENV)/.installed ## Make .venv with runtime and dev dependencies (torch: once per machine, cached)

controlplane: install ## Build etcd, kube-apiserver, kubectl, the KServe manager, the test node, Knative and SeaweedFS (S3) from the Go module proxy (cached)
	$(PY) -m tests.controlplane.build
	$(PY) -m tests.objectstore.build

test: install controlplane ## Run the whole test suite
	$(VENV)/bin/pytest

lint: install ## ruff, mypy and import-linter contracts
	$(VENV)/bin/ruff check adapter custom_predictor tests scripts
	$(VENV)/bin/ruff format --check adapter custom_predictor tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

demo: install ## Run it all locally: MLflow, two example models, the adapter, predictors (no cluster)
	$(PY) scripts/demo.py

bench: install controlplane ## Benchmarks, side by side with the alternatives; figures into docs/benchmarks.md (needs wrk: installed)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
		{ echo "make bench needs wrk (apt-get install wrk)" >&2; exit 1; }
	$(PY) -m tests.bench

images: ## Build the predictor and adapter images with docker or podman (CONTAINER_TOOL; PYTORCH_IMAGE= skips torch)
	bash scripts/images.sh

base-image: ## Make a local stand-in for python:3.11-slim where it cannot be pulled (debootstrap; needs root)
	bash scripts/base-image.sh

e2e: ## End to end on kind: cluster, KServe, MLflow, adapter, rollout, scale to zero (needs docker, kind, kubectl)
	bash scripts/e2e.sh up

e2e-down: ## Delete the kind cluster of make e2e
	bash scripts/e2e.sh down

clean: ## Remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	@echo "the control plane's binaries stay in $${SERVICE_BUILDER_CACHE:-$$HOME/.cache/service-builder}/controlplane"
