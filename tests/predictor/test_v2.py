"""Open Inference Protocol (V2) conformance in-process: bodies without Content-Type, inputs by name, position or
one 2-D tensor, datatype conversions and ranges, requested outputs and parameters, and the binary tensor data
extension both ways (requests built by kserve's own `InferRequest.to_rest()`, hand-made bytes for the broken
ones). Real clients over real processes are in test_clients.py."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from tests.predictor import models
from tests.predictor.conftest import in_process

PATH = "m"
INFER = f"/v2/models/{PATH}/infer"
X, _ = models.breast_cancer(8)


@pytest.fixture(scope="module")
def classifier(local_models: dict[str, Path]) -> Any:
    with in_process(model_uri=str(local_models["classifier"]), service_path=PATH) as c:
        yield c


@pytest.fixture(scope="module")
def pyfunc(local_models: dict[str, Path]) -> Any:
    with in_process(model_uri=str(local_models["pyfunc"]), service_path=PATH) as c:
        yield c


def want(x: np.ndarray) -> list[int]:
    import pandas as pd

    return [int(v) for v in models._fit_classifier().predict(pd.DataFrame(x, columns=models.FEATURES))]


def columns(x: np.ndarray, names: list[str] | None = None, datatype: str = "FP64") -> list[dict[str, Any]]:
    names = names or models.FEATURES
    return [{"name": n, "shape": [len(x)], "datatype": datatype, "data": x[:, i].tolist()} for i, n in enumerate(names)]


def sdk_request(arrays: dict[str, np.ndarray], *, binary: bool = True, **kw: Any) -> tuple[bytes, dict[str, str]]:
    """A request body and headers as kserve's InferenceRESTClient sends them (binary by default)."""
    kinds = {
        "float64": "FP64",
        "float32": "FP32",
        "int64": "INT64",
        "int32": "INT32",
        "bool": "BOOL",
        "object": "BYTES",
    }
    inputs = []
    for name, a in arrays.items():
        item = InferInput(name=name, shape=list(a.shape), datatype=kinds[str(a.dtype)])
        item.set_data_from_numpy(a, binary_data=binary)
        inputs.append(item)
    body, json_length = InferRequest(model_name=PATH, infer_inputs=inputs, **kw).to_rest()
    if json_length is None:
        return orjson.dumps(body), {"content-type": "application/json"}
    return body, {"inference-header-content-length": str(json_length), "content-type": "application/octet-stream"}


def outputs(r: Any) -> dict[str, np.ndarray]:
    assert r.status_code == 200, r.text
    length = int(r.headers.get("inference-header-content-length", len(r.content)))
    return {o.name: o.as_numpy() for o in InferResponse.from_bytes(r.content, length).outputs}


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/octet-stream"}, {"content-type": "text/plain"}])
def test_a_json_body_is_json_whatever_its_content_type(classifier: Any, headers: dict[str, str]) -> None:
    r = classifier.post(INFER, content=orjson.dumps({"inputs": columns(X)}), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == want(X)


def test_inputs_by_position_in_metadata_order(classifier: Any) -> None:
    declared = [t["name"] for t in classifier.get(f"/v2/models/{PATH}").json()["inputs"]]
    assert declared == models.FEATURES
    r = classifier.post(INFER, json={"inputs": columns(X, [f"INPUT{i}" for i in range(5)])})
    assert r.json()["outputs"][0]["data"] == want(X)
    r = classifier.post(INFER, json={"inputs": columns(X, ["radius", "INPUT1", "perimeter", "area", "smoothness"])})
    assert r.status_code == 422 and r.json()["details"][0]["loc"] == "inputs[1].name", r.text


@pytest.mark.parametrize("datatype", ["FP32", "FP64", "INT64", "INT32", "UINT16"])
def test_one_2d_tensor_of_any_numeric_datatype(classifier: Any, datatype: str) -> None:
    x = X.round() if datatype.startswith(("INT", "UINT")) else X.astype(np.float32).astype(np.float64)
    body = {"inputs": [{"name": "x", "shape": [len(x), 5], "datatype": datatype, "data": x.ravel().tolist()}]}
    if datatype.startswith(("INT", "UINT")):
        body["inputs"][0]["data"] = [int(v) for v in x.ravel()]
    r = classifier.post(INFER, json=body)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == want(x)


@pytest.mark.parametrize(
    ("datatype", "value", "why"),
    [
        ("INT32", 2**31, "out of INT32's range"),
        ("UINT8", -1, "out of UINT8's range"),
        ("INT8", 128, "out of INT8's range"),
        ("FP16", 70000.0, "out of FP16's range"),
        ("INT64", 2.5, "whole numbers"),
        ("FP64", "1.0", "numbers"),
        ("FP64", True, "numbers"),
        ("INT64", 2**53 + 1, "not exact as the double"),
    ],
)
def test_values_beyond_their_datatype_are_refused_naming_the_tensor(
    classifier: Any, datatype: str, value: Any, why: str
) -> None:
    tensors = columns(X[:2])
    tensors[3] = {"name": "area", "shape": [2], "datatype": datatype, "data": [1, value]}
    r = classifier.post(INFER, json={"inputs": tensors})
    assert r.status_code == 422, r.text
    (detail,) = r.json()["details"]
    assert detail["loc"] == "inputs[3].data[1]" and why in detail["msg"], detail
    assert "inputs[3].data[1]" in r.json()["error"]  # what tritonclient and kserve's client show


def test_whole_floats_for_an_integer_input_and_ints_for_a_double(pyfunc: Any) -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "INT32", "data": [1, 2]},
            {"name": "b", "shape": [2], "datatype": "FP32", "data": [3.0, 4.0]},
            {"name": "name", "shape": [2], "datatype": "BYTES", "data": ["x", "y"]},
        ]
    }
    assert pyfunc.post(INFER, json=body).json()["outputs"][0]["data"] == [5.0, 8.0]
    body["inputs"][1]["data"] = [3.5, 4.0]
    r = pyfunc.post(INFER, json=body)
    assert r.status_code == 422 and r.json()["details"][0]["loc"] == "inputs[1].data[0]", r.text


