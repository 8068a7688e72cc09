"""Cluster benchmark: how long a model pod takes from creation until it serves, on the real node of the cluster
tier (tests/cluster: kubelet, containerd, runc, the CNI bridge), our predictor image beside KServe's own MLflow
runtime (MLServer with `mlserver-mlflow`, what the `kserve-mlserver` ClusterServingRuntime runs for
`modelFormat: mlflow`), its image built here from PyPI on the same base (tests/bench/mlserver/Dockerfile).

Same scikit-learn model (a folder on the node, mounted read-only where each runtime expects it: KServe's storage
initializer would have put it there), same node, one run; both images are in containerd before the clock starts.
Each figure is the median of `RUNS`: from a bare pod's creation (the apply) until its `/v2/health/ready` first
answers 200 on the pod's address, polled every 50 ms from the host (the kubelet's probe period would round it up
to a second); and, with Knative Serving running (tests/cluster/knative.py), from one request to a Knative Service
scaled to zero, sent to the activator as the ingress sends it, until its 200.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.images.containers import built, run_flags

ROOT = Path(__file__).resolve().parents[2]
MLSERVER_IMAGE = "kind.local/mlserver-mlflow:bench"
RUNS = 5


def _mlserver_image(tool: str, log: Path) -> None:
    argv = [tool, "build"]
    if tool == "podman":
        argv += ["--ignorefile", "tests/bench/mlserver/Dockerfile.dockerignore", *run_flags(tool)]
    argv += ["-f", "tests/bench/mlserver/Dockerfile", "-t", MLSERVER_IMAGE, "."]
    with log.open("ab") as out:
        subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)


def _pod(name: str, image: str, folder: Path, mount: str, env: dict[str, str]) -> dict[str, Any]:
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
                    "env": [{"name": k, "value": v} for k, v in env.items()],
                    "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
                    "volumeMounts": [
                        {"name": "model", "mountPath": mount, "readOnly": True},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "model", "hostPath": {"path": str(folder), "type": "Directory"}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def _time_to_serving(plane: Any, namespace: str, doc: dict[str, Any], timeout: float = 300) -> float:
    doc["metadata"]["namespace"] = namespace
    name = doc["metadata"]["name"]
    start = time.monotonic()
    plane.apply(doc)
    ip = ""
    deadline = start + timeout
    while time.monotonic() < deadline:
        if not ip:
            status = json.loads(plane.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout)["status"]
            ip = status.get("podIP", "")
        if ip:
            try:
                with urllib.request.urlopen(f"http://{ip}:8080/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        took = time.monotonic() - start
                        plane.kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
                        return took
            except OSError:
                pass
        time.sleep(0.05)
    logs = plane.kubectl("logs", name, "-n", namespace, check=False).stdout[-2000:]
    raise TimeoutError(f"{name} did not serve within {timeout}s:\n{logs}")


def _ksvc(name: str, image: str, folder: Path, env: dict[str, str]) -> dict[str, Any]:
    pod = _pod(name, image, folder, "/mnt/models", env)["spec"]
    container = pod["containers"][0]
    container.pop("name")
    container.pop("imagePullPolicy")
    container["ports"] = [{"containerPort": 8080}]
    container["readinessProbe"] = {"httpGet": {"path": "/v2/health/ready"}}
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [container], "volumes": pod["volumes"]}}},
    }


def _cold_starts(plane: Any, namespace: str, doc: dict[str, Any], activator: str) -> list[float]:
    """Create the Knative Service; RUNS times: wait until it has scaled to zero, then time one request through the
    activator (as the ingress sends it) until its 200."""
    doc["metadata"]["namespace"] = namespace
    name = doc["metadata"]["name"]
    plane.apply(doc)
    deadline = time.monotonic() + 300
    revision = ""
    while not revision:
        out = json.loads(plane.kubectl("get", "ksvc", name, "-n", namespace, "-o", "json").stdout)
        revision = (out.get("status") or {}).get("latestReadyRevisionName", "")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: no ready revision: {out.get('status')}")
        time.sleep(1)
    headers = {
        "Host": f"{name}.{namespace}.example.com",
        "Knative-Serving-Namespace": namespace,
        "Knative-Serving-Revision": revision,
    }
    took = []
    for _ in range(RUNS):
        deadline = time.monotonic() + 300
        selector = f"serving.knative.dev/revision={revision}"
        while plane.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "name").stdout.strip():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not scale to zero")
            time.sleep(0.5)
        start = time.monotonic()
        request = urllib.request.Request(f"http://{activator}:8012/v2/health/ready", headers=headers)
        with urllib.request.urlopen(request, timeout=300) as r:
            assert r.status == 200
        took.append(time.monotonic() - start)
    plane.kubectl("delete", "ksvc", name, "-n", namespace)
    return took


def _table(title: str, results: dict[str, list[float]]) -> list[str]:
    ours = statistics.median(results["service-builder predictor"])
    lines = [f"| runtime | {title}, median | min | max | vs ours |", "| --- | --- | --- | --- | --- |"]
    for label, values in results.items():
        median = statistics.median(values)
        lines.append(f"| {label} | {median:.2f} s | {min(values):.2f} s | {max(values):.2f} s | {median / ours:.2f}x |")
    return lines


def main() -> list[str]:
    from tests.cluster import pods
    from tests.cluster.host import RUN_PREFIX
    from tests.cluster.knative import KnativeServing
    from tests.cluster.node import NODE_IP
    from tests.cluster.node import running as node_running
    from tests.controlplane.build import ensure_knative, ensure_node
    from tests.controlplane.plane import running as plane_running
    from tests.predictor import flavors

    lines = ["### Cluster: pod creation to serving, and cold start from zero through Knative (real node)", ""]
    if os.geteuid() != 0 or shutil.which("containerd") is None:
        lines.append("skipped: needs root, containerd, runc and the CNI plugins (.ci/install-containers)")
        print("\n".join(lines), flush=True)
        return lines
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        images = built(tmp / "images.log")
        _mlserver_image(images.tool, tmp / "images.log")
        folder = flavors.save_sklearn(tmp / "model")
        folder.chmod(0o755)
        paths = ensure_node()
        root = Path(f"{RUN_PREFIX}bench-{os.getpid()}")
        root.mkdir()
        with plane_running(tmp / "plane", node_ip=NODE_IP) as plane, node_running(root, plane, paths) as node:
            for image in (images.predictor, MLSERVER_IMAGE):
                node.load_image(images.tool, image)
            ns = pods.namespace(plane, f"bench-{uuid.uuid4().hex[:6]}")
            runtimes = {
                "service-builder predictor": lambda n: _pod(
                    n, images.predictor, folder, "/mnt/models", {"MODEL_URI": "/mnt/models", "SERVICE_PATH": "m"}
                ),
                "MLServer + mlserver-mlflow (kserve-mlserver)": lambda n: _pod(
                    n, MLSERVER_IMAGE, folder, "/mnt/models", {}
                ),
            }
            results: dict[str, list[float]] = {}
            for label, make in runtimes.items():
                _time_to_serving(plane, ns, make(f"warmup-{uuid.uuid4().hex[:6]}"))  # page cache, image layers
                results[label] = [_time_to_serving(plane, ns, make(f"p-{uuid.uuid4().hex[:6]}")) for _ in range(RUNS)]
            KnativeServing(plane, node, ensure_knative()).install()
            plane.kubectl(
                "patch",
                "configmap",
                "config-features",
                "-n",
                "knative-serving",
                "--type=merge",
                "-p",
                '{"data":{"kubernetes.podspec-volumes-hostpath":"enabled"}}',
            )  # the model folder on the node, as for the pods above (KServe's storage initializer in a cluster)
            activator = json.loads(
                plane.kubectl("get", "pods", "-n", "knative-serving", "-l", "app=activator", "-o", "json").stdout
            )["items"][0]["status"]["podIP"]
            cold: dict[str, list[float]] = {}
            for label, image, env in (
                ("service-builder predictor", images.predictor, {"MODEL_URI": "/mnt/models", "SERVICE_PATH": "m"}),
                ("MLServer + mlserver-mlflow (kserve-mlserver)", MLSERVER_IMAGE, {}),
            ):
                doc = _ksvc(f"cold-{uuid.uuid4().hex[:6]}", image, folder, env)
                cold[label] = _cold_starts(plane, ns, doc, activator)
        if not any(line.split()[4].startswith(str(root)) for line in Path("/proc/self/mountinfo").open()):
            shutil.rmtree(root, ignore_errors=True)
    lines += [
        f"Median of {RUNS} each, after one warm-up pod; same model (scikit-learn), same node, one run. Pod creation to"
        " serving: a bare pod, its `/v2/health/ready` polled from the host every 50 ms. Cold start: a Knative"
        " Service scaled to zero, one request through the activator (as the ingress sends it) until its 200.",
        "",
        *_table("pod creation to serving", results),
        "",
        *_table("first request after scale to zero", cold),
    ]
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    main()
