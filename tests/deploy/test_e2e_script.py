"""scripts/e2e.sh and scripts/images.sh without a cluster.

The dry run (E2E_DRY_RUN=1) must print the exact commands in the order the spec asks, and run
none of them. The same script then runs for real against recording stand-ins for docker, kind,
kubectl, curl and python (tiny shell scripts on PATH): the commands it runs are the ones the dry run
printed, values flow between steps (Host header, API path, revisions), the KServe ingress patch is
computed by real Python, and a failing command stops the run with `kubectl describe` and logs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

FAKE = r"""#!/usr/bin/env bash
# A recording stand-in: logs its command line, answers what scripts/e2e.sh reads back.
name="$(basename "$0")"
line="$name $*"
printf '%s\n' "$line" >> "$FAKE_LOG"
if [[ -n "${FAKE_FAIL_MATCH:-}" && "$line" == *"$FAKE_FAIL_MATCH"* ]]; then
  echo "stand-in failure: $line" >&2
  exit 1
fi
count() {
  local n
  n=$(( $(cat "$FAKE_STATE/$1" 2>/dev/null || echo 0) + 1 ))
  echo "$n" > "$FAKE_STATE/$1"
  echo "$n"
}
case "$name" in
  kind) [[ "$1" == version ]] && echo "kind v0.30.0 go1.24.6 linux/amd64" ;;
  curl)
    if [[ "$line" == *"%{time_total}"* ]]; then printf '4.217'
    elif [[ "$line" == *"/api/v1/predict"* && "$line" != *"-H @"*"auth-header"* ]]; then
      [[ "$line" == *"%{http_code}"* ]] && printf '401' || { echo '{"error":"unauthenticated"}'; exit 22; }
    elif [[ "$line" == *"/api/v1/predict"* ]]; then echo '{"predictions":[0]}'
    elif [[ "$line" == *"/openapi.json"* ]]; then echo '{"paths":{"/e2e-iris/api/v1/predict":{}}}'
    elif [[ "$line" == *"/api/static/"* ]]; then echo 'window.SwaggerUIBundle=1'
    elif [[ "$line" == *"/api/"* ]]; then echo '<html><div id="swagger-ui"></div></html>'
    fi ;;
  kubectl)
    case "$line" in
      *"jsonpath={.data.ingress}"*) printf '%s' '{"ingressDomain": "example.com", "disableIstioVirtualHost": false}' ;;
      *"jsonpath={.status.url}"*) printf 'http://e2e-iris-predictor.service-builder.example.com' ;;
      *latestReadyRevision*) printf 'e2e-iris-predictor-%05d' "$(count rev)" ;;
      *"model-version"*) printf '2' ;;
      *"create token"*) printf 'fake-service-account-token\n' ;;  # as kubectl prints it
    esac ;;
  python)
    case "$line" in
      *" -c "*) shift; exec "$REAL_PYTHON" -c "$@" ;;
      *" register "*) count version ;;
      *"--key model_endpoint"*) echo "http://e2e-iris-predictor.service-builder.example.com/e2e-iris/api/" ;;
      *"--key deployment.inferenceservice"*) echo "service-builder/e2e-iris" ;;
    esac ;;
