"""Adapter benchmarks: pass cost over a large registry, and webhook latency from tag set to apply.

1. Pass cost: 200 models x 20 versions (4,000 versions), 10 of them production (5 by tag, 5 by alias),
   against a real `mlflow server` (sqlite) and the real control plane (kube-apiserver with the KServe
   controller, Knative played; tests/controlplane), the adapter using its ServiceAccount token through the
   counting proxy. Reports wall time and
   MLflow / Kubernetes call counts for a pass with everything to do (10 creates), the write-back pass
   once KServe reports ready, and a pass with nothing to do (median of 5).
2. Webhook latency: `service-builder run` with POLL_INTERVAL_SECONDS=600 and the receiver on; for 20
   trials, set the production tag on a fresh model and time until its InferenceService exists.

BENCH_QUICK=1 shrinks both (20 x 5 versions, 5 trials) for a smoke run. Loopback only, bounded.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes.client.exceptions import ApiException
from mlflow import MlflowClient

from adapter import naming
from adapter.kube import KubeCluster, api_client
from adapter.reconcile import Reconciler
from adapter.registry import MlflowRegistry
from adapter.settings import AdapterSettings
from tests.controlplane.fixtures import Namespace, new_namespace
from tests.controlplane.knative import Knative
from tests.controlplane.plane import ControlPlane, running
from tests.controlplane.proxy import FaultProxy
from tests.servers import free_port, mlflow_server, wait_http

QUICK = os.environ.get("BENCH_QUICK") == "1"
MODELS, VERSIONS, PRODUCTION, TRIALS = (20, 5, 4, 5) if QUICK else (200, 20, 10, 20)
SECRET = "bench-webhook-secret"


def _populate(client: MlflowClient) -> list[str]:
    names = [f"bench-model-{i:03d}" for i in range(MODELS)]

    def one(name: str) -> None:
        client.create_registered_model(name)
        for _ in range(VERSIONS):
            client.create_model_version(name, source="s3://bench/model", await_creation_for=0)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(one, names))
    prod = names[:PRODUCTION]
    for i, name in enumerate(prod):
        if i % 2:
            client.set_registered_model_alias(name, "production", str(VERSIONS))
        else:
            client.set_model_version_tag(name, str(VERSIONS - 1), "stage", "production")
    return prod


def _pass(rec: Reconciler, kube: FaultProxy) -> tuple[float, int, int, int]:
    registry = rec.registry
    assert isinstance(registry, MlflowRegistry)
    before = sum(registry.calls.values())
    kube.reset_log()
    t0 = time.perf_counter()
    result = rec.run_pass()
    elapsed = time.perf_counter() - t0
    assert result.ok, result.error
    return elapsed, sum(registry.calls.values()) - before, kube.count(), kube.count(writes_only=True)


def bench_pass_cost(url: str, plane: ControlPlane) -> list[str]:
    client = MlflowClient(url, registry_uri=url)
    t0 = time.perf_counter()
    prod = _populate(client)
    setup = time.perf_counter() - t0
    rows = []
    admin = plane.api_client()
    ns = new_namespace(plane, admin, prefix="bench")
    with FaultProxy(plane.url, plane.ca) as kube:
        s = AdapterSettings(
            mlflow_tracking_uri=url, k8s_api=kube.url, k8s_api_key=ns.token, k8s_name_space=ns.name, deploy_stage=""
        )
        reg = MlflowRegistry(url, tag_key=s.tag_key, tag_value=s.tag_value)
        rec = Reconciler(s, reg, KubeCluster(api_client(s), ns.name, s.field_manager))
        t, m, k, w = _pass(rec, kube)
        rows.append(f"| everything to do ({len(prod)} creates) | {t * 1000:.0f} ms | {m} | {k} | {w} |")
        knative = Knative(admin)
        for name in prod:
            knative.play(ns.name, naming.isvc_name(name), "ready")  # returns once KServe reports it
        t, m, k, w = _pass(rec, kube)
        rows.append(f"| write-back after ready ({len(prod)} models) | {t * 1000:.0f} ms | {m} | {k} | {w} |")
        runs = [_pass(rec, kube) for _ in range(5)]
        t = statistics.median(r[0] for r in runs)
        m, k, w = runs[-1][1:]
        rows.append(f"| nothing to do (median of 5) | {t * 1000:.0f} ms | {m} | {k} | {w} |")
    head = [
        f"Registry: {MODELS} models x {VERSIONS} versions ({MODELS * VERSIONS}), {PRODUCTION} production "
        f"(populated in {setup:.0f} s).",
        "",
        "| pass | time | MLflow calls | Kubernetes calls | Kubernetes writes |",
        "|---|---|---|---|---|",
    ]
    return head + rows


def bench_webhook_latency(url: str, tmp: Path, plane: ControlPlane) -> list[str]:
    client = MlflowClient(url, registry_uri=url)
    port = free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/mlflow"
    names = [f"bench-hook-{i:02d}" for i in range(TRIALS)]
    admin = plane.api_client()
    ns: Namespace = new_namespace(plane, admin, prefix="bench")
    objects = client.CustomObjectsApi(admin)

    def exists(isvc: str) -> bool:
        try:
            objects.get_namespaced_custom_object("serving.kserve.io", "v1beta1", ns.name, "inferenceservices", isvc)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    if True:
        env = dict(
            os.environ,
            MLFLOW_TRACKING_URI=url,
            K8S_API=plane.url,
            K8S_API_KEY=ns.token,
            K8S_CA_FILE=str(plane.ca),
            K8S_NAME_SPACE=ns.name,
            MODEL_NAME_LIKE="bench-hook-%",
            POLL_INTERVAL_SECONDS="600",
            WEBHOOK_HOST="127.0.0.1",
            WEBHOOK_PORT=str(port),
            MLFLOW_WEBHOOK_SECRET=SECRET,
            LOG_LEVEL="WARNING",
        )
        subprocess.run(
            [sys.executable, "-m", "adapter", "webhook", "register", "--url", hook],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        for name in names:
            client.create_registered_model(name)
            client.create_model_version(name, source="s3://bench/model", await_creation_for=0)
        with open(tmp / "run.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "adapter", "run"], env=env, stderr=log)
        latencies = []
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
            time.sleep(2.0)  # let the first poll finish: from here on only webhooks can trigger
            for name in names:
                isvc = naming.isvc_name(name)
                t0 = time.perf_counter()
                client.set_model_version_tag(name, "1", "stage", "production")
                deadline = t0 + 30
                while not exists(isvc) and time.perf_counter() < deadline:
                    time.sleep(0.01)
                assert exists(isvc), f"{name}: no apply in 30 s"
                latencies.append(time.perf_counter() - t0)
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    latencies.sort()
    p50 = statistics.median(latencies)
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    verdict = "PASS" if p50 < 3.0 else "FAIL"
    return [
        f"Webhook latency, tag set to InferenceService applied, POLL_INTERVAL_SECONDS=600, {TRIALS} trials:",
        "",
        "| p50 | p95 | max | goal p50 < 3 s |",
        "|---|---|---|---|",
        f"| {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms | {latencies[-1] * 1000:.0f} ms | {verdict} |",
    ]


def main() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp) / "controlplane") as plane:
        with mlflow_server(Path(tmp) / "mlflow") as server:
            lines = ["## Adapter", "", *bench_pass_cost(server.url, plane), ""]
        with mlflow_server(Path(tmp) / "mlflow-hooks") as server:
            lines += [*bench_webhook_latency(server.url, Path(tmp), plane), ""]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
