"""MLflow's scoring protocol's documented bodies: `/invocations` for one contract (the four JSON forms and CSV,
with examples) and the error body.

Documentation only (the route parses the body itself, `codec`), built when the OpenAPI document is first asked
for. The schema is exact or narrower than the route: `dataframe_split` columns are shown in input
order (any order is taken), and columns the model does not take (ignored by the route, as by pyfunc) are not shown.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Required

from pydantic import BaseModel, ConfigDict, Field
from pydantic import create_model as _create_model
from typing_extensions import TypedDict

from custom_predictor.contract import Contract
from custom_predictor.errors import ErrorDetail, documented
from custom_predictor.openapi import array, tuple_of, union
from custom_predictor.schemas import Schemas, field_type

create_model: Any = _create_model  # fields given as a dict of (type, default)


class MlflowErrorBody(BaseModel):
    """An error of the MLflow scoring routes, as `mlflow models serve` answers it (plus the field paths)."""

    error_code: str = Field(description="MLflow's code: BAD_REQUEST, INVALID_PARAMETER_VALUE, ...")
    message: str = Field(description="What is wrong (the input is not echoed).")
    details: list[ErrorDetail] = Field(default_factory=list, description="Per-field problems, if any.")


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: documented(
        MlflowErrorBody,
        {
            "error_code": "INVALID_PARAMETER_VALUE",
            "message": "the request does not match the model's contract\ndataframe_split.data[0][1]: Input should be "
            "a valid number",
            "details": [
                {"loc": "dataframe_split.data[0][1]", "msg": "Input should be a valid number", "type": "float_type"}
            ],
        },
        "The input is not valid (MLflow's INVALID_PARAMETER_VALUE or BAD_REQUEST), or the model raised.",
    ),
    401: documented(
        MlflowErrorBody,
        {"error_code": "UNAUTHENTICATED", "message": "a valid credential is required", "details": []},
        "No valid credential (docs/security.md): WWW-Authenticate says how.",
    ),
    403: documented(
        MlflowErrorBody,
        {"error_code": "PERMISSION_DENIED", "message": "this caller may not use this model", "details": []},
        "The caller may not use this model.",
    ),
    413: documented(
        MlflowErrorBody,
        {
            "error_code": "BAD_REQUEST",
            "message": "the request body is larger than this predictor's limit",
            "details": [],
        },
        "The body is larger than this predictor takes.",
    ),
    415: {"description": "Not JSON or CSV (a text/plain message, as MLflow's).", "content": {"text/plain": {}}},
    503: documented(
        MlflowErrorBody,
        {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the model is still loading", "details": []},
        "The model is not loaded yet, or its self-test failed.",
    ),
}
"""The MLflow scoring routes' error responses."""

_PARAMS = (dict[str, Any] | None, Field(None, description="Inference params, passed to the model (MLflow's `params`)."))


def _body(name: str, key: str, type_: Any, doc: str) -> Any:
    return create_model(
        name,
        __config__=ConfigDict(extra="forbid", title=f"{key}"),
        __doc__=doc,
        **{key: (type_, ...)},
        params=_PARAMS,
    )


def invocations_type(contract: Contract, schemas: Schemas, max_rows: int) -> Any:
    """The union of `dataframe_split`, `dataframe_records`, `instances` and `inputs` bodies of this contract."""
    if not schemas.typed:
        free = dict[str, Any] | list[Any]
        return union([_body(f"Mlflow_{k}", k, free, "Any data MLflow's scoring server reads.") for k in _KEYS])
    names = contract.input_names
    values = [field_type(s) for s in contract.inputs]
    rows = array(tuple_of(values), 1, max_rows)
    records = array(schemas.record, 1, max_rows)
    split = create_model(
        "MlflowDataframeSplit",
        __config__=ConfigDict(extra="forbid"),
        columns=(tuple_of([Literal[n] for n in names]), Field(description="The input names (any order is taken).")),
        data=(rows, Field(description="One array of values per row, in the order of `columns`.")),
        index=(list[Any] | None, None),
    )
    make_typeddict: Any = TypedDict  # functional form: column names need not be identifiers
    columns = make_typeddict(
        "MlflowColumns",
        {
            s.name: Required[array(v, 1, max_rows)] if s.required else NotRequired[array(v, 1, max_rows) | None]
            for s, v in zip(contract.inputs, values, strict=True)
        },
    )
    columns.__pydantic_config__ = ConfigDict(title="columns")
    columns.__doc__ = "Input name -> its values, one per row (every list of the same length)."
    doc = "Rows as records, or as arrays of values in the order " + ", ".join(names) + "."
    return union(
        [
            _body("MlflowDataframeSplitBody", "dataframe_split", split, "A pandas DataFrame, orient='split'."),
            _body("MlflowDataframeRecordsBody", "dataframe_records", records, "A pandas DataFrame, orient='records'."),
            _body("MlflowInstancesBody", "instances", array(schemas.record | tuple_of(values), 1, max_rows), doc),
            _body("MlflowInputsBody", "inputs", array(schemas.record | tuple_of(values), 1, max_rows) | columns, doc),
        ]
    )


_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def examples(contract: Contract, schemas: Schemas, serving_example: Any) -> tuple[Any, str | None]:
    """(JSON example, CSV example) of the route: the model's own serving input example when it has one
    (`serving_input_example.json`, what MLflow validated at logging), else one `dataframe_split` row."""
    row = schemas.example
    if serving_example is not None and not schemas.typed:
        return serving_example, None
    if not row:
        return {"dataframe_split": {"columns": [], "data": [[]]}}, None
    cols = [n for n in contract.input_names if n in row] if schemas.typed else list(row)
    csv = ",".join(_csv(c) for c in cols) + "\n" + ",".join(_csv(row[c]) for c in cols) + "\n"
    return {"dataframe_split": {"columns": cols, "data": [[row[c] for c in cols]]}}, csv


def _csv(v: Any) -> str:
    text = "true" if v is True else "false" if v is False else str(v)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
