"""The typed API's codec: `{"records": [...]}` -> Columns, validated by pydantic-core against the contract's record
(the same model the Swagger page documents) once `jsonbody` has bounded the body's shape (rows, fields per row); a
model's output -> `{"predictions", "labels", "model", "version"}`. An untyped model's records become the
DataFrame pandas makes of them.
Neighbours: `router` calls it; `schemas.Schemas` holds the request models.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from custom_predictor import errors, jsonbody
from custom_predictor.columns import Columns
from custom_predictor.contract import Contract
from custom_predictor.outputs import to_list
from custom_predictor.schemas import Schemas


def decode(schemas: Schemas, body: bytes) -> Any:
    """The body's records: Columns for a typed model, a DataFrame for an untyped one."""
    request: Any = _validated(schemas.predict_request, body, "records", schemas)
    if not schemas.typed:
        import pandas as pd

        return pd.DataFrame(request.records)
    return Columns.from_rows(request.records, schemas.contract)


def decode_id(schemas: Schemas, body: bytes, id_name: str) -> Any:
    """The entity lookup's id."""
    return getattr(_validated(schemas.entity_request, body, id_name, None), id_name)


def _validated(model: Any, body: bytes, key: str, rows_of: Schemas | None) -> Any:
    """`model` validated from the body in JSON mode (JSON's own rules: 1 is a valid number): a small body at
    once; a large one once it is known to be `{key: ...}` and, with `rows_of`, its rows are bounded (a body of
    another shape is refused by validating its parsed value instead, without reading it in full again)."""
    try:
        if len(body) <= jsonbody.SMALL:
            return model.model_validate_json(body)
    except ValidationError as e:
        raise errors.from_validation(list(e.errors())) from None
    parsed = jsonbody.load(body, rows_of.max_values if rows_of is not None else 1024)
    try:
        if not (isinstance(parsed, dict) and list(parsed) == [key]):
            return model.model_validate(parsed)  # refused: missing, extra or wrong-typed fields
        if rows_of is not None:
            names = len(rows_of.contract.inputs) + jsonbody.EXTRA_FIELDS if rows_of.typed else None
            jsonbody.bound_rows(parsed[key], key, rows_of.max_records, names)
        del parsed
        return model.model_validate_json(body)
    except ValidationError as e:
        raise errors.from_validation(list(e.errors())) from None


def answer(output: Any, contract: Contract, name: str, version: str | None) -> dict[str, Any]:
    """The typed API's answer: one prediction per row, their labels when the contract names them, model and
    version."""
    predictions = to_list(output)
    body: dict[str, Any] = {"predictions": predictions}
    labels = contract.outputs[0].labels if len(contract.outputs) == 1 else None
    if labels:
        body["labels"] = [labels.get(str(p)) if not isinstance(p, list | dict) else None for p in predictions]
    body["model"], body["version"] = name, version
    return body
