"""Fixtures of the `mlflow deployments -t kserve` tests: MLflow's own CLI (`python -m mlflow deployments ...` as a
subprocess) and its Python client, against the real MLflow server and the real control plane of the adapter tests
(`tests/adapter/conftest.py`'s `world`: a namespace with deploy/base's ServiceAccount, Knative played by the test).

The plugin reaches the API server as its users would: through a kubeconfig (written here, holding that
ServiceAccount's token) named by KUBECONFIG. The `kserve` target must be registered by this checkout's
pyproject.toml entry point (`pip install -e .`, as `make install` does): nothing here registers it another way.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml

import adapter
from tests.adapter.conftest import World, world
from tests.auth.conftest import PREDICTOR_ACCOUNT, Cluster
from tests.servers import free_port, stop_group, wait_http

REPO = Path(__file__).resolve().parents[2]
__all__ = ["world"]


@pytest.fixture(scope="session", autouse=True)
def _kserve_target_is_this_checkout() -> None:
    found = [e for e in entry_points(group="mlflow.deployments") if e.name == "kserve"]
    if not found or found[0].value != "adapter.plugin":
        pytest.fail("the kserve target is not registered: `pip install -e .` this checkout (make install)")
    assert Path(adapter.__file__).resolve().is_relative_to(REPO), adapter.__file__


@dataclass
class Plugin:
    world: World
    env: dict[str, str]
    tmp: Path
    kubelet: dict[str, str]
    """What a kubelet gives the predictor's pod: the API server's address, the ServiceAccount token and CA."""

    @property
    def target(self) -> str:
        return f"kserve:/{self.world.ns}"

    def argv(self, command: str, *args: str) -> list[str]:
        return [sys.executable, "-m", "mlflow", "deployments", command, "-t", self.target, *args]

    def cli(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(command, *args), env=self.env, cwd=REPO, capture_output=True, text=True, timeout=300
        )

    def start(self, command: str, *args: str) -> subprocess.Popen[str]:
        """A command that waits (create, update) in the background, while the test plays Knative."""
        return subprocess.Popen(
            self.argv(command, *args),
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def get(self, name: str) -> dict[str, str]:
        """`mlflow deployments get`'s `key: value` lines."""
        out = self.cli("get", "--name", name)
        assert out.returncode == 0, out.stderr
        return dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)

    def await_isvc(self, name: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (obj := self.world.isvc(name)) is None:
            assert time.monotonic() < deadline, f"InferenceService {name} never appeared"
            time.sleep(0.2)
        return obj

    def serve(self, isvc: str) -> tuple[subprocess.Popen[bytes], str]:
        """A predictor process started from the container KServe rendered into the Knative Service (its env
        values; a free port on loopback), ready; returns it and its URL."""
        container = self.world.knative.service(self.world.ns, isvc)["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "custom_predictor"],
            env={"PATH": "/usr/bin:/bin", **env, **self.kubelet, "PORT": str(port), "HOST": "127.0.0.1"},
            stdout=(self.tmp / f"{isvc}.log").open("wb"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}{container['readinessProbe']['httpGet']['path']}", timeout=180, proc=proc)
        except BaseException:
            stop_group(proc)
            raise
        return proc, url


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed with exactly one line on stderr, `Error: ...`, and no traceback."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def kubeconfig(path: Path, server: str, ca: Path, token: str, namespace: str) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "user", "user": {"token": token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user", "namespace": namespace}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def plugin(world: World, cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Plugin:
    s = world.settings
    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    (mounted / "token").write_text(cluster.token(PREDICTOR_ACCOUNT))
    (mounted / "ca.crt").write_bytes(cluster.plane.ca.read_bytes())
    host, port = cluster.plane.url.removeprefix("https://").split(":")
    kubelet = {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "AUTH_SERVICE_ACCOUNT_DIR": str(mounted),
    }
    config = kubeconfig(
        tmp_path / "kubeconfig", world.plane.url, world.plane.ca, s.k8s_api_key.get_secret_value(), world.ns
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "KUBECONFIG": str(config),
        "MLFLOW_TRACKING_URI": s.mlflow_tracking_uri,
        "PREDICTOR_IMAGE": s.predictor_image,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        # predict's credential: the same ServiceAccount token, which deploy/base's Role lets `get` InferenceServices
        "PREDICTOR_TOKEN": s.k8s_api_key.get_secret_value(),
    }
    for key, value in env.items():  # the in-process Python client reads the same settings
        if key not in ("PATH", "HOME"):
            monkeypatch.setenv(key, value)
    for key in ("K8S_API", "K8S_API_KEY", "K8S_NAME_SPACE", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(key, raising=False)
    return Plugin(world, env, tmp_path, kubelet)


def write_rows(path: Path, frame: Any) -> Path:
    """A JSON file `mlflow deployments predict -I` reads back as the same DataFrame (pandas.read_json)."""
    path.write_text(frame.to_json())
    return path
