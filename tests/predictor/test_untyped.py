"""A model logged with no signature and no contract (the predictor used to refuse it): served untyped, with
free-form records, MLflow's and V2's own conversions, a Swagger page saying how to get a typed API, and a
self-test on its input example. The model is a real one, logged without signature to a real MLflow server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.predictor import models
from tests.predictor.conftest import in_process, run_predictor

PATH = "pt-untyped-risk"


def pyfunc_predict(uri: str, frame: pd.DataFrame) -> list[Any]:
    import mlflow.pyfunc

    return np.asarray(mlflow.pyfunc.load_model(uri).predict(frame)).tolist()


@pytest.mark.slow
def test_a_registered_model_without_signature_is_served_untyped(
    tmp_path: Path, registry: dict[str, str], mlflow_srv: Any
) -> None:
    x, _ = models.breast_cancer(6)
    frame = pd.DataFrame(x, columns=models.FEATURES)
    want = pyfunc_predict(registry["untyped"], frame)
    with run_predictor(tmp_path, MODEL_URI=registry["untyped"], MLFLOW_TRACKING_URI=mlflow_srv.url) as p:
        status, spec = p.get("/openapi.json")
        assert "contract** none" in spec["info"]["description"]
        assert "log the model with a signature" in spec["info"]["description"]
        assert "Log the model with a signature" in spec["paths"][f"/{PATH}/api/v1/predict"]["post"]["description"]
        body = spec["paths"][f"/{PATH}/api/v1/predict"]["post"]["requestBody"]["content"]["application/json"]
        example = body["examples"]["example"]["value"]  # what Swagger UI fills in: the input example's first row
        assert list(example["records"][0].items()) == list(frame.iloc[0].to_dict().items())
        status, body = p.post(f"/{PATH}/api/v1/predict", example)
        assert (status, body["predictions"]) == (200, want[:1]), body
        status, body = p.post(f"/{PATH}/api/v1/predict", {"records": frame.to_dict(orient="records")})
        assert (status, body["predictions"]) == (200, want), body
        split = {"dataframe_split": frame.to_dict(orient="split")}
        assert p.post("/invocations", split) == (200, {"predictions": want})
        tensor = {"name": "x", "shape": [6, 5], "datatype": "FP64", "data": x.ravel().tolist()}
        status, body = p.post(f"/v2/models/{PATH}/infer", {"inputs": [tensor]})
        assert (status, body["outputs"][0]["data"]) == (200, want), body
        assert p.get(f"/v2/models/{PATH}")[1]["inputs"] == []  # nothing declared: any tensors are taken
        status, body = p.post(f"/v1/models/{PATH}:predict", {"instances": x.tolist()})
        assert (status, body) == (200, {"predictions": want})
        status, body = p.post("/invocations", {"dataframe_split": {"columns": ["radius"], "data": [[1.0]]}})
        assert status == 400 and body["error_code"] == "BAD_REQUEST", body  # the model refuses: MLflow's answer


def test_the_self_test_runs_the_input_example(tmp_path: Path) -> None:
    failing = models.save_failing_untyped(tmp_path / "failing")
    with in_process(model_uri=str(failing), service_path="f") as c:
        body = c.get("/v2/health/ready").json()
        assert body["ready"] is False
        assert body["reason"] == "self-test failed: predicting the input example: the model raised RuntimeError"
    with in_process(model_uri=str(models.save_untyped(tmp_path / "bare", example=False)), service_path="b") as c:
        assert c.get("/v2/health/ready").json() == {"ready": True}  # no example: nothing to run
        schemas = c.get("/openapi.json").json()["components"]["schemas"]
        assert schemas["PredictRequest"]["examples"] == [{"records": [{}]}]
        x, _ = models.breast_cancer(2)
        r = c.post("/b/api/v1/predict", json={"records": pd.DataFrame(x, columns=models.FEATURES).to_dict("records")})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 2, r.text
