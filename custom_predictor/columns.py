"""Columns: one request's data as the model takes it, one numpy array per input, what every codec gives and every
backend predicts from.

A protocol's codec decodes its body into `Columns`: from rows it has validated against the contract (the typed API's
records, KServe V1 instances, MLflow's JSON and CSV: `from_rows`), or straight from tensors (the Open Inference
Protocol: `from_arrays`, checked here with `check`, whose errors the codec locates in its own body). Each array holds
what pyfunc's DataFrame column would: int64 integers, float64 doubles (NaN where an optional value is missing), bool,
and object arrays of str; an integer or boolean input with a missing value is an object array holding None, as in
pyfunc's DataFrame. Backends take `matrix()` (numeric models) or the arrays (pyfunc). Rows exist only in codecs
that answer in rows.
Neighbours: `contract` says what each input is; `backends` predict from Columns; `protocols/*/codec` make them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from custom_predictor.contract import Contract, InputSpec

NUMERIC = {"integer": np.int64, "double": np.float64}


class ColumnError(ValueError):
    """A value breaks the contract: `index` is its row in the column, `input` the input's name, `kind` pydantic's
    error type (`greater_than_equal`, `finite_number`, ...), so codecs answer as the row validation does."""

    def __init__(self, input: str, index: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.input, self.index, self.message, self.kind = input, index, message, kind


@dataclass(frozen=True)
class Columns:
    """`n` rows of the contract's inputs: input name -> 1-D array of `n` values (only the inputs given)."""

    n: int
    arrays: Mapping[str, np.ndarray]

    def __len__(self) -> int:
        return self.n

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], contract: Contract) -> Columns:
        """Validated rows (dicts of input name -> value) -> columns; an optional input absent from a row takes its
        default, else stays missing."""
        arrays: dict[str, np.ndarray] = {}
        for spec in contract.inputs:
            values = [r.get(spec.name, spec.default) for r in rows]
            arrays[spec.name] = column(spec, values)
        return cls(len(rows), arrays)

    @classmethod
    def from_arrays(cls, n: int, arrays: Mapping[str, np.ndarray], contract: Contract) -> Columns:
        """Decoded tensors (already of their input's type, see `check`) -> columns; absent optional inputs take
        their default, else are missing."""
        out = dict(arrays)
        for spec in contract.inputs:
            if spec.name not in out:
                out[spec.name] = column(spec, [spec.default] * n)
        return cls(n, out)

    def matrix(self, names: list[str], dtype: Any) -> np.ndarray:
        """The inputs as one column-major matrix of `dtype` (missing -> NaN; ValueError for an integer matrix):
        the layout pyfunc's DataFrame hands the libraries, so BLAS and tree libraries see the same numbers in the
        same order."""
        x = np.empty((self.n, len(names)), dtype=dtype, order="F")
        whole = x.dtype.kind in "iub"
        for j, name in enumerate(names):
            a = self.arrays[name]
            if a.dtype == object:
                if whole and any(v is None for v in a):  # NaN has no integer: refused, as pyfunc refuses it
                    raise ValueError(f"input {name!r} lacks a value and the model takes whole numbers")
                a = np.array([math.nan if v is None else v for v in a], dtype=np.float64)
            x[:, j] = a
        return x

    def rows(self) -> list[dict[str, Any]]:
        """The columns as rows of Python values (missing values left out), for what must see rows."""
        names = list(self.arrays)
        lists = [_values(self.arrays[k]) for k in names]
        return [{k: v for k, v in zip(names, r, strict=True) if v is not None} for r in zip(*lists, strict=True)]


def _values(a: np.ndarray) -> list[Any]:
    values = a.tolist()
    if a.dtype.kind == "f":
        return [None if v != v else v for v in values]  # NaN: missing
    return values


def column(spec: InputSpec, values: list[Any]) -> np.ndarray:
    """A column of Python values as pyfunc's DataFrame holds it (see the module docstring)."""
    missing = None in values
    if spec.type == "double":
        if missing:
            return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        return np.array(values, dtype=np.float64)
    if spec.type == "integer" and not missing:
        return np.array(values, dtype=np.int64)
    if spec.type == "boolean" and not missing:
        return np.array(values, dtype=bool)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def check(spec: InputSpec, a: np.ndarray) -> np.ndarray:
    """A decoded numeric/bool/str tensor column for `spec`, in its type's dtype, once every value keeps the
    contract (whole numbers for integers, finite numbers for doubles, ranges, allowed values); raises ColumnError
    at the first value that does not, with the message pydantic gives for the same value in a record."""
    if spec.type == "integer":
        if a.dtype.kind == "f":
            bad = _first(~np.isfinite(a) | (a != np.floor(a)))
            if bad is not None:
                raise ColumnError(spec.name, bad, "Input should be a valid integer", "int_type")
            a = a.astype(np.int64)
        elif a.dtype.kind == "u" and a.dtype.itemsize == 8:
            bad = _first(a > np.iinfo(np.int64).max)
            if bad is not None:
                raise ColumnError(spec.name, bad, "Input should be a valid integer", "int_parsing_size")
            a = a.astype(np.int64)
        else:
            a = a.astype(np.int64, copy=False)
    elif spec.type == "double":
        a = a.astype(np.float64, copy=False)
        bad = _first(~np.isfinite(a))
        if bad is not None:
            raise ColumnError(spec.name, bad, "Input should be a finite number", "finite_number")
    elif spec.type == "string":
        bad = _first(np.fromiter((len(v) > 10_000 for v in a), dtype=bool, count=len(a)))
        if bad is not None:
            message = "String should have at most 10000 characters"
            raise ColumnError(spec.name, bad, message, "string_too_long")
    _bounds(spec, a)
    return a


def _bounds(spec: InputSpec, a: np.ndarray) -> None:
    if spec.allowed is not None:
        bad = _first(~np.isin(a, np.array(spec.allowed, dtype=a.dtype if a.dtype != object else object)))
        if bad is not None:
            choices = " or ".join(repr(v) for v in spec.allowed)
            raise ColumnError(spec.name, bad, f"Input should be {choices}", "literal_error")
        return
    if spec.minimum is not None:
        bad = _first(a < spec.minimum)
        if bad is not None:
            message = f"Input should be greater than or equal to {_number(spec.minimum)}"
            raise ColumnError(spec.name, bad, message, "greater_than_equal")
    if spec.maximum is not None:
        bad = _first(a > spec.maximum)
        if bad is not None:
            message = f"Input should be less than or equal to {_number(spec.maximum)}"
            raise ColumnError(spec.name, bad, message, "less_than_equal")


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _first(mask: np.ndarray) -> int | None:
    """The index of the first True, or None."""
    if not mask.any():
        return None
    return int(np.argmax(mask))


Locate = Callable[[list[Any]], str]
"""pydantic's location of an error in the rows, `[row, input, ...]` -> where that value is in the request body."""
