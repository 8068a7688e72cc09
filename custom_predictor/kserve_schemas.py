"""KServe V1 and V2 (Open Inference Protocol) bodies: the static models the routes validate with, and their
per-contract subclasses whose OpenAPI schema is exact.

A per-contract request validates like its static base (shape only: cheap, and `protocols` plus the record
validation then give the one-line 422s with field paths), but documents exactly what the route accepts: V1
instances are the contract's record or an array of its values in input order; V2 inputs are either one tensor
per input column or one 2-D tensor, with names, datatypes and value types from the contract. The two rules JSON
Schema cannot state (a tensor's rows equal the values in its data; every tensor has the same rows) are in the
descriptions and checked by `protocols.v2_rows`. Neighbours: `schemas` builds these per contract; `protocols`
maps bodies to rows and checks datatypes against `DATATYPES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    Tag,
    TypeAdapter,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue

from custom_predictor.contract import Contract

_INTEGERS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
_FLOATS = ("FP16", "FP32", "FP64")
DATATYPES: dict[str, tuple[str, ...]] = {
    "integer": _INTEGERS,
    "double": (*_FLOATS, *_INTEGERS),
    "boolean": ("BOOL",),
    "string": ("BYTES",),
}
"""V2 datatypes a tensor may carry for an input of each contract type (integers are accepted for doubles)."""

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]


def matrix_datatypes(contract: Contract) -> tuple[str, ...]:
    """Datatypes of a single 2-D tensor: those every input accepts, else (mixed types) those any input accepts."""
    sets = [DATATYPES[i.type] for i in contract.inputs]
    common = [d for d in sets[0] if all(d in s for s in sets)]
    return tuple(common) if common else tuple(dict.fromkeys(d for s in sets for d in s))


class V2Tensor(BaseModel):
    """An Open Inference Protocol tensor."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=256)
    shape: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=2)
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any]


class V2Output(BaseModel):
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


class V1Request(BaseModel):
    """KServe V1 request: `instances` are objects (name -> value) or lists in the contract's input order."""

    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Any] | list[Any]] = Field(min_length=1)


class V1Response(BaseModel):
    predictions: list[Any]


