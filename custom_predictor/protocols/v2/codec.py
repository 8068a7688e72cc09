"""The Open Inference Protocol's codec (KServe V2, Triton's HTTP protocol): request tensors -> Columns, a model's
output -> output tensors, JSON or the binary tensor data extension both ways.

`decode` validates the JSON header (`schemas.V2Request`), cuts the binary tail (`binary`), and gives each input
tensor as one flat numpy array: binary data straight from its bytes, JSON data checked against its datatype
(`datatypes`) and turned into an array per tensor, never into rows. Tensors map to the model's inputs the ways
conformant clients send them: named after the inputs (any order), named otherwise and taken by position in the
order the model metadata declares, or one 2-D tensor [n, k] of every input; each column [n] or [n, 1]. Every value
is then checked against the contract on the arrays (`columns.check`); each broken rule is a 422 naming the field
(`inputs[3].data[2]`, `inputs[0].shape`). An untyped model gets one array (or a DataFrame of columns) as KServe
would give it. `encode` turns the model's own output (array, DataFrame, ...) into output tensors: [n] per scalar
column, [n, m] (or the array's shape) for arrays, one tensor per DataFrame column; the outputs asked for, each as
JSON or binary data.
Neighbours: `router` calls `decode`/`encode`; `schemas` documents the same per contract.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from custom_predictor import errors, jsonbody
from custom_predictor.columns import ColumnError, Columns, check
from custom_predictor.contract import Contract, InputSpec
from custom_predictor.errors import invalid
from custom_predictor.protocols.v2.binary import NUMPY_TYPES, decode_data, encode_data, join, slices, split
from custom_predictor.protocols.v2.datatypes import (
    DATATYPES,
    INTEGERS,
    check_exact,
    check_values,
    matrix_datatypes,
    value_ok,
)
from custom_predictor.protocols.v2.schemas import V2Request, output_names

_TYPE_ERRORS = {
    "integer": ("Input should be a valid integer", "int_type"),
    "double": ("Input should be a valid number", "float_type"),
    "boolean": ("Input should be a valid boolean", "bool_type"),
    "string": ("Input should be a valid string", "string_type"),
}


@dataclass
class Tensor:
    """One request tensor: binary data as a flat, row-major numpy array (`values`; an object array of bytes for
    BYTES), or JSON data as its flat list of values (`raw`), checked when a column is taken from it."""

    index: int
    name: str
    shape: list[int]
    datatype: str
    values: np.ndarray | None = None
    raw: list[Any] | None = None
    nested: bool = False

    def array(self) -> np.ndarray:
        """All values as one array of the tensor's datatype (JSON values checked against it first)."""
        if self.values is None:
            assert self.raw is not None
            check_values(self.raw, self.datatype, self.where)
            self.values = _array(self.raw, self.datatype)
        return self.values

    def where(self, k: int) -> str:
        """The path of flat element `k`: `inputs[i].data[k]`, or `inputs[i].data[r][c]` for nested data."""
        if self.nested and len(self.shape) > 1:
            index, rest = [], k
            for size in reversed(self.shape[1:]):
                rest, i = divmod(rest, max(size, 1))
                index.append(i)
            return f"inputs[{self.index}].data[{rest}]" + "".join(f"[{i}]" for i in reversed(index))
        return f"inputs[{self.index}].data[{k}]"


@dataclass
class Decoded:
    """A decoded request: its header, and the model's input (Columns, or an untyped model's array/DataFrame)."""

    request: V2Request
    data: Any


def decode(contract: Contract, body: bytes, header_length: str | None, max_rows: int) -> Decoded:
    head, tail = split(body, header_length)
    try:
        limit = jsonbody.values_limit(len(contract.inputs), max_rows) + 64 * 1024  # tensors' metadata too
        request = V2Request.model_validate(jsonbody.load(head, limit))
    except ValidationError as e:
        raise errors.from_validation(list(e.errors())) from None
    _check_requested(request, output_names(contract))
    tensors = _tensors(request, tail)
    for t in request.inputs:
        t.data = None  # the arrays hold the values now
    if not contract.inputs:
        return Decoded(request, _model_input(tensors))
    return Decoded(request, _columns(tensors, contract, max_rows))


def _check_requested(req: V2Request, known: list[str]) -> None:
    """Refuse requested outputs the model does not give (when it declares them) and extensions not served."""
    for j, out in enumerate(req.outputs or []):
        if known and out.name not in known:
            raise invalid(f"outputs[{j}].name", f"unknown output; the model gives {known}")
        if (out.parameters or {}).get("classification"):
            raise invalid(f"outputs[{j}].parameters.classification", "the classification extension is not served")


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    for v in data:
        flat.extend(_flatten(v) if isinstance(v, list) else [v])
    return flat