def test_requested_outputs_and_unknown_ones(pyfunc: Any) -> None:
    frame = {"a": np.array([1.0, 2.0]), "b": np.array([3, 4]), "name": np.array(["x", "y"], dtype=object)}
    body, _ = sdk_request(frame, binary=False)
    as_json = orjson.loads(body)
    r = pyfunc.post(INFER, json={**as_json, "outputs": [{"name": "flag"}]})
    assert [o["name"] for o in r.json()["outputs"]] == ["flag"] and r.json()["outputs"][0]["data"] == [True, False]
    r = pyfunc.post(INFER, json={**as_json, "outputs": [{"name": "score"}, {"name": "nope"}]})
    assert r.status_code == 422 and r.json()["details"][0]["loc"] == "outputs[1].name", r.text
    assert "nope" not in r.text  # the unknown name is not echoed; the known ones are listed
    r = pyfunc.post(INFER, json={**as_json, "outputs": [{"name": "score", "parameters": {"classification": 2}}]})
    assert r.status_code == 422 and "classification" in r.json()["details"][0]["loc"], r.text


def test_binary_inputs_and_outputs_equal_json(pyfunc: Any, classifier: Any) -> None:
    frame = {"a": np.array([1.0, 2.5, -1.0]), "b": np.array([3, 4, 0]), "name": np.array(["x", "ü", "x"], dtype=object)}
    body, headers = sdk_request(frame, parameters={"binary_data_output": True})
    r = pyfunc.post(INFER, content=body, headers=headers)
    assert r.headers["content-type"] == "application/octet-stream" and "inference-header-content-length" in r.headers
    got = outputs(r)
    np.testing.assert_array_equal(got["score"], [5.0, 9.0, -2.0])
    np.testing.assert_array_equal(got["flag"], [True, False, True])
    json_body, json_headers = sdk_request(frame, binary=False)
    again = outputs(pyfunc.post(INFER, content=json_body, headers=json_headers))
    assert {k: v.tolist() for k, v in got.items()} == {k: v.tolist() for k, v in again.items()}
    body, headers = sdk_request({"x": np.ascontiguousarray(X)})  # one 2-D FP64 tensor, binary; JSON answer
    r = classifier.post(INFER, content=body, headers=headers)
    assert r.headers["content-type"] == "application/json" and r.json()["outputs"][0]["data"] == want(X)