class DocumentedAs:
    """Annotation: validate with the annotated (loose) type, document the schema of the type `exact()` returns.

    `exact` runs when the OpenAPI document is first asked for, not at startup (tens of ms for wide contracts)."""

    def __init__(self, exact: Callable[[], Any]) -> None:
        self.exact = exact
        self.core_schema: Any = None

    def __get_pydantic_json_schema__(self, _: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        if self.core_schema is None:  # once: the same component classes in every document
            self.core_schema = TypeAdapter(self.exact()).core_schema
        return handler(self.core_schema)


def _one_of(values: tuple[Any, ...]) -> Any:
    return Literal[values]


def _tuple_of(types: list[Any]) -> Any:
    """tuple[t1, t2, ...]: a JSON array of exactly these items (`prefixItems`)."""
    return tuple.__class_getitem__(tuple(types))


def _array(item: Any, min_length: int, max_length: int) -> Any:
    """list[item] with length bounds: a JSON array (`items`, `minItems`, `maxItems`)."""
    return Annotated[list[item], Field(min_length=min_length, max_length=max_length)]


def _union(types: list[Any]) -> Any:
    union = types[0]
    for t in types[1:]:
        union = union | t
    return union


def v1_request_model(contract: Contract, record: Any, values: list[Any], max_rows: int) -> type[V1Request]:
    """V1 request of this contract: `values` are the per-input value types, in input order."""

    def exact() -> Any:
        return _array(record | _tuple_of(values), 1, max_rows)

    doc = f"Rows to predict: each a record object, or an array of its {len(values)} values in the order "
    model: type[V1Request] = create_model(
        "V1PredictRequest",
        __base__=V1Request,
        __doc__=V1Request.__doc__,
        instances=(
            Annotated[list[dict[str, Any] | list[Any]], DocumentedAs(exact)],
            Field(min_length=1, description=doc + ", ".join(contract.input_names) + "."),
        ),
    )
    return model


def _column_tensor(index: int, name: str, kind: str, value: Any, max_rows: int) -> Any:
    rows: Any = Annotated[int, Field(ge=1, le=max_rows)]
    flat, nested = _array(value, 1, max_rows), _array(_tuple_of([value]), 1, max_rows)
    return create_model(
        f"V2InputTensor{index}",
        __config__=ConfigDict(extra="forbid", title=f"Input tensor {name!r}"),
        __doc__=f"The input column {name!r} ({kind}): shape [n] or [n, 1] with n the number of values in `data` "
        "(flat, or one single-value array per row); every tensor of a request has the same n.",
        name=(_one_of((name,)), ...),
        shape=(_tuple_of([rows]) | _tuple_of([rows, _one_of((1,))]), ...),
        datatype=(_one_of(DATATYPES[kind]), ...),
        parameters=(dict[str, Any] | None, None),
        data=(flat | nested, ...),
    )


def _matrix_tensor(contract: Contract, values: list[Any], flat_value: Any, max_rows: int) -> Any:
    names, k = contract.input_names, len(values)
    rows: Any = Annotated[int, Field(ge=1, le=max_rows)]
    data = _array(_tuple_of(values), 1, max_rows)
    if flat_value is not None:
        data = _array(flat_value, k, max_rows * k) | data
        layout = f"flat (n x {k} values, row-major) or nested (n arrays of {k} values)"
    else:  # the inputs take different values: only nested rows say which value is for which input
        layout = f"nested, n arrays of {k} values (a flat row-major array of n x {k} values is accepted too)"
    return create_model(
        "V2MatrixTensor",
        __config__=ConfigDict(extra="forbid", title="All inputs as one 2-D tensor"),
        __doc__=f"Every input in one tensor of shape [n, {k}], columns in the order {names}; `data` {layout}. "
        "Its name must not be an input name (a tensor named after an input is that input's column).",
        name=(str, Field(max_length=256, json_schema_extra={"not": {"enum": list(names)}})),
        shape=(_tuple_of([rows, _one_of((k,))]), ...),
        datatype=(_one_of(matrix_datatypes(contract)), ...),
        parameters=(dict[str, Any] | None, None),
        data=(data, ...),
    )


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


def v2_request_model(contract: Contract, values: list[Any], flat_value: Any, max_rows: int) -> type[V2Request]:
    """V2 request of this contract: `values` are the per-input value types, in input order; `flat_value` the type
    of every value of a flat 2-D tensor, None when the inputs take different values (nested rows only)."""
    model: type[V2Request] = create_model(
        "V2InferRequest",
        __base__=V2Request,
        __doc__=V2Request.__doc__,
        inputs=(
            Annotated[list[V2Tensor], DocumentedAs(lambda: _v2_inputs(contract, values, flat_value, max_rows))],
            Field(
                min_length=1,
                max_length=1024,
                description="One tensor per input column, or one 2-D tensor of every input. Rules JSON Schema "
                f"cannot state: a tensor's shape[0] is its number of rows (values in `data`, or {len(values)} "
                "values per row in a 2-D tensor), and every tensor has the same number of rows.",
            ),
        ),
    )
    return model


def _v2_inputs(contract: Contract, values: list[Any], flat_value: Any, max_rows: int) -> Any:
    """The exact type of V2 `inputs`: one tensor per input column, or one 2-D tensor (documentation only)."""
    names = set(contract.input_names)

    def form(value: Any) -> str:
        first = value[0] if isinstance(value, list) and value else None
        return "columns" if isinstance(first, dict) and first.get("name") in names else "tensor"

    tensors = [
        _column_tensor(i, spec.name, spec.type, value, max_rows)
        for i, (spec, value) in enumerate(zip(contract.inputs, values, strict=True))
    ]
    column: Any = Annotated[_union(tensors), Field(discriminator="name")] if len(tensors) > 1 else tensors[0]
    required = sum(1 for spec in contract.inputs if spec.required)
    columns: Any = Annotated[
        list[column],
        Field(
            min_length=max(required, 1),
            max_length=len(tensors),
            title="One tensor per input",
            description="One tensor per input column, in any order; every required input once.",
            json_schema_extra=_presence(contract),
        ),
    ]
    single: Any = Annotated[
        _array(_matrix_tensor(contract, values, flat_value, max_rows), 1, 1),
        Field(title="One 2-D tensor", description="All inputs in one 2-D tensor."),
    ]
    return Annotated[Annotated[columns, Tag("columns")] | Annotated[single, Tag("tensor")], Discriminator(form)]