def _tensors(req: V2Request, tail: bytes) -> list[Tensor]:
    """The request's tensors as flat arrays (JSON `data` or binary data), shapes and datatypes checked."""
    sizes = [(t.parameters or {}).get("binary_data_size") for t in req.inputs]
    raw = slices(tail, sizes)
    tensors = []
    for i, (t, blob) in enumerate(zip(req.inputs, raw, strict=True)):
        count = math.prod(t.shape)
        if blob is not None:
            if t.data is not None:
                raise invalid(f"inputs[{i}].data", "give data or binary_data_size, not both")
            values = decode_data(blob, t.datatype, count, f"inputs[{i}]")
            tensors.append(Tensor(i, t.name, t.shape, t.datatype, values=values))
            continue
        if t.data is None:
            raise invalid(f"inputs[{i}].data", "missing: JSON data, or binary_data_size with binary data", "missing")
        values = _flatten(t.data)
        if len(values) != count:
            raise invalid(f"inputs[{i}].data", f"shape {t.shape} needs {count} values, got {len(values)}")
        nested = len(values) > 0 and values is not t.data
        tensors.append(Tensor(i, t.name, t.shape, t.datatype, raw=values, nested=nested))
    return tensors


def _array(values: list[Any], datatype: str) -> np.ndarray:
    """Checked JSON values as an array: numbers at full precision (float64; int64, or uint64 beyond it)."""
    if datatype == "BYTES":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    if datatype == "BOOL":
        return np.array(values, dtype=bool)
    if datatype in INTEGERS:
        if datatype == "UINT64" and values and max(values) > np.iinfo(np.int64).max:
            return np.array(values, dtype=np.uint64)
        return np.array(values, dtype=np.int64)
    return np.array(values, dtype=np.float64)


def _assign(tensors: list[Tensor], contract: Contract) -> dict[str, Tensor] | Tensor:
    """Input name -> its column tensor, or the single 2-D tensor of every input."""
    names = contract.input_names
    named = [t.name in names for t in tensors]
    if all(named):
        columns: dict[str, Tensor] = {}
        for t in tensors:
            if t.name in columns:
                raise invalid(f"inputs[{t.index}].name", "input given twice")
            columns[t.name] = t
        return columns
    if any(named):
        i = named.index(False)
        raise invalid(
            f"inputs[{i}].name",
            f"unknown input; the model takes {names}: name every tensor after an input, or none (by position)",
        )
    if len(tensors) == 1 and len(tensors[0].shape) == 2 and (tensors[0].shape[1] != 1 or len(names) == 1):
        return tensors[0]
    if len(tensors) > len(names):
        raise invalid("inputs", f"{len(tensors)} tensors by position, but the model takes {len(names)} inputs")
    return dict(zip(names, tensors, strict=False))


def _text(t: Tensor, values: np.ndarray, offset: int, step: int) -> np.ndarray:
    """BYTES values of a string input as str (binary elements are UTF-8 bytes)."""
    if t.datatype != "BYTES" or not any(isinstance(v, bytes) for v in values):
        return values
    out = np.empty(len(values), dtype=object)
    for k, v in enumerate(values):
        try:
            out[k] = v.decode() if isinstance(v, bytes) else v
        except UnicodeDecodeError:
            raise invalid(t.where(offset + k * step), "BYTES values of a string input are UTF-8 text") from None
    return out


def _checked(t: Tensor, spec: InputSpec, offset: int, step: int, mixed: bool = False) -> np.ndarray:
    """One input's values from tensor `t`: its flat elements offset, offset + step, ... In a 2-D tensor of inputs
    of several types (`mixed`, JSON data only) each value is checked against its input's own type, whatever the
    tensor's datatype says, as it would be in a record."""

    def where(k: int) -> str:
        return t.where(offset + k * step)

    if t.raw is not None and mixed:
        datatype = _OWN[spec.type]
        raw = t.raw[offset::step]
        if not all(value_ok(datatype, v) for v in raw):
            k = next(k for k, v in enumerate(raw) if not value_ok(datatype, v))
            message, kind = _TYPE_ERRORS[spec.type]
            raise invalid(where(k), message, kind)
        values = _array(raw, datatype)
    else:
        if t.datatype not in DATATYPES[spec.type]:
            message, kind = _TYPE_ERRORS[spec.type]
            raise invalid(t.where(offset), message, kind)
        datatype = t.datatype
        if t.raw is not None:
            raw = t.raw[offset::step]
            check_values(raw, datatype, where)
            values = _array(raw, datatype)
        else:
            values = t.array()[offset::step]
    values = _text(t, values, offset, step)
    if spec.type == "double" and datatype in ("INT64", "UINT64"):
        check_exact(list(values), spec.type, datatype, where)
    try:
        return check(spec, values)
    except ColumnError as e:
        raise invalid(where(e.index), e.message, e.kind) from None


