"""The contract format: parsing, the committed JSON Schema, derivation from signatures, and clear errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from custom_predictor.contract import ContractError, derive_contract, json_schema, load_contract, load_entities
from tests.predictor import models

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "custom_predictor" / "contract.schema.json"


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_the_example_contract_is_valid_and_matches_the_json_schema(tmp_path: Path) -> None:
    data = models.contract_dict()
    contract = load_contract(write(tmp_path, data))
    assert contract.input_names == models.FEATURES
    assert contract.entity is not None and contract.entity.id == "patient_id"
    assert contract.outputs[0].labels == {"0": "malignant", "1": "benign"}
    jsonschema.validate(data, json.loads(SCHEMA_FILE.read_text()))


def test_committed_json_schema_is_current() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), "regenerate custom_predictor/contract.schema.json"


def test_type_aliases_are_accepted(tmp_path: Path) -> None:
    data = {"inputs": [{"name": "n", "type": "long"}, {"name": "x", "type": "float"}]}
    assert [i.type for i in load_contract(write(tmp_path, data)).inputs] == ["integer", "double"]


def _bad(mutate: Any) -> dict:
    data = copy.deepcopy(models.contract_dict())
    mutate(data)
    return data


INVALID = [
    ("not-a-mapping", "- just\n- a list\n", "", "must hold a mapping"),
    ("bad-yaml", "inputs: [\n  {name: a\n", "line", "not valid YAML"),
    ("no-inputs", {"outputs": []}, "inputs", "Field required"),
    ("unknown-type", _bad(lambda d: d["inputs"][1].update(type="decimal")), "inputs[1].type", "Input should be"),
    ("unknown-key", _bad(lambda d: d["inputs"][0].update(colour="red")), "inputs[0].colour", "Extra inputs"),
    (
        "min-over-max",
        _bad(lambda d: d["inputs"][2].update(minimum=10, maximum=1)),
        "inputs[2]",
        "minimum 10.0 is greater than maximum 1.0",
    ),
    ("example-out-of-range", _bad(lambda d: d["inputs"][0].update(example=9999.0)), "inputs[0]", "example 9999.0"),
    ("range-on-string", {"inputs": [{"name": "s", "type": "string", "minimum": 1}]}, "inputs[0]", "only apply"),
    ("duplicate-input", _bad(lambda d: d["inputs"].append(dict(d["inputs"][0]))), "", "is used twice"),
    ("entity-id-is-input", _bad(lambda d: d["entity"].update(id="radius")), "", "also an input name"),
    (
        "expected-length",
        _bad(lambda d: d["test_data"].update(expected=[1])),
        "test_data",
        "expected has 1 values but rows has 3",
    ),
    (
        "test-row-unknown-input",
        _bad(lambda d: d["test_data"]["rows"][1].update(age=3)),
        "test_data.rows[1].age",
        "not a declared input",
    ),
    (
        "test-row-wrong-type",
        _bad(lambda d: d["test_data"]["rows"][0].update(radius="big")),
        "test_data.rows[0].radius",
        "expected double",
    ),
    (
        "test-row-missing-input",
        _bad(lambda d: d["test_data"]["rows"][2].pop("area")),
        "test_data.rows[2]",
        "missing required inputs ['area']",
    ),
    ("bad-version", _bad(lambda d: d.update(version=7)), "version", "Input should be 1"),
    ("source-is-reserved", _bad(lambda d: d.update(source="signature")), "source", "set by the predictor"),
]


@pytest.mark.parametrize(("data", "field", "problem"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_contracts_name_file_field_and_problem(tmp_path: Path, data: Any, field: str, problem: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert err.value.file == str(path)
    assert err.value.field.startswith(field), err.value
    assert problem in err.value.problem, err.value
    assert str(path) in str(err.value)


def test_json_schema_rejects_what_the_loader_rejects() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    for name, data, *_ in INVALID:
        if isinstance(data, dict) and name in ("unknown-type", "unknown-key", "no-inputs", "bad-version"):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(data, schema)


def test_entity_file_problems_are_contract_errors(tmp_path: Path) -> None:
    contract = load_contract(write(tmp_path, models.contract_dict()))
    with pytest.raises(ContractError, match=r"entity.features: file 'patients.csv' not found"):
        load_entities(contract, tmp_path, "contract.yaml")
    (tmp_path / "patients.csv").write_text("patient_id,radius\n1,2.0\n")
    with pytest.raises(ContractError, match=r"lacks columns \['texture', 'perimeter', 'area', 'smoothness'\]"):
        load_entities(contract, tmp_path, "contract.yaml")
    models.write_patients(tmp_path / "patients.csv", n=3)
    with (tmp_path / "patients.csv").open("a") as f:
        f.write("oops,1,2,3,4,5\n")
    with pytest.raises(ContractError, match="line 5"):
        load_entities(contract, tmp_path, "contract.yaml")
    escape = load_contract(write(tmp_path, _bad(lambda d: d["entity"].update(features="../x.csv"))))
    with pytest.raises(ContractError, match="inside the contract's folder"):
        load_entities(escape, tmp_path, "contract.yaml")


def test_entities_are_typed_rows(tmp_path: Path) -> None:
    contract = load_contract(write(tmp_path, models.contract_dict()))
    rows = load_entities(contract, tmp_path, "x") if models.write_patients(tmp_path / "patients.csv") else {}
    assert sorted(rows)[:2] == [1000, 1001]
    assert rows[1000] == dict(zip(models.FEATURES, map(float, models.breast_cancer(1)[0][0]), strict=True))


def test_derived_from_signature_and_input_example(local_models: dict[str, Path]) -> None:
    folder = local_models["classifier"]
    contract = derive_contract(folder, yaml.safe_load((folder / "MLmodel").read_text()))
    assert contract.source == "signature"
    assert contract.input_names == models.FEATURES
    assert all(i.type == "double" and i.required for i in contract.inputs)
    assert contract.inputs[0].example == pytest.approx(17.99)
    assert contract.test_data is not None and len(contract.test_data.rows) == 5
    assert contract.outputs[0].type == "integer"


def test_derived_pyfunc_contract_has_all_types(local_models: dict[str, Path]) -> None:
    folder = local_models["pyfunc"]
    contract = derive_contract(folder, yaml.safe_load((folder / "MLmodel").read_text()))
    assert [(i.name, i.type) for i in contract.inputs] == [("a", "double"), ("b", "integer"), ("name", "string")]
    assert [o.name for o in contract.outputs] == ["score", "flag"]


def test_tensor_signature_becomes_columns(tmp_path: Path) -> None:
    spec = [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}]
    contract = derive_contract(tmp_path, {"signature": {"inputs": json.dumps(spec)}})
    assert contract.input_names == ["x0", "x1", "x2"]


def test_no_signature_and_no_contract_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match=r"no input signature and no contract\.yaml") as err:
        derive_contract(tmp_path, {"flavors": {}})
    assert err.value.field == "signature"


def test_any_column_name_mlflow_accepts_is_an_input(tmp_path: Path) -> None:
    from tests.predictor.flavors import ODD_NAMES

    data = {"inputs": [{"name": n, "type": "double"} for n in ODD_NAMES]}
    assert load_contract(write(tmp_path, data)).input_names == ODD_NAMES


@pytest.mark.parametrize(
    ("columns", "where", "problem"),
    [
        (["a", ""], "signature.inputs[1] (column '')", "at least 1 character"),
        (["a", "b", "a"], "signature", "the column name 'a' is used twice"),
    ],
)
def test_a_column_name_that_cannot_be_served_is_named(
    tmp_path: Path, columns: list[str], where: str, problem: str
) -> None:
    """An empty or repeated column name (a hand-edited or foreign MLmodel) stops the predictor with the column."""
    signature = {"inputs": json.dumps([{"type": "double", "name": c} for c in columns])}
    with pytest.raises(ContractError) as err:
        derive_contract(tmp_path, {"signature": signature})
    assert err.value.field == where and problem in err.value.problem, err.value
