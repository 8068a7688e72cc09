"""KServe V1 and V2 (Open Inference Protocol) bodies <-> the contract's rows and predictions.

V2 requests carry one tensor per input column (shape [n] or [n, 1]) or one 2-D tensor [n, k] in the
contract's input order, as kserve's `InferRequest` builds them; responses carry one tensor per output.
These are the rules `kserve_schemas` documents, the ones JSON Schema cannot state included (rows of a tensor =
values in its data, the same rows in every tensor), each broken one answered 422 with the field's path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from custom_predictor.contract import Contract
from custom_predictor.errors import PredictorError
from custom_predictor.kserve_schemas import DATATYPES, V2Request, matrix_datatypes


def _bad(loc: str, msg: str, kind: str = "value_error") -> PredictorError:
    return PredictorError(
        422,
        "invalid_input",
        "the request does not match the model's contract",
        [{"loc": loc, "msg": msg, "type": kind}],
    )


def _flatten(data: list[Any]) -> list[Any]:
    if data and isinstance(data[0], list):
        return [v for row in data for v in (row if isinstance(row, list) else [row])]
    return data


def v1_rows(instances: list[Any], names: list[str]) -> list[Any]:
    """V1 instances (objects, or lists in input order) -> row objects (validated later)."""
    rows: list[Any] = []
    for n, inst in enumerate(instances):
        if isinstance(inst, list):
            if len(inst) != len(names):
                raise _bad(f"instances[{n}]", f"expected {len(names)} values in the order {names}")
            rows.append(dict(zip(names, inst, strict=True)))
        else:
            rows.append(inst)
    return rows


Locate = Callable[[list[Any]], str]
"""pydantic's location of an error in the rows, `[row, input, ...]` -> where that value is in the request body."""


def v1_locate(instances: list[Any], names: list[str]) -> Locate:
    """`instances[2].age` for an object instance, `instances[2][1]` for a list instance."""

    def locate(loc: list[Any]) -> str:
        row, field = [*loc, None, None][:2]
        if not isinstance(row, int) or row >= len(instances):
            return "instances"
        if isinstance(instances[row], list) and field in names:
            return f"instances[{row}][{names.index(field)}]"
        return f"instances[{row}]" + ("" if field is None else f".{field}")

    return locate


def v2_locate(req: V2Request, contract: Contract) -> Locate:
    """`inputs[3].data[2]` (row 2 of input 3's tensor), or `inputs[0].data[2][1]` (flat: `data[11]`) for a
    single 2-D tensor."""
    names = contract.input_names
    tensors = {t.name: i for i, t in enumerate(req.inputs)}
    single = len(req.inputs) == 1 and req.inputs[0].name not in names

    def nested(i: int) -> bool:
        return bool(req.inputs[i].data) and isinstance(req.inputs[i].data[0], list)

    def locate(loc: list[Any]) -> str:
        row, field = [*loc, None, None][:2]
        if not isinstance(row, int) or field not in names:
            return "inputs"
        col = names.index(field)
        if single:
            return f"inputs[0].data[{row}][{col}]" if nested(0) else f"inputs[0].data[{row * len(names) + col}]"
        i = tensors[field]
        return f"inputs[{i}].data[{row}]" + ("[0]" if nested(i) else "")

    return locate


