#!/usr/bin/env bash
# End-to-end test on kind (`make e2e`, `make e2e-down`): the whole path from the MLflow registry to
# a Knative endpoint and back.
#
#   bash scripts/e2e.sh up      create the cluster (or reuse it) and run every step below
#   bash scripts/e2e.sh down    delete the cluster
#   E2E_DRY_RUN=1 bash scripts/e2e.sh up   print the exact commands, in order, and run none
#
# Needs docker, kubectl, curl, kind v0.30.0 (or Go, which installs exactly that release from the Go
# module proxy into ~/.cache/service-builder), and the project's virtualenv (`make install`: mlflow and scikit-learn register the demo model from the host).
# On failure it prints `kubectl describe`, logs and events, and exits non-zero. The cluster stays
# up after success or failure so you can look around; `make e2e-down` deletes it.

# Checks and dry-run placeholders are single-quoted on purpose: they are printed, then evaluated.
# shellcheck disable=SC2016
set -Eeuo pipefail

HERE="${BASH_SOURCE[0]%/*}"
[[ "$HERE" == "${BASH_SOURCE[0]}" ]] && HERE=.
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

# ---- Versions, pinned together (docs/deploy.md explains the choice) ----------------------------
# Each is a release whose Go module the module proxy serves, so each can be checked against its source
# (tests/deploy/test_versions.py does): the module in brackets.
KIND_VERSION="v0.30.0"                     # [sigs.k8s.io/kind v0.30.0]
# Empty: the node image kind v0.30.0 names in pkg/apis/config/defaults/image.go (Kubernetes v1.34.0,
# pinned there by digest). Set it only to the image, with its digest, that your kind release lists.
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"
CERT_MANAGER_VERSION="v1.17.0"             # [github.com/cert-manager/cert-manager v1.17.0]
KNATIVE_SERVING_VERSION="knative-v1.21.1"  # [knative.dev/serving v0.48.1], the one KServe v0.20.0 builds against
KNATIVE_KOURIER_VERSION="knative-v1.21.0"  # [knative.dev/net-kourier v0.48.0]
KSERVE_VERSION="v0.20.0"                   # [github.com/kserve/kserve v0.20.0]

CERT_MANAGER_URL="https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
KNATIVE_URL="https://github.com/knative/serving/releases/download/${KNATIVE_SERVING_VERSION}"
KOURIER_URL="https://github.com/knative-extensions/net-kourier/releases/download/${KNATIVE_KOURIER_VERSION}/kourier.yaml"
KSERVE_URL="https://github.com/kserve/kserve/releases/download/${KSERVE_VERSION}"

# ---- Settings -------------------------------------------------------------------------------------
CLUSTER="${E2E_CLUSTER_NAME:-service-builder-e2e}"
CTX="kind-${CLUSTER}"
NS="service-builder"                         # adapter and InferenceServices (deploy/e2e)
MODEL="${E2E_MODEL_NAME:-e2e-iris}"
ALIAS="production"
MLFLOW_PORT="${E2E_MLFLOW_PORT:-15000}"      # host side of the MLflow port-forward
KOURIER_PORT="${E2E_KOURIER_PORT:-18080}"    # host side of the Kourier gateway port-forward
MLFLOW_URI="http://127.0.0.1:${MLFLOW_PORT}" # MLflow as the host sees it (pods use the Service name)
PYTHON="${PYTHON:-.venv/bin/python}"
READY_TIMEOUT="${E2E_READY_TIMEOUT:-900}"
ZERO_TIMEOUT="${E2E_SCALE_TO_ZERO_TIMEOUT:-600}"
export CONTAINER_TOOL=docker # kind loads images from docker
export ADAPTER_IMAGE="kind.local/service-builder-adapter:dev"
export PREDICTOR_IMAGE="kind.local/service-builder-predictor:dev"
export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
DRY_RUN="${E2E_DRY_RUN:-0}"
PAYLOAD='{"records":[{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2}]}'

STEP=0
STEP_TITLE="start"
PF_PIDS=()
LOG_DIR="${TMPDIR:-/tmp}/service-builder-e2e"

