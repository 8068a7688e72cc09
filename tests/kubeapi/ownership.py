"""Field paths for server-side apply: ownership granularity, lookups, merges and managedFields.

A field path is a tuple of map keys; lists are atomic (owned, merged and removed as a whole). Used by
store.py to track which manager owns which fields and to render `metadata.managedFields`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]
FieldPath = tuple[str, ...]
MISSING: Any = object()


def get_path(obj: Any, path: FieldPath) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return MISSING
        obj = obj[key]
    return obj


def leaf_paths(value: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    """Ownership granularity: every map key down to scalars, lists and empty maps (lists are atomic)."""
    if isinstance(value, dict) and value:
        out: set[FieldPath] = set()
        for key, item in value.items():
            out |= leaf_paths(item, (*prefix, key))
        return out
    return {prefix} if prefix else set()


def overlap(a: FieldPath, b: FieldPath) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def delete_path(obj: Obj, path: FieldPath) -> None:
    parents = [obj]
    for key in path[:-1]:
        child = parents[-1].get(key)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 1, -1):  # drop maps emptied by the removal, below top level
        if parents[depth] == {}:
            parents[depth - 1].pop(path[depth - 1], None)


def deep_merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = deep_merge(base.get(key), value)
        return merged
    return copy.deepcopy(overlay)


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def fields_v1(paths: Iterable[FieldPath]) -> Obj:
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return root
