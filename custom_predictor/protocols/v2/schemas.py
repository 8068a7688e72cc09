"""Open Inference Protocol (KServe V2) bodies: the static models the route validates with, and the request of one
contract documented exactly: what the schema calls valid, the route answers 200, but for the two rules JSON Schema
cannot state (a tensor's rows equal the values in its data; every tensor has the same rows), which the descriptions
state and `codec` checks.

Three forms, as `codec` maps them: one tensor per input named after it (any order), tensors named otherwise taken
by position, or one 2-D tensor of every input. Each tensor's datatypes are grouped by the values they can carry
for its input: the contract's type and range intersected with the datatype's (`datatypes`), so an INT8 tensor
documents -128..127 and an FP tensor for an integer input whole numbers. Validation stays the loose `V2Request`
(`DocumentedAs`): these types only build the OpenAPI document, on its first request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, create_model

from custom_predictor.contract import Contract, InputSpec
from custom_predictor.openapi import DocumentedAs, MinItems, array, one_of, tuple_of, union, with_example
from custom_predictor.protocols.v2.datatypes import (
    DATATYPES,
    INTEGERS,
    METADATA_TYPES,
    RANGES,
    bounds,
    matrix_datatypes,
)
from custom_predictor.schemas import WHOLE_NUMBER

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]


class V2Tensor(BaseModel):
    """An Open Inference Protocol tensor."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    shape: list[Annotated[int, Field(ge=0, le=2**31)]] = Field(min_length=1, max_length=8)
    datatype: Datatype
    parameters: dict[str, Any] | None = Field(None, description="`binary_data_size`: its data is binary.")
    data: list[Any] | None = Field(None, description="The values, flat or nested, row-major (absent when binary).")


class V2Output(BaseModel):
    """A requested output; `parameters.binary_data` asks for it as binary data."""

    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Any] | None = None


class V2Request(BaseModel):
    """Open Inference Protocol (KServe V2) inference request."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    model_name: str | None = Field(None, description="Sent by kserve's InferRequest; the path names the model.")
    model_version: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor] = Field(min_length=1, max_length=1024)
    outputs: list[V2Output] | None = None


class V2OutTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class V2Response(BaseModel):
    """Open Inference Protocol (KServe V2) inference response."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[V2OutTensor]


Key = tuple[Any, ...]


def _value(spec: InputSpec, datatype: str) -> tuple[Key, Any] | None:
    """The values a tensor of `datatype` can carry for `spec` (a key to group datatypes by, and their type), or
    None when it can carry none."""
    if spec.type == "boolean":
        return ("boolean",), StrictBool
    if spec.type == "string":
        if spec.allowed:
            return ("string", tuple(spec.allowed)), one_of(tuple(spec.allowed))
        return ("string",), Annotated[StrictStr, Field(max_length=10_000)]
    integral = datatype in INTEGERS or spec.type == "integer"
    low, high = bounds(spec.type, datatype)
    lo = low if spec.minimum is None else max(spec.minimum, low)
    hi = high if spec.maximum is None else min(spec.maximum, high)
    if spec.allowed:
        kept = tuple(v for v in spec.allowed if lo <= v <= hi and (not integral or float(v).is_integer()))
        return (("allowed", kept), one_of(kept)) if kept else None
    if lo > hi:
        return None
    kw: dict[str, Any] = {}
    if (lo, hi) != RANGES["FP64"]:
        kw = {"ge": int(lo) if integral and float(lo).is_integer() else lo}
        kw["le"] = int(hi) if integral and float(hi).is_integer() else hi
    if integral:
        return ("integer", lo, hi), Annotated[StrictInt, Field(**kw), WHOLE_NUMBER]
    return ("number", lo, hi), Annotated[StrictFloat, Field(allow_inf_nan=False, **kw)]


