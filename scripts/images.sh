#!/usr/bin/env bash
# Build the images of the project with docker (`make images`):
#   the adapter           (adapter/Dockerfile)                           -> $ADAPTER_IMAGE
#   the predictor, base   (custom_predictor/Dockerfile, target base)     -> $PREDICTOR_IMAGE
#   the predictor, torch  (custom_predictor/Dockerfile, target pytorch)  -> $PYTORCH_IMAGE
#     (default: $PREDICTOR_IMAGE's name with -pytorch, as the adapter's default PREDICTOR_IMAGES expects;
#      PYTORCH_IMAGE= (empty) skips it)
# Both build from the repository root. The default names sit under kind.local/, the registry that
# Knative never resolves to a digest, so `make e2e` can `kind load` them as they are.
# E2E_DRY_RUN=1 prints the commands instead of running them.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ADAPTER_IMAGE="${ADAPTER_IMAGE:-kind.local/service-builder-adapter:dev}"
PREDICTOR_IMAGE="${PREDICTOR_IMAGE:-kind.local/service-builder-predictor:dev}"
# registry/name:tag -> registry/name-pytorch:tag (a ':' after the last '/' starts the tag)
default_pytorch_image() {
  local name="$1" tag=""
  if [[ "${name##*/}" == *:* ]]; then
    tag=":${name##*:}"
    name="${name%:*}"
  fi
  printf '%s-pytorch%s' "$name" "$tag"
}
PYTORCH_IMAGE="${PYTORCH_IMAGE-$(default_pytorch_image "$PREDICTOR_IMAGE")}"
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
run docker build -f custom_predictor/Dockerfile --target base -t "$PREDICTOR_IMAGE" .
if [[ -n "$PYTORCH_IMAGE" ]]; then
  run docker build -f custom_predictor/Dockerfile --target pytorch -t "$PYTORCH_IMAGE" .
fi
[[ "$DRY_RUN" == "1" ]] || echo "built $ADAPTER_IMAGE, $PREDICTOR_IMAGE${PYTORCH_IMAGE:+ and $PYTORCH_IMAGE}"
