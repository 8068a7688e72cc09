"""The node for real: our predictor image runs as a pod on a real kubelet (containerd, runc, the CNI bridge),
locked down as the InferenceService template runs it, serves a model from MLflow and answers on its pod address;
a model it cannot serve ends the container with the predictor's one line as the kubelet's termination message.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import pods
from tests.cluster.node import Node
from tests.controlplane.plane import ControlPlane
from tests.images.containers import Images
from tests.predictor import flavors, models
from tests.servers import MlflowServer

# Session setup (images, control plane, node, images into containerd) counts against the first test: 40 min.
pytestmark = pytest.mark.timeout(2400)


def predictor_pod(name: str, image: str, env: dict[str, str]) -> dict[str, Any]:
    """A pod with the template's container settings: read-only root, no capabilities, /tmp an emptyDir."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "kserve-container",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "env": [{"name": k, "value": v} for k, v in {"PORT": "8080", **env}.items()],
                    "ports": [{"containerPort": 8080}],
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": 8080}, "periodSeconds": 1},
                    "securityContext": {
                        "runAsNonRoot": True,
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "256Mi"}}],
        },
    }


def test_our_predictor_image_serves_as_a_pod(
    node: Node, cluster_plane: ControlPlane, images: Images, node_mlflow: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    mlflow.set_tracking_uri(node_mlflow.url)
    mlflow.set_registry_uri(node_mlflow.url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", node_mlflow.url)
    uri = flavors.log(flavors.save_sklearn, "node-risk")
    ns = pods.namespace(cluster_plane, f"node-{uuid.uuid4().hex[:6]}")
    env = {"MODEL_URI": uri, "MLFLOW_TRACKING_URI": node_mlflow.url, "SERVICE_PATH": "node-risk"}
    doc = predictor_pod("risk", images.predictor, env)
    doc["metadata"]["namespace"] = ns
    cluster_plane.apply(doc)
    obj = pods.wait_pod(cluster_plane, ns, "risk", pods.ready)
    ip = obj["status"]["podIP"]
    assert ip.startswith("10.250.0.")
    row = dict.fromkeys(models.FEATURES, 1.0)
    request = urllib.request.Request(
        f"http://{ip}:8080/node-risk/api/v1/predict",
        data=json.dumps({"records": [row]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200 and len(json.loads(r.read())["predictions"]) == 1
    logs = cluster_plane.kubectl("logs", "-n", ns, "risk").stdout  # through the kubelet's own server
    assert "serving model=node-risk" in logs
    uid = cluster_plane.kubectl("exec", "-n", ns, "risk", "--", "id", "-u").stdout.strip()
    assert uid == "10001"


def test_a_model_it_cannot_serve_ends_with_the_predictors_line_as_termination_message(
    node: Node, cluster_plane: ControlPlane, images: Images, tmp_path: Path
) -> None:
    folder = flavors.save_torch(tmp_path / "m")
    ns = pods.namespace(cluster_plane, f"node-{uuid.uuid4().hex[:6]}")
    doc = predictor_pod(
        "torch", images.predictor, {"MODEL_URI": "/models/m", "MODEL_NAME": "risk", "MODEL_VERSION": "4"}
    )
    doc["metadata"]["namespace"] = ns
    container = doc["spec"]["containers"][0]
    container["volumeMounts"].append({"name": "model", "mountPath": "/models/m", "readOnly": True})
    doc["spec"]["volumes"].append({"name": "model", "hostPath": {"path": str(folder), "type": "Directory"}})
    # The predictor of this branch writes the file only when told (the template tells it).
    container["env"].append({"name": "TERMINATION_MESSAGE_PATH", "value": "/dev/termination-log"})
    cluster_plane.apply(doc)
    obj = pods.wait_pod(cluster_plane, ns, "torch", lambda o: pods.terminated(o) is not None)
    state = pods.terminated(obj)
    assert state is not None and state["exitCode"] == 2, state
    message = state["message"].strip()
    assert message.startswith("custom_predictor: model risk version 4 cannot be served: the model needs torch==")
    assert "\n" not in message and "PREDICTOR_IMAGES" in message
