"""Models logged with no signature and no contract. One that declares its columns (scikit-learn's
`feature_names_in_`/`n_features_in_`, XGBoost's and LightGBM's feature names) is served typed from what it
declares; one that declares nothing (a custom pyfunc) is served untyped: free-form records, MLflow's and V2's own
conversions, a Swagger page saying how to get a typed API, and a self-test on its input example. The first model is
a real one, logged without signature to a real MLflow server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.predictor import flavors, models
from tests.predictor.conftest import in_process, run_predictor

PATH = "pt-untyped-risk"


def pyfunc_predict(uri: str, frame: pd.DataFrame) -> list[Any]:
    import mlflow.pyfunc

    return np.asarray(mlflow.pyfunc.load_model(uri).predict(frame)).tolist()


def test_a_model_without_signature_is_typed_from_the_columns_it_declares(
    tmp_path: Path, registry: dict[str, str], mlflow_srv: Any
) -> None:
    x, _ = models.breast_cancer(6)
    frame = pd.DataFrame(x, columns=models.FEATURES)
    want = pyfunc_predict(registry["untyped"], frame)
    with run_predictor(tmp_path, MODEL_URI=registry["untyped"], MLFLOW_TRACKING_URI=mlflow_srv.url) as p:
        status, spec = p.get("/openapi.json")
        assert "the input columns the model object declares" in spec["info"]["description"]
        assert p.get(f"/v2/models/{PATH}")[1]["inputs"] == [
            {"name": n, "datatype": "FP64", "shape": [-1]} for n in models.FEATURES
        ]
        status, body = p.post(f"/{PATH}/api/v1/predict", {"records": frame.to_dict(orient="records")})
        assert (status, body["predictions"]) == (200, want), body
        split = {"dataframe_split": frame.to_dict(orient="split")}
        assert p.post("/invocations", split) == (200, {"predictions": want})
        tensor = {"name": "x", "shape": [6, 5], "datatype": "FP64", "data": x.ravel().tolist()}
        status, body = p.post(f"/v2/models/{PATH}/infer", {"inputs": [tensor]})
        assert (status, body["outputs"][0]["data"]) == (200, want), body
        status, body = p.post(f"/v1/models/{PATH}:predict", {"instances": x.tolist()})
        assert (status, body) == (200, {"predictions": want})
        status, body = p.post("/invocations", {"dataframe_split": {"columns": ["radius"], "data": [[1.0]]}})
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE", body  # the declared columns


@pytest.mark.parametrize(
    ("saver", "names"),
    [
        (lambda p: flavors.save_unsigned_sklearn(p, names=False), [f"x{i}" for i in range(5)]),
        (flavors.save_unsigned_xgboost, models.FEATURES),
        (flavors.save_unsigned_lightgbm, [f"Column_{i}" for i in range(5)]),
    ],
    ids=["sklearn-array", "xgboost", "lightgbm"],
)
def test_what_each_library_declares(tmp_path: Path, saver: Any, names: list[str]) -> None:
    folder = saver(tmp_path / "m")
    x, _ = models.breast_cancer(4)
    import mlflow.pyfunc

    want = np.asarray(mlflow.pyfunc.load_model(str(folder)).predict(pd.DataFrame(x, columns=models.FEATURES)))
    with in_process(model_uri=str(folder), service_path="m") as c:
        runtime = c.app_state.runtime
        assert runtime.contract.source == "model" and runtime.contract.input_names == names
        r = c.post("/m/api/v1/predict", json={"records": [dict(zip(names, row, strict=True)) for row in x.tolist()]})
        assert r.status_code == 200, r.text
        assert np.allclose(r.json()["predictions"], want.tolist())


def test_a_model_that_declares_nothing_is_served_untyped(tmp_path: Path) -> None:
    folder = flavors.save_untyped_pyfunc(tmp_path / "sum")
    frame = pd.DataFrame({"u": [1.0, 2.0, 3.0], "v": [3.0, 4.0, 5.0]})
    with in_process(model_uri=str(folder), service_path="s") as c:
        spec = c.get("/openapi.json").json()
        assert "contract** none" in spec["info"]["description"]
        assert "Log the model with a signature" in spec["paths"]["/s/api/v1/predict"]["post"]["description"]
        body = spec["paths"]["/s/api/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
        assert body["example"] == {"records": [{"u": 1.0, "v": 3.0}]}  # the input example's first row
        r = c.post("/s/api/v1/predict", json={"records": frame.to_dict(orient="records")})
        assert (r.status_code, r.json()["predictions"]) == (200, [4.0, 6.0, 8.0]), r.text
        assert c.get("/v2/models/s").json()["inputs"] == []  # nothing declared: any tensors are taken
        tensor = {"name": "x", "shape": [3, 2], "datatype": "FP64", "data": frame.to_numpy().ravel().tolist()}
        r = c.post("/v2/models/s/infer", json={"inputs": [tensor]})
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [4.0, 6.0, 8.0], r.text
        r = c.post("/invocations", json={"dataframe_split": frame.to_dict(orient="split")})
        assert r.json() == {"predictions": [4.0, 6.0, 8.0]}
        r = c.post("/v1/models/s:predict", json={"instances": frame.to_dict(orient="records")})
        assert r.json() == {"predictions": [4.0, 6.0, 8.0]}
        # A scalar where rows belong, ragged columns (found by schemathesis): the model refuses; a 400, no 500.
        for body in ({"instances": ""}, {"inputs": {"a": [1.0, 2.0], "b": {"c": []}, "d": [None]}}):
            r = c.post("/invocations", json=body)
            assert (r.status_code, r.json()["error_code"]) == (400, "BAD_REQUEST"), r.text


def test_the_self_test_runs_the_input_example(tmp_path: Path) -> None:
    failing = models.save_failing_untyped(tmp_path / "failing")
    with in_process(model_uri=str(failing), service_path="f") as c:
        body = c.get("/v2/health/ready").json()
        assert body["ready"] is False
        assert body["reason"] == "self-test failed: predicting the input example: the model raised RuntimeError"
    with in_process(
        model_uri=str(flavors.save_untyped_pyfunc(tmp_path / "bare", example=False)), service_path="b"
    ) as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}  # no example: nothing to run
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
        assert schemas["PredictRequest"]["examples"] == [{"records": [{}]}]
        r = c.post("/b/api/v1/predict", json={"records": [{"u": 1.0, "v": 2.0}, {"u": 0.5, "v": 0.5}]})
        assert r.status_code == 200 and r.json()["predictions"] == [3.0, 1.0], r.text
