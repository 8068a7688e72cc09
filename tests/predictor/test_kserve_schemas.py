"""The KServe V1/V2 request schemas documented per contract say what the routes do: a body is schema-valid
exactly when the route answers 200, except for the rules JSON Schema cannot state (stated in words instead).

Bodies are checked against the documented V1 and V2 request models (`v1_request`, `v2_request`) with a JSON
Schema 2020-12 validator and sent to the predictor in-process, for a real pyfunc model with inputs of every type
(`models.save_mixed_pyfunc`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from custom_predictor.schemas import Schemas
from tests.predictor import models
from tests.predictor.conftest import in_process

PATH = "mixed"
ROW = {"dose": 2.5, "visits": 3, "arm": "low", "smoker": True, "note": "x"}
"""A full row of the mixed model; `smoker` and `note` are optional."""


def v1_request(schemas: Schemas) -> Any:
    """The documented KServe V1 request of a contract (what the app puts in its OpenAPI document)."""
    from custom_predictor.protocols.v1.schemas import request_model

    return request_model(schemas)


def v2_request(schemas: Schemas) -> Any:
    """The documented Open Inference Protocol request of a contract."""
    from custom_predictor.protocols.v2.schemas import v2_request_model

    return v2_request_model(schemas.contract, schemas.max_records, schemas.example)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = models.save_mixed_pyfunc(tmp_path_factory.mktemp("mixed") / "model")
    with in_process(model_uri=str(folder), service_path=PATH) as client:
        client.schemas = Schemas(client.app_state.contract, 10_000, PATH)
        yield client


def col(name: str, datatype: str, data: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}


COLUMNS = [
    col("dose", "FP64", [2.5, 0.0]),
    col("visits", "INT64", [3, 0]),
    col("arm", "BYTES", ["low", "placebo"]),
    col("smoker", "BOOL", [True, False]),
    col("note", "BYTES", ["", "x"]),
]
REQUIRED = COLUMNS[:3]

V1_CASES = [
    ("a record", {"instances": [ROW]}, True),
    ("values in input order", {"instances": [list(ROW.values())]}, True),
    ("optional inputs left out", {"instances": [{"dose": 1, "visits": 3.0, "arm": "high"}]}, True),
    ("too few values", {"instances": [[2.5, 3, "low"]]}, False),
    ("a value not allowed", {"instances": [{**ROW, "arm": "mid"}]}, False),
    ("a fraction for an integer", {"instances": [{**ROW, "visits": 3.5}]}, False),
    ("below the minimum", {"instances": [{**ROW, "dose": -1}]}, False),
    ("null for an optional input", {"instances": [{**ROW, "smoker": None}]}, False),
    ("an unknown input", {"instances": [{**ROW, "extra": 1}]}, False),
    ("a string for a boolean", {"instances": [[2.5, 3, "low", "yes", "x"]]}, False),
    ("no rows", {"instances": []}, False),
]

V2_CASES = [
    ("one tensor per input", {"id": "r1", "model_name": PATH, "inputs": COLUMNS}, True),
    ("required inputs only, any order", {"inputs": REQUIRED[::-1]}, True),
    (
        "[n, 1] shapes, nested data, other integer datatypes",
        {
            "inputs": [
                col("dose", "INT32", [[2], [0]], [2, 1]),
                col("visits", "UINT8", [[3], [0]], [2, 1]),
                col("arm", "BYTES", [["low"], ["high"]], [2, 1]),
            ]
        },
        True,
    ),
    ("one 2-D tensor, nested rows", {"inputs": [col("input-0", "BYTES", [list(ROW.values())], [1, 5])]}, True),
    ("a datatype the input does not take", {"inputs": [col("dose", "BOOL", [2.5, 0.0]), *REQUIRED[1:]]}, False),
    ("BYTES for a number", {"inputs": [REQUIRED[0], col("visits", "BYTES", [3, 0]), REQUIRED[2]]}, False),
    ("a required input missing", {"inputs": REQUIRED[:2]}, False),
    ("an input twice", {"inputs": [*REQUIRED, REQUIRED[0]]}, False),
    ("an unknown input", {"inputs": [*REQUIRED, col("dosage", "FP64", [1.0, 2.0])]}, False),
    ("a value out of range", {"inputs": [REQUIRED[0], col("visits", "INT64", [3, 101]), REQUIRED[2]]}, False),
    ("a 2-D tensor of the wrong width", {"inputs": [col("m", "BYTES", [[2.5, 3, "low", True]], [1, 4])]}, False),
    ("a 2-D tensor of no rows", {"inputs": [col("m", "BYTES", [], [0, 5])]}, False),
    (
        "by position, names not the inputs'",
        {"inputs": [col(f"INPUT{i}", t["datatype"], t["data"]) for i, t in enumerate(COLUMNS)]},
        True,
    ),
    (
        "by position, optional inputs left out",
        {"inputs": [col(f"t{i}", t["datatype"], t["data"]) for i, t in enumerate(REQUIRED)]},
        True,
    ),
    ("by position, a required input left out", {"inputs": [col("t0", "FP64", [2.5, 0.0])]}, False),
    ("names mixing inputs and others", {"inputs": [col("t0", "FP64", [2.5, 0.0]), *REQUIRED[1:]]}, False),
    (
        "whole numbers as FP32 for an integer",
        {"inputs": [REQUIRED[0], col("visits", "FP32", [3.0, 0]), REQUIRED[2]]},
        True,
    ),
    (
        "a fraction as FP32 for an integer",
        {"inputs": [REQUIRED[0], col("visits", "FP32", [3.5, 0]), REQUIRED[2]]},
        False,
    ),
    ("within INT8 and the contract", {"inputs": [col("dose", "INT8", [127, 0]), *REQUIRED[1:]]}, True),
    ("beyond INT8, within the contract", {"inputs": [col("dose", "INT8", [128, 0]), *REQUIRED[1:]]}, False),
    ("a negative UINT8", {"inputs": [REQUIRED[0], col("visits", "UINT8", [-1, 0]), REQUIRED[2]]}, False),
    ("a fraction as INT64 for a double", {"inputs": [col("dose", "INT64", [2.5, 0]), *REQUIRED[1:]]}, False),
]

RULES_IN_WORDS = [
    ("shape[0] is not the number of values", {"inputs": [col("dose", "FP64", [2.5], [2]), *REQUIRED[1:]]}),
    ("tensors with different rows", {"inputs": [col("dose", "FP64", [2.5]), *REQUIRED[1:]]}),
]


def _validator(model: Any) -> Draft202012Validator:
    schema = model.model_json_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.mark.parametrize(("case", "body", "valid"), V1_CASES, ids=[c[0] for c in V1_CASES])
def test_v1_schema_says_what_the_route_accepts(mixed: Any, case: str, body: dict, valid: bool) -> None:
    r = mixed.post(f"/v1/models/{PATH}:predict", json=body)
    assert _validator(v1_request(mixed.schemas)).is_valid(body) is valid, case
    assert r.status_code == (200 if valid else 422), r.text
    if valid:
        assert len(r.json()["predictions"]) == len(body["instances"])


@pytest.mark.parametrize(("case", "body", "valid"), V2_CASES, ids=[c[0] for c in V2_CASES])
def test_v2_schema_says_what_the_route_accepts(mixed: Any, case: str, body: dict, valid: bool) -> None:
    r = mixed.post(f"/v2/models/{PATH}/infer", json=body)
    assert _validator(v2_request(mixed.schemas)).is_valid(body) is valid, case
    assert r.status_code == (200 if valid else 422), r.text


@pytest.mark.parametrize(("case", "body"), RULES_IN_WORDS, ids=[c[0] for c in RULES_IN_WORDS])
def test_v2_rules_json_schema_cannot_state_are_described_and_checked(mixed: Any, case: str, body: dict) -> None:
    assert _validator(v2_request(mixed.schemas)).is_valid(body), case
    r = mixed.post(f"/v2/models/{PATH}/infer", json=body)
    assert r.status_code == 422 and r.json()["details"][0]["loc"] in ("inputs[0].data", "inputs[1].shape"), r.text
    described = v2_request(mixed.schemas).model_json_schema()["properties"]["inputs"]["description"]
    assert "shape[0] is its number of rows" in described and "every tensor has the same number of rows" in described


def test_v2_flat_2d_tensor_of_mixed_inputs_is_described_not_in_the_schema(mixed: Any) -> None:
    """A flat array cannot say which value is for which input, so for inputs of different types the schema shows
    nested rows only; the flat form still works and the tensor's description says so."""
    body = {"inputs": [col("m", "BYTES", list(ROW.values()), [1, 5])]}
    assert not _validator(v2_request(mixed.schemas)).is_valid(body)
    assert mixed.post(f"/v2/models/{PATH}/infer", json=body).status_code == 200
    defs = v2_request(mixed.schemas).model_json_schema()["$defs"]
    matrix = next(d for k, d in defs.items() if k.startswith("V2MatrixTensor"))
    assert "a flat row-major array of n x 5 values is accepted too" in matrix["description"]


