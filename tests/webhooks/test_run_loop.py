"""`service-builder run` with the webhook receiver: a tag set in MLflow reaches the cluster without
waiting for a poll, and polling still converges what happened while the receiver was down."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mlflow import MlflowClient

from adapter import naming
from tests.controlplane.fixtures import Namespace
from tests.servers import MlflowServer, free_port, wait_http
from tests.webhooks.conftest import SECRET


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_webhook_drives_the_run_loop_and_polling_is_the_safety_net(
    webhook_mlflow: MlflowServer, tmp_path: Path, control_plane, admin_api, k8s_namespace: Namespace
) -> None:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    objects = k8s.CustomObjectsApi(admin_api)

    prefix = f"wh{uuid.uuid4().hex[:6]}-"
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/mlflow"
    client = MlflowClient(webhook_mlflow.url, registry_uri=webhook_mlflow.url)
    if True:
        env = dict(
            os.environ,
            MLFLOW_TRACKING_URI=webhook_mlflow.url,
            K8S_API=control_plane.url,
            K8S_API_KEY=k8s_namespace.token,
            K8S_CA_FILE=str(control_plane.ca),
            K8S_NAME_SPACE=k8s_namespace.name,
            MODEL_NAME_LIKE=f"{prefix}%",
            POLL_INTERVAL_SECONDS="600",
            WEBHOOK_HOST="127.0.0.1",
            WEBHOOK_PORT=str(port),
            MLFLOW_WEBHOOK_SECRET=SECRET,
        )
        reg = [sys.executable, "-m", "adapter", "webhook", "register", "--url", url]
        first = subprocess.run(reg, env=env, capture_output=True, text=True, timeout=120)
        assert first.returncode == 0 and "webhook" in first.stdout, first.stderr
        again = subprocess.run(reg, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "unchanged" in again.stdout, again.stderr
        log = tmp_path / "run.log"
        try:
            for model in ("a", "b"):
                client.create_registered_model(f"{prefix}{model}")
                client.create_model_version(f"{prefix}{model}", source="s3://m/x", await_creation_for=0)

            def isvc(model: str):
                try:
                    return objects.get_namespaced_custom_object(
                        "serving.kserve.io",
                        "v1beta1",
                        k8s_namespace.name,
                        "inferenceservices",
                        naming.isvc_name(f"{prefix}{model}"),
                    )
                except ApiException as e:
                    if e.status == 404:
                        return None
                    raise

            with open(log, "w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "adapter", "run"], env=env, stderr=out)
            try:
                wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60, proc=proc)
                _wait(lambda: "Started" in log.read_text(), 30, "the first pass")
                time.sleep(1.0)  # the first (and, with a 600 s interval, only) poll is over
                client.set_model_version_tag(f"{prefix}a", "1", "stage", "production")
                _wait(lambda: isvc("a") is not None, 30, "the webhook-triggered apply")
                assert "cause=webhook" in log.read_text()
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0

            # Receiver down: the event is lost, the next pass (at start) converges anyway.
            client.set_model_version_tag(f"{prefix}b", "1", "stage", "production")
            time.sleep(0.5)
            assert isvc("b") is None
            with open(log, "a") as out:
                proc = subprocess.Popen([sys.executable, "-m", "adapter", "run"], env=env, stderr=out)
            try:
                _wait(lambda: isvc("b") is not None, 60, "the polling pass")
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0
            text = log.read_text()
            assert "Traceback" not in text and SECRET not in text
        finally:
            for hook in client.list_webhooks():
                if hook.name == "service-builder":
                    client.delete_webhook(hook.webhook_id)
