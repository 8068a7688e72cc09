"""Field paths for server-side apply: ownership granularity, lookups, merges and managedFields.

A field path is a tuple of elements: a map key (str), a list item of an `x-kubernetes-list-type: map`
list named by its key fields (`("k", '{"name":"kserve-container"}')`), or a value of a `set` list
(`("v", '"a"')`), as structured-merge-diff names them in `metadata.managedFields`. Other lists are
atomic: owned, merged and removed as a whole. A map list whose items lack key fields, or repeat a
key, falls back to atomic. Used by store.py to track which manager owns which fields.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]
Schema = dict[str, Any]
Element = str | tuple[str, str]
FieldPath = tuple[Element, ...]
MISSING: Any = object()

# ObjectMeta as structured-merge-diff sees it: maps of strings, finalizers a set, ownerReferences by uid.
META_SCHEMA: Schema = {
    "type": "object",
    "properties": {
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        "finalizers": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
        "ownerReferences": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["uid"],
            "items": {"type": "object"},
        },
    },
}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _child(schema: Schema | None, key: str) -> Schema | None:
    if not schema:
        return None
    props = schema.get("properties") or {}
    if key in props:
        return props[key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _key_element(item: Obj, keys: list[str]) -> tuple[str, str]:
    return ("k", _canonical({k: item[k] for k in keys}))


def _map_keys(schema: Schema | None, items: list[Any]) -> list[str] | None:
    """The key fields of a map list whose items all carry distinct keys, else None (atomic)."""
    if not schema or schema.get("x-kubernetes-list-type") != "map":
        return None
    keys = list(schema.get("x-kubernetes-list-map-keys") or [])
    if not keys or not all(isinstance(i, dict) and all(k in i for k in keys) for i in items):
        return None
    elements = [_key_element(i, keys) for i in items]
    return keys if len(set(elements)) == len(elements) else None


def _is_set(schema: Schema | None, items: list[Any]) -> bool:
    if not schema or schema.get("x-kubernetes-list-type") != "set":
        return False
    scalars = all(not isinstance(i, dict | list) for i in items)
    return scalars and len({_canonical(i) for i in items}) == len(items)


def _find(items: list[Any], element: tuple[str, str]) -> int | None:
    kind, text = element
    wanted = json.loads(text)
    for i, item in enumerate(items):
        if kind == "k" and isinstance(item, dict) and all(item.get(k, MISSING) == v for k, v in wanted.items()):
            return i
        if kind == "v" and item == wanted:
            return i
    return None


def get_path(obj: Any, path: FieldPath) -> Any:
    for element in path:
        if isinstance(element, tuple):
            index = _find(obj, element) if isinstance(obj, list) else None
            if index is None:
                return MISSING
            obj = obj[index]
        elif isinstance(obj, dict) and element in obj:
            obj = obj[element]
        else:
            return MISSING
    return obj


def leaf_paths(value: Any, schema: Schema | None, prefix: FieldPath = ()) -> set[FieldPath]:
    """Ownership granularity: map keys and keyed list items down to scalars, atomic lists, empty maps."""
    if isinstance(value, dict) and value:
        out: set[FieldPath] = set()
        for key, item in value.items():
            out |= leaf_paths(item, _child(schema, key), (*prefix, key))
        return out
    if isinstance(value, list) and value and schema:
        keys = _map_keys(schema, value)
        if keys:
            out = set()
            for item in value:
                out |= leaf_paths(item, schema.get("items"), (*prefix, _key_element(item, keys)))
            return out
        if _is_set(schema, value):
            return {(*prefix, ("v", _canonical(v))) for v in value}
    return {prefix} if prefix else set()


def overlap(a: FieldPath, b: FieldPath) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def is_key_field(path: FieldPath) -> bool:
    """True for a key field of a map-list item (`containers[name=x].name`): it goes with the item."""
    return len(path) >= 2 and isinstance(path[-2], tuple) and path[-2][0] == "k" and path[-1] in json.loads(path[-2][1])


def delete_path(obj: Obj, path: FieldPath) -> None:
    """Remove the field or list item at `path`, then maps and lists it left empty (below top level)."""
    chain: list[Any] = [obj]
    for element in path[:-1]:
        child = get_path(chain[-1], (element,))
        if child is MISSING:
            return
        chain.append(child)
    last, container = path[-1], chain[-1]
    if isinstance(last, tuple) and isinstance(container, list):
        index = _find(container, last)
        if index is not None:
            container.pop(index)
    elif isinstance(last, str) and isinstance(container, dict):
        container.pop(last, None)
    for depth in range(len(path) - 1, 1, -1):
        node, parent, element = chain[depth], chain[depth - 1], path[depth - 1]
        if node not in ({}, []):
            break
        if isinstance(element, str) and isinstance(parent, dict):
            parent.pop(element, None)
        elif isinstance(element, tuple) and isinstance(parent, list):
            index = _find(parent, element)
            if index is not None:
                parent.pop(index)


def deep_merge(base: Any, overlay: Any, schema: Schema | None) -> Any:
    """Merge an apply configuration into the live object: maps per key, map lists per item key."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = deep_merge(base.get(key, MISSING), value, _child(schema, key))
        return merged
    if isinstance(base, list) and isinstance(overlay, list) and schema:
        keys = _map_keys(schema, overlay)
        if keys and _map_keys(schema, base) == keys:
            result, used = [], set()
            for item in overlay:
                index = _find(base, _key_element(item, keys))
                if index is None:
                    result.append(copy.deepcopy(item))
                else:
                    used.add(index)
                    result.append(deep_merge(base[index], item, schema.get("items")))
            return result + [copy.deepcopy(b) for i, b in enumerate(base) if i not in used]
        if _is_set(schema, overlay) and _is_set(schema, base):
            return copy.deepcopy(base) + [copy.deepcopy(v) for v in overlay if v not in base]
    return copy.deepcopy(overlay)


def drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def render(path: FieldPath) -> str:
    """A path as the real server prints it in conflicts: `.spec.predictor.containers[name="x"].image`."""
    out = ""
    for element in path:
        if isinstance(element, tuple):
            wanted = json.loads(element[1])
            inner = ",".join(f"{k}={json.dumps(v)}" for k, v in wanted.items()) if element[0] == "k" else element[1]
            out += f"[{inner}]"
        else:
            out += f".{element}"
    return out


def fields_v1(paths: Iterable[FieldPath]) -> Obj:
    root: Obj = {}
    for path in sorted(paths, key=lambda p: [e if isinstance(e, str) else ":".join(e) for e in p]):
        node = root
        for element in path:
            if isinstance(element, tuple):
                node = node.setdefault(f"{element[0]}:{element[1]}", {})
                node.setdefault(".", {})
            else:
                node = node.setdefault(f"f:{element}", {})
    return root
