"""Clients other people wrote, at their default settings, against real predictor processes for every model kind
the tests have: NVIDIA's `tritonclient[http]` and the kserve SDK's `InferenceRESTClient` (Open Inference
Protocol, binary tensors included; KServe V1). Every answer is compared with `mlflow.pyfunc`'s own predictions.

Model kinds (tests/predictor/models.py): the scikit-learn classifier (numpy kernel), its predict_proba (2-D
output), the contract model (entity lookup, kernel), the custom pyfunc (strings in, two outputs), the mixed
pyfunc (every input type, optional inputs) and the classifier logged without signature (served untyped).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.predictor import models
from tests.predictor.conftest import Predictor, run_predictor

DATATYPES = {"float64": "FP64", "float32": "FP32", "int64": "INT64", "bool": "BOOL", "object": "BYTES"}


@dataclass
class Served:
    """One running predictor, the model folder behind it and rows for it."""

    kind: str
    predictor: Predictor
    folder: Path
    frame: pd.DataFrame
    typed: bool = True

    @property
    def host(self) -> str:
        return self.predictor.url.removeprefix("http://")

    def expected(self, frame: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
        """mlflow.pyfunc's predictions, one array per output (a DataFrame's columns, else the one output)."""
        import mlflow.pyfunc

        out = mlflow.pyfunc.load_model(str(self.folder)).predict(self.frame if frame is None else frame)
        if isinstance(out, pd.DataFrame):
            return {str(c): out[c].to_numpy() for c in out.columns}
        return {"*": np.asarray(out)}


def _frames() -> dict[str, pd.DataFrame]:
    x, _ = models.breast_cancer(30)
    table = pd.DataFrame(x, columns=models.FEATURES)
    pyfunc = pd.DataFrame({"a": [1.0, 2.5, -1.0, 0.25], "b": [3, 4, 0, 7], "name": ["x", "y", "x", "ü"]})
    mixed = pd.DataFrame(
        {
            "dose": [2.5, 0.0, 999.5],
            "visits": [3, 0, 100],
            "arm": ["low", "placebo", "high"],
            "smoker": [True, False, True],
            "note": ["", "x", "ß"],
        }
    )
    return {"classifier": table, "proba": table, "contract": table, "pyfunc": pyfunc, "mixed": mixed, "untyped": table}


@pytest.fixture(scope="module")
def served(local_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    root = tmp_path_factory.mktemp("clients")
    folders = {
        "classifier": local_models["classifier"],
        "proba": models.save_classifier(root / "proba", predict_fn="predict_proba"),
        "contract": local_models["contract"],
        "pyfunc": local_models["pyfunc"],
        "mixed": models.save_mixed_pyfunc(root / "mixed"),
        "untyped": models.save_untyped(root / "untyped"),
    }
    frames = _frames()
    with contextlib.ExitStack() as stack:
        out = {}
        for kind, folder in folders.items():
            p = stack.enter_context(run_predictor(root, MODEL_URI=str(folder), SERVICE_PATH=kind))
            out[kind] = Served(kind, p, folder, frames[kind], typed=kind != "untyped")
        yield out


KINDS = ["classifier", "proba", "contract", "pyfunc", "mixed", "untyped"]
NUMERIC = ["classifier", "proba", "contract", "untyped"]


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    values = frame[name].to_numpy()
    return values.astype(object) if values.dtype == object else values


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    if list(want) == ["*"]:
        assert len(got) == 1, list(got)
        want = {next(iter(got)): want["*"]}
    assert sorted(got) == sorted(want)
    for name, values in want.items():
        np.testing.assert_array_equal(got[name].reshape(values.shape), values, err_msg=name)


# ---- tritonclient -----------------------------------------------------------------------------------------
def _triton_inputs(frame: pd.DataFrame, names: list[str], binary: bool) -> list[Any]:
    import tritonclient.http as triton

    inputs = []
    for column, name in zip(frame.columns, names, strict=True):
        values = _column(frame, column)
        item = triton.InferInput(name, list(values.shape), DATATYPES[str(values.dtype)])
        item.set_data_from_numpy(values, binary_data=binary)
        inputs.append(item)
    return inputs


def _triton_outputs(result: Any) -> dict[str, np.ndarray]:
    return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_one_tensor_per_input(served: dict[str, Served], kind: str, binary: bool) -> None:
    import tritonclient.http as triton

    s = served[kind]
    client = triton.InferenceServerClient(s.host)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(kind)
    metadata = client.get_model_metadata(kind)
    names = [t["name"] for t in metadata["inputs"]] or list(s.frame.columns)  # untyped: the frame's own names
    assert names == list(s.frame.columns)
    outputs = None
    if not binary:  # ask for every output, as JSON (an untyped model declares none: its one output is "predict")
        declared = [o["name"] for o in metadata["outputs"]] or ["predict"]
        outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in declared]
    result = client.infer(kind, _triton_inputs(s.frame, names, binary), outputs=outputs, request_id="r1")
    response = result.get_response()
    assert response["id"] == "r1" and response["model_name"] == kind
    sent_as = {"binary" if "binary_data_size" in (o.get("parameters") or {}) else "json" for o in response["outputs"]}
    assert sent_as == {"binary" if binary else "json"}  # tritonclient asks for binary outputs by default
    _same(_triton_outputs(result), s.expected())
    client.close()


@pytest.mark.parametrize("kind", ["classifier", "pyfunc", "mixed"])
def test_tritonclient_inputs_by_position(served: dict[str, Served], kind: str) -> None:
    import tritonclient.http as triton

    s = served[kind]
    client = triton.InferenceServerClient(s.host)
    names = [f"INPUT__{i}" for i in range(len(s.frame.columns))]
    result = client.infer(kind, _triton_inputs(s.frame, names, True), model_version="1")
    _same(_triton_outputs(result), s.expected())
    client.close()


@pytest.mark.parametrize("kind", NUMERIC)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tritonclient_one_2d_tensor(served: dict[str, Served], kind: str, dtype: str) -> None:
    import tritonclient.http as triton

    s = served[kind]
    matrix = s.frame.to_numpy().astype(dtype)
    item = triton.InferInput("INPUT0", list(matrix.shape), DATATYPES[dtype])
    item.set_data_from_numpy(matrix)
    client = triton.InferenceServerClient(s.host)
    result = client.infer(kind, [item])
    as_float64 = pd.DataFrame(matrix.astype(np.float64), columns=s.frame.columns)
    _same(_triton_outputs(result), s.expected(as_float64))
    client.close()


def test_tritonclient_errors_name_the_tensor(served: dict[str, Served]) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    s = served["mixed"]
    frame = s.frame.assign(visits=np.array([3, 0, 300], dtype=np.int64))
    client = triton.InferenceServerClient(s.host)
    with pytest.raises(InferenceServerException) as err:
        client.infer("mixed", _triton_inputs(frame, list(frame.columns), False))
    assert "inputs[1].data[2]" in str(err.value) and "less than or equal to 100" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.infer("no-such-model", _triton_inputs(frame, list(frame.columns), True))
    assert "serves the model 'mixed' only" in str(err.value)
    client.close()


# ---- the kserve SDK -----------------------------------------------------------------------------------------
def _kserve(protocol: str) -> Any:
    from kserve import InferenceRESTClient, RESTConfig

    return InferenceRESTClient(RESTConfig(protocol=protocol, retries=0, timeout=30))


def _kserve_request(kind: str, frame: pd.DataFrame) -> Any:
    from kserve import InferInput, InferRequest

    inputs = []
    for column in frame.columns:
        values = _column(frame, column)
        item = InferInput(name=column, shape=list(values.shape), datatype=DATATYPES[str(values.dtype)])
        item.set_data_from_numpy(values)  # binary_data=True, the SDK's default
        inputs.append(item)
    return InferRequest(model_name=kind, infer_inputs=inputs, request_id="k1")


@pytest.mark.parametrize("kind", KINDS)
def test_kserve_sdk_v2_binary(served: dict[str, Served], kind: str) -> None:
    s = served[kind]

    async def run() -> Any:
        client = _kserve("v2")
        try:
            assert await client.is_server_live(s.predictor.url) and await client.is_server_ready(s.predictor.url)
            assert await client.is_model_ready(s.predictor.url, kind)
            return await client.infer(s.predictor.url, _kserve_request(kind, s.frame), model_name=kind)
        finally:
            await client.close()

    response = asyncio.run(run())
    assert response.id == "k1"
    _same({o.name: o.as_numpy() for o in response.outputs}, s.expected())


@pytest.mark.parametrize("kind", ["classifier", "pyfunc", "mixed", "untyped"])
def test_kserve_sdk_v1(served: dict[str, Served], kind: str) -> None:
    s = served[kind]
    rows = s.frame.to_numpy().tolist() if kind in NUMERIC else s.frame.to_dict(orient="records")

    async def run() -> Any:
        client = _kserve("v1")
        try:
            assert await client.is_server_live(s.predictor.url)
            assert await client.is_model_ready(s.predictor.url, kind)
            return await client.infer(s.predictor.url, {"instances": rows}, model_name=kind)
        finally:
            await client.close()

    predictions = asyncio.run(run())["predictions"]
    want = s.expected()
    if len(want) == 1:  # one output: one value per row (a one-column DataFrame's values)
        assert predictions == next(iter(want.values())).tolist()
    else:
        assert predictions == [dict(zip(want, values, strict=True)) for values in zip(*want.values(), strict=True)]


# ---- the same clients against a protected predictor -------------------------------------------------------------
@pytest.fixture(scope="module")
def protected(local_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    """The classifier behind API keys (a keys file written by `keygen`)."""
    from custom_predictor.auth.apikeys import generate

    root = tmp_path_factory.mktemp("protected-clients")
    key, line = generate("clients")
    (root / "keys").write_text(line + "\n")
    folder = local_models["classifier"]
    env = {"AUTH_MODES": "apikey", "AUTH_API_KEYS_FILE": str(root / "keys")}
    with run_predictor(root, MODEL_URI=str(folder), SERVICE_PATH="classifier", **env) as p:
        yield Served("classifier", p, folder, _frames()["classifier"]), key


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
def test_tritonclient_with_a_credential(protected: tuple[Served, str], header: str) -> None:
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    s, key = protected
    client = triton.InferenceServerClient(s.host)
    inputs = _triton_inputs(s.frame, list(s.frame.columns), True)
    value = key if header == "X-API-Key" else f"Bearer {key}"
    result = client.infer("classifier", inputs, headers={header: value})
    _same(_triton_outputs(result), s.expected())
    with pytest.raises(InferenceServerException) as refused:
        client.infer("classifier", inputs)
    assert refused.value.status() == "401"
    assert client.is_server_ready()  # the probes need no credential


def test_kserve_sdk_with_a_credential(protected: tuple[Served, str]) -> None:
    import httpx

    s, key = protected

    async def run(headers: dict[str, str] | None) -> Any:
        client = _kserve("v2")
        try:
            request = _kserve_request("classifier", s.frame)
            return await client.infer(s.predictor.url, request, model_name="classifier", headers=headers)
        finally:
            await client.close()

    response = asyncio.run(run({"Authorization": f"Bearer {key}"}))
    _same({o.name: o.as_numpy() for o in response.outputs}, s.expected())
    with pytest.raises(httpx.HTTPStatusError) as refused:
        asyncio.run(run(None))
    assert refused.value.response.status_code == 401


def test_mlflow_scoring_protocol_with_a_credential(protected: tuple[Served, str]) -> None:
    """MLflow's scoring protocol as MLflow's own client serializes it (`dump_input_data`), with the header its
    `ScoringServerClient` cannot send."""
    import requests
    from mlflow.pyfunc.scoring_server.client import dump_input_data

    s, key = protected
    url = f"{s.predictor.url}/invocations"
    body = dump_input_data(s.frame)
    answer = requests.post(url, data=body, headers={"Content-Type": "application/json", "X-API-Key": key}, timeout=30)
    assert answer.status_code == 200, answer.text
    np.testing.assert_array_equal(np.asarray(answer.json()["predictions"]), s.expected()["*"])
    refused = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
