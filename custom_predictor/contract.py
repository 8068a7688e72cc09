"""The model contract: what a model takes and returns, read from `contract.yaml` or derived from the signature.

`load_contract(path)` validates a YAML file and raises `ContractError` naming file, field and problem.
`derive_contract(model_dir, mlmodel)` builds the same structure from an MLflow signature and input example;
`untyped_contract()` stands for a model with neither (served untyped).
`schemas` turns a contract into pydantic request/response models; `runtime` runs its test data.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

InputType = Literal["integer", "double", "boolean", "string"]
_ALIASES = {
    "long": "integer",
    "int": "integer",
    "float": "double",
    "number": "double",
    "bool": "boolean",
    "str": "string",
    "datetime": "string",
}
PY_TYPES: dict[str, type] = {"integer": int, "double": float, "boolean": bool, "string": str}


class ContractError(Exception):
    """A contract that cannot be used: carries the file, the field path and the problem."""

    def __init__(self, file: str, field: str, problem: str) -> None:
        super().__init__(f"{file}: {field}: {problem}" if field else f"{file}: {problem}")
        self.file, self.field, self.problem = file, field, problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _canonical_type(v: Any) -> Any:
    return _ALIASES.get(v, v) if isinstance(v, str) else v


class InputSpec(_Strict):
    """One input column."""

    name: str = Field(
        min_length=1,
        description="Column name the model expects: any name MLflow accepts (spaces, parentheses, %, /, dots, dashes,"
        " leading digits, non-ASCII letters); not empty, not repeated.",
    )
    type: InputType = Field(description="integer, double, boolean or string (long/float accepted as aliases).")
    description: str | None = Field(None, description="What the value means, shown in the API docs.")
    unit: str | None = Field(None, description="Unit of measure, e.g. mm or mg/dL.")
    minimum: float | None = Field(None, description="Smallest allowed value (numbers).")
    maximum: float | None = Field(None, description="Largest allowed value (numbers).")
    allowed: list[Any] | None = Field(None, min_length=1, description="The only values allowed.")
    example: Any = Field(None, description="An example value for the docs.")
    required: bool = Field(True, description="Whether a request must give this input.")
    default: Any = Field(None, description="Value used when an optional input is missing.")
    sensitive: bool = Field(
        False,
        description="Personal or clinical data: the inference log replaces its values by a keyed hash (HMAC), so"
        " joins still work and the values never reach the log (docs/inference-log.md).",
    )

    _type = field_validator("type", mode="before")(_canonical_type)

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        numeric = self.type in ("integer", "double")
        if (self.minimum is not None or self.maximum is not None) and not numeric:
            raise ValueError(f"minimum/maximum only apply to numbers, not to type {self.type}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum} is greater than maximum {self.maximum}")
        for what, value in (("example", self.example), ("default", self.default)):
            if value is not None and check_value(self, value) is not None:
                raise ValueError(f"{what} {value!r}: {check_value(self, value)}")
        for v in self.allowed or []:
            if not _type_ok(self.type, v):
                raise ValueError(f"allowed value {v!r} is not of type {self.type}")
        return self


class OutputSpec(_Strict):
    """One output of the model."""

    name: str = Field(min_length=1, max_length=128, description="Output name.")
    type: InputType | None = Field(None, description="Type of the output values.")
    description: str | None = Field(None, description="What the prediction means.")
    labels: dict[str, str] | None = Field(None, description="Class value -> human label, e.g. {'1': 'benign'}.")

    _type = field_validator("type", mode="before")(_canonical_type)

    @field_validator("labels", mode="before")
    @classmethod
    def _label_keys(cls, v: Any) -> Any:
        return {str(k): val for k, val in v.items()} if isinstance(v, dict) else v


class EntitySpec(_Strict):
    """Look up a feature row by an id (e.g. patient_id) in a feature file registered with the model."""

    id: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", description="Name of the id field, e.g. patient_id.")
    type: Literal["integer", "string"] = Field("string", description="Type of the id.")
    description: str | None = Field(None, description="What the id identifies.")
    features: str = Field(min_length=1, description="CSV file beside the contract: the id column + every input.")

    _type = field_validator("type", mode="before")(_canonical_type)


class TestData(_Strict):
    """Rows the predictor runs at startup; with `expected`, each prediction must match."""

    __test__ = False  # not a pytest class
    rows: list[dict[str, Any]] = Field(min_length=1, description="Input rows (name -> value).")
    expected: list[Any] | None = Field(None, description="Expected prediction per row (same order).")
    tolerance: float = Field(1e-6, ge=0, description="Relative tolerance for numeric expected values.")

    @model_validator(mode="after")
    def _lengths(self) -> TestData:
        if self.expected is not None and len(self.expected) != len(self.rows):
            raise ValueError(f"expected has {len(self.expected)} values but rows has {len(self.rows)}")
        return self


class Contract(_Strict):
    """A model's contract (contract.yaml). See docs/contract.md."""

    version: Literal[1] = Field(1, description="Contract format version.")
    description: str | None = Field(None, description="What the model does, shown on the API page.")
    inputs: list[InputSpec] = Field(min_length=1, description="Input columns, in the order the model expects.")
    outputs: list[OutputSpec] = Field(default_factory=list, description="Outputs of the model.")
    entity: EntitySpec | None = Field(None, description="Optional lookup of feature rows by id.")
    test_data: TestData | None = Field(None, description="Rows run by the startup self-test.")
    source: Literal["contract", "signature", "model", "none"] = Field(
        "contract", description="Where this contract came from."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> Contract:
        names = [i.name for i in self.inputs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"the column name {sorted(dup)[0]!r} is used twice: each input needs a name of its own")
        if self.entity and self.entity.id in names:
            raise ValueError(f"entity id {self.entity.id!r} is also an input name")
        return self

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def sensitive_inputs(self) -> set[str]:
        """Inputs marked `sensitive: true`: the inference log keeps only a keyed hash of their values."""
        return {i.name for i in self.inputs if i.sensitive}


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "double":
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, str)


