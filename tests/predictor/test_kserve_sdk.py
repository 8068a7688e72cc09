"""The kserve SDK's own V2 types (InferRequest/InferResponse, kserve 0.21) round-trip against the predictor,
and the bodies the SDK sends are valid for the V2 request schema the predictor documents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from jsonschema import Draft202012Validator

from custom_predictor.app import resolve_contract
from custom_predictor.schemas import Schemas
from custom_predictor.settings import Settings
from custom_predictor.source import fetch
from tests.predictor import models
from tests.predictor.conftest import in_process, run_predictor

PATH = "breast-cancer-risk"


def v1_request(schemas: Schemas) -> Any:
    """The documented KServe V1 request of a contract (what the app puts in its OpenAPI document)."""
    from custom_predictor.protocols.v1.schemas import request_model

    return request_model(schemas)


def v2_request(schemas: Schemas) -> Any:
    """The documented Open Inference Protocol request of a contract."""
    from custom_predictor.protocols.v2.schemas import v2_request_model

    return v2_request_model(schemas.contract, schemas.max_records, schemas.example)


@pytest.fixture(scope="module")
def sdk() -> Any:
    from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

    return InferInput, InferRequest, InferResponse


def column_request(sdk: Any, frame: pd.DataFrame) -> Any:
    infer_input, infer_request, _ = sdk
    inputs = []
    for name in frame.columns:
        values = frame[name].to_numpy()
        kind = "BYTES" if values.dtype == object else {"float64": "FP64", "int64": "INT64"}[str(values.dtype)]
        item = infer_input(name=name, shape=[len(values)], datatype=kind)
        item.set_data_from_numpy(values.astype(object) if kind == "BYTES" else values, binary_data=False)
        inputs.append(item)
    return infer_request(model_name=PATH, infer_inputs=inputs, request_id="req-1")


def tensor_request(sdk: Any, matrix: np.ndarray) -> Any:
    infer_input, infer_request, _ = sdk
    item = infer_input(name="input-0", shape=list(matrix.shape), datatype="FP64")
    item.set_data_from_numpy(matrix, binary_data=False)
    return infer_request(model_name=PATH, infer_inputs=[item], request_id="req-2")


def test_sdk_column_and_tensor_requests_round_trip(sdk: Any, local_models: dict[str, Path]) -> None:
    _, _, infer_response = sdk
    x, _ = models.breast_cancer(25)
    frame = pd.DataFrame(x, columns=models.FEATURES)
    want = models._fit_classifier().predict(frame)
    with in_process(model_uri=str(local_models["classifier"]), service_path=PATH) as c:
        documented = Draft202012Validator(v2_request(Schemas(c.app_state.contract, 10_000, PATH)).model_json_schema())
        for request in (column_request(sdk, frame), tensor_request(sdk, x)):
            body, json_length = request.to_rest()
            assert json_length is None
            assert documented.is_valid(body), list(documented.iter_errors(body))[:3]
            r = c.post(f"/v2/models/{PATH}/infer", json=body)
            assert r.status_code == 200, r.text
            response = infer_response.from_rest(r.json())
            assert response.id == request.id and response.model_name == PATH
            np.testing.assert_array_equal(response.outputs[0].as_numpy(), want)
            assert response.outputs[0].as_numpy().dtype == np.int64


def test_sdk_pyfunc_multi_output_over_a_real_process(sdk: Any, tmp_path: Path, local_models: dict[str, Path]) -> None:
    _, _, infer_response = sdk
    frame = pd.DataFrame({"a": [1.0, 2.5, -1.0], "b": [3, 4, 0], "name": ["x", "y", "x"]})
    with run_predictor(tmp_path, MODEL_URI=str(local_models["pyfunc"]), SERVICE_PATH=PATH) as p:
        body, _ = column_request(sdk, frame).to_rest()
        contract = resolve_contract(fetch(Settings(model_uri=str(local_models["pyfunc"]))))[0]
        assert Draft202012Validator(v2_request(Schemas(contract, 10_000, PATH)).model_json_schema()).is_valid(body)
        status, reply = p.post(f"/v2/models/{PATH}/infer", body)
        assert status == 200, reply
        outputs = {o.name: o.as_numpy() for o in infer_response.from_rest(reply).outputs}
    np.testing.assert_array_equal(outputs["score"], [5.0, 9.0, -2.0])
    np.testing.assert_array_equal(outputs["flag"], [True, False, True])
