"""A contract's record (one input row) and the typed API's bodies, built once per contract: what the typed API,
KServe V1 and MLflow's scoring protocol validate rows with and document.

A record is a TypedDict keyed by the real column names (any name MLflow accepts: spaces, parentheses, `%`,
non-ASCII letters) with strict types, ranges and allowed values from the contract, and its descriptions, units and
examples in the schema; it validates straight into a dict. `validate_rows` checks a protocol's rows in one pass and
gives `Columns`, with errors located in that protocol's body.
Neighbours: each protocol's `schemas` builds its documented bodies from `field_type` and `record`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired, Required

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    create_model,
)
from typing_extensions import TypedDict

from custom_predictor import errors, jsonbody
from custom_predictor.columns import Columns, Locate
from custom_predictor.contract import Contract, InputSpec, example_row
from custom_predictor.errors import PredictorError

__all__ = ["WHOLE_NUMBER", "Schemas", "example_row", "field_type"]


def _whole_number(value: Any) -> Any:
    """JSON Schema counts 2.0 as an integer (the same number as 2): take it as 2, as its schema promises."""
    return int(value) if type(value) is float and value.is_integer() else value


WHOLE_NUMBER = BeforeValidator(_whole_number)
"""Integer inputs take a JSON integer or a number with no fractional part (2.0). Placed after the bounds in
`Annotated`, so that the JSON schema keeps them."""


INT64 = (-(2**63), 2**63 - 1)
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
    if spec.type == "integer":  # what an int64 column holds (pyfunc's DataFrame, the model's matrix)
        kw["ge"], kw["le"] = max(kw.get("ge", INT64[0]), INT64[0]), min(kw.get("le", INT64[1]), INT64[1])
    if spec.type == "double":
        kw["allow_inf_nan"] = False
    if spec.type == "string":
        kw["max_length"] = 10_000
    if spec.type == "integer":
        return Annotated[StrictInt, Field(**kw), WHOLE_NUMBER]
    return Annotated[_BASE[spec.type], Field(**kw)]


class Schemas:
    """The record and the typed API's bodies, built once per contract. An untyped contract (a model with no
    signature and no contract) gets free-form records; `example` is then the input example's first row, when it
    is a table."""

    def __init__(
        self,
        contract: Contract,
        max_records: int,
        title: str,
        *,
        entity_example: Any = None,
        example: dict[str, Any] | None = None,
    ) -> None:
        self.contract, self.max_records, self.entity_example = contract, max_records, entity_example
        self.max_values = jsonbody.values_limit(len(contract.inputs), max_records)
        """The JSON values a body of this model's rows may hold (`jsonbody.load`)."""
        self.typed = bool(contract.inputs)
        record: Any = self._record(contract, title) if self.typed else dict[str, Any]
        self.record: Any = record
        self.values: list[Any] = [field_type(spec) for spec in contract.inputs]
        """Each input's value type, in input order (array forms of a row)."""
        self.rows: TypeAdapter[Any] = TypeAdapter(Annotated[list[record], Field(fail_fast=True)])
        self.example = example_row(contract) if self.typed else (example or {})
        self.predict_request = create_model(
            "PredictRequest",
            __config__=ConfigDict(extra="forbid", json_schema_extra={"examples": [{"records": [self.example]}]}),
            records=(
                list[record],
                Field(
                    min_length=1,
                    max_length=max_records,
                    fail_fast=True,
                    description="Rows to predict, one object per row.",
                ),
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

    def validate_rows(self, raw: list[Any], prefix: str, locate: Locate, status: int = 422) -> Columns:
        """Rows from a request body (dicts of input name -> value) against the contract, as Columns; errors are
        located in that body by `locate`, and a body with more than `max_records` rows is refused at `prefix`."""
        if len(raw) > self.max_records:
            raise errors.invalid(prefix, f"at most {self.max_records} rows per request", "too_long", status)
        try:
            rows: list[dict[str, Any]] = self.rows.validate_python(raw)
        except ValidationError as e:
            details = errors.validation_details(e.errors(), locate)
            raise PredictorError(status, "invalid_input", errors.INVALID, details) from None
        return Columns.from_rows(rows, self.contract)

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