def check_value(spec: InputSpec, value: Any) -> str | None:
    """Why `value` is not valid for `spec`, or None."""
    if not _type_ok(spec.type, value):
        return f"expected {spec.type}"
    if spec.minimum is not None and value < spec.minimum:
        return f"less than minimum {spec.minimum}"
    if spec.maximum is not None and value > spec.maximum:
        return f"greater than maximum {spec.maximum}"
    if spec.allowed is not None and value not in spec.allowed:
        return f"not one of {spec.allowed}"
    return None


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_contract(data: Any, file: str) -> Contract:
    """Validate parsed YAML as a contract, then check its test rows against its inputs."""
    if not isinstance(data, dict):
        raise ContractError(file, "", "the file must hold a mapping (inputs:, outputs:, ...)")
    if "source" in data:
        raise ContractError(file, "source", "is set by the predictor, not by the file")
    try:
        contract = Contract.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        msg = err["msg"].removeprefix("Value error, ")
        raise ContractError(file, _loc(loc), msg) from None
    if contract.test_data:
        specs = {i.name: i for i in contract.inputs}
        for n, row in enumerate(contract.test_data.rows):
            where = f"test_data.rows[{n}]"
            for key, value in row.items():
                if key not in specs:
                    raise ContractError(file, f"{where}.{key}", "is not a declared input")
                problem = check_value(specs[key], value)
                if problem:
                    raise ContractError(file, f"{where}.{key}", problem)
            missing = [i.name for i in contract.inputs if i.required and i.name not in row]
            if missing:
                raise ContractError(file, where, f"missing required inputs {missing}")
    return contract


