#!/usr/bin/env bash
# Build the images of the project (`make images`) with docker or podman (CONTAINER_TOOL; default: docker when its
# engine answers, else podman):
#   the adapter           (adapter/Dockerfile)                           -> $ADAPTER_IMAGE
#   the predictor, base   (custom_predictor/Dockerfile, target base)     -> $PREDICTOR_IMAGE
#   the predictor, torch  (custom_predictor/Dockerfile, target pytorch)  -> $PYTORCH_IMAGE
#     (default: $PREDICTOR_IMAGE's name with -pytorch, as the adapter's default PREDICTOR_IMAGES expects;
#      PYTORCH_IMAGE= (empty) skips it; it needs PyTorch's own package index)
# All build from the repository root. The default names are the ones the manifests use (deploy/base) and the
# adapter's default PREDICTOR_IMAGE; `make e2e` builds under kind.local/ names instead (Knative never resolves
# that registry to a digest). Where python:3.11-slim cannot be pulled, `make base-image` makes a local stand-in.
# E2E_DRY_RUN=1 prints the commands instead of running them.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ADAPTER_IMAGE="${ADAPTER_IMAGE:-ghcr.io/service-builder/adapter:0.1.0}"
PREDICTOR_IMAGE="${PREDICTOR_IMAGE:-ghcr.io/service-builder/custom-predictor:0.1.0}"
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

# shellcheck source=scripts/container-tool.sh
source "$ROOT/scripts/container-tool.sh"
if [[ "$DRY_RUN" == "1" ]]; then
  TOOL="${CONTAINER_TOOL:-docker}"
else
  TOOL="$(container_tool)"
fi
FLAGS=()
while IFS= read -r flag; do FLAGS+=("$flag"); done < <(container_flags "$TOOL")

run() {
  printf '+ %s\n' "$*"
  if [[ "$DRY_RUN" != "1" ]]; then
    "$@"
  fi
}

# build DOCKERFILE IMAGE [--target T]: podman is told the Dockerfile's own .dockerignore (docker finds it itself).
build() {
  local file="$1" image="$2"
  shift 2
  local extra=()
  [[ "$TOOL" == podman ]] && extra=(--ignorefile "$file.dockerignore" "${FLAGS[@]}")
  run "$TOOL" build "${extra[@]}" -f "$file" "$@" -t "$image" . || {
    echo "images.sh: building $image failed. If python:3.11-slim cannot be pulled here, make the local" \
      "stand-in first: make base-image (scripts/base-image.sh)" >&2
    exit 1
  }
}

cd "$ROOT"
build adapter/Dockerfile "$ADAPTER_IMAGE"
build custom_predictor/Dockerfile "$PREDICTOR_IMAGE" --target base
if [[ -n "$PYTORCH_IMAGE" ]]; then
  build custom_predictor/Dockerfile "$PYTORCH_IMAGE" --target pytorch
fi
[[ "$DRY_RUN" == "1" ]] || echo "built $ADAPTER_IMAGE, $PREDICTOR_IMAGE${PYTORCH_IMAGE:+ and $PYTORCH_IMAGE} with $TOOL"