_OWN = {"integer": "INT64", "double": "FP64", "boolean": "BOOL", "string": "BYTES"}
"""The datatype that carries every value of an input of each type (a value of a mixed 2-D tensor is checked so)."""


def _columns(tensors: list[Tensor], contract: Contract, max_rows: int) -> Columns:
    assigned = _assign(tensors, contract)
    specs = {s.name: s for s in contract.inputs}
    arrays: dict[str, np.ndarray] = {}
    if isinstance(assigned, Tensor):
        t, names = assigned, contract.input_names
        k = len(names)
        if len(t.shape) != 2 or t.shape[1] != k:
            raise invalid(f"inputs[{t.index}].shape", f"a single tensor must have shape [n, {k}] (columns {names})")
        allowed = matrix_datatypes(contract)
        if t.datatype not in allowed:
            raise invalid(
                f"inputs[{t.index}].datatype", f"a 2-D tensor of these inputs has datatype {', '.join(allowed)}"
            )
        count = t.shape[0]
        mixed = len({s.type for s in contract.inputs}) > 1
        plain = not mixed and _plain_doubles(contract) and t.datatype in ("FP64", "FP32")
        grid = t.array().reshape(count, k) if plain else None
        if grid is not None and bool(np.isfinite(grid).all()):
            grid = grid.astype(np.float64, copy=False)  # every value kept: one check for the whole tensor
            arrays = {name: grid[:, j] for j, name in enumerate(names)}
        else:
            for j, name in enumerate(names):
                arrays[name] = _checked(t, specs[name], j, k, mixed)
    else:
        counts: set[int] = set()
        for name, t in assigned.items():
            if t.datatype not in DATATYPES[specs[name].type]:
                takes = ", ".join(DATATYPES[specs[name].type])
                message = f"this input is {specs[name].type}: its datatype is one of {takes}"
                raise invalid(f"inputs[{t.index}].datatype", message)
            if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
                raise invalid(f"inputs[{t.index}].shape", "a column tensor has shape [n] or [n, 1]")
            if counts and t.shape[0] not in counts:
                raise invalid(f"inputs[{t.index}].shape", "all inputs must have the same number of rows")
            counts.add(t.shape[0])
            arrays[name] = _checked(t, specs[name], 0, 1)
        missing = [s.name for s in contract.inputs if s.required and s.name not in arrays]
        if missing:
            raise invalid("inputs", f"missing inputs {missing}", "missing")
        count = counts.pop()
    if count == 0:
        raise invalid("inputs[0].shape", "at least one row is needed")
    if count > max_rows:
        raise invalid("inputs[0].shape", f"at most {max_rows} rows per request")
    return Columns.from_arrays(count, arrays, contract)


def _plain_doubles(contract: Contract) -> bool:
    """Every input a double with no range or allowed values: any finite number is valid."""
    return all(
        s.type == "double" and s.minimum is None and s.maximum is None and not s.allowed for s in contract.inputs
    )


def _model_input(tensors: list[Tensor]) -> Any:
    """For a model without signature or contract: one tensor as a numpy array of its shape and datatype, several
    (columns [n] or [n, 1] of the same n) as a DataFrame, one column per tensor name."""
    arrays = []
    for t in tensors:
        if t.datatype == "BYTES":
            values = [_utf8(v) for v in t.array()]
            a = np.empty(len(values), dtype=object)
            a[:] = values
            arrays.append(a.reshape(t.shape))
        else:
            arrays.append(t.array().astype(NUMPY_TYPES[t.datatype]).reshape(t.shape))
    if len(tensors) == 1:
        return arrays[0]
    for t in tensors:
        if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1) or t.shape[0] != tensors[0].shape[0]:
            raise invalid(f"inputs[{t.index}].shape", "several tensors are columns [n] or [n, 1] of the same n")
    import pandas as pd

    return pd.DataFrame({t.name: a.reshape(-1) for t, a in zip(tensors, arrays, strict=True)})