# ---- Helpers --------------------------------------------------------------------------------------
say() { printf '%s\n' "$*" >&2; }

step() {
  STEP=$((STEP + 1))
  STEP_TITLE="$1"
  printf '\n==> [%d] %s\n' "$STEP" "$1"
}

PLAIN_WORD='^[-A-Za-z0-9_./:=@,+%{}$]+$'
quote() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ $PLAIN_WORD ]]; then
      out+=("$a")
    elif [[ "$a" == *'$'* && "$a" != *[\"\\\`]* ]]; then
      out+=("\"$a\"") # shows a dry run's "$VAR" placeholders as the shell would expand them
    else
      out+=("'${a//\'/\'\\\'\'}'")
    fi
  done
  printf '%s' "${out[*]}"
}

# run CMD...: print the command, then run it (print only in a dry run).
run() {
  printf '+ %s\n' "$(quote "$@")"
  if [[ "$DRY_RUN" != "1" ]]; then
    "$@"
  fi
}

# run_sh 'pipeline': the same for a shell pipeline.
run_sh() {
  printf '+ %s\n' "$1"
  if [[ "$DRY_RUN" != "1" ]]; then
    eval "$1"
  fi
}

# capture VAR CMD...: run CMD and keep its stdout in VAR (in a dry run VAR holds the text "$VAR").
capture() {
  local var="$1"
  shift
  printf '+ %s=$(%s)\n' "$var" "$(quote "$@")"
  if [[ "$DRY_RUN" == "1" ]]; then
    printf -v "$var" '%s' "\${$var}"
  else
    local out
    out="$("$@")"
    printf -v "$var" '%s' "$out"
  fi
}

# capture_sh VAR 'pipeline': the same for a shell pipeline.
capture_sh() {
  printf '+ %s=$(%s)\n' "$1" "$2"
  if [[ "$DRY_RUN" == "1" ]]; then
    printf -v "$1" '%s' "\${$1}"
  else
    local out
    out="$(eval "$2")"
    printf -v "$1" '%s' "$out"
  fi
}

# setvar VAR VALUE: an assignment derived from earlier output (printed as a placeholder in a dry run).
setvar() {
  printf '+ %s=%s\n' "$1" "$3"
  if [[ "$DRY_RUN" == "1" ]]; then
    printf -v "$1" '%s' "\${$1}"
  else
    printf -v "$1" '%s' "$2"
  fi
}

# poll TIMEOUT INTERVAL 'shell condition': wait until the condition holds.
poll() {
  local timeout="$1" interval="$2" cond="$3" start
  printf '+ [every %ss, up to %ss] until %s\n' "$interval" "$timeout" "$cond"
  [[ "$DRY_RUN" == "1" ]] && return 0
  start=$SECONDS
  until eval "$cond"; do
    if ((SECONDS - start >= timeout)); then
      say "timed out after ${timeout}s waiting for: $cond"
      return 1
    fi
    sleep "$interval"
  done
}

# retry N CMD...: run CMD up to N times, 10 s apart (webhooks that are not serving yet).
retry() {
  local n="$1" i
  shift
  printf '+ [retry up to %s times] %s\n' "$n" "$(quote "$@")"
  [[ "$DRY_RUN" == "1" ]] && return 0
  for ((i = 1; i <= n; i++)); do
    if "$@"; then return 0; fi
    ((i < n)) && { say "attempt $i/$n failed; retrying in 10s"; sleep 10; }
  done
  return 1
}

# expect 'description' 'shell condition': a check that fails the run when false.
expect() {
  printf '+ [check] %s: %s\n' "$1" "$2"
  [[ "$DRY_RUN" == "1" ]] && return 0
  if ! eval "$2"; then
    say "check failed: $1"
    return 1
  fi
}

k() { run kubectl --context "$CTX" "$@"; }

model() { run "$PYTHON" scripts/e2e_model.py --tracking-uri "$MLFLOW_URI" "$@"; }

# port_forward NAMESPACE SERVICE LOCAL:REMOTE URL: forward in the background, wait until URL answers.
port_forward() {
  local ns="$1" svc="$2" ports="$3" url="$4" log
  printf '+ %s &\n' "$(quote kubectl --context "$CTX" -n "$ns" port-forward "svc/$svc" "$ports")"
  if [[ "$DRY_RUN" != "1" ]]; then
    mkdir -p "$LOG_DIR"
    log="$LOG_DIR/port-forward-$svc.log"
    kubectl --context "$CTX" -n "$ns" port-forward "svc/$svc" "$ports" >"$log" 2>&1 &
    PF_PIDS+=("$!")
  fi
  poll 60 1 "curl -s -o /dev/null --max-time 5 $url"
}

cleanup() {
  local pid
  for pid in "${PF_PIDS[@]+"${PF_PIDS[@]}"}"; do
    kill "$pid" 2>/dev/null || true
  done
}

diagnose() {
  local cmd
  local cmds=(
    "kubectl --context $CTX get inferenceservices -A"
    "kubectl --context $CTX describe inferenceservices -n $NS"
    "kubectl --context $CTX get ksvc,revisions -n $NS"
    "kubectl --context $CTX get pods -A"
    "kubectl --context $CTX describe pods -n $NS"
    "kubectl --context $CTX logs -n $NS -l app.kubernetes.io/name=service-builder,app.kubernetes.io/component=adapter --prefix --tail=200"
    "kubectl --context $CTX logs -n $NS -l serving.kserve.io/inferenceservice --all-containers --prefix --tail=100"
    "kubectl --context $CTX logs deployment/mlflow -n mlflow --tail=100"
    "kubectl --context $CTX logs deployment/kserve-controller-manager -n kserve --tail=100"
    "kubectl --context $CTX get events -n $NS --sort-by=.lastTimestamp"
    "$PYTHON scripts/e2e_model.py --tracking-uri $MLFLOW_URI show --name $MODEL"
  )
  for cmd in "${cmds[@]}"; do
    printf '\n--- %s\n' "$cmd" >&2
    eval "$cmd" >&2 || true
  done
}

on_error() {
  local rc=$? line="$1"
  trap - ERR
  set +e
  say ""
  say "FAILED at step [$STEP] $STEP_TITLE (scripts/e2e.sh line $line, exit $rc)"
  say "Diagnostics follow; the cluster '$CLUSTER' stays up: make e2e-down deletes it."
  diagnose
  cleanup
  exit 1
}

preflight() {
  [[ "$DRY_RUN" == "1" ]] && return 0
  local tool
  for tool in docker kubectl curl; do
    command -v "$tool" >/dev/null 2>&1 || { say "e2e: '$tool' is not installed or not on PATH"; exit 1; }
  done
  resolve_kind
  [[ -x "$PYTHON" ]] || { say "e2e: $PYTHON not found: run 'make install' first (or set PYTHON)"; exit 1; }
  docker info >/dev/null 2>&1 || { say "e2e: docker is installed but the daemon does not answer"; exit 1; }
}

# kind ${KIND_VERSION}: the one on PATH if it is that release, else installed with Go from the module proxy.
resolve_kind() {
  local found="" bin="${XDG_CACHE_HOME:-$HOME/.cache}/service-builder/kind-${KIND_VERSION}"
  command -v kind >/dev/null 2>&1 && found="$(kind version)"
  [[ "$found" == "kind ${KIND_VERSION} "* ]] && return 0
  if [[ ! -x "$bin/kind" ]]; then
    command -v go >/dev/null 2>&1 || {
      say "e2e: needs kind ${KIND_VERSION}${found:+ (found: $found)}, or Go to install it"
      exit 1
    }
    say "e2e: installing kind ${KIND_VERSION} into $bin (go install sigs.k8s.io/kind@${KIND_VERSION})"
    GOBIN="$bin" go install "sigs.k8s.io/kind@${KIND_VERSION}"
  fi
  PATH="$bin:$PATH"
}

# The ingress section of KServe's config with disableIstioVirtualHost=true, as a merge patch.
INGRESS_PATCH_PY='import json,sys; c=json.load(sys.stdin); c["disableIstioVirtualHost"]=True; print(json.dumps({"data":{"ingress":json.dumps(c)}}))'

# ---- The run --------------------------------------------------------------------------------------
up() {
  trap 'on_error $LINENO' ERR
  trap cleanup EXIT
  preflight

  step "Create the kind cluster '$CLUSTER' (kind ${KIND_VERSION}, its own node image unless KIND_NODE_IMAGE is set)"
  if [[ "$DRY_RUN" != "1" ]] && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    say "cluster '$CLUSTER' exists: reusing it"
  else
    run kind create cluster --name "$CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
  fi
  k wait --for=condition=Ready nodes --all --timeout=180s

  step "Install cert-manager ${CERT_MANAGER_VERSION} and wait for it"
  k apply -f "$CERT_MANAGER_URL"
  k wait --for=condition=Available deployment --all -n cert-manager --timeout=300s

  step "Install Knative Serving ${KNATIVE_SERVING_VERSION} (CRDs, then core)"
  k apply -f "$KNATIVE_URL/serving-crds.yaml"
  k wait --for=condition=Established crd --all --timeout=120s
  k apply -f "$KNATIVE_URL/serving-core.yaml"

  step "Install Kourier ${KNATIVE_KOURIER_VERSION} and make it Knative's ingress"
  k apply -f "$KOURIER_URL"
  k patch configmap/config-network -n knative-serving --type merge \
    -p '{"data":{"ingress-class":"kourier.ingress.networking.knative.dev"}}'

  step "Configure the Knative domain (example.com, reached with a Host header) and tag resolution"
  k patch configmap/config-domain -n knative-serving --type merge -p '{"data":{"example.com":""}}'
  k patch configmap/config-deployment -n knative-serving --type merge \
    -p '{"data":{"registries-skipping-tag-resolving":"kind.local,ko.local,dev.local"}}'
  k wait --for=condition=Available deployment --all -n knative-serving --timeout=300s
  k wait --for=condition=Available deployment --all -n kourier-system --timeout=300s

  step "Install KServe ${KSERVE_VERSION} (CRDs, then controller, server-side apply) in Serverless mode with Kourier"
  k apply --server-side -f "$KSERVE_URL/kserve-crds.yaml"
  k wait --for=condition=Established crd --all --timeout=120s
  run_sh "kubectl --context $CTX create namespace kserve --dry-run=client -o yaml | kubectl --context $CTX apply -f -"
  # The first apply can race cert-manager issuing the webhook certificates: retry.
  retry 6 kubectl --context "$CTX" apply --server-side --force-conflicts -f "$KSERVE_URL/kserve.yaml"
  k wait --for=condition=Available deployment --all -n kserve --timeout=300s
  capture_sh INGRESS_PATCH "kubectl --context $CTX get configmap inferenceservice-config -n kserve -o jsonpath='{.data.ingress}' | $PYTHON -c '$INGRESS_PATCH_PY'"
  k patch configmap/inferenceservice-config -n kserve --type merge -p "$INGRESS_PATCH"
  k rollout restart deployment/kserve-controller-manager -n kserve
  k rollout status deployment/kserve-controller-manager -n kserve --timeout=300s

  step "Deploy MLflow in the cluster (mlflow server --serve-artifacts, sqlite on a PVC)"
  k apply -k deploy/e2e-mlflow
  k rollout status deployment/mlflow -n mlflow --timeout=600s
  port_forward mlflow mlflow "$MLFLOW_PORT:5000" "$MLFLOW_URI/health"

  step "Build both images and load them into kind (kind.local/ names: no tag resolution)"
  printf '+ bash scripts/images.sh\n'
  # The e2e model is scikit-learn: the base image serves it (the PyTorch image is not built here).
  PYTORCH_IMAGE="" E2E_DRY_RUN="$DRY_RUN" bash scripts/images.sh
  run kind load docker-image "$ADAPTER_IMAGE" --name "$CLUSTER"
  run kind load docker-image "$PREDICTOR_IMAGE" --name "$CLUSTER"

  step "Apply the adapter (deploy/e2e) with a fresh webhook secret, and wait for it"
  # The value is generated where it is used and never printed (the line below shows the command).
  run_sh "kubectl --context $CTX create namespace $NS --dry-run=client -o yaml | kubectl --context $CTX apply -f -"
  run_sh "kubectl --context $CTX -n $NS create secret generic service-builder-credentials --from-literal=MLFLOW_WEBHOOK_SECRET=\"\$($PYTHON -c 'import secrets; print(secrets.token_hex(32))')\" --dry-run=client -o yaml | kubectl --context $CTX apply -f -"
  k apply -k deploy/e2e
  k rollout status deployment/service-builder -n "$NS" --timeout=300s

  step "Register the demo model (version 1) from the host and mark it production"
  capture V1 "$PYTHON" scripts/e2e_model.py --tracking-uri "$MLFLOW_URI" register --name "$MODEL" --variant 1
  model promote --name "$MODEL" --version "$V1" --alias "$ALIAS"

  step "Wait until MLflow shows deployment.status=ready for version $V1"
  model wait --name "$MODEL" --version "$V1" --status ready --timeout "$READY_TIMEOUT"
  capture ENDPOINT "$PYTHON" scripts/e2e_model.py --tracking-uri "$MLFLOW_URI" tag --name "$MODEL" --version "$V1" --key model_endpoint
  capture ISVC_REF "$PYTHON" scripts/e2e_model.py --tracking-uri "$MLFLOW_URI" tag --name "$MODEL" --version "$V1" --key deployment.inferenceservice
  setvar ISVC "${ISVC_REF##*/}" '${ISVC_REF##*/}'
  capture STATUS_URL kubectl --context "$CTX" get inferenceservice "$ISVC" -n "$NS" -o 'jsonpath={.status.url}'
  expect "model_endpoint is under status.url" '[[ "$ENDPOINT" == "$STATUS_URL"/* ]]'
  local rest="${ENDPOINT#*://}"
  setvar HOST "${rest%%/*}" 'host part of $ENDPOINT'
  setvar API_PATH "/${rest#*/}" 'path part of $ENDPOINT (ends in /api/)'
  say "endpoint: $ENDPOINT (Host: $HOST, path: $API_PATH)"

  step "Call predict (a token RBAC lets get this InferenceService) and fetch the Swagger page through Kourier"
  port_forward kourier-system kourier "$KOURIER_PORT:80" "http://127.0.0.1:$KOURIER_PORT/"
  local gw="http://127.0.0.1:$KOURIER_PORT"
  # Predictors require a credential (docs/security.md); the adapter's ServiceAccount may get InferenceServices.
  # Its token goes into a header file (mode 0600) that curl reads with -H @file: the log never shows it.
  local auth="$LOG_DIR/auth-header"
  run_sh "kubectl --context $CTX -n $NS create token service-builder --duration 2h | (umask 077; sed 's/^/Authorization: Bearer /' > $auth)"
  capture ANONYMOUS curl -sS --max-time 300 -o /dev/null -w '%{http_code}' -H "Host: $HOST" \
    -H 'Content-Type: application/json' -d "$PAYLOAD" "$gw${API_PATH}v1/predict"
  expect "a call without a credential is refused" '[[ "$ANONYMOUS" == 401 ]]'
  capture PREDICTION curl -sS --fail-with-body --max-time 300 -H "Host: $HOST" -H "@$auth" \
    -H 'Content-Type: application/json' -d "$PAYLOAD" "$gw${API_PATH}v1/predict"
  say "prediction (v$V1): $PREDICTION"
  capture SWAGGER curl -sS --fail-with-body --max-time 60 -H "Host: $HOST" "$gw$API_PATH"
  expect "the Swagger UI page is served" '[[ "$SWAGGER" == *swagger-ui* ]]'
  # Swagger UI's own assets come from the predictor (no CDN), and so does the OpenAPI document.
  run curl -sS --fail --max-time 60 -o /dev/null -H "Host: $HOST" "$gw${API_PATH}static/swagger-ui-bundle.js"
  capture OPENAPI curl -sS --fail-with-body --max-time 60 -H "Host: $HOST" "$gw/openapi.json"
  expect "the OpenAPI document lists predict" '[[ "$OPENAPI" == *"${API_PATH}v1/predict"* ]]'
  k get inferenceservices -n "$NS"

  step "Wait for scale to zero (no predictor pods), call again, print the scale-from-zero latency"
  local pods="kubectl --context $CTX get pods -n $NS -l serving.kserve.io/inferenceservice=$ISVC -o name"
  poll "$ZERO_TIMEOUT" 5 "[ -z \"\$($pods)\" ]"
  capture COLD_SECONDS curl -sS --fail-with-body --max-time 300 -o /dev/null -w '%{time_total}' \
    -H "Host: $HOST" -H "@$auth" -H 'Content-Type: application/json' -d "$PAYLOAD" \
    "$gw${API_PATH}v1/predict"
  say "scale-from-zero latency: ${COLD_SECONDS}s (first request after scale to zero, through Kourier)"

  step "Register version 2, promote it: rollout on the same URL, version 1 superseded"
  capture REV1 kubectl --context "$CTX" get inferenceservice "$ISVC" -n "$NS" \
    -o 'jsonpath={.status.components.predictor.latestReadyRevision}'
  capture V2 "$PYTHON" scripts/e2e_model.py --tracking-uri "$MLFLOW_URI" register --name "$MODEL" --variant 2
  model promote --name "$MODEL" --version "$V2" --alias "$ALIAS"
  model wait --name "$MODEL" --version "$V2" --status ready --timeout "$READY_TIMEOUT"
  model wait --name "$MODEL" --version "$V1" --status superseded --timeout 120
  capture ENDPOINT2 "$PYTHON" scripts/e2e_model.py --tracking-uri "$MLFLOW_URI" tag --name "$MODEL" --version "$V2" --key model_endpoint
  expect "version 2 is served on the same URL" '[[ "$ENDPOINT2" == "$ENDPOINT" ]]'
  capture REV2 kubectl --context "$CTX" get inferenceservice "$ISVC" -n "$NS" \
    -o 'jsonpath={.status.components.predictor.latestReadyRevision}'
  expect "a new Knative revision serves version 2" '[[ -n "$REV2" && "$REV2" != "$REV1" ]]'
  capture SERVED kubectl --context "$CTX" get inferenceservice "$ISVC" -n "$NS" \
    -o 'jsonpath={.metadata.annotations.mlflow\.org/model-version}'
  expect "the InferenceService carries version 2" '[[ "$SERVED" == "$V2" ]]'
  capture PREDICTION2 curl -sS --fail-with-body --max-time 300 -H "Host: $HOST" -H "@$auth" \
    -H 'Content-Type: application/json' -d "$PAYLOAD" "$gw${API_PATH}v1/predict"
  say "prediction (v$V2): $PREDICTION2"
  k get inferenceservices -n "$NS"

  step "Remove the production marker: the InferenceService goes, MLflow says retired"
  model retire --name "$MODEL" --alias "$ALIAS"
  poll 300 3 "[ -z \"\$(kubectl --context $CTX get inferenceservice $ISVC -n $NS --ignore-not-found -o name)\" ]"
  model wait --name "$MODEL" --version "$V2" --status retired --timeout 300
  run "$PYTHON" scripts/e2e_model.py --tracking-uri "$MLFLOW_URI" show --name "$MODEL"

  printf '\n==> e2e passed: %d steps. Scale-from-zero latency %ss. Delete the cluster with: make e2e-down\n' \
    "$STEP" "$COLD_SECONDS"
}

down() {
  step "Delete the kind cluster '$CLUSTER'"
  run kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    say "usage: $0 up|down   (E2E_DRY_RUN=1 prints the commands without running them)"
    exit 2
    ;;
esac
