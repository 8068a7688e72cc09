"""Server-side printing: `meta.k8s.io/v1 Table` answers built from a CRD's additionalPrinterColumns.

kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the columns the
server chose (for InferenceServices: URL, READY, PREV, LATEST, AGE). The column paths use the small
JSONPath subset CRDs use: `.a.b`, `[n]`, `[*]` and filters `[?(@.key==value)]`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
_TOKEN = re.compile(r"\.([A-Za-z0-9_-]+)|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*([^)]*)\)\]|\[(\*|\d+)\]")


def _literal(text: str) -> Any:
    text = text.strip()
    if text[:1] in ("'", '"') and text[-1:] == text[:1]:
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return text


def jsonpath(obj: Any, path: str) -> list[Any]:
    """All values `path` selects in `obj` (kubectl/CRD JSONPath subset)."""
    nodes = [obj]
    position = 0
    while position < len(path):
        match = _TOKEN.match(path, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {position}")
        position = match.end()
        key, filter_key, filter_value, index = match.groups()
        found: list[Any] = []
        for node in nodes:
            if key is not None and isinstance(node, dict) and key in node:
                found.append(node[key])
            elif filter_key is not None and isinstance(node, list):
                wanted = _literal(filter_value)
                found += [i for i in node if _dig(i, filter_key) == wanted]
            elif index == "*":
                found += list(node.values()) if isinstance(node, dict) else list(node) if isinstance(node, list) else []
            elif index is not None and isinstance(node, list) and int(index) < len(node):
                found.append(node[int(index)])
        nodes = found
    return nodes


def _dig(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration, as the AGE column shows it."""
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y"


def _cell(obj: Obj, column: Obj) -> Any:
    values = jsonpath(obj, column["jsonPath"])
    if not values or values[0] is None:
        return None
    value, kind = values[0], column.get("type", "string")
    if kind == "date" and isinstance(value, str):
        try:
            then = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            return value
        return human_duration((datetime.now(UTC) - then).total_seconds())
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "string" and not isinstance(value, str):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def table(objects: Iterable[Obj], columns: Iterable[Obj], resource_version: str, include: str | None) -> Obj:
    """A Table of `objects`; `include` is the includeObject parameter (None, Metadata, Object)."""
    columns = list(columns)
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "Name must be unique within a namespace.",
            "priority": 0,
        }
    ] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = []
    for obj in objects:
        row: Obj = {"cells": [obj["metadata"]["name"], *(_cell(obj, c) for c in columns)]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"},
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
