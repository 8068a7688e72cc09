"""The e2e MLflow server, started here with the arguments of deploy/e2e-mlflow (only the bind
address, port and paths changed): MLflow answers the Host headers the adapter, the predictor pods
and the host's port-forward send, and still refuses others (its DNS-rebinding guard)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.conftest import kustomize, one, pod_spec
from tests.servers import free_port, stop_group, wait_http


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    (container,) = pod_spec(one(kustomize("deploy/e2e-mlflow"), "Deployment"))["containers"]
    assert container["command"] == ["mlflow", "server"]
    data = tmp_path_factory.mktemp("mlflow-e2e")
    port = free_port()
    args = []
    for arg in container["args"]:
        key = arg.split("=", 1)[0]
        if key == "--host":
            arg = "--host=127.0.0.1"
        elif key == "--port":
            arg = f"--port={port}"
        elif key == "--workers":
            arg = "--workers=1"
        arg = arg.replace("sqlite:////data/", f"sqlite:///{data}/").replace("=/data/", f"={data}/")
        args.append(arg)
    assert not any("/data/" in a for a in args if not a.startswith("--allowed-hosts")), args
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(data)}
    with open(data / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=180, proc=proc)
        yield port
    finally:
        stop_group(proc, timeout=20)
    assert (Path(data) / "mlflow.db").exists()


def status(port: int, host: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1", headers={"Host": host}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


@pytest.mark.parametrize(
    "host",
    [
        "mlflow.mlflow.svc.cluster.local:5000",  # MLFLOW_TRACKING_URI / PREDICTOR_TRACKING_URI
        "mlflow.mlflow:5000",
        "127.0.0.1:15000",  # the host, through kubectl port-forward
        "localhost:15000",
    ],
)
def test_the_hosts_of_the_e2e_are_allowed(server: int, host: str) -> None:
    assert status(server, host) == 200


def test_other_hosts_are_refused(server: int) -> None:
    assert status(server, "attacker.example.com") == 403