def test_binary_output_asked_per_output(pyfunc: Any) -> None:
    body = {
        "inputs": [
            {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
            {"name": "b", "shape": [1], "datatype": "INT64", "data": [1]},
            {"name": "name", "shape": [1], "datatype": "BYTES", "data": ["x"]},
        ],
        "outputs": [{"name": "score", "parameters": {"binary_data": True}}, {"name": "flag"}],
    }
    r = pyfunc.post(INFER, json=body)
    length = int(r.headers["inference-header-content-length"])
    head = orjson.loads(r.content[:length])
    score, flag = head["outputs"]
    assert score["parameters"] == {"binary_data_size": 8} and "data" not in score
    assert flag["data"] == [True] and struct.unpack("<d", r.content[length:]) == (3.0,)


def _raw(header: dict[str, Any], tail: bytes, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + tail, {"inference-header-content-length": str(len(head) if length is None else length)}


@pytest.mark.parametrize(
    ("tensor", "tail", "loc"),
    [
        (
            {"name": "x", "shape": [1, 5], "datatype": "FP64", "parameters": {"binary_data_size": 48}},
            b"\0" * 40,
            "size",
        ),
        (
            {"name": "x", "shape": [1, 5], "datatype": "FP64", "parameters": {"binary_data_size": 32}},
            b"\0" * 40,
            "body",
        ),
        ({"name": "x", "shape": [1, 5], "datatype": "FP64", "parameters": {"binary_data_size": 32}}, b"\0" * 32, "x"),
        ({"name": "x", "shape": [1, 5], "datatype": "FP64", "parameters": {"binary_data_size": -1}}, b"", "size"),
        (
            {"name": "x", "shape": [1, 5], "datatype": "FP64", "data": [1] * 5, "parameters": {"binary_data_size": 40}},
            b"\0" * 40,
            "data",
        ),
    ],
)
def test_broken_binary_requests_name_the_tensor(classifier: Any, tensor: dict, tail: bytes, loc: str) -> None:
    body, headers = _raw({"inputs": [tensor]}, tail)
    r = classifier.post(INFER, content=body, headers=headers)
    assert r.status_code == 422, r.text
    where = r.json()["details"][0]["loc"]
    expected = {
        "size": "inputs[0].parameters.binary_data_size",
        "body": "body",
        "x": "inputs[0]",
        "data": "inputs[0].data",
    }[loc]
    assert where == expected, r.json()


def test_broken_binary_values(pyfunc: Any) -> None:
    def body(datatype: str, raw: bytes) -> tuple[bytes, dict[str, str]]:
        header = {
            "inputs": [
                {"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "b", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "name", "shape": [1], "datatype": datatype, "parameters": {"binary_data_size": len(raw)}},
            ]
        }
        return _raw(header, raw)

    for datatype, raw, why in (
        ("BYTES", struct.pack("<I", 9) + b"abc", "longer than the data left"),
        ("BYTES", b"\1\0", "cut short"),
        ("BYTES", struct.pack("<I", 2) + b"\xff\xfe", "UTF-8"),
        ("BYTES", struct.pack("<I", 1) + b"x" + struct.pack("<I", 1) + b"y", "needs 1 BYTES elements"),
    ):
        content, headers = body(datatype, raw)
        r = pyfunc.post(INFER, content=content, headers=headers)
        assert r.status_code == 422 and why in r.json()["details"][0]["msg"], r.text
    content, headers = _raw({"inputs": [{"name": "smoker", "shape": [1], "datatype": "BOOL"}]}, b"")
    for length in ("-1", "x", str(len(content) + 1)):
        r = pyfunc.post(INFER, content=content, headers={"inference-header-content-length": length})
        assert r.status_code == 400 and "Inference-Header-Content-Length" in r.json()["error"], r.text


def test_a_bool_byte_other_than_0_or_1_is_refused(local_models: dict[str, Path], tmp_path: Path) -> None:
    folder = models.save_mixed_pyfunc(tmp_path / "mixed")
    with in_process(model_uri=str(folder), service_path=PATH) as c:
        header = {
            "inputs": [
                {"name": "dose", "shape": [1], "datatype": "FP64", "data": [1.0]},
                {"name": "visits", "shape": [1], "datatype": "INT64", "data": [1]},
                {"name": "arm", "shape": [1], "datatype": "BYTES", "data": ["low"]},
                {"name": "smoker", "shape": [1], "datatype": "BOOL", "parameters": {"binary_data_size": 1}},
            ]
        }
        for byte, status in ((b"\1", 200), (b"\2", 422)):
            content, headers = _raw(header, byte)
            r = c.post(INFER, content=content, headers=headers)
            assert r.status_code == status, r.text
        assert r.json()["details"][0]["loc"] == "inputs[3]"


def test_1000_binary_rows_equal_the_json_path(classifier: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(X.min(axis=0), X.max(axis=0), size=(1000, 5))
    body, headers = sdk_request({"x": x})
    binary = outputs(classifier.post(INFER, content=body, headers=headers))
    as_json = classifier.post(
        INFER, json={"inputs": [{"name": "x", "shape": [1000, 5], "datatype": "FP64", "data": x.ravel().tolist()}]}
    )
    assert binary["prediction"].tolist() == as_json.json()["outputs"][0]["data"] == want(x)


def test_server_metadata_versions_and_readiness(classifier: Any) -> None:
    assert classifier.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    assert classifier.get(f"/v2/models/{PATH}/versions/1/ready").json() == {"name": PATH, "ready": True}
    r = classifier.post(f"/v2/models/{PATH}/versions/1/infer", json={"inputs": columns(X[:1])})
    assert r.json()["outputs"][0]["data"] == want(X[:1])
    assert classifier.get(f"/v2/models/{PATH}").json()["outputs"] == [
        {"name": "prediction", "datatype": "INT64", "shape": [-1]}
    ]
    root = classifier.get("/").json()
    assert root["status"] == "alive" and root["docs"] == f"/{PATH}/api/" and root["ready"] is True
