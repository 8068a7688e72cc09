"""`service-builder` as users run it: real processes against real MLflow and the real control plane, with the
adapter's ServiceAccount token."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from adapter import naming
from tests.adapter import crd
from tests.adapter.conftest import World
from tests.servers import free_port, sample, scrape, wait_http

PLANTED = "planted-SECRET-9f8e7d"


def env_for(world: World, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "K8S_", "AWS_", "DEPLOY_"))}
    env.update(
        MLFLOW_TRACKING_URI=world.settings.mlflow_tracking_uri,
        K8S_API=world.kube.url,
        K8S_API_KEY=world.settings.k8s_api_key.get_secret_value(),
        K8S_NAME_SPACE=world.ns,
        MODEL_NAME_LIKE=world.settings.model_name_like,
        PREDICTOR_IMAGE="kind.local/custom-predictor:dev",
        PREDICTOR_SECRET_NAME="mlflow-s3",
        AWS_ACCESS_KEY_ID="planted-key-id",
        AWS_SECRET_ACCESS_KEY=PLANTED,
        PREDICTOR_API_KEY=f"sbk_{PLANTED}",  # the plugin's `predict` credentials: in no manifest, tag or log
        PREDICTOR_TOKEN=f"token-{PLANTED}",
        LOG_LEVEL="DEBUG",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
    )
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adapter", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_render_needs_neither_cluster_nor_mlflow() -> None:
    env = {"PATH": os.environ["PATH"], "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "K8S_API": "http://127.0.0.1:9"}
    p = cli("render", "--model", "Breast Cancer_Risk", "--version", "3", env=env)
    assert p.returncode == 0, p.stderr
    doc = yaml.safe_load(p.stdout)
    assert crd.errors(doc) == []
    assert doc["metadata"]["name"] == naming.isvc_name("Breast Cancer_Risk")
    bad = cli("render", "--model", "m", "--version", "x; rm -rf /", env=env)
    assert bad.returncode != 0 and "--version must be a version number" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_invalid_configuration_is_one_clear_line() -> None:
    env = {"PATH": os.environ["PATH"], "POLL_INTERVAL_SECONDS": "soon", "K8S_NAME_SPACE": "Bad_NS"}
    p = cli("sync", env=env)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "POLL_INTERVAL_SECONDS" in p.stderr and "K8S_NAME_SPACE" in p.stderr


def test_sync_status_and_no_secret_anywhere(world: World) -> None:
    name = world.model("Patient Risk", stage="production")
    env = env_for(world)
    p = cli("sync", env=env)
    assert p.returncode == 0, p.stderr
    isvc = naming.isvc_name(name)
    assert "action=created" in p.stderr and f"isvc={world.ns}/{isvc}" in p.stderr
    world.play(isvc, "ready")
    p2 = cli("sync", env=env)
    assert p2.returncode == 0, p2.stderr
    status = cli("status", env=env)
    assert status.returncode == 0, status.stderr
    header, row = status.stdout.splitlines()[:2]
    assert header.split() == ["MODEL", "VERSION", "INFERENCESERVICE", "STATUS", "URL", "AGE"]
    assert name in row and f"{world.ns}/{isvc}" in row and " ready " in row and "example.com" in row
    # The planted secret is in no manifest, tag or log line.
    # ... nor in what KServe rendered from it (the Knative Service).
    ksvc = world.knative.service(world.ns, isvc)
    manifests = (
        yaml.safe_dump(world.isvcs()) + yaml.safe_dump(ksvc) + yaml.safe_dump(world.events(), default_flow_style=False)
    )
    tags = str(world.tags(name, 1)) + str(world.mlflow.get_registered_model(name).tags)
    for text in (manifests, tags, p.stderr, p2.stderr, status.stdout, status.stderr):
        assert PLANTED not in text and "planted-key-id" not in text
    assert "secretKeyRef" in manifests and "mlflow-s3" in yaml.safe_dump(ksvc["spec"])


def test_sync_exit_code_when_mlflow_is_down(world: World) -> None:
    p = cli("sync", env=env_for(world, MLFLOW_TRACKING_URI="http://127.0.0.1:9"))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "unreachable" in p.stderr


def test_run_keeps_going_and_stops_cleanly_on_sigterm(world: World) -> None:
    name = world.model("looped", stage="production")
    port = free_port()
    env = env_for(world, POLL_INTERVAL_SECONDS="0.5", WEBHOOK_PORT=str(port), WEBHOOK_HOST="127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-m", "adapter", "run"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while world.isvc(naming.isvc_name(name)) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert world.isvc(naming.isvc_name(name)) is not None
        # No MLFLOW_WEBHOOK_SECRET: probes and metrics still answer, deliveries are refused, saying why.
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=10)
        forged = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/mlflow", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=5)
        assert refused.value.code == 403
        assert "MLFLOW_WEBHOOK_SECRET is not set" in json.loads(refused.value.read())["reason"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert json.loads(r.read()) == {"status": "ready", "leader": True}
        the_list = re.compile(re.escape(world.isvc_path) + "$")  # a full pass's list (not a watch, not one get)
        world.kube.inject("GET", the_list, status=503, times=3, watch=False)  # a bad moment on the API server
        time.sleep(1.5)
        m = scrape(f"http://127.0.0.1:{port}/metrics")
        assert sample(m, "service_builder_passes_total", result="skipped") >= 1
        assert sample(m, "service_builder_passes_total", result="ok") >= 1
        assert sample(m, "service_builder_api_errors_total", system="kubernetes", kind="list_inferenceservices") >= 1
        assert sample(m, "service_builder_api_calls_total", system="mlflow", kind="search_registered_models") >= 2
        assert sample(m, "service_builder_api_calls_total", system="kubernetes", kind="apply_inferenceservice") >= 1
        assert sample(m, "service_builder_webhook_deliveries_total", result="rejected") == 1
        assert sample(m, "service_builder_leader") == 1
        passes = sum(sample(m, "service_builder_passes_total", result=r) for r in ("ok", "skipped", "error"))
        # (one pass may end between the two series' collection)
        assert abs(sample(m, "service_builder_pass_duration_seconds_count") - passes) <= 1
        assert time.time() - 60 < sample(m, "service_builder_last_successful_pass_timestamp_seconds") <= time.time()
        world.play(naming.isvc_name(name), "ready")
        while world.tags(name, 1).get("deployment.status") != "ready" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert world.tags(name, 1)["deployment.status"] == "ready"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
    assert "Stopped" in err and "Traceback" not in err
    assert "Pass skipped" in err


def test_sync_exits_2_when_the_cluster_refuses_an_apply(world: World, tmp_path) -> None:
    """KServe's validating webhook refuses the manifest: `sync` says why, records `error`, exits 2."""
    template = yaml.safe_load(world.settings.template_path.read_text())
    template["spec"]["predictor"].update(minReplicas=5, maxReplicas=2)
    path = tmp_path / "inferenceservice.yaml"
    path.write_text(yaml.safe_dump(template))
    name = world.model("refused", stage="production")
    p = cli("sync", env=env_for(world, TEMPLATE_PATH=str(path)))
    assert p.returncode == 2, p.stderr
    assert "Cannot deploy" in p.stderr and "cannot be greater than MaxReplicas" in p.stderr
    assert "Traceback" not in p.stderr
    assert world.tags(name, 1)["deployment.status"] == "failed"
    assert world.isvc(naming.isvc_name(name)) is None
