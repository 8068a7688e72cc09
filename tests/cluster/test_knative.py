"""The serving path for real, from the registry to a pod and back to zero: a model marked production in MLflow, the
adapter (`service-builder sync`), the real KServe controller, Knative Serving's controller, autoscaler and activator
as pods, queue-proxy in front of our predictor image in a real pod on a real kubelet. Only the ingress is played
(`ingress.py`: routing by host and split as the KIngress says; Envoy is not available here).

Observed: MLflow shows `ready`, the URL and a `model_endpoint` whose Swagger UI loads in Chromium through the
Knative route and answers "Try it out"; with no traffic the revision scales to zero (no pod left); the next request
wakes it through the activator and gets 200; a retired model's pods are gone; a second version with a 50 % canary
really splits the answers on one URL; a model that cannot be served fails its revision with the predictor's line
from the kubelet's termination message, and MLflow shows `failed`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.ingress import RouteIngress
from tests.cluster.node import Node
from tests.controlplane.fixtures import new_namespace
from tests.controlplane.plane import ControlPlane
from tests.images.containers import Images
from tests.predictor import flavors, models
from tests.servers import MlflowServer

pytestmark = pytest.mark.timeout(2400)


def _keys(plane: ControlPlane, ns: Any, model: str) -> str:
    """An API key for the model's predictors: its hashed entry in the Secret the InferenceService mounts (the
    platform's auth here is `apikey`: pods of this node cannot reach the API server's Service for RBAC)."""
    from adapter import naming
    from custom_predictor.auth.apikeys import generate

    key, line = generate("cluster-tests")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": f"{naming.isvc_name(model)}-api-keys", "namespace": ns.name},
        "stringData": {"keys": line + "\n"},
    }
    plane.apply(secret)
    return key


def _sync(plane: ControlPlane, ns: Any, mlflow_url: str, image: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "K8S_", "AWS_", "DEPLOY_", "PREDICTOR_"))
    }
    env.update(
        PREDICTOR_AUTH="apikey",  # the Secret `_keys` writes, mounted by the kubelet
        MLFLOW_TRACKING_URI=mlflow_url,
        PREDICTOR_TRACKING_URI=mlflow_url,  # the node's bridge address: pods reach it too
        K8S_API=plane.url,
        K8S_API_KEY=ns.token,
        K8S_CA_FILE=str(plane.ca),
        K8S_NAME_SPACE=ns.name,
        PREDICTOR_IMAGE=image,
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return subprocess.run(
        [sys.executable, "-m", "adapter", "sync"], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _tags(name: str, version: str) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient().get_model_version(name, version).tags)


def _until_tagged(
    plane: ControlPlane, ns: Any, mlflow_url: str, image: str, name: str, version: str, want: str, timeout: float = 400
) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        out = _sync(plane, ns, mlflow_url, image)
        last = out.stderr[-2000:]
        tags = _tags(name, version)
        if tags.get("deployment.status") == want:
            return tags
        time.sleep(3)
    pods = plane.kubectl("get", "pods,ksvc,revision,ingresses.networking.internal.knative.dev", "-n", ns.name).stdout
    raise TimeoutError(f"{name} v{version} not {want} in {timeout}s: {_tags(name, version)}\n{last}\n{pods}")


def _through_route(
    ingress: RouteIngress, url: str, body: dict[str, Any] | None = None, key: str = ""
) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Host": parts.netloc, **({"X-API-Key": key} if key else {})}
    request = urllib.request.Request(f"{ingress.url}{parts.path}", data=data, headers=headers)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=180) as r:
        return r.status, r.read()


CHROMIUM = Path("/usr/bin/chromium")


def _swagger_try_it_out(ingress: RouteIngress, endpoint: str, key: str) -> str:
    """Debian's Chromium (playwright), the test ingress as its proxy: open the Swagger page at the route's own URL,
    give the API key in "Authorize", "Try it out" and "Execute" on the predict operation; returns the status the
    page shows."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run .ci/install-browser (apt-get install chromium)"
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=flags, proxy={"server": ingress.url})
        try:
            page = browser.new_page()
            page.goto(endpoint, wait_until="networkidle", timeout=120_000)
            page.locator("button.authorize").first.click()
            page.locator(".auth-container form").filter(has_text="apiKey (apiKey)").locator("input").first.fill(key)
            page.locator(".auth-container form").filter(has_text="apiKey (apiKey)").locator("button.authorize").click()
            page.locator("button.btn-done").first.click()
            block = page.locator("#operations-predict-predict")
            block.locator(".opblock-summary").click()
            block.locator("button.try-out__btn").click()
            block.locator("button.execute").click()
            status = block.locator(".live-responses-table tr.response .response-col_status").first
            status.wait_for(timeout=120_000)
            return str(status.inner_text().strip())
        finally:
            browser.close()


