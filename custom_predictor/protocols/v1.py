"""KServe V1 bodies <-> the contract's rows: `instances` are record objects or arrays of values in input order.

Neighbours: `kserve_schemas` documents the same per contract; the service validates the rows these give, with
errors located by `v1_locate` (`instances[2].age`, `instances[2][1]`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from custom_predictor.errors import invalid

Locate = Callable[[list[Any]], str]
"""pydantic's location of an error in the rows, `[row, input, ...]` -> where that value is in the request body."""


def v1_rows(instances: list[Any], names: list[str]) -> list[Any]:
    """V1 instances (objects, or lists in input order) -> row objects (validated later)."""
    rows: list[Any] = []
    for n, inst in enumerate(instances):
        if isinstance(inst, list):
            if len(inst) != len(names):
                raise invalid(f"instances[{n}]", f"expected {len(names)} values in the order {names}")
            rows.append(dict(zip(names, inst, strict=True)))
        else:
            rows.append(inst)
    return rows


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
