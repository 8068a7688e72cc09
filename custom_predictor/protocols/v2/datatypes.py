"""Open Inference Protocol datatypes: which ones each contract type takes, their value ranges, and the check of
JSON tensor data against them.

Conversions are accepted where they lose nothing: integer datatypes for double inputs (within +-2^53, where
doubles are exact), floating datatypes for integer inputs when every value is a whole number. A value outside
its datatype (an INT32 above 2^31, a negative UINT8, an FP16 beyond 65504) is refused, wherever the contract's
own range would have let it through. Neighbours: `codec` applies the checks to request tensors; `schemas`
documents the same ranges.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from custom_predictor.contract import Contract
from custom_predictor.errors import invalid

INTEGERS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
FLOATS = ("FP16", "FP32", "FP64")
DATATYPES: dict[str, tuple[str, ...]] = {
    "integer": (*INTEGERS, *FLOATS),
    "double": (*FLOATS, *INTEGERS),
    "boolean": ("BOOL",),
    "string": ("BYTES",),
}
"""Datatypes a tensor may carry for an input of each contract type."""

RANGES: dict[str, tuple[float, float]] = {
    **{f"INT{b}": (-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)},
    **{f"UINT{b}": (0, 2**b - 1) for b in (8, 16, 32, 64)},
    "FP16": (-65504.0, 65504.0),
    "FP32": (-3.4028234663852886e38, 3.4028234663852886e38),
    "FP64": (-1.7976931348623157e308, 1.7976931348623157e308),
}
"""Smallest and largest value of each numeric datatype."""

EXACT = 2**53
"""Integers beyond this are not exact as doubles: an INT64/UINT64 tensor for a double input stays within it."""

METADATA_TYPES = {"integer": "INT64", "double": "FP64", "boolean": "BOOL", "string": "BYTES"}
"""The datatype the model metadata declares for an input or output of each contract type."""


def matrix_datatypes(contract: Contract) -> tuple[str, ...]:
    """Datatypes of a single 2-D tensor: those every input accepts, else (mixed types) those any input accepts."""
    return _matrix_datatypes(tuple(i.type for i in contract.inputs))


@functools.cache
def _matrix_datatypes(kinds: tuple[str, ...]) -> tuple[str, ...]:
    sets = [DATATYPES[kind] for kind in kinds]
    common = [d for d in sets[0] if all(d in s for s in sets)]
    return tuple(common) if common else tuple(dict.fromkeys(d for s in sets for d in s))


def value_ok(datatype: str, v: Any) -> bool:
    """Whether a JSON value can be an element of a tensor of `datatype`."""
    kind = type(v)
    if datatype == "BYTES":
        return kind is str
    if datatype == "BOOL":
        return kind is bool
    lo, hi = RANGES[datatype]
    if datatype.startswith("FP"):
        return (kind is float or kind is int) and lo <= v <= hi
    return (kind is int or (kind is float and v.is_integer())) and lo <= v <= hi


def check_values(values: list[Any], datatype: str, where: Callable[[int], str]) -> None:
    """Refuse the first element of `values` (flat JSON data) that `datatype` cannot carry, at `where(index)`."""
    if _all_ok(values, datatype):
        return
    for k, v in enumerate(values):
        if not value_ok(datatype, v):
            raise invalid(where(k), _why(datatype, v), "datatype")


def _all_ok(values: list[Any], datatype: str) -> bool:
    """The same check for the whole list at C speed (types, then min and max), when every value passes.

    A NaN is let through here (comparisons with it are false): a float datatype carries it, the whole-number
    check refuses it for integer datatypes, and the contract's validation refuses it for double inputs."""
    types = set(map(type, values))
    if datatype in ("BYTES", "BOOL"):
        return types <= ({str} if datatype == "BYTES" else {bool})
    if not types <= {int, float}:
        return False
    if float in types and datatype in INTEGERS and not all(v.is_integer() for v in values if type(v) is float):
        return False
    lo, hi = RANGES[datatype]
    return not values or (lo <= min(values) and max(values) <= hi)


def _why(datatype: str, v: Any) -> str:
    if datatype == "BYTES":
        return "BYTES values are strings"
    if datatype == "BOOL":
        return "BOOL values are true or false"
    lo, hi = RANGES[datatype]
    number = isinstance(v, int | float) and not isinstance(v, bool)
    if datatype.startswith("FP"):
        return f"out of {datatype}'s range {lo:g}..{hi:g}" if number else f"{datatype} values are numbers"
    if number and float(v).is_integer():
        return f"out of {datatype}'s range {lo}..{hi}"
    return f"{datatype} values are whole numbers"


def bounds(kind: str, datatype: str) -> tuple[float, float]:
    """The values a `datatype` tensor carries for an input of contract type `kind` without loss."""
    lo, hi = RANGES[datatype]
    if kind == "double" and datatype in INTEGERS:
        return max(lo, -EXACT), min(hi, EXACT)
    return lo, hi


def check_exact(values: list[Any], kind: str, datatype: str, where: Callable[[int], str]) -> None:
    """Refuse integers a double input would not hold exactly (JSON or binary values)."""
    if kind != "double" or datatype not in ("INT64", "UINT64") or not values:
        return
    if max(values) <= EXACT and min(values) >= -EXACT:
        return
    k = next(k for k, v in enumerate(values) if abs(v) > EXACT)
    raise invalid(where(k), "beyond +-2^53: not exact as the double this input is", "datatype")