def _utf8(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            return v
    return v


# ---- outputs ------------------------------------------------------------------------------------------------
@dataclass
class Output:
    """One output tensor: `values` an array of the tensor's shape."""

    name: str
    datatype: str
    values: np.ndarray

    def as_json(self) -> dict[str, Any]:
        """The tensor as JSON data (what the inference log keeps, binary outputs included)."""
        data = self.values.reshape(-1).tolist()
        return {"name": self.name, "shape": list(self.values.shape), "datatype": self.datatype, "data": data}


def outputs(out: Any, contract: Contract) -> list[Output]:
    """A model's own output -> output tensors: a DataFrame's columns (one tensor each, or its only column as the
    prediction), an array as it is shaped, a dict one tensor per key, a list as its rows."""
    default = contract.outputs[0].name if len(contract.outputs) == 1 else "predict"
    if hasattr(out, "columns") and hasattr(out, "to_dict"):  # DataFrame
        if len(out.columns) == 1:
            return [_output(default, out.iloc[:, 0].to_numpy())]
        return [_output(str(c), out[c].to_numpy()) for c in out.columns]
    if hasattr(out, "to_numpy"):  # Series
        return [_output(default, out.to_numpy())]
    if isinstance(out, dict):
        return [_output(str(k), np.asarray(v)) for k, v in out.items()]
    if isinstance(out, list | tuple):
        if out and all(isinstance(p, dict) for p in out):
            return [_output(str(k), np.asarray([p.get(k) for p in out])) for k in out[0]]
        return [_output(default, _rows_array(out))]
    a = np.asarray(out)
    return [_output(default, a if a.ndim else a.reshape(1))]


def _rows_array(rows: list[Any] | tuple[Any, ...]) -> np.ndarray:
    """Rows of scalars or of equal-length vectors as an array; anything ragged as one object per row."""
    try:
        a = np.asarray(rows)
    except ValueError:
        a = np.empty(len(rows), dtype=object)
        a[:] = list(rows)
    return a


def _output(name: str, a: np.ndarray) -> Output:
    kind = a.dtype.kind
    if kind == "b":
        return Output(name, "BOOL", a)
    if kind in "iu":
        return Output(name, "INT64", a.astype(np.int64, copy=False))
    if kind == "f":
        return Output(name, "FP64", a.astype(np.float64, copy=False))
    if kind == "O" and a.size and all(isinstance(v, bool) for v in a.flat):
        return Output(name, "BOOL", a.astype(bool))
    if kind == "O" and a.size and all(isinstance(v, int) and not isinstance(v, bool) for v in a.flat):
        return Output(name, "INT64", a.astype(np.int64))
    if (
        kind == "O"
        and a.size
        and all((isinstance(v, float | int) and not isinstance(v, bool)) or v is None for v in a.flat)
    ):
        return Output(name, "FP64", np.array([math.nan if v is None else v for v in a.flat]).reshape(a.shape))
    strings = np.empty(a.shape, dtype=object)
    strings.flat[:] = [v if isinstance(v, str) else str(v) for v in a.flat]
    return Output(name, "BYTES", strings)


def _number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, float | int) and not isinstance(v, bool))


def encode(outs: list[Output], request: V2Request, head: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The response body (JSON, or binary when any chosen output asks for it) and its extra headers."""
    wanted = {o.name: o for o in request.outputs or []}
    if wanted:
        missing = [name for name in wanted if name not in {o.name for o in outs}]
        if missing:
            raise invalid("outputs", f"the model gave no output {missing}; it gave {[o.name for o in outs]}")
        outs = [o for o in outs if o.name in wanted]
    all_binary = bool((request.parameters or {}).get("binary_data_output", False))
    tensors, blobs = [], []
    for o in outs:
        asked = wanted.get(o.name)
        binary = (asked.parameters or {}).get("binary_data", all_binary) if asked else all_binary
        tensor: dict[str, Any] = {"name": o.name, "shape": list(o.values.shape), "datatype": o.datatype}
        flat = o.values.reshape(-1)
        if binary:
            blob = encode_data(flat, o.datatype)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = flat.tolist() if o.datatype == "BYTES" else np.ascontiguousarray(flat)
        tensors.append(tensor)
    header = orjson.dumps({**head, "outputs": tensors}, option=orjson.OPT_SERIALIZE_NUMPY)
    return join(header, blobs) if blobs else (header, {})
