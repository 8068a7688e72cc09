# service-builder: MLflow registry -> KServe serverless endpoints.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.DEFAULT_GOAL := help
.PHONY: help install demo test-fast test controlplane lint docs bench images base-image e2e e2e-down clean

# `## what it does | what it needs | how long it takes here` after each target: `make help` prints them.
help: ## What each target does, what it needs and how long it takes | nothing | instant
	@echo "Try it: make demo.  After a change: make test-fast.  Before a merge: make lint test (what CI runs)."
	@echo "Times are this machine's (2 cores, shared with other work)."
	@echo
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ n = split($$2, p, / [|] /); \
		printf "  %-12s %s\n", $$1, p[1]; if (n == 3) printf "  %-12s   needs: %s.  time: %s\n", "", p[2], p[3] }'

$(VENV)/.installed: pyproject.toml requirements-dev.txt adapter/requirements.txt custom_predictor/requirements.txt custom_predictor/requirements-torch.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@# Tests run both images' pins (constraints take no extras): what passes here is what the images ship.
	cat custom_predictor/requirements.txt adapter/requirements.txt | sed 's/\[[^]]*\]//' > $(VENV)/constraints.txt
	$(PIP) install -q -c $(VENV)/constraints.txt -e '.[adapter,predictor,dev]'
	$(PY) scripts/cached_extra.py custom_predictor/requirements-torch.txt
	touch $@

install: $(VENV)/.installed ## The venv (.venv): both deployables and the test tools; PyTorch linked from a per-machine cache | Python 3.11+ and PyPI | about 3 min from nothing (PyTorch: 2 min once per machine), a second when current

controlplane: install ## Build etcd, kube-apiserver, kubectl, the KServe manager, the test node (kubelet, scheduler, controller-manager), Knative Serving and SeaweedFS (S3) from the Go module proxy into ~/.cache/service-builder | Go 1.26 and the Go module proxy | 30-60 min the first time, seconds once built
	$(PY) -m tests.controlplane.build
	$(PY) -m tests.objectstore.build

test-fast: install ## The tests that need no MLflow server, control plane, predictor process, trained model, image, node, browser or PyTorch (`pytest -m fast`): run it after every change | make install | under a minute (607 tests: 49 s here)
	$(VENV)/bin/pytest -m fast

test: install controlplane ## Every test, each tier marked by what it needs (tests/tiers.py): real MLflow, the control plane, predictor processes, trained models, the images, a real node with Knative, Chromium, PyTorch; what CI runs | make install, make controlplane, Chromium (.ci/install-browser), podman, containerd, runc and CNI plugins (.ci/install-containers), root for the cluster tier | about 45 min warm; the first run adds 30-60 min of builds
	$(VENV)/bin/pytest

lint: install ## ruff, mypy and the import-linter contracts | make install | about 10 s (1.5 min on a cold mypy cache)
	$(VENV)/bin/ruff check adapter custom_predictor tests scripts
	$(VENV)/bin/ruff format --check adapter custom_predictor tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

docs: install ## Write docs/configuration.md and docs/serving-tags.md from the settings classes and the serving tags (a test fails when they are stale) | make install | a second
	$(PY) -m scripts.gen_docs

demo: install ## It all on this machine, no cluster: MLflow, two example models, the adapter and their predictors, then the Swagger URLs and curl lines; Ctrl-C stops it | make install | about 20 s until both models answer, then until Ctrl-C
	$(PY) scripts/demo.py

bench: install controlplane ## Benchmarks of the predictor, the request path, the adapter, auth, the inference log and a model pod's start on the real node, side by side with the alternatives (mlflow models serve, MLServer); figures into docs/benchmarks.md | make controlplane, Debian's wrk (installed if missing), and what the cluster tier needs (root, podman, containerd) | half an hour or more (the predictor part alone: 11 min on a quiet machine; the cluster part not yet timed here)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) || \
		{ echo "make bench needs wrk (apt-get install wrk)" >&2; exit 1; }
	$(PY) -m tests.bench

images: ## Build the adapter image and the predictor images (base and PyTorch; PYTORCH_IMAGE= skips PyTorch) | docker or podman (CONTAINER_TOOL) and PyPI; PyTorch's own index for the PyTorch image | about 2 min with podman here (predictor base 55 s, adapter 64 s)
	bash scripts/images.sh

base-image: ## A local stand-in for python:3.11-slim where it cannot be pulled (make images runs it when needed) | root, debootstrap, Debian's mirror, docker or podman | about 1.5 min
	bash scripts/base-image.sh

e2e: ## End to end on kind: cluster, Knative, KServe, MLflow, the adapter, a rollout, scale to zero and back, retirement | docker, kind (or Go to install it) and kubectl | unknown here (no Docker engine to measure it)
	bash scripts/e2e.sh up

e2e-down: ## Delete the kind cluster of make e2e | kind | seconds
	bash scripts/e2e.sh down

clean: ## Remove the venv and the tool caches (the control plane's binaries stay) | nothing | seconds
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	@echo "the control plane's binaries stay in $${SERVICE_BUILDER_CACHE:-$$HOME/.cache/service-builder}/controlplane"
