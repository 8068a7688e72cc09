"""Model resolution: the REST fast path (no mlflow import) gives what the mlflow library gives."""

from __future__ import annotations

from pathlib import Path

import pytest

from custom_predictor.settings import Settings, service_path_for
from custom_predictor.source import SourceError, _mlflow_fetch, _rest_fetch, fetch
from tests.predictor import models
from tests.predictor.conftest import run_predictor


def files(folder: Path) -> dict[str, bytes]:
    """Files of a downloaded model, without `registered_model_meta` (which the mlflow library writes itself)."""
    found = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    found.pop("registered_model_meta", None)
    return found


@pytest.mark.parametrize("key", ["classifier", "contract", "run-features", "logged", "logged-outside-run"])
def test_rest_and_mlflow_fetch_agree(tmp_path: Path, registry: dict[str, str], mlflow_srv, key: str) -> None:
    settings = Settings(model_uri=registry[key], mlflow_tracking_uri=mlflow_srv.url)
    (tmp_path / "a" / "model").mkdir(parents=True)
    (tmp_path / "b" / "model").mkdir(parents=True)
    seen: list[Path] = []
    rest = _rest_fetch(settings, registry[key], tmp_path / "a" / "model", seen.append)
    lib = _mlflow_fetch(settings, registry[key], tmp_path / "b" / "model")
    assert rest is not None
    assert seen == [tmp_path / "a" / "model" / "MLmodel"]  # the MLmodel arrives first
    assert (rest.name, rest.version, rest.run_id) == (lib.name, lib.version, lib.run_id)
    if key == "logged-outside-run":
        assert rest.run == lib.run == {} and rest.run_id is None
    else:
        assert rest.run == lib.run and rest.run["params"]["model_family"] == "logistic-regression"
    assert files(rest.model_dir) == files(lib.model_dir) and "model.skops" in files(rest.model_dir)
    assert (rest.contract_file is None) == (lib.contract_file is None) == (key in ("classifier", *LOGGED))
    if rest.contract_file is not None:
        assert rest.contract_file.read_bytes() == lib.contract_file.read_bytes()  # type: ignore[union-attr]
        assert (rest.contract_file.parent / "patients.csv").is_file()


LOGGED = ("logged", "logged-outside-run")


@pytest.mark.parametrize(("key", "name"), [("logged", "PT Logged_Risk"), ("logged-outside-run", "pt-logged-bare")])
def test_logged_model_ids_are_named_by_the_logged_model(
    tmp_path: Path, registry: dict[str, str], mlflow_srv, key: str, name: str
) -> None:
    """models:/m-<id> (MLflow 3's `log_model(name=...)`, not registered) resolves by REST, named as logged."""
    uri = registry[key]
    assert uri.startswith("models:/m-")
    src = fetch(Settings(model_uri=uri, mlflow_tracking_uri=mlflow_srv.url, download_dir=str(tmp_path)))
    assert (src.name, src.version, src.uri) == (name, None, uri)
    assert src.mlmodel["model_id"] == uri.removeprefix("models:/")
    assert (src.run_id is None) == (key == "logged-outside-run")


def test_a_logged_model_is_served(tmp_path: Path, registry: dict[str, str], mlflow_srv) -> None:
    """A predictor process for MODEL_URI=models:/m-<id> serves it under the path of the logged model's name."""
    x, _ = models.breast_cancer(4)
    rows = [dict(zip(models.FEATURES, map(float, r), strict=True)) for r in x]
    want = [int(v) for v in models._fit_classifier().predict(models._frame(x))]
    with run_predictor(tmp_path, MODEL_URI=registry["logged"], MLFLOW_TRACKING_URI=mlflow_srv.url) as p:
        status, body = p.post("/pt-logged-risk/api/v1/predict", {"records": rows})
        assert (status, body["predictions"], body["model"]) == (200, want, "PT Logged_Risk"), body
        status, body = p.post("/v1/models/pt-logged-risk:predict", {"instances": rows})
        assert (status, body) == (200, {"predictions": want})
        status, body = p.get("/")
        assert body["model"] == "PT Logged_Risk" and body["docs"] == "/pt-logged-risk/api/"


def test_alias_and_runs_uris(tmp_path: Path, registry: dict[str, str], mlflow_srv) -> None:
    src = fetch(
        Settings(
            model_uri="models:/pt-lookup@production",
            mlflow_tracking_uri=mlflow_srv.url,
            download_dir=str(tmp_path / "x"),
        )
    )
    assert (src.name, src.version) == ("pt-lookup", "1") and src.contract_file is not None
    runs = fetch(
        Settings(
            model_uri=f"runs:/{src.run_id}/model",
            mlflow_tracking_uri=mlflow_srv.url,
            model_name="From Run",
            download_dir=str(tmp_path / "y"),
        )
    )
    assert runs.run_id == src.run_id and runs.name == "From Run" and (runs.model_dir / "MLmodel").is_file()


def test_errors_are_one_line(tmp_path: Path, mlflow_srv) -> None:
    with pytest.raises(SourceError, match=r"MLflow answered 404 .*RESOURCE_DOES_NOT_EXIST"):
        fetch(Settings(model_uri="models:/pt-lookup/99", mlflow_tracking_uri=mlflow_srv.url))
    with pytest.raises(SourceError, match="cannot reach the MLflow tracking server"):
        fetch(Settings(model_uri="models:/x/1", mlflow_tracking_uri="http://127.0.0.1:9"))
    with pytest.raises(SourceError, match=r"must be models:/<name>/<version>, .* or models:/m-<model id>"):
        fetch(Settings(model_uri="models:/justaname", mlflow_tracking_uri=mlflow_srv.url))
    missing = "models:/m-0123456789abcdef0123456789abcdef"
    with pytest.raises(SourceError, match=r"^MLflow answered 404 to logged-models/m-0123.*: RESOURCE_DOES_NOT_EXIST"):
        fetch(Settings(model_uri=missing, mlflow_tracking_uri=mlflow_srv.url))
    with pytest.raises(SourceError, match=r"^cannot load models:/m-0123.* from MLflow: RESOURCE_DOES_NOT_EXIST"):
        _mlflow_fetch(Settings(model_uri=missing, mlflow_tracking_uri=mlflow_srv.url), missing, tmp_path)


@pytest.mark.parametrize(
    ("name", "path"),
    [("Breast Cancer_Risk", "breast-cancer-risk"), ("__x__", "x"), ("!!!", "model"), ("a..b--c", "a-b-c")],
)
def test_service_path(name: str, path: str) -> None:
    assert service_path_for(name) == path


def test_settings_build_the_uri() -> None:
    assert Settings(model_name="m", model_version="3").resolved_uri == "models:/m/3"
    assert Settings(model_name="m", model_version="@prod").resolved_uri == "models:/m@prod"
    assert Settings(model_name="m", model_source="s3://b/k").resolved_uri == "s3://b/k"
