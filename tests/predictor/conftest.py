"""Fixtures for the predictor tests: saved and registered models, an in-process client, a real process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.predictor import models
from tests.servers import MlflowServer, free_port, stop_group

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def local_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test models saved to local folders (no server): classifier, contract model, pyfunc."""
    root = tmp_path_factory.mktemp("local-models")
    return {
        "classifier": models.save_classifier(root / "classifier"),
        "contract": models.save_contract_model(root / "contract"),
        "pyfunc": models.save_pyfunc(root / "pyfunc"),
    }


@pytest.fixture(scope="session")
def registry(mlflow_srv: MlflowServer) -> dict[str, str]:
    """The test models registered once on the session's MLflow server: name -> models:/ URI (`logged*`: logged
    models, not registered, as models:/m-<id>; `untyped`: the classifier logged without signature)."""
    import mlflow

    mlflow.set_tracking_uri(mlflow_srv.url)
    mlflow.set_registry_uri(mlflow_srv.url)
    mlflow.set_experiment("predictor-tests")
    uris = {
        "classifier": models.train_classifier("PT Breast Cancer_Risk"),
        "contract": models.log_contract_model("pt-lookup"),
        "run-features": models.log_contract_model("pt-dpm-style", in_run_features=True),
        "pyfunc": models.log_pyfunc_model("pt-custom-linear"),
        "logged": models.log_logged_model("PT Logged_Risk"),
        "logged-outside-run": models.log_logged_model("pt-logged-bare", in_run=False),
        "untyped": models.log_untyped_model("PT Untyped_Risk"),
    }
    mlflow.MlflowClient().set_registered_model_alias("pt-lookup", "production", "1")
    return uris


@contextlib.contextmanager
def in_process(**settings: Any) -> Iterator[Any]:
    """A TestClient (httpx) on `create_app(Settings(**settings))` with the model loaded."""
    from starlette.testclient import TestClient

    from custom_predictor.app import create_app
    from custom_predictor.settings import Settings

    app = create_app(Settings(**settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        app.state.runtime.wait(120)
        client.app_state, client.fastapi = app.state, app
        yield client


@dataclass
class Predictor:
    """A running `python -m custom_predictor` process."""

    url: str
    proc: subprocess.Popen
    log: Path

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: Any, content_type: str = "application/json") -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.request("POST", path, data, content_type)

    def request(self, method: str, path: str, data: bytes | None = None, ctype: str = "") -> tuple[int, Any]:
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"content-type": ctype} if ctype else {}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, _decode(r.read())
        except urllib.error.HTTPError as e:
            return e.code, _decode(e.read())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def predictor_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "SERVICE_PATH"))}
    return {**base, "MLFLOW_DISABLE_TELEMETRY": "true", "HOST": "127.0.0.1", **env}


@contextlib.contextmanager
def run_predictor(tmp_path: Path, *, wait_ready: bool = True, **env: str) -> Iterator[Predictor]:
    """Start the predictor as a real process on a free port; stop it (its process group) afterwards.

    Waits until it is ready, or (with `wait_ready=False`) until it is ready or has failed to get ready.
    """
    port = free_port()
    log = tmp_path / f"predictor-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "custom_predictor"],
            cwd=REPO,
            env=predictor_env(PORT=str(port), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    p = Predictor(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"predictor exited {proc.returncode}: {log.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                status, body = p.get("/v2/health/ready")
                if status == 200:
                    break
                if status == 503 and body.get("state") == "failed":
                    assert not wait_ready, f"predictor failed: {body['reason']}"
                    break
            time.sleep(0.05)
        else:
            raise AssertionError(f"predictor not ready in time: {log.read_text()[-2000:]}")
        yield p
    finally:
        stop_group(proc)


def run_to_exit_with_log(**env: str) -> tuple[int, list[str]]:
    """Run the predictor until it exits; return its exit code and its log lines (stdout and stderr as one stream,
    as Kubernetes keeps them)."""
    result = subprocess.run(
        [sys.executable, "-m", "custom_predictor"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=predictor_env(**{"PORT": str(free_port()), **env}),
        timeout=180,
        check=False,
    )
    return result.returncode, [line for line in result.stdout.splitlines() if line.strip()]


def run_to_exit(**env: str) -> subprocess.CompletedProcess[str]:
    """Run the predictor expecting it to stop at startup; return its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "custom_predictor"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=predictor_env(**{"PORT": str(free_port()), **env}),
        timeout=120,
        check=False,
    )


ROW = {"radius": 17.99, "texture": 10.38, "perimeter": 122.8, "area": 1001.0, "smoothness": 0.1184}
