"""KServe V1 bodies: the static request the route validates with, and the per-contract request whose OpenAPI
schema is exact (instances are the contract's record or an array of its values in input order).
Neighbours: `codec` validates with `V1Request`; `router` documents `request_model`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from custom_predictor.openapi import DocumentedAs, array, tuple_of, with_example
from custom_predictor.schemas import Schemas


class V1Request(BaseModel):
    """KServe V1 request: `instances` are objects (name -> value) or lists in the contract's input order."""

    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Any] | list[Any]] = Field(min_length=1)


class V1Response(BaseModel):
    predictions: list[Any]


def request_model(schemas: Schemas) -> Any:
    """The V1 request of this contract, documented exactly (validation stays `V1Request`'s); `V1Request` for an
    untyped model."""
    if not schemas.typed:
        return V1Request
    contract, values, record, max_rows = schemas.contract, schemas.values, schemas.record, schemas.max_records

    def exact() -> Any:
        return array(record | tuple_of(values), 1, max_rows)

    doc = f"Rows to predict: each a record object, or an array of its {len(values)} values in the order "
    model: type[V1Request] = create_model(
        "V1PredictRequest",
        __base__=V1Request,
        __doc__=V1Request.__doc__,
        instances=(
            Annotated[list[dict[str, Any] | list[Any]], DocumentedAs(exact)],
            Field(min_length=1, description=doc + ", ".join(repr(n) for n in contract.input_names) + "."),
        ),
    )
    return with_example(model, {"instances": [schemas.example]})
