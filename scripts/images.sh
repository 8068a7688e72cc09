#!/usr/bin/env bash
# Build the two images of the project with docker (`make images`):
#   the adapter   (adapter/Dockerfile)          -> $ADAPTER_IMAGE
#   the predictor (custom_predictor/Dockerfile) -> $PREDICTOR_IMAGE
# Both build from the repository root. The default names sit under kind.local/, the registry that
# Knative never resolves to a digest, so `make e2e` can `kind load` them as they are.
# E2E_DRY_RUN=1 prints the commands instead of running them.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ADAPTER_IMAGE="${ADAPTER_IMAGE:-kind.local/service-builder-adapter:dev}"
PREDICTOR_IMAGE="${PREDICTOR_IMAGE:-kind.local/service-builder-predictor:dev}"
DRY_RUN="${E2E_DRY_RUN:-0}"

run() {
  printf '+ %s\n' "$*"
  if [[ "$DRY_RUN" != "1" ]]; then
    "$@"
  fi
}

if [[ "$DRY_RUN" != "1" ]] && ! command -v docker >/dev/null 2>&1; then
  echo "images.sh: docker is not installed or not on PATH" >&2
  exit 1
fi

cd "$ROOT"
run docker build -f adapter/Dockerfile -t "$ADAPTER_IMAGE" .
run docker build -f custom_predictor/Dockerfile -t "$PREDICTOR_IMAGE" .
[[ "$DRY_RUN" == "1" ]] || echo "built $ADAPTER_IMAGE and $PREDICTOR_IMAGE"