esac
exit 0
"""

DEPLOY_KINDS = ("docker", "kind", "kubectl", "curl", "python")


@pytest.fixture
def stand_ins(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    for name in DEPLOY_KINDS:
        path = bin_dir / name
        path.write_text(FAKE)
        path.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_STATE": str(state),
        "REAL_PYTHON": sys.executable,
        "PYTHON": str(bin_dir / "python"),
    }
    (tmp_path / "calls.log").write_text("")
    return env


def run_script(
    env: dict[str, str], *args: str, script: str = "e2e.sh", **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(REPO / "scripts" / script), *args],
        env={**env, **extra},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def calls(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_LOG"]).read_text().splitlines()


def printed(out: str) -> list[str]:
    return [ln[2:] for ln in out.splitlines() if ln.startswith("+ ")]


# The spec's order: each entry must match a later printed command than the one before.
EXPECTED_ORDER = [
    r"^kind create cluster --name service-builder-e2e --wait 180s$",
    r"^kubectl .* wait --for=condition=Ready nodes",
    r"^kubectl .* apply -f https://github\.com/cert-manager/cert-manager/releases/download/v1\.17\.\d+/cert-manager\.yaml$",
    r"^kubectl .* wait --for=condition=Available deployment --all -n cert-manager",
    r"^kubectl .* apply -f https://github\.com/knative/serving/releases/download/knative-v1\.21\.\d+/serving-crds\.yaml$",
    r"^kubectl .* wait --for=condition=Established crd",
    r"^kubectl .* apply -f https://github\.com/knative/serving/releases/download/knative-v1\.21\.\d+/serving-core\.yaml$",
    r"^kubectl .* apply -f https://github\.com/knative-extensions/net-kourier/releases/download/knative-v1\.21\.\d+/kourier\.yaml$",
    r"^kubectl .* patch configmap/config-network .*kourier\.ingress\.networking\.knative\.dev",
    r"^kubectl .* patch configmap/config-domain .*example\.com",
    r"^kubectl .* patch configmap/config-deployment .*registries-skipping-tag-resolving.*kind\.local",
    r"^kubectl .* wait --for=condition=Available deployment --all -n knative-serving",
    r"^kubectl .* wait --for=condition=Available deployment --all -n kourier-system",
    r"^kubectl .* apply --server-side -f https://github\.com/kserve/kserve/releases/download/v0\.20\.\d+/kserve-crds\.yaml$",
    r"create namespace kserve",
    r"kubectl .* apply --server-side --force-conflicts -f https://github\.com/kserve/kserve/releases/download/v0\.20\.\d+/kserve\.yaml$",
    r"^kubectl .* wait --for=condition=Available deployment --all -n kserve",
    r"disableIstioVirtualHost",
    r"^kubectl .* patch configmap/inferenceservice-config -n kserve",
    r"^kubectl .* rollout restart deployment/kserve-controller-manager",
    r"^kubectl .* apply -k deploy/e2e-mlflow$",
    r"^kubectl .* rollout status deployment/mlflow -n mlflow",
    r"port-forward svc/mlflow 15000:5000",
    r"^docker build -f adapter/Dockerfile -t kind\.local/service-builder-adapter:dev \.$",
    r"^docker build -f custom_predictor/Dockerfile --target base -t kind\.local/service-builder-predictor:dev \.$",
    r"^kind load docker-image kind\.local/service-builder-adapter:dev --name service-builder-e2e$",
    r"^kind load docker-image kind\.local/service-builder-predictor:dev --name service-builder-e2e$",
    r"^kubectl .* create namespace service-builder --dry-run=client -o yaml \| kubectl .* apply -f -$",
    r"^kubectl .* -n service-builder create secret generic service-builder-credentials "
    r"--from-literal=MLFLOW_WEBHOOK_SECRET=\"\$\(.*secrets\.token_hex\(32\).*\)\" "
    r"--dry-run=client -o yaml \| kubectl .* apply -f -$",
    r"^kubectl .* apply -k deploy/e2e$",
    r"^kubectl .* rollout status deployment/service-builder -n service-builder",
    r"^V1=\$\(.* scripts/e2e_model\.py --tracking-uri http://127\.0\.0\.1:15000 "
    r"register --name e2e-iris --variant 1\)$",
    r"e2e_model\.py .* promote --name e2e-iris --version \$\{V1\} --alias production$",
    r"e2e_model\.py .* wait --name e2e-iris --version \$\{V1\} --status ready",
    r"^ENDPOINT=\$\(.* tag .* --key model_endpoint\)$",
    r"^STATUS_URL=\$\(kubectl .* get inferenceservice \$\{ISVC\} .*\.status\.url",
    r"port-forward svc/kourier 18080:80",
    r'^PREDICTION=\$\(curl .*-H "Host: \$\{HOST\}" .* http://127\.0\.0\.1:18080\$\{API_PATH\}v1/predict\)$',
    r'^SWAGGER=\$\(curl .*-H "Host: \$\{HOST\}" http://127\.0\.0\.1:18080\$\{API_PATH\}\)$',
    r"^\[check\] the Swagger UI page is served",
    r'^curl .*-H "Host: \$\{HOST\}" http://127\.0\.0\.1:18080\$\{API_PATH\}static/swagger-ui-bundle\.js$',
    r"^OPENAPI=\$\(curl .* http://127\.0\.0\.1:18080/openapi\.json\)$",
    r"^\[check\] the OpenAPI document lists predict",
    r"^kubectl .* get inferenceservices -n service-builder$",
    r"until \[ -z \"\$\(kubectl .* get pods -n service-builder "
    r"-l serving\.kserve\.io/inferenceservice=\$\{ISVC\} -o name\)\" \]",
    r"^COLD_SECONDS=\$\(curl .*%\{time_total\}.*v1/predict\)$",
    r"^REV1=\$\(kubectl .*latestReadyRevision",
    r"register --name e2e-iris --variant 2\)$",
    r"promote --name e2e-iris --version \$\{V2\}",
    r"wait --name e2e-iris --version \$\{V2\} --status ready",
    r"wait --name e2e-iris --version \$\{V1\} --status superseded",
    r"^\[check\] version 2 is served on the same URL",
    r"^\[check\] a new Knative revision serves version 2",
    r"^\[check\] the InferenceService carries version 2",
    r"^PREDICTION2=\$\(curl .*v1/predict\)$",
    r"^kubectl .* get inferenceservices -n service-builder$",
    r"retire --name e2e-iris --alias production$",
    r"until \[ -z \"\$\(kubectl .* get inferenceservice \$\{ISVC\} -n service-builder "
    r"--ignore-not-found -o name\)\" \]",
    r"wait --name e2e-iris --version \$\{V2\} --status retired",
]


def test_dry_run_prints_every_command_in_order_and_runs_none(stand_ins: dict[str, str]) -> None:
    proc = run_script(stand_ins, "up", E2E_DRY_RUN="1")
    assert proc.returncode == 0, proc.stderr
    assert calls(stand_ins) == [], "a dry run must not run anything"
    lines = printed(proc.stdout)
    position = -1
    for pattern in EXPECTED_ORDER:
        later = [i for i, ln in enumerate(lines) if i > position and re.search(pattern, ln)]
        assert later, f"not printed after line {position} ({lines[position] if position >= 0 else 'start'}): {pattern}"
        position = later[0]
    # Every kubectl goes to the e2e cluster's context, never to whatever context is current.
    kubectl_lines = [ln for ln in lines if re.match(r"^(\S+=\$\()?kubectl ", ln)]
    assert kubectl_lines and all("--context kind-service-builder-e2e" in ln for ln in kubectl_lines)
    # Each step says what it does.
    steps = re.findall(r"^==> \[(\d+)\] (.+)$", proc.stdout, re.M)
    assert [int(n) for n, _ in steps] == list(range(1, len(steps) + 1)) and len(steps) >= 12


def test_dry_run_of_down_deletes_the_cluster(stand_ins: dict[str, str]) -> None:
    proc = run_script(stand_ins, "down", E2E_DRY_RUN="1")
    assert proc.returncode == 0
    assert printed(proc.stdout) == ["kind delete cluster --name service-builder-e2e"]
    assert calls(stand_ins) == []


def test_unknown_command_is_a_usage_error(stand_ins: dict[str, str]) -> None:
    proc = run_script(stand_ins, "sideways")
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and calls(stand_ins) == []


def _commands(line: str) -> list[str]:
    """The commands inside one printed dry-run line (or one recorded call), in a form both share:
    quotes dropped, `VAR=$(...)`, retries and polls unwrapped; checks, background port-forwards and
    the later stages of a pipeline left out (they run concurrently, so their order is not fixed)."""
    line = line.replace("'", "").replace('"', "").replace("\\", "")
    if line.startswith("[check]") or "port-forward" in line:
        return []
    line = re.sub(r"^\[retry up to \d+ times\] ", "", line)
    line = re.sub(r"^\[every \d+s, up to \d+s\] until (\[ -z \$\((.*)\) \]|(.*))$", r"\2\3", line)
    line = re.sub(r"^\S+=\$\((.*)\)$", r"\1", line)
    out = []
    for cmd in line.split(" | ")[:1]:  # later pipeline stages start concurrently: no stable order
        words = cmd.split()
        prog = Path(words[0]).name
        if (
            prog not in DEPLOY_KINDS
            or words[:2] == ["docker", "info"]
            or (prog == "kind" and words[1:2] in (["version"], ["get"]))
        ):
            continue
        if words[1:2] == ["-c"] or words[-3:] == ["apply", "-f", "-"]:
            continue  # a later pipeline stage, as the stand-ins record it
        cmd = " ".join([prog, *words[1:]])
        cmd = re.sub(r"MLFLOW_WEBHOOK_SECRET=.*? --dry-run", "MLFLOW_WEBHOOK_SECRET=VALUE --dry-run", cmd)
        out.append(re.sub(r"(patch configmap/inferenceservice-config -n kserve --type merge -p) .*", r"\1 PATCH", cmd))
    return out


def test_real_run_executes_what_the_dry_run_printed_and_passes(stand_ins: dict[str, str]) -> None:
    dry = run_script(stand_ins, "up", E2E_DRY_RUN="1")
    proc = run_script(stand_ins, "up")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "e2e passed" in proc.stdout and "4.217" in proc.stdout
    ran = calls(stand_ins)

    # The same commands in the same order, the dry run's placeholders replaced by the run's values.
    values = {
        "V1": "1",
        "V2": "2",
        "ISVC": "e2e-iris",
        "HOST": "e2e-iris-predictor.service-builder.example.com",
        "API_PATH": "/e2e-iris/api/",
    }
    expected = []
    for line in printed(dry.stdout):
        for key, val in values.items():
            line = line.replace("${" + key + "}", val)
        expected += _commands(line)
    got = [c for call in ran for c in _commands(call)]
    assert got == expected
    assert len(expected) > 50

    # Values flowed: the gateway got the Host of status.url and the path of model_endpoint.
    predict = [c for c in ran if c.startswith("curl") and "/v1/predict" in c]
    assert len(predict) == 4  # once without a credential (401), three times with the token
    for c in predict:
        assert "-H Host: e2e-iris-predictor.service-builder.example.com" in c
        assert c.endswith("http://127.0.0.1:18080/e2e-iris/api/v1/predict")
    header = Path(stand_ins["TMPDIR"]) / "service-builder-e2e" / "auth-header"
    assert sum(f"-H @{header}" in c for c in predict) == 3
    assert header.read_text() == "Authorization: Bearer fake-service-account-token\n"
    assert header.stat().st_mode & 0o077 == 0  # the token: in a file only its owner reads
    assert "fake-service-account-token" not in proc.stdout + proc.stderr  # used, never shown
    assert any(c.startswith("curl") and c.endswith("http://127.0.0.1:18080/e2e-iris/api/") for c in ran)
    # The KServe ingress config: Istio virtual host off, everything else kept (real JSON, real Python).
    (patch,) = [c for c in ran if "patch configmap/inferenceservice-config" in c]
    assert '\\"disableIstioVirtualHost\\": true' in patch and '\\"ingressDomain\\": \\"example.com\\"' in patch
    # No diagnostics on success.
    assert not any(" describe " in c for c in ran)
    # The webhook secret was generated (64 hex digits) and given to kubectl, and never shown.
    (secret_call,) = [c for c in ran if "create secret generic service-builder-credentials" in c]
    token = re.search(r"MLFLOW_WEBHOOK_SECRET=([0-9a-f]{64}) ", secret_call)
    assert token, secret_call
    assert token.group(1) not in proc.stdout + proc.stderr


def test_a_failing_step_prints_describe_and_logs_and_exits_non_zero(stand_ins: dict[str, str]) -> None:
    proc = run_script(stand_ins, "up", FAKE_FAIL_MATCH="serving-core.yaml")
    assert proc.returncode == 1
    assert "FAILED at step [3] Install Knative Serving" in proc.stderr
    ran = calls(stand_ins)
    failed_at = next(i for i, c in enumerate(ran) if "serving-core.yaml" in c)
    after = ran[failed_at + 1 :]
    assert any("describe inferenceservices -n service-builder" in c for c in after)
    assert any("describe pods -n service-builder" in c for c in after)
    # Both adapter replicas (leader and standby), each line prefixed with its pod.
    adapter_logs = (
        "logs -n service-builder -l app.kubernetes.io/name=service-builder,app.kubernetes.io/component=adapter"
    )
    assert any(f"{adapter_logs} --prefix" in c for c in after)
    assert any("logs -n service-builder -l serving.kserve.io/inferenceservice" in c for c in after)
    assert any("get events -n service-builder" in c for c in after)
    assert not any("kourier.yaml" in c for c in ran), "nothing after the failing step may run"


def test_a_failed_check_fails_the_run(stand_ins: dict[str, str], tmp_path: Path) -> None:
    # The Swagger page is not served: the check after the fetch must stop the run.
    fake = Path(stand_ins["PATH"].split(":")[0]) / "curl"
    fake.write_text(fake.read_text().replace("swagger-ui", "something-else"))
    proc = run_script(stand_ins, "up")
    assert proc.returncode == 1
    assert "check failed: the Swagger UI page is served" in proc.stderr
    assert "FAILED at step [12]" in proc.stderr


def test_preflight_names_a_missing_tool(stand_ins: dict[str, str]) -> None:
    os.remove(Path(stand_ins["PATH"].split(":")[0]) / "kubectl")
    env = {**stand_ins, "PATH": stand_ins["PATH"].replace(":/usr/bin:/bin", ":/nonexistent")}
    proc = subprocess.run(
        ["/bin/bash", str(REPO / "scripts" / "e2e.sh"), "up"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "e2e: 'kubectl' is not installed or not on PATH"
    assert calls(stand_ins) == []


def test_preflight_wants_the_pinned_kind_or_go_to_install_it(stand_ins: dict[str, str]) -> None:
    fake = Path(stand_ins["PATH"].split(":")[0]) / "kind"
    fake.write_text(fake.read_text().replace("kind v0.30.0 go1.24.6", "kind v0.33.0 go1.25.3"))
    assert not any((Path(d) / "go").exists() for d in stand_ins["PATH"].split(":")), "this test needs Go off PATH"
    proc = run_script(stand_ins, "up")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == "e2e: needs kind v0.30.0 (found: kind v0.33.0 go1.25.3 linux/amd64), or Go to install it"
    )
    assert calls(stand_ins) == ["kind version"]


def test_images_script_builds_both_images_from_the_repo_root(stand_ins: dict[str, str]) -> None:
    dry = run_script(stand_ins, script="images.sh", E2E_DRY_RUN="1")
    assert dry.returncode == 0 and calls(stand_ins) == []
    assert printed(dry.stdout) == [
        "docker build -f adapter/Dockerfile -t ghcr.io/service-builder/adapter:0.1.0 .",
        "docker build -f custom_predictor/Dockerfile --target base -t ghcr.io/service-builder/custom-predictor:0.1.0 .",
        "docker build -f custom_predictor/Dockerfile --target pytorch -t"
        " ghcr.io/service-builder/custom-predictor-pytorch:0.1.0 .",
    ]
    # The defaults are the names the manifests and the adapter use.
    from adapter.settings import AdapterSettings

    assert AdapterSettings.model_fields["predictor_image"].default == "ghcr.io/service-builder/custom-predictor:0.1.0"
    kustomization = (REPO / "deploy" / "base" / "kustomization.yaml").read_text()
    assert "newName: ghcr.io/service-builder/adapter\n    newTag: 0.1.0" in kustomization
    proc = run_script(
        stand_ins, script="images.sh", CONTAINER_TOOL="docker", ADAPTER_IMAGE="a:1", PREDICTOR_IMAGE="reg:5000/p:1"
    )
    assert proc.returncode == 0
    assert calls(stand_ins) == [
        "docker build -f adapter/Dockerfile -t a:1 .",
        "docker build -f custom_predictor/Dockerfile --target base -t reg:5000/p:1 .",
        "docker build -f custom_predictor/Dockerfile --target pytorch -t reg:5000/p-pytorch:1 .",
    ]
    # The name is the one the adapter's default catalog derives from PREDICTOR_IMAGE.
    from adapter.images import pytorch_variant

    assert pytorch_variant("reg:5000/p:1") == "reg:5000/p-pytorch:1"


def test_images_script_stops_at_the_first_failing_build(stand_ins: dict[str, str]) -> None:
    proc = run_script(stand_ins, script="images.sh", FAKE_FAIL_MATCH="--target base")
    assert proc.returncode != 0
    assert "stand-in failure: docker build -f custom_predictor/Dockerfile --target base" in proc.stderr
    assert not any("--target pytorch" in c for c in calls(stand_ins)), "nothing after the failing build may run"


def test_images_script_picks_podman_when_no_docker_engine_answers(stand_ins: dict[str, str], tmp_path: Path) -> None:
    """No CONTAINER_TOOL, `docker info` fails (a CLI without an engine): podman builds, told each Dockerfile's own
    .dockerignore, rlimits within the hard limits and the host's network; a failed build names the stand-in."""
    podman = tmp_path / "bin" / "podman"
    podman.write_text(FAKE)
    podman.chmod(0o755)
    proc = run_script(
        stand_ins, script="images.sh", FAKE_FAIL_MATCH="docker info", PYTORCH_IMAGE="", ADAPTER_IMAGE="a:1"
    )
    assert proc.returncode == 0, proc.stderr
    made = calls(stand_ins)
    assert made[0] == "docker info"
    flags = r"--ulimit=nofile=\d+:\d+ --ulimit=nproc=\d+:\d+ --network=host"
    assert re.fullmatch(
        rf"podman build --ignorefile adapter/Dockerfile.dockerignore {flags} -f adapter/Dockerfile -t a:1 \.", made[1]
    ), made[1]
    assert re.fullmatch(
        rf"podman build --ignorefile custom_predictor/Dockerfile.dockerignore {flags} -f custom_predictor/Dockerfile"
        r" --target base -t ghcr.io/service-builder/custom-predictor:0.1.0 \.",
        made[2],
    ), made[2]
    assert len(made) == 3
    failed = run_script(stand_ins, script="images.sh", FAKE_FAIL_MATCH="podman build", CONTAINER_TOOL="podman")
    assert failed.returncode == 1
    assert "make base-image (scripts/base-image.sh)" in failed.stderr
