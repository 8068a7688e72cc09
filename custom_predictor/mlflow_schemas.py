"""The documented body of MLflow's `/invocations` for one contract: the four JSON forms and CSV, with examples.

Documentation only (the route parses the body itself, `protocols.mlflow_scoring`), built when the OpenAPI document
is first asked for. The schema is exact or narrower than the route: `dataframe_split` columns are shown in input
order (any order is taken), and columns the model does not take (ignored by the route, as by pyfunc) are not shown.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field
from pydantic import create_model as _create_model

from custom_predictor.contract import Contract
from custom_predictor.kserve_schemas import array, tuple_of, union
from custom_predictor.schemas import Schemas, field_type

create_model: Any = _create_model  # fields given as a dict of (type, default)
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
    columns = create_model(
        "MlflowColumns",
        __config__=ConfigDict(title="columns"),
        __doc__="Input name -> its values, one per row (every list of the same length).",
        **{
            s.name: (array(v, 1, max_rows), ... if s.required else None)
            for s, v in zip(contract.inputs, values, strict=True)
        },
    )
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
    csv = ",".join(cols) + "\n" + ",".join(_csv(row[c]) for c in cols) + "\n"
    return {"dataframe_split": {"columns": cols, "data": [[row[c] for c in cols]]}}, csv


def _csv(v: Any) -> str:
    text = "true" if v is True else "false" if v is False else str(v)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