def _groups(spec: InputSpec) -> list[tuple[tuple[str, ...], Any]]:
    """The input's datatypes, grouped by the values they carry: [(datatypes, value type)]."""
    groups: dict[Key, tuple[list[str], Any]] = {}
    for datatype in DATATYPES[spec.type]:
        found = _value(spec, datatype)
        if found is not None:
            groups.setdefault(found[0], ([], found[1]))[0].append(datatype)
    return [(tuple(names), value) for names, value in groups.values()]


def _rows(max_rows: int) -> Any:
    return Annotated[int, Field(ge=1, le=max_rows)]


def _column(model: str, spec: InputSpec, name: Any, max_rows: int) -> list[Any]:
    """One tensor model per datatype group of a column: shape [n] or [n, 1], flat or nested data."""
    out = []
    for g, (datatypes, value) in enumerate(_groups(spec)):
        out.append(
            create_model(
                f"{model}_{g}",
                __config__=ConfigDict(extra="forbid", title=f"Input {spec.name!r} as {', '.join(datatypes)}"),
                __doc__=f"The input column {spec.name!r} ({spec.type}): shape [n] or [n, 1] with n the number of "
                "values in `data` (flat, or one single-value array per row); every tensor of a request has the same n.",
                name=name,
                shape=(tuple_of([_rows(max_rows)]) | tuple_of([_rows(max_rows), one_of((1,))]), ...),
                datatype=(one_of(datatypes), ...),
                parameters=(dict[str, Any] | None, None),
                data=(array(value, 1, max_rows) | array(tuple_of([value]), 1, max_rows), ...),
            )
        )
    return out


def _not_an_input(contract: Contract) -> Any:
    names: Any = contract.input_names
    return (str, Field(max_length=256, json_schema_extra={"not": {"enum": names}}))


def _matrix(contract: Contract, max_rows: int) -> Any:
    """Every input in one tensor [n, k]: one model per group of datatypes carrying the same columns."""
    names, k = contract.input_names, len(contract.inputs)
    mixed = len({i.type for i in contract.inputs}) > 1
    groups: dict[Key, tuple[list[str], list[Any]]] = {}
    for datatype in matrix_datatypes(contract):
        found = [_value(s, _own(s) if mixed else datatype) for s in contract.inputs]
        if all(f is not None for f in found):
            key = tuple(f[0] for f in found if f)
            groups.setdefault(key, ([], [f[1] for f in found if f]))[0].append(datatype)
    models = []
    for g, (key, (datatypes, values)) in enumerate(groups.items()):
        data: Any = array(tuple_of(values), 1, max_rows)
        if len(set(key)) == 1:
            data = array(values[0], k, max_rows * k) | data
            layout = f"flat (n x {k} values, row-major) or nested (n arrays of {k} values)"
        else:
            layout = f"nested, n arrays of {k} values (a flat row-major array of n x {k} values is accepted too)"
        models.append(
            create_model(
                f"V2MatrixTensor_{g}",
                __config__=ConfigDict(extra="forbid", title=f"All inputs as one 2-D tensor, {', '.join(datatypes)}"),
                __doc__=f"Every input in one tensor of shape [n, {k}], columns in the order {names}; `data` {layout}."
                " Its name must not be an input name (a tensor named after an input is that input's column).",
                name=_not_an_input(contract),
                shape=(tuple_of([_rows(max_rows), one_of((k,))]), ...),
                datatype=(one_of(tuple(datatypes)), ...),
                parameters=(dict[str, Any] | None, None),
                data=(data, ...),
            )
        )
    return union(models)


def _own(spec: InputSpec) -> str:
    """For a mixed-type 2-D tensor each value is checked by its input: the widest datatype of the input's type."""
    return {"integer": "INT64", "double": "FP64", "boolean": "BOOL", "string": "BYTES"}[spec.type]


def _presence(contract: Contract) -> dict[str, Any]:
    """Each input's tensor at most once, each required input's exactly once (JSON Schema `contains`)."""
    rules = [
        {
            "contains": {"properties": {"name": {"const": spec.name}}, "required": ["name"]},
            "minContains": 1 if spec.required else 0,
            "maxContains": 1,
        }
        for spec in contract.inputs
    ]
    return {"allOf": rules}


