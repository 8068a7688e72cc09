"""Adapter benchmarks: pass cost over a large registry, this checkout side by side with an older one, and
webhook latency from tag set to apply.

1. Pass cost: 200 models x 20 versions (4,000 versions) per side, 10 of them production (5 by tag, 5 by alias),
   against one real `mlflow server` (sqlite, its default 4 workers) and the real control plane (kube-apiserver
   with the KServe controller, Knative played; tests/controlplane). Two adapters run the same passes over
   identical model sets (MODEL_NAME_LIKE keeps them apart), each in its own namespace with the ServiceAccount
   token, through its own counting proxy: this checkout, and the baseline commit BASELINE (the main before the
   planner), checked out with `git worktree` into a temporary folder and driven by tests/bench/pass_driver.py.
   Reports wall time, MLflow calls (the adapter's registry wrapper calls: the baseline's tag writes and version
   reads cost two HTTP requests each, MlflowClient's prompt check included) and Kubernetes calls for a pass
   with everything to do (10 creates), the write-back pass once KServe reports ready, and a pass with nothing
   to do (median of 5). Goal: the write-back pass at most a third of the baseline's.
2. Webhook latency: `service-builder run` with POLL_INTERVAL_SECONDS=600 and the receiver on; for 20
   trials, set the production tag on a fresh model and time until its InferenceService exists.

BENCH_QUICK=1 shrinks both (20 x 5 versions, 5 trials) for a smoke run. Loopback only, bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from mlflow import MlflowClient

from adapter import naming
from tests.controlplane.fixtures import Namespace, new_namespace
from tests.controlplane.knative import Knative
from tests.controlplane.plane import ControlPlane, running
from tests.controlplane.proxy import FaultProxy
from tests.servers import free_port, mlflow_server, wait_http

QUICK = os.environ.get("BENCH_QUICK") == "1"
MODELS, VERSIONS, PRODUCTION, TRIALS = (20, 5, 4, 5) if QUICK else (200, 20, 10, 20)
SECRET = "bench-webhook-secret"
REPO = Path(__file__).resolve().parents[2]
BASELINE = "cb3126d"  # main before the planner (issue 14): per-tag writes in sequence, bookkeeping in MLflow
DRIVER = Path(__file__).with_name("pass_driver.py")


def _populate(client: MlflowClient, prefix: str) -> list[str]:
    names = [f"{prefix}{i:03d}" for i in range(MODELS)]

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


@contextlib.contextmanager
def baseline_tree(tmp: Path, commit: str = BASELINE) -> Iterator[Path]:
    """A commit's files (the baseline's by default) in a temporary git worktree (removed afterwards)."""
    tree = tmp / f"baseline-{commit}"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit], check=True, capture_output=True
    )
    try:
        yield tree
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False, capture_output=True
        )


class Side:
    """One adapter (a tree) driven pass by pass, with its own namespace, model set and counting proxy."""

    def __init__(self, label: str, tree: Path, url: str, plane: ControlPlane, admin: Any, prefix: str) -> None:
        self.label, self.prefix = label, prefix
        self.ns = new_namespace(plane, admin, prefix="bench")
        self.proxy = FaultProxy(plane.url, plane.ca).start()
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "MLFLOW_TRACKING_URI": url,
            "K8S_API": self.proxy.url,
            "K8S_API_KEY": self.ns.token,
            "K8S_NAME_SPACE": self.ns.name,
            "MODEL_NAME_LIKE": f"{prefix}%",
            "DEPLOY_STAGE": "",
            "LOG_LEVEL": "WARNING",
        }
        # `-c` with the tree as working directory: nothing but that tree provides `adapter`.
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER.read_text()],
            cwd=tree,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        first = json.loads(self._line())
        assert first["adapter"].startswith(str(tree)), f"{label} imported {first['adapter']}, not {tree}"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} adapter driver exited with {self.proc.wait()}")
        return line

    def run(self) -> tuple[float, int, int, int]:
        assert self.proc.stdin is not None
        self.proxy.reset_log()
        self.proc.stdin.write("pass\n")
        self.proc.stdin.flush()
        out = json.loads(self._line())
        assert out["ok"], out["error"]
        return out["seconds"], out["mlflow_calls"], self.proxy.count(), self.proxy.count(writes_only=True)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proxy.stop()


def bench_pass_cost(url: str, plane: ControlPlane, tmp: Path) -> list[str]:
    mlflow = MlflowClient(url, registry_uri=url)
    admin = plane.api_client()
    knative = Knative(admin)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        prods = list(pool.map(lambda prefix: _populate(mlflow, prefix), ("bench-old-", "bench-new-")))
    setup = time.perf_counter() - t0
    rows: list[str] = []
    writeback: dict[str, float] = {}
    with baseline_tree(tmp) as old_tree:
        sides = [
            Side(f"baseline {BASELINE}", old_tree, url, plane, admin, "bench-old-"),
            Side("this checkout", REPO, url, plane, admin, "bench-new-"),
        ]
        try:
            for side, prod in zip(sides, prods, strict=True):
                t, m, k, w = side.run()
                rows.append(
                    f"| {side.label} | everything to do ({len(prod)} creates) | {t * 1000:.0f} ms | {m} | {k} | {w} |"
                )
                for name in prod:
                    knative.play(side.ns.name, naming.isvc_name(name), "ready")  # returns once KServe reports it
                t, m, k, w = side.run()
                writeback[side.label] = t
                what = f"write-back once KServe reports ready ({len(prod)} models)"
                rows.append(f"| {side.label} | {what} | {t * 1000:.0f} ms | {m} | {k} | {w} |")
                runs = [side.run() for _ in range(5)]
                t = statistics.median(r[0] for r in runs)
                m, k, w = runs[-1][1:]
                rows.append(f"| {side.label} | nothing to do (median of 5) | {t * 1000:.0f} ms | {m} | {k} | {w} |")
        finally:
            for side in sides:
                side.close()
    old, new = writeback[sides[0].label], writeback[sides[1].label]
    verdict = "PASS" if new <= old / 3 else "FAIL"
    head = [
        f"Registry: {MODELS} models x {VERSIONS} versions per side ({2 * MODELS * VERSIONS} in all), {PRODUCTION} "
        f"production per side (populated in {setup:.0f} s).",
        "",
        "| adapter | pass | time | MLflow calls | Kubernetes calls | Kubernetes writes |",
        "|---|---|---|---|---|---|",
    ]
    tail = [
        "",
        f"Write-back pass: {new * 1000:.0f} ms vs {old * 1000:.0f} ms ({new / old:.2f}x; goal <= 0.33x): {verdict}",
    ]
    return head + rows + tail


def bench_webhook_latency(url: str, tmp: Path, plane: ControlPlane) -> list[str]:
    client = MlflowClient(url, registry_uri=url)
    port = free_port()
    hook = f"http://127.0.0.1:{port}/webhooks/mlflow"
    names = [f"bench-hook-{i:02d}" for i in range(TRIALS)]
    admin = plane.api_client()
    ns: Namespace = new_namespace(plane, admin, prefix="bench")
    objects = k8s.CustomObjectsApi(admin)

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
        # `mlflow server` as it is run (its default 4 workers): both sides talk to the same one.
        with mlflow_server(Path(tmp) / "mlflow", workers=4) as server:
            lines = ["## Adapter", "", *bench_pass_cost(server.url, plane, Path(tmp)), ""]
        with mlflow_server(Path(tmp) / "mlflow-hooks") as server:
            lines += [*bench_webhook_latency(server.url, Path(tmp), plane), ""]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
