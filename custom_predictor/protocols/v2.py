"""Open Inference Protocol (V2) request tensors -> the contract's rows, or (untyped models) the model's input.

`read_tensors` takes the validated JSON header and the binary tail (`v2_binary`) and gives each tensor's flat
values, as many as its shape says. `rows` maps tensors to the model's inputs the ways conformant
clients send them: named after the inputs (any order), named otherwise and taken by position in the order the
model metadata declares, or one 2-D tensor [n, k] of every input; each column [n] or [n, 1]; JSON values are
checked against their datatype (`v2_datatypes`). Every broken rule is a 422 naming the field
(`inputs[3].data[2]`, `inputs[0].shape`). Neighbours: `v2_outputs` for responses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from custom_predictor.contract import Contract
from custom_predictor.errors import invalid
from custom_predictor.kserve_schemas import V2Request
from custom_predictor.protocols.v1 import Locate
from custom_predictor.protocols.v2_binary import decode, slices
from custom_predictor.protocols.v2_datatypes import DATATYPES, check_exact, check_values, matrix_datatypes


@dataclass
class Tensor:
    """One request tensor: `values` flat and row-major (Python values; a numpy array when binary)."""

    index: int
    name: str
    shape: list[int]
    datatype: str
    values: Any
    nested: bool = False
    binary: bool = False

    def where(self, k: int) -> str:
        """The path of flat element `k`: `inputs[i].data[k]`, or `inputs[i].data[r][c]` for nested data."""
        if self.nested and len(self.shape) > 1:
            index, rest = [], k
            for size in reversed(self.shape[1:]):
                rest, i = divmod(rest, max(size, 1))
                index.append(i)
            return f"inputs[{self.index}].data[{rest}]" + "".join(f"[{i}]" for i in reversed(index))
        return f"inputs[{self.index}].data[{k}]"


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    for v in data:
        flat.extend(_flatten(v) if isinstance(v, list) else [v])
    return flat


def read_tensors(req: V2Request, tail: bytes) -> list[Tensor]:
    """The request's tensors with their flat values (JSON `data` or binary data), shapes and datatypes checked."""
    sizes = [(t.parameters or {}).get("binary_data_size") for t in req.inputs]
    raw = slices(tail, sizes)
    tensors = []
    for i, (t, blob) in enumerate(zip(req.inputs, raw, strict=True)):
        count = math.prod(t.shape)
        if blob is not None:
            if t.data is not None:
                raise invalid(f"inputs[{i}].data", "give data or binary_data_size, not both")
            values = decode(blob, t.datatype, count, f"inputs[{i}]")
            tensors.append(Tensor(i, t.name, t.shape, t.datatype, values, binary=True))
            continue
        if t.data is None:
            raise invalid(f"inputs[{i}].data", "missing: JSON data, or binary_data_size with binary data", "missing")
        values = _flatten(t.data)
        if len(values) != count:
            raise invalid(f"inputs[{i}].data", f"shape {t.shape} needs {count} values, got {len(values)}")
        tensors.append(Tensor(i, t.name, t.shape, t.datatype, values, nested=len(values) > 0 and values is not t.data))
    return tensors


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


def _column(t: Tensor, kind: str) -> list[Any]:
    if t.datatype not in DATATYPES[kind]:
        takes = ", ".join(DATATYPES[kind])
        raise invalid(f"inputs[{t.index}].datatype", f"this input is {kind}: its datatype is one of {takes}")
    if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
        raise invalid(f"inputs[{t.index}].shape", "a column tensor has shape [n] or [n, 1]")
    if not t.binary:
        check_values(t.values, t.datatype, t.where)
    values = _text(t, 0, 1)
    check_exact(values, kind, t.datatype, t.where)
    return values


def _text(t: Tensor, start: int, step: int) -> list[Any]:
    """Every `step`-th value from `start`, as Python values: binary numbers via numpy, BYTES decoded as UTF-8."""
    values = t.values[start::step]
    if not t.binary:
        return list(values)
    if t.datatype != "BYTES":
        return list(values.tolist())
    try:
        return [v.decode() for v in values]
    except UnicodeDecodeError:
        raise invalid(f"inputs[{t.index}]", "BYTES values of a string input are UTF-8 text") from None


def _matrix(t: Tensor, contract: Contract) -> tuple[int, dict[str, list[Any]]]:
    names = contract.input_names
    if len(t.shape) != 2 or t.shape[1] != len(names):
        raise invalid(
            f"inputs[{t.index}].shape", f"a single tensor must have shape [n, {len(names)}] (columns {names})"
        )
    allowed = matrix_datatypes(contract)
    if t.datatype not in allowed:
        raise invalid(f"inputs[{t.index}].datatype", f"a 2-D tensor of these inputs has datatype {', '.join(allowed)}")
    kinds = {i.type for i in contract.inputs}
    if len(kinds) == 1:  # mixed types: each value checked by its input's validation
        if not t.binary:
            check_values(t.values, t.datatype, t.where)
        check_exact(list(t.values), kinds.pop(), t.datatype, t.where)
    k = len(names)
    return t.shape[0], {name: _text(t, c, k) for c, name in enumerate(names)}


def rows(tensors: list[Tensor], contract: Contract, max_rows: int) -> tuple[list[dict[str, Any]], Locate]:
    """Rows for the contract's inputs, and where a row value came from (for the row validation's errors)."""
    assigned = _assign(tensors, contract)
    names, kinds = contract.input_names, {s.name: s.type for s in contract.inputs}
    if isinstance(assigned, Tensor):
        count, columns = _matrix(assigned, contract)
        matrix = assigned

        def locate(loc: list[Any]) -> str:
            row, field = [*loc, None, None][:2]
            ok = isinstance(row, int) and field in names
            return matrix.where(row * len(names) + names.index(field)) if ok else "inputs"

    else:
        columns, counts = {}, set[int]()
        for name, t in assigned.items():
            columns[name] = _column(t, kinds[name])
            if counts and t.shape[0] not in counts:
                raise invalid(f"inputs[{t.index}].shape", "all inputs must have the same number of rows")
            counts.add(t.shape[0])
        missing = [s.name for s in contract.inputs if s.required and s.name not in columns]
        if missing:
            raise invalid("inputs", f"missing inputs {missing}", "missing")
        count = counts.pop()

        def locate(loc: list[Any]) -> str:
            row, field = [*loc, None, None][:2]
            ok = isinstance(row, int) and field in assigned
            return assigned[field].where(row) if ok else "inputs"

    if count == 0:
        raise invalid("inputs[0].shape", "at least one row is needed")
    if count > max_rows:
        raise invalid("inputs[0].shape", f"at most {max_rows} rows per request")
    keys = list(columns)
    return [dict(zip(keys, values, strict=True)) for values in zip(*columns.values(), strict=True)], locate


def model_input(tensors: list[Tensor]) -> Any:
    """For a model without signature or contract: one tensor as a numpy array of its shape and datatype, several
    (columns [n] or [n, 1] of the same n) as a DataFrame, one column per tensor name."""
    import numpy as np

    from custom_predictor.protocols.v2_binary import NUMPY_TYPES

    arrays = []
    for t in tensors:
        if not t.binary:
            check_values(t.values, t.datatype, t.where)
        if t.datatype == "BYTES":
            values = [_utf8(v) for v in t.values]
            arrays.append(np.array(values, dtype=object).reshape(t.shape))
        else:
            arrays.append(np.asarray(t.values, dtype=NUMPY_TYPES[t.datatype]).reshape(t.shape))
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