def load_contract(path: Path) -> Contract:
    """Read and validate `contract.yaml`; any problem is a `ContractError` naming file, field and problem."""
    file = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ContractError(file, where, f"not valid YAML ({getattr(e, 'problem', e)})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ContractError(file, "", f"cannot be read ({e.__class__.__name__})") from None
    return parse_contract(data, file)


def load_entities(contract: Contract, base: Path, file_label: str) -> dict[Any, dict[str, Any]]:
    """Read the entity feature file (CSV beside the contract): id -> typed input row."""
    assert contract.entity
    entity = contract.entity
    path = (base / entity.features).resolve()
    field = "entity.features"
    if base.resolve() not in path.parents:
        raise ContractError(file_label, field, f"{entity.features!r} must stay inside the contract's folder")
    if not path.is_file():
        raise ContractError(file_label, field, f"file {entity.features!r} not found beside the contract")
    specs = {i.name: i for i in contract.inputs}
    rows: dict[Any, dict[str, Any]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in [entity.id, *[i.name for i in contract.inputs if i.required]] if c not in header]
        if missing:
            raise ContractError(file_label, field, f"{entity.features} lacks columns {missing}")
        for line, raw in enumerate(reader, start=2):
            try:
                key = int(raw[entity.id]) if entity.type == "integer" else raw[entity.id]
                row = {n: _convert(specs[n].type, raw[n]) for n in specs if n in raw and raw[n] != ""}
            except ValueError as e:
                raise ContractError(file_label, field, f"{entity.features} line {line}: {e}") from None
            rows[key] = row
    if not rows:
        raise ContractError(file_label, field, f"{entity.features} has no rows")
    return rows


def _convert(kind: str, text: str) -> Any:
    if kind == "integer":
        return int(text)
    if kind == "double":
        return float(text)
    if kind == "boolean":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{text!r} is not a boolean")
        return text.lower() in ("true", "1")
    return text


_SIGNATURE_TYPES = {
    "long": "integer",
    "integer": "integer",
    "double": "double",
    "float": "double",
    "boolean": "boolean",
    "string": "string",
    "datetime": "string",
}
_TENSOR_TYPES = {
    "int64": "integer",
    "int32": "integer",
    "float64": "double",
    "float32": "double",
    "bool": "boolean",
    "object": "string",
    "str": "string",
}


def derive_contract(model_dir: Path, mlmodel: dict[str, Any]) -> Contract:
    """A contract from the MLflow signature (inputs, output) and the input example (examples, test rows)."""
    file = str(model_dir / "MLmodel")
    sig = mlmodel.get("signature") or {}
    if not sig.get("inputs"):
        raise ContractError(
            file,
            "signature",
            "the model has no input signature and no contract.yaml: log it with a signature or a contract",
        )
    specs = json.loads(sig["inputs"])
    inputs: list[dict[str, Any]] = []
    if len(specs) == 1 and specs[0].get("type") == "tensor":
        tensor = specs[0]["tensor-spec"]
        shape = tensor.get("shape", [])
        kind = _TENSOR_TYPES.get(str(tensor.get("dtype")))
        if len(shape) != 2 or not isinstance(shape[1], int) or shape[1] < 1 or kind is None:
            raise ContractError(file, "signature.inputs", f"tensor {tensor} is not a 2-D numeric table")
        inputs = [{"name": f"x{i}", "type": kind} for i in range(shape[1])]
    else:
        for n, s in enumerate(specs):
            kind = _SIGNATURE_TYPES.get(s.get("type"))
            if kind is None or "name" not in s:
                raise ContractError(file, f"signature.inputs[{n}]", f"column type {s.get('type')!r} unsupported")
            inputs.append({"name": str(s["name"]), "type": kind, "required": s.get("required", True)})
    rows = _example_rows(model_dir, mlmodel, [i["name"] for i in inputs])
    if rows:
        for spec in inputs:
            value = rows[0].get(spec["name"])
            if value is not None and _type_ok(spec["type"], value):
                spec["example"] = value
    outputs = []
    for o in json.loads(sig.get("outputs") or "[]"):
        kind = _SIGNATURE_TYPES.get(o.get("type")) or _TENSOR_TYPES.get(str(o.get("tensor-spec", {}).get("dtype")))
        outputs.append({"name": o.get("name", "prediction"), "type": kind})
    data: dict[str, Any] = {"inputs": inputs, "outputs": outputs}
    if rows:
        data["test_data"] = {"rows": rows}
    try:
        return Contract.model_validate(data).model_copy(update={"source": "signature"})
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        where = f"signature.{_loc(loc)}" if loc else "signature"
        if len(loc) == 3 and loc[0] == "inputs" and loc[2] == "name" and isinstance(loc[1], int):
            where = f"signature.inputs[{loc[1]}] (column {inputs[loc[1]]['name']!r})"
        raise ContractError(file, where, err["msg"].removeprefix("Value error, ")) from None


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


def untyped_contract() -> Contract:
    """The contract of a model logged with no signature and no contract.yaml: no declared inputs or outputs.

    Such a model is served untyped (free-form records, MLflow's and V2's own conversions); built without
    validation, since a contract file must declare inputs."""
    return Contract.model_construct(
        version=1, description=None, inputs=[], outputs=[], entity=None, test_data=None, source="none"
    )


def declared_contract(names: list[str], file: str) -> Contract:
    """The contract of an unsigned model that declares its input columns (all doubles)."""
    try:
        inputs = [{"name": n, "type": "double"} for n in names]
        return Contract.model_validate({"inputs": inputs}).model_copy(update={"source": "model"})
    except ValidationError as e:
        raise ContractError(
            file, "the model's feature names", e.errors()[0]["msg"].removeprefix("Value error, ")
        ) from None


def has_signature(mlmodel: dict[str, Any]) -> bool:
    return bool((mlmodel.get("signature") or {}).get("inputs"))


def example_rows(model_dir: Path, mlmodel: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    """The input example's rows when it is a table (a DataFrame, records, or rows of `names`), else []."""
    return [r for r in _example_rows(model_dir, mlmodel, names) if r]


def _example_rows(model_dir: Path, mlmodel: dict[str, Any], names: list[str]) -> list[dict[str, Any]]:
    info = mlmodel.get("saved_input_example_info") or {}
    path = model_dir / str(info.get("artifact_path", ""))
    if not info or not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return [dict(zip(data["columns"], r, strict=False)) for r in data["data"]][:20]
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        return data[:20]
    if isinstance(data, list) and data and all(isinstance(r, list) for r in data):
        return [dict(zip(names, r, strict=False)) for r in data][:20]
    return []


def json_schema() -> dict[str, Any]:
    """JSON Schema of contract.yaml (committed as contract.schema.json; a test keeps them equal)."""
    schema = Contract.model_json_schema()
    schema["properties"].pop("source", None)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/service-builder/custom_predictor/contract.schema.json"
    schema["title"] = "Model contract (contract.yaml)"
    return schema
