"""Typed request/response models built from a contract, so the OpenAPI page documents the real inputs.

A record is a TypedDict (validated straight into a dict: no model_dump on the hot path) with strict types,
ranges and allowed values from the contract, and its descriptions, units and examples in the schema.
The KServe V1/V2 bodies are built per contract by `kserve_schemas` and `v2_schemas` from the same value types,
MLflow's by `mlflow_schemas`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    create_model,
)
from typing_extensions import TypedDict

from custom_predictor.contract import Contract, InputSpec
from custom_predictor.kserve_schemas import WHOLE_NUMBER, V1Request, V1Response, V2Request, V2Response, v1_request_model
from custom_predictor.v2_schemas import v2_request_model

__all__ = ["Schemas", "V1Request", "V1Response", "V2Request", "V2Response", "example_row"]


_BASE: dict[str, Any] = {"integer": StrictInt, "double": StrictFloat, "boolean": StrictBool, "string": StrictStr}


def field_type(spec: InputSpec) -> Any:
    if spec.allowed is not None:
        return Literal[tuple(spec.allowed)]
    doc = " ".join(p for p in (spec.description, f"Unit: {spec.unit}." if spec.unit else None) if p) or None
    kw: dict[str, Any] = {"description": doc}
    if spec.example is not None:
        kw["examples"] = [spec.example]
    if spec.minimum is not None:
        kw["ge"] = spec.minimum
    if spec.maximum is not None:
        kw["le"] = spec.maximum
    if spec.type == "double":
        kw["allow_inf_nan"] = False
    if spec.type == "string":
        kw["max_length"] = 10_000
    if spec.type == "integer":
        return Annotated[StrictInt, Field(**kw), WHOLE_NUMBER]
    return Annotated[_BASE[spec.type], Field(**kw)]


def example_row(contract: Contract) -> dict[str, Any]:
    """A valid row for the docs: test data first, else each input's example (or a plausible value)."""
    if contract.test_data:
        return dict(contract.test_data.rows[0])
    row = {}
    for i in contract.inputs:
        fallback = {"integer": 0, "double": 0.0, "boolean": False, "string": ""}[i.type]
        if i.allowed:
            fallback = i.allowed[0]
        elif i.minimum is not None:
            fallback = int(i.minimum) if i.type == "integer" else i.minimum
        row[i.name] = i.example if i.example is not None else fallback
    return row


class Schemas:
    """Every body model the routes use, built once per contract. An untyped contract (a model with no signature
    and no contract) gets free-form records and the static V2 request; `example` is then the input example's
    first row, when it is a table."""

    def __init__(
        self,
        contract: Contract,
        max_records: int,
        title: str,
        *,
        entity_example: Any = None,
        example: dict[str, Any] | None = None,
    ) -> None:
        self.typed = bool(contract.inputs)
        record: Any = self._record(contract, title) if self.typed else dict[str, Any]
        self.record: Any = record
        self.rows: TypeAdapter[Any] = TypeAdapter(list[record])
        self.example = example_row(contract) if self.typed else (example or {})
        self.v1_request: Any = None
        self.v2_request: Any = V2Request
        if self.typed:
            values = [field_type(spec) for spec in contract.inputs]
            self.v1_request = v1_request_model(contract, record, values, max_records, self.example)
            """KServe V1 body: validates like `V1Request`, documents the contract's rows exactly."""
            self.v2_request = v2_request_model(contract, max_records, self.example)
            """Open Inference Protocol body: validates like `V2Request`, documents the contract's tensors exactly."""
        self.predict_request = create_model(
            "PredictRequest",
            __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"records": [self.example]}]}),
            records=(
                list[record],
                Field(min_length=1, max_length=max_records, description="Rows to predict, one object per row."),
            ),
        )
        out_type: Any = _output_type(contract)
        self.predict_response = create_model(
            "PredictResponse",
            predictions=(list[out_type], Field(description=_output_doc(contract))),
            labels=(
                list[str | None] | None,
                Field(None, description="Human label of each prediction, when the contract names class labels."),
            ),
            model=(str, Field(description="Registered model name.")),
            version=(str | None, Field(None, description="Model version.")),
        )
        self.entity_request: Any = None
        self.entity_response: Any = None
        self.dataset_response: Any = None
        if contract.entity:
            self._entity(contract, record, entity_example)

    @staticmethod
    def _record(contract: Contract, title: str) -> Any:
        fields = {}
        for spec in contract.inputs:
            t = field_type(spec)
            fields[spec.name] = Required[t] if spec.required else NotRequired[t]
        make_typeddict: Any = TypedDict  # functional form: column names need not be identifiers
        record: Any = make_typeddict("Record", fields)
        record.__pydantic_config__ = ConfigDict(extra="forbid", title=f"{title} record")
        record.__doc__ = "One input row: " + ", ".join(contract.input_names)
        return record

    def _entity(self, contract: Contract, record: Any, entity_example: Any) -> None:
        assert contract.entity
        ent = contract.entity
        id_type: Any = (
            Annotated[StrictInt, WHOLE_NUMBER] if ent.type == "integer" else Annotated[StrictStr, Field(max_length=256)]
        )
        examples: dict[str, Any] = {} if entity_example is None else {"examples": [entity_example]}

        def id_field(doc: str) -> dict[str, Any]:
            return {ent.id: (id_type, Field(description=doc, **examples))}

        self.entity_request = create_model(
            "EntityPredictRequest",
            __config__=ConfigDict(extra="forbid"),
            **id_field(ent.description or f"The {ent.id} to predict for (one of the registered rows)."),
        )
        self.entity_response = create_model(
            "EntityPredictResponse",
            __base__=self.predict_response,
            features=(record, Field(description="The feature row found for the id.")),
            **id_field("The id that was looked up."),
        )
        self.dataset_response = create_model(
            "DatasetResponse",
            total=(int, Field(description="Rows in the registered feature file.")),
            rows=(list[dict[str, Any]], Field(description="Registered rows: the id and the inputs.")),
        )


def _output_type(contract: Contract) -> Any:
    outs = contract.outputs
    if not contract.inputs:
        return Any
    if len(outs) == 1 and outs[0].type:
        return _BASE[outs[0].type] | list[Any]
    if len(outs) > 1:
        return dict[str, Any]
    return Any


def _output_doc(contract: Contract) -> str:
    if not contract.outputs:
        return "One prediction per record."
    parts = []
    for o in contract.outputs:
        text = f"{o.name}: {o.description or ''}".strip()
        if o.labels:
            text += " Labels: " + ", ".join(f"{k} = {v}" for k, v in o.labels.items()) + "."
        parts.append(text)
    return "One prediction per record. " + " ".join(parts)