def _datatypes(d: dict) -> list[str]:
    datatype = d["properties"]["datatype"]
    return datatype.get("enum", [datatype.get("const")])


def test_v2_schema_names_inputs_datatypes_and_their_ranges(mixed: Any) -> None:
    defs = v2_request(mixed.schemas).model_json_schema()["$defs"]
    groups: dict[str, dict[str, dict]] = {}
    for key, d in defs.items():
        if key.startswith("V2InputTensor"):
            for datatype in _datatypes(d):
                groups.setdefault(d["properties"]["name"]["const"], {})[datatype] = d
    assert list(groups) == ["dose", "visits", "arm", "smoker", "note"]
    assert list(groups["smoker"]) == ["BOOL"] and list(groups["arm"]) == ["BYTES"]
    assert {"FP16", "FP32", "FP64", "INT8", "UINT64"} <= set(groups["visits"]) and "BOOL" not in groups["dose"]

    def item(d: dict) -> dict:
        flat = d["properties"]["data"]["anyOf"][0]["items"]
        return flat.get("anyOf", [flat])[0]

    assert (item(groups["dose"]["INT8"])["minimum"], item(groups["dose"]["INT8"])["maximum"]) == (0, 127)
    assert item(groups["dose"]["FP16"])["type"] == "number" and item(groups["dose"]["FP16"])["maximum"] == 1000
    assert item(groups["visits"]["FP32"])["type"] == "integer"  # floating datatypes carry whole numbers only
    matrix = next(d for k, d in defs.items() if k.startswith("V2MatrixTensor"))
    assert matrix["properties"]["name"]["not"] == {"enum": list(groups)}
    positional = next(d for k, d in defs.items() if k.startswith("V2PositionTensor"))
    assert positional["properties"]["name"]["not"] == {"enum": list(groups)}


def test_examples_are_valid_and_accepted(mixed: Any) -> None:
    for route, model in (
        (f"/v1/models/{PATH}:predict", v1_request(mixed.schemas)),
        (f"/v2/models/{PATH}/infer", v2_request(mixed.schemas)),
    ):
        (example,) = model.model_json_schema()["examples"]
        assert _validator(model).is_valid(example), example
        assert mixed.post(route, json=example).status_code == 200, route


def test_flat_2d_tensor_is_in_the_schema_when_every_input_takes_the_same_values(local_models: dict[str, Path]) -> None:
    with in_process(model_uri=str(local_models["contract"]), service_path="c") as client:
        schemas = Schemas(client.app_state.contract, 10, "c")
        x, _ = models.breast_cancer(2)
        body = {"inputs": [col("input-0", "FP64", [float(v) for v in x.ravel()], [2, 5])]}
        assert _validator(v2_request(schemas)).is_valid(body)
        assert client.post("/v2/models/c/infer", json=body).status_code == 200
        too_many = {"inputs": [col("input-0", "FP64", [1.0] * 55, [11, 5])]}
        assert not _validator(v2_request(schemas)).is_valid(too_many)  # max_records = 10 is documented too
