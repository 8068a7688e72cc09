"""scripts/e2e_model.py against a real `mlflow server` (the session fixture): the registry side of
`make e2e`. It registers the demo model, moves the production alias, waits on the tags the adapter
writes (a thread plays the adapter here), and fails with one clear line."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from types import ModuleType

import pytest

from tests.deploy.conftest import REPO
from tests.servers import free_port


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("e2e_model", REPO / "scripts" / "e2e_model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


e2e_model = _load()


@pytest.fixture
def name() -> str:
    return f"e2e-{uuid.uuid4().hex[:8]}"


def cli(uri: str, *args: str) -> int:
    return int(e2e_model.main(["--tracking-uri", uri, *args]))


def bare_version(uri: str, name: str) -> None:
    """A registry entry without training or artifacts: enough for the tag and alias commands."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("Default")
    assert experiment is not None
    run = client.create_run(experiment.experiment_id)
    client.create_registered_model(name)
    client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)


def test_register_promote_and_serve_the_payload_the_e2e_sends(
    tracking_uri: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    # As scripts/e2e.sh runs it: V1=$(python scripts/e2e_model.py ... register ...), stdout is the number.
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "e2e_model.py"),
            "--tracking-uri",
            tracking_uri,
            "register",
            "--name",
            name,
            "--variant",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "1\n"
    assert cli(tracking_uri, "register", "--name", name, "--variant", "2") == 0
    assert capsys.readouterr().out.strip() == "2"
    assert cli(tracking_uri, "promote", "--name", name, "--version", "1") == 0
    client = MlflowClient(tracking_uri)
    assert client.get_registered_model(name).aliases == {"production": "1"}
    assert cli(tracking_uri, "promote", "--name", name, "--version", "2") == 0
    assert client.get_registered_model(name).aliases == {"production": "2"}

    # The payload scripts/e2e.sh posts fits the model's signature; both variants answer it.
    payload = re.search(r"^PAYLOAD='(.+)'$", (REPO / "scripts" / "e2e.sh").read_text(), re.M)
    assert payload
    records = json.loads(payload.group(1))["records"]
    for version in ("1", "2"):
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        assert model.metadata.get_input_schema().input_names() == list(e2e_model.FEATURES)
        prediction = model.predict(pd.DataFrame(records))
        assert list(prediction) == [0]  # a setosa, by both models


def test_wait_follows_the_adapter_tags_until_ready(
    tracking_uri: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    bare_version(tracking_uri, name)
    client = MlflowClient(tracking_uri)

    def adapter() -> None:
        time.sleep(0.5)
        client.set_model_version_tag(name, "1", "deployment.status", "deploying")
        time.sleep(0.8)
        client.set_model_version_tag(name, "1", "model_endpoint", f"http://{name}-predictor.ns.example.com/{name}/api/")
        client.set_model_version_tag(name, "1", "deployment.status", "ready")

    t = threading.Thread(target=adapter)
    t.start()
    try:
        rc = cli(
            tracking_uri,
            "wait",
            "--name",
            name,
            "--version",
            "1",
            "--status",
            "ready",
            "--timeout",
            "30",
            "--interval",
            "0.2",
        )
    finally:
        t.join()
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.index("deployment.status=deploying") < err.index("deployment.status=ready")
    assert cli(tracking_uri, "tag", "--name", name, "--version", "1", "--key", "model_endpoint") == 0
    assert capsys.readouterr().out.strip() == f"http://{name}-predictor.ns.example.com/{name}/api/"
    assert cli(tracking_uri, "show", "--name", name) == 0
    assert "deployment.status='ready'" in capsys.readouterr().out


def test_wait_stops_at_failed_with_the_adapter_message(
    tracking_uri: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    bare_version(tracking_uri, name)
    client = MlflowClient(tracking_uri)
    client.set_model_version_tag(name, "1", "deployment.status", "failed")
    client.set_model_version_tag(name, "1", "deployment.message", "ImagePullBackOff: kind.local/x:dev")
    started = time.monotonic()
    rc = cli(tracking_uri, "wait", "--name", name, "--version", "1", "--status", "ready", "--timeout", "60")
    assert rc == 1 and time.monotonic() - started < 10
    assert "deployment failed: ImagePullBackOff: kind.local/x:dev" in capsys.readouterr().err


def test_retire_removes_the_alias_once_and_says_so_the_second_time(
    tracking_uri: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    bare_version(tracking_uri, name)
    capsys.readouterr()
    assert cli(tracking_uri, "promote", "--name", name, "--version", "1") == 0
    assert cli(tracking_uri, "retire", "--name", name) == 0
    assert MlflowClient(tracking_uri).get_registered_model(name).aliases == {}
    capsys.readouterr()
    assert cli(tracking_uri, "retire", "--name", name) == 1
    assert capsys.readouterr().err.strip() == f"e2e_model.py retire: model {name!r} has no alias 'production' to remove"


def test_missing_tag_and_unknown_model_are_one_line_errors(
    tracking_uri: str, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bare_version(tracking_uri, name)
    capsys.readouterr()
    assert cli(tracking_uri, "tag", "--name", name, "--version", "1", "--key", "model_endpoint") == 1
    assert capsys.readouterr().err.strip() == "e2e_model.py tag: version 1 has no tag 'model_endpoint'"
    assert cli(tracking_uri, "promote", "--name", f"{name}-absent", "--version", "1") == 2
    err = capsys.readouterr().err
    assert err.startswith("e2e_model.py promote: MLflow at ") and "Traceback" not in err


def test_wait_times_out_with_the_last_status() -> None:
    now = [0.0]
    said: list[str] = []
    with pytest.raises(e2e_model.Failure, match=r"deployment.status is 'deploying', not 'ready', after 30s"):
        e2e_model.wait_status(
            lambda: {"deployment.status": "deploying"},
            "ready",
            30,
            5,
            said.append,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
    assert said == ["deployment.status=deploying"]


def test_runs_as_a_script_and_reports_an_unreachable_server() -> None:
    port = free_port()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "e2e_model.py"),
            "--tracking-uri",
            f"http://127.0.0.1:{port}",
            "tag",
            "--name",
            "m",
            "--version",
            "1",
            "--key",
            "k",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"e2e_model.py tag: MLflow at http://127.0.0.1:{port} said: ")
    assert "Traceback" not in proc.stderr