def v2_inputs(contract: Contract, max_rows: int) -> Any:
    """The exact type of V2 `inputs`: by name, by position, or one 2-D tensor (documentation only)."""
    specs = contract.inputs
    named = [t for i, s in enumerate(specs) for t in _column(f"V2InputTensor{i}", s, (Literal[s.name], ...), max_rows)]
    required = sum(1 for s in specs if s.required)
    by_name: Any = Annotated[
        array(union(named), max(required, 1), len(specs)),
        Field(
            title="One tensor per input, by name",
            description="One tensor per input, named after it, in any order; every required input once.",
            json_schema_extra=_presence(contract),
        ),
    ]
    last_required = max((i for i, s in enumerate(specs) if s.required), default=0)
    positions = [
        union(_column(f"V2PositionTensor{i}", s, _not_an_input(contract), max_rows)) for i, s in enumerate(specs)
    ]
    by_position: Any = Annotated[
        tuple_of(positions),
        MinItems(last_required + 1),
        Field(
            title="One tensor per input, by position",
            description=f"Tensors named otherwise, taken in the order of the model's inputs {contract.input_names}.",
        ),
    ]
    forms = [by_name, by_position]
    if len(specs) > 1:
        forms.append(Annotated[array(_matrix(contract, max_rows), 1, 1), Field(title="One 2-D tensor")])
    return union(forms)


def example(contract: Contract, row: dict[str, Any]) -> dict[str, Any]:
    """A V2 body of one row, one tensor per input (those the row gives), in the metadata's datatypes."""
    tensors = [
        {"name": s.name, "shape": [1], "datatype": METADATA_TYPES[s.type], "data": [row[s.name]]}
        for s in contract.inputs
        if s.name in row
    ]
    return {"inputs": tensors}


def _requested(contract: Contract) -> Any:
    """The outputs a request may ask for: this model's, each as JSON or binary data."""
    parameters = create_model(
        "V2RequestedOutputParameters",
        __config__=ConfigDict(extra="forbid"),
        binary_data=(bool | None, Field(None, description="This output as binary data (or JSON).")),
    )
    requested = create_model(
        "V2RequestedOutput",
        __config__=ConfigDict(extra="forbid"),
        __doc__="An output to answer with (all of them when `outputs` is left out).",
        name=(one_of(tuple(output_names(contract))), ...),
        parameters=(parameters | None, None),
    )
    return list[requested] | None


def v2_request_model(contract: Contract, max_rows: int, row: dict[str, Any]) -> type[V2Request]:
    """V2 request of this contract, with `row` as its example."""
    model: type[V2Request] = create_model(
        "V2InferRequest",
        __base__=V2Request,
        __doc__=V2Request.__doc__,
        outputs=(Annotated[list[V2Output] | None, DocumentedAs(lambda: _requested(contract))], None),
        inputs=(
            Annotated[list[V2Tensor], DocumentedAs(lambda: v2_inputs(contract, max_rows))],
            Field(
                min_length=1,
                max_length=1024,
                description="One tensor per input (by name or by position), or one 2-D tensor of every input. Rules "
                "JSON Schema cannot state: a tensor's shape[0] is its number of rows (values in `data`, or "
                f"{len(contract.inputs)} values per row in a 2-D tensor), and every tensor has the same number of "
                "rows. With the binary tensor data extension (`Inference-Header-Content-Length`) a tensor gives "
                "`parameters.binary_data_size` instead of `data`.",
            ),
        ),
    )
    out: type[V2Request] = with_example(model, example(contract, row))
    return out


def output_names(contract: Contract) -> list[str]:
    """The outputs a typed model declares (in its metadata too); untyped models declare none."""
    if not contract.inputs:
        return []
    return [o.name for o in contract.outputs] or ["predict"]