def v2_rows(req: V2Request, contract: Contract, max_rows: int) -> list[dict[str, Any]]:
    """V2 inputs -> row objects: one tensor per column, or one 2-D tensor in input order."""
    names = contract.input_names
    known = set(names)
    if len(req.inputs) == 1 and req.inputs[0].name not in known:
        t = req.inputs[0]
        if len(t.shape) != 2 or t.shape[1] != len(names):
            raise _bad("inputs[0].shape", f"a single tensor must have shape [n, {len(names)}] (columns {names})")
        allowed = matrix_datatypes(contract)
        if t.datatype not in allowed:
            raise _bad("inputs[0].datatype", f"a 2-D tensor of these inputs has datatype {', '.join(allowed)}")
        n, k = t.shape
        if n == 0:
            raise _bad("inputs[0].shape", "at least one row is needed")
        flat = _flatten(t.data)
        if len(flat) != n * k:
            raise _bad("inputs[0].data", f"shape {t.shape} needs {n * k} values, got {len(flat)}")
        if n > max_rows:
            raise _bad("inputs[0].shape", f"at most {max_rows} rows per request")
        return [dict(zip(names, flat[i * k : (i + 1) * k], strict=True)) for i in range(n)]
    kinds = {s.name: s.type for s in contract.inputs}
    columns: dict[str, list[Any]] = {}
    count: int | None = None
    for i, t in enumerate(req.inputs):
        if t.name not in known:
            raise _bad(f"inputs[{i}].name", f"unknown input; the model takes {names}")
        if t.name in columns:
            raise _bad(f"inputs[{i}].name", "input given twice")
        if t.datatype not in DATATYPES[kinds[t.name]]:
            takes = ", ".join(DATATYPES[kinds[t.name]])
            raise _bad(f"inputs[{i}].datatype", f"input {t.name!r} is {kinds[t.name]}: its datatype is one of {takes}")
        if len(t.shape) == 2 and t.shape[1] != 1:
            raise _bad(f"inputs[{i}].shape", "a column tensor must have shape [n] or [n, 1]")
        flat = _flatten(t.data)
        if len(flat) != t.shape[0]:
            raise _bad(f"inputs[{i}].data", f"shape {t.shape} needs {t.shape[0]} values, got {len(flat)}")
        if count is not None and t.shape[0] != count:
            raise _bad(f"inputs[{i}].shape", "all inputs must have the same number of rows")
        count = t.shape[0]
        columns[t.name] = flat
    missing = [s.name for s in contract.inputs if s.required and s.name not in columns]
    if missing:
        raise _bad("inputs", f"missing inputs {missing}", "missing")
    if not count:
        raise _bad("inputs[0].shape", "at least one row is needed")
    if count > max_rows:
        raise _bad("inputs[0].shape", f"at most {max_rows} rows per request")
    return [{name: col[r] for name, col in columns.items()} for r in range(count)]


def _datatype(values: list[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "BOOL"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64"
    if all((isinstance(v, int | float) and not isinstance(v, bool)) or v is None for v in values):
        return "FP64"
    return "BYTES"


def v2_outputs(predictions: list[Any], contract: Contract) -> list[dict[str, Any]]:
    """Predictions -> V2 output tensors: scalars [n], vectors [n, m], dicts one tensor per key."""
    n = len(predictions)
    default = contract.outputs[0].name if len(contract.outputs) == 1 else "predict"
    if n and all(isinstance(p, dict) for p in predictions):
        keys = list(predictions[0])
        out = []
        for key in keys:
            col = [p.get(key) for p in predictions]
            out.append({"name": str(key), "shape": [n], "datatype": _datatype(col), "data": _bytes(col)})
        return out
    if n and all(isinstance(p, list) for p in predictions):
        m = len(predictions[0])
        if all(len(p) == m for p in predictions):
            flat = [v for p in predictions for v in p]
            return [{"name": default, "shape": [n, m], "datatype": _datatype(flat), "data": _bytes(flat)}]
    return [{"name": default, "shape": [n], "datatype": _datatype(predictions), "data": _bytes(predictions)}]


def _bytes(values: list[Any]) -> list[Any]:
    if _datatype(values) != "BYTES":
        return values
    return [v if isinstance(v, str) else str(v) for v in values]


def v2_metadata_tensors(contract: Contract) -> list[dict[str, Any]]:
    kinds = {"integer": "INT64", "double": "FP64", "boolean": "BOOL", "string": "BYTES"}
    return [{"name": i.name, "datatype": kinds[i.type], "shape": [-1]} for i in contract.inputs]