def _revision_pods(plane: ControlPlane, namespace: str) -> list[str]:
    out = plane.kubectl("get", "pods", "-n", namespace, "-l", "serving.knative.dev/revision", "-o", "json").stdout
    return [p["metadata"]["name"] for p in json.loads(out)["items"]]


def _wait_pods(plane: ControlPlane, namespace: str, want_none: bool, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (not _revision_pods(plane, namespace)) == want_none:
            return
        time.sleep(1)
    raise TimeoutError(f"pods in {namespace}: {_revision_pods(plane, namespace)} (want none: {want_none})")


def test_a_production_model_serves_through_knative_scales_to_zero_wakes_and_retires(
    knative_serving: RouteIngress,
    node: Node,
    cluster_plane: ControlPlane,
    images: Images,
    node_mlflow: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", node_mlflow.url)
    mlflow.set_tracking_uri(node_mlflow.url)
    mlflow.set_registry_uri(node_mlflow.url)
    api = cluster_plane.api_client()
    try:
        ns = new_namespace(cluster_plane, api, prefix="kn")
    finally:
        api.close()
    flavors.log(flavors.save_sklearn, "kn-risk")
    MlflowClient().set_registered_model_alias("kn-risk", "production", "1")
    key = _keys(cluster_plane, ns, "kn-risk")

    tags = _until_tagged(cluster_plane, ns, node_mlflow.url, images.predictor, "kn-risk", "1", "ready")
    endpoint = tags["model_endpoint"]
    assert endpoint.startswith(tags["deployment.url"]) and ".example.com" in endpoint
    status, page = _through_route(knative_serving, endpoint)
    assert status == 200 and b"swagger-ui" in page
    assert _swagger_try_it_out(knative_serving, endpoint, key) == "200"
    row = dict.fromkeys(models.FEATURES, 1.0)
    with pytest.raises(urllib.error.HTTPError) as refused:  # no key, no prediction, through the route too
        _through_route(knative_serving, endpoint.rstrip("/") + "/v1/predict", {"records": [row]})
    assert refused.value.code == 401
    status, answer = _through_route(knative_serving, endpoint.rstrip("/") + "/v1/predict", {"records": [row]}, key)
    assert status == 200 and len(json.loads(answer)["predictions"]) == 1

    # No traffic: Knative scales the revision to zero, no pod is left.
    _wait_pods(cluster_plane, ns.name, want_none=True)
    # The next request is held by the activator until a new pod is ready, and answers 200.
    status, answer = _through_route(knative_serving, endpoint.rstrip("/") + "/v1/predict", {"records": [row]}, key)
    assert status == 200 and len(json.loads(answer)["predictions"]) == 1
    assert _revision_pods(cluster_plane, ns.name)

    # Retired: the marker removed, the adapter deletes the InferenceService, and the pods go.
    MlflowClient().delete_registered_model_alias("kn-risk", "production")
    deadline = time.monotonic() + 240
    while cluster_plane.kubectl("get", "inferenceservices", "-n", ns.name, "-o", "name").stdout.strip():
        assert time.monotonic() < deadline, "the InferenceService was not deleted"
        _sync(cluster_plane, ns, node_mlflow.url, images.predictor)
        time.sleep(2)
    _wait_pods(cluster_plane, ns.name, want_none=True)


def test_a_second_version_rolls_out_on_the_same_url_with_a_real_canary_split(
    knative_serving: RouteIngress,
    node: Node,
    cluster_plane: ControlPlane,
    images: Images,
    node_mlflow: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", node_mlflow.url)
    mlflow.set_tracking_uri(node_mlflow.url)
    mlflow.set_registry_uri(node_mlflow.url)
    api = cluster_plane.api_client()
    try:
        ns = new_namespace(cluster_plane, api, prefix="kn")
    finally:
        api.close()
    client = MlflowClient()
    flavors.log(flavors.save_sklearn, "kn-canary")
    flavors.log(flavors.save_sklearn, "kn-canary")
    client.set_registered_model_alias("kn-canary", "production", "1")
    key = _keys(cluster_plane, ns, "kn-canary")
    v1 = _until_tagged(cluster_plane, ns, node_mlflow.url, images.predictor, "kn-canary", "1", "ready")

    client.set_model_version_tag("kn-canary", "2", "serving.canary_percent", "50")
    client.set_registered_model_alias("kn-canary", "production", "2")
    deadline = time.monotonic() + 400
    while True:
        _sync(cluster_plane, ns, node_mlflow.url, images.predictor)
        v2 = _tags("kn-canary", "2")
        if v2.get("deployment.status") == "ready" and v2.get("deployment.traffic") == "v2:50% v1:50%":
            break
        assert time.monotonic() < deadline, f"no 50 % canary: {v2}"
        time.sleep(3)
    assert v2["deployment.url"] == v1["deployment.url"], "a new version keeps the URL"
    row = dict.fromkeys(models.FEATURES, 1.0)
    seen: dict[str, int] = {}
    predict = v2["model_endpoint"].rstrip("/") + "/v1/predict"
    for _ in range(40):
        status, answer = _through_route(knative_serving, predict, {"records": [row]}, key)
        assert status == 200
        version = str(json.loads(answer)["version"])
        seen[version] = seen.get(version, 0) + 1
    # Both revisions answer on the one URL (each with probability 1/2: missing one in 40 is 2 in 10^12).
    assert set(seen) == {"1", "2"}, seen


def _save_unreadable(path: Path) -> Path:
    """The scikit-learn model with its weights file overwritten: MLmodel and requirements are fine (the adapter
    deploys it), the predictor cannot load it."""
    folder = flavors.save_sklearn(path)
    (folder / "model.skops").write_bytes(b"not a skops archive")
    return folder


def test_a_model_that_cannot_be_served_fails_with_the_predictors_line_from_the_kubelet(
    knative_serving: RouteIngress,
    node: Node,
    cluster_plane: ControlPlane,
    images: Images,
    node_mlflow: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", node_mlflow.url)
    mlflow.set_tracking_uri(node_mlflow.url)
    mlflow.set_registry_uri(node_mlflow.url)
    api = cluster_plane.api_client()
    try:
        ns = new_namespace(cluster_plane, api, prefix="kn")
    finally:
        api.close()
    flavors.log(_save_unreadable, "kn-broken")
    MlflowClient().set_registered_model_alias("kn-broken", "production", "1")
    _until_tagged(cluster_plane, ns, node_mlflow.url, images.predictor, "kn-broken", "1", "failed")
    # The predictor's one line, as the kubelet read it from the container's termination message: Knative fails the
    # revision with it, KServe carries it into the InferenceService (PredictorConfigurationReady), and the adapter
    # writes it to deployment.message (before the route's "RevisionMissing" that PredictorReady may say).
    line = "custom_predictor: model kn-broken version 1 cannot be served"
    deadline = time.monotonic() + 300
    while True:
        isvc = json.loads(
            cluster_plane.kubectl("get", "inferenceservice", "kn-broken", "-n", ns.name, "-o", "json").stdout
        )
        conditions = {c["type"]: c for c in (isvc.get("status") or {}).get("conditions") or []}
        message = conditions.get("PredictorConfigurationReady", {}).get("message", "")
        if line in message:
            break
        assert time.monotonic() < deadline, conditions
        time.sleep(2)
    assert conditions["PredictorConfigurationReady"]["reason"] == "RevisionFailed"
    assert "Container failed with: " + line in message  # the line, as the kubelet kept it
    deadline = time.monotonic() + 120
    while line not in _tags("kn-broken", "1").get("deployment.message", ""):
        assert time.monotonic() < deadline, _tags("kn-broken", "1")
        _sync(cluster_plane, ns, node_mlflow.url, images.predictor)
        time.sleep(2)
    assert _tags("kn-broken", "1")["deployment.status"] == "failed"
