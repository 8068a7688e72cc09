"""KServe V1's codec: `{"instances": [...]}` (record objects, or arrays of values in input order) -> Columns, the
rows checked against the contract with errors located in the body (`instances[2].age`, `instances[2][1]`); an
untyped model's instances as MLflow reads `instances`; a model's output -> `{"predictions": [...]}`.
Neighbours: `router` calls it; `schemas` documents the same per contract.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from custom_predictor import errors, jsonbody
from custom_predictor.columns import Locate
from custom_predictor.errors import invalid
from custom_predictor.protocols.mlflow.codec import untyped_data
from custom_predictor.protocols.v1.schemas import V1Request
from custom_predictor.schemas import Schemas


def decode(schemas: Schemas, body: bytes) -> Any:
    """Columns for a typed model; for an untyped one, the DataFrame or array MLflow makes of `instances`."""
    parsed = jsonbody.load(body, schemas.max_values)
    if isinstance(parsed, dict):
        fields = len(schemas.contract.inputs) + jsonbody.EXTRA_FIELDS if schemas.typed else None
        jsonbody.bound_rows(parsed.get("instances"), "instances", schemas.max_records, fields)
    try:
        instances = V1Request.model_validate(parsed).instances
    except ValidationError as e:
        raise errors.from_validation(list(e.errors())) from None
    if not schemas.typed:
        return untyped_data("instances", instances)
    names = schemas.contract.input_names
    return schemas.validate_rows(rows(instances, names), "instances", locate(instances, names))


def rows(instances: list[Any], names: list[str]) -> list[Any]:
    """V1 instances (objects, or lists in input order) -> row objects (validated after)."""
    out: list[Any] = []
    for n, inst in enumerate(instances):
        if isinstance(inst, list):
            if len(inst) != len(names):
                raise invalid(f"instances[{n}]", f"expected {len(names)} values in the order {names}")
            out.append(dict(zip(names, inst, strict=True)))
        else:
            out.append(inst)
    return out


def locate(instances: list[Any], names: list[str]) -> Locate:
    """`instances[2].age` for an object instance, `instances[2][1]` for a list instance."""

    def where(loc: list[Any]) -> str:
        row, field = [*loc, None, None][:2]
        if not isinstance(row, int) or row >= len(instances):
            return "instances"
        if isinstance(instances[row], list) and field in names:
            return f"instances[{row}][{names.index(field)}]"
        return f"instances[{row}]" + ("" if field is None else f".{field}")

    return where
