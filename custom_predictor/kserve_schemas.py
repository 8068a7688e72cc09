"""KServe V1 and V2 (Open Inference Protocol) bodies: the static models the routes validate with, and the
per-contract V1 request whose OpenAPI schema is exact.

A per-contract request validates like its static base (shape only: cheap, and `protocols` plus the record
validation then give the one-line 422s with field paths), but documents exactly what the route accepts: V1
instances are the contract's record or an array of its values in input order. `v2_schemas` does the same for
V2 with the helpers here (`DocumentedAs`, `tuple_of`, `array`). Neighbours: `schemas` builds both per contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue

from custom_predictor.contract import Contract


def _whole_number(value: Any) -> Any:
    """JSON Schema counts 2.0 as an integer (the same number as 2): take it as 2, as its schema promises."""
    return int(value) if type(value) is float and value.is_integer() else value


WHOLE_NUMBER = BeforeValidator(_whole_number)
"""Integer inputs take a JSON integer or a number with no fractional part (2.0). Placed after the bounds in
`Annotated`, so that the JSON schema keeps them."""

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


def one_of(values: tuple[Any, ...]) -> Any:
    return Literal[values]


def tuple_of(types: list[Any]) -> Any:
    """tuple[t1, t2, ...]: a JSON array of exactly these items (`prefixItems`)."""
    return tuple.__class_getitem__(tuple(types))


def array(item: Any, min_length: int, max_length: int) -> Any:
    """list[item] with length bounds: a JSON array (`items`, `minItems`, `maxItems`)."""
    return Annotated[list[item], Field(min_length=min_length, max_length=max_length)]


def union(types: list[Any]) -> Any:
    """t1 | t2 | ...: a JSON `anyOf`."""
    out = types[0]
    for t in types[1:]:
        out = out | t
    return out


class MinItems:
    """Annotation on a tuple type: document its trailing items as optional (`minItems` below the tuple's length)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __get_pydantic_json_schema__(self, core: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = dict(handler(core))
        schema["minItems"] = self.n
        return schema


def v1_request_model(
    contract: Contract, record: Any, values: list[Any], max_rows: int, example: dict[str, Any]
) -> type[V1Request]:
    """V1 request of this contract: `values` are the per-input value types, in input order; `example` a row."""

    def exact() -> Any:
        return array(record | tuple_of(values), 1, max_rows)

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
    return with_example(model, {"instances": [example]})


def with_example(model: Any, example: dict[str, Any]) -> Any:
    """`model` documented with `example` (the body Swagger UI fills in)."""
    model.model_config["json_schema_extra"] = {"examples": [example]}
    model.model_rebuild(force=True)
    return model
