"""`python -m custom_predictor` as a real process: registry models over real HTTP, and startup failures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.predictor import models
from tests.predictor.conftest import ROW, run_predictor, run_to_exit, run_to_exit_with_log


def test_registered_classifier_without_contract(tmp_path: Path, registry: dict[str, str], mlflow_srv) -> None:
    with run_predictor(tmp_path, MODEL_URI=registry["classifier"], MLFLOW_TRACKING_URI=mlflow_srv.url) as p:
        status, body = p.post("/pt-breast-cancer-risk/api/v1/predict", {"records": [ROW, ROW]})
        assert status == 200, body
        assert body["model"] == "PT Breast Cancer_Risk" and body["version"] == "1"
        assert body["predictions"] == [0, 0]
        status, spec = p.get("/openapi.json")
        info = spec["info"]
        assert info["title"] == "PT Breast Cancer_Risk (version 1)"
        assert "| model_family | logistic-regression |" in info["description"]
        assert "| train_rows | 569.0 |" in info["description"] and "| team | predictor-tests |" in info["description"]
        assert "derived from the MLflow signature" in info["description"]
        assert p.get("/v2/models/pt-breast-cancer-risk")[1]["versions"] == ["1"]
        status, html = p.get("/pt-breast-cancer-risk/api/")
        assert status == 200 and "swagger-ui-bundle.js" in html


def test_seed_style_settings_with_contract_and_lookup(tmp_path: Path, registry: dict[str, str], mlflow_srv) -> None:
    env = {"MODEL_NAME": "pt-lookup", "MODEL_VERSION": "1", "MLFLOW_TRACKING_URI": mlflow_srv.url}
    with run_predictor(tmp_path, **env) as p:
        status, body = p.post("/pt-lookup/api/v1/model/predict", {"patient_id": 1000})
        assert status == 200, body
        assert body["labels"] == ["malignant"] and body["features"]["radius"] == pytest.approx(17.99)
        status, page = p.get("/pt-lookup/api/v1/model/dataset?limit=3")
        assert page["total"] == 20 and len(page["rows"]) == 3
        status, err = p.post("/pt-lookup/api/v1/predict", {"records": [{**ROW, "area": -5}]})
        assert status == 422 and err["details"][0]["loc"] == "records[0].area"
        status, err = p.post("/pt-lookup/api/v1/predict", b"\x00garbage")
        assert status == 400 and err["error"] == "invalid_json"


def test_alias_uri_and_contract_in_run_features_folder(tmp_path: Path, registry: dict[str, str], mlflow_srv) -> None:
    with run_predictor(tmp_path, MODEL_URI="models:/pt-lookup@production", MLFLOW_TRACKING_URI=mlflow_srv.url) as p:
        assert p.get("/v2/models/pt-lookup")[1]["versions"] == ["1"]
    with run_predictor(tmp_path, MODEL_URI=registry["run-features"], MLFLOW_TRACKING_URI=mlflow_srv.url) as p:
        status, body = p.post("/pt-dpm-style/api/v1/model/predict", {"patient_id": 1003})
        assert status == 200, body
        assert "Breast cancer diagnosis" in p.get("/openapi.json")[1]["info"]["description"]


def test_registered_pyfunc_model(tmp_path: Path, registry: dict[str, str], mlflow_srv) -> None:
    with run_predictor(tmp_path, MODEL_URI=registry["pyfunc"], MLFLOW_TRACKING_URI=mlflow_srv.url) as p:
        status, body = p.post("/pt-custom-linear/api/v1/predict", {"records": [{"a": 2.0, "b": 1, "name": "y"}]})
        assert (status, body["predictions"]) == (200, [{"score": 5.0, "flag": False}])
        status, body = p.post("/v1/models/pt-custom-linear:predict", {"instances": [[-9e6, 1, "secret"]]})
        assert status == 500 and "secret" not in str(body)
        assert p.get("/v2/health/ready")[0] == 200


def test_self_test_failure_ends_the_process_with_one_line(tmp_path: Path, local_models: dict[str, Path]) -> None:
    """A failed self-test is permanent: the process exits 2, its last log line says why (and so does the
    termination message file Kubernetes reads), instead of staying up and never ready."""
    folder = tmp_path / "model"
    shutil.copytree(local_models["contract"], folder)
    data = models.contract_dict(expected=[1, 1, 1])
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    termination = tmp_path / "termination-log"
    code, lines = run_to_exit_with_log(
        MODEL_URI=str(folder), MODEL_NAME="risk", MODEL_VERSION="7", TERMINATION_MESSAGE_PATH=str(termination)
    )
    reason = "self-test failed: test_data row 0: expected 1, the model returned 0"
    assert code == 2, lines
    assert lines[-1] == f"custom_predictor: model risk version 7 cannot be served: {reason}"
    assert termination.read_text() == lines[-1] + "\n"
    assert not any("Traceback" in line for line in lines)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["inputs"][1].update(type="decimal"), "inputs[1].type: Input should be"),
        (lambda d: d["outputs"][0].update(labels="benign"), "outputs[0].labels: Input should be a valid dictionary"),
        (lambda d: d["entity"].update(features="missing.csv"), "entity.features: file 'missing.csv' not found"),
    ],
    ids=["bad-type", "bad-labels", "missing-feature-file"],
)
def test_invalid_contract_stops_startup(tmp_path: Path, local_models: dict[str, Path], mutate, expected: str) -> None:
    folder = tmp_path / "model"
    shutil.copytree(local_models["contract"], folder)
    data = models.contract_dict()
    mutate(data)
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    result = run_to_exit(MODEL_URI=str(folder))
    assert result.returncode == 2
    assert f"custom_predictor: invalid contract: {folder / 'contract.yaml'}: {expected}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "invalid settings: settings: Value error, set MODEL_URI, or MODEL_NAME with MODEL_VERSION"),
        ({"MODEL_URI": "/does/not/exist"}, "cannot load the model: model folder /does/not/exist does not exist"),
        ({"MODEL_URI": "/tmp", "SERVICE_PATH": "Bad Path"}, "SERVICE_PATH must be lowercase"),
        ({"MODEL_URI": "/tmp", "PORT": "99999"}, "invalid settings: PORT: Input should be less than or equal"),
    ],
)
def test_bad_settings_stop_startup_with_one_line(env: dict[str, str], expected: str) -> None:
    result = run_to_exit(**env)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_registered_model_stops_startup(mlflow_srv) -> None:
    result = run_to_exit(MODEL_URI="models:/no-such-model/1", MLFLOW_TRACKING_URI=mlflow_srv.url)
    assert result.returncode == 2
    assert "cannot load the model: MLflow answered 404" in result.stderr and "RESOURCE_DOES_NOT_EXIST" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_mlflow_is_retried_then_reported(tmp_path: Path) -> None:
    """MLflow down is transient: retried with backoff for MLFLOW_RETRY_SECONDS, then exit 75 with one line."""
    from tests.servers import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    code, lines = run_to_exit_with_log(
        MODEL_URI="models:/m/1", MLFLOW_TRACKING_URI=dead, MLFLOW_RETRY_SECONDS="2", TERMINATION_MESSAGE_PATH=""
    )
    assert code == 75, lines
    retries = [line for line in lines if "MLflow unreachable or failing" in line and "retrying in" in line]
    assert len(retries) >= 2
    assert lines[-1].startswith("custom_predictor: MLflow unreachable: cannot reach the MLflow tracking server")
    assert "gave up after" in lines[-1]


def test_no_writable_directory_stops_startup_with_the_setting_to_change(local_models: dict[str, Path]) -> None:
    """A read-only root with no writable mount (`readOnlyRootFilesystem` without the template's emptyDir): the
    predictor runs in a mount namespace of its own where / is read-only, and ends with one line naming the
    settings to change, never a traceback. A DOWNLOAD_DIR that cannot be written says so too."""
    import subprocess
    import sys

    from tests.predictor.conftest import REPO, predictor_env
    from tests.servers import free_port

    script = 'mount -o remount,bind,ro / && exec "$0" -m custom_predictor'
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, sys.executable],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=predictor_env(MODEL_URI=str(local_models["classifier"]), PORT=str(free_port())),
        timeout=120,
        check=False,
    )
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2, result.stderr
    assert last.startswith("custom_predictor: no writable directory for the model's files: the temporary"), last
    assert "set DOWNLOAD_DIR or TMPDIR to a writable directory" in last and "Traceback" not in result.stderr
    result = run_to_exit(MODEL_URI=str(local_models["classifier"]), DOWNLOAD_DIR="/proc/self")
    assert result.returncode == 2 and "DOWNLOAD_DIR=/proc/self is not writable" in result.stderr, result.stderr
