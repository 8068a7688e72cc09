"""Structural OpenAPI v3 schemas of custom resources: prune, default and validate like kube-apiserver.

Used by the store (store.py) for every write to a kind registered with a schema. The order is the real
server's: null values of non-nullable fields and unknown fields are dropped (unknown ones reported as
`unknown field "spec.x"` warnings), `default`s are filled in, then the object is validated. Field errors
carry the path the real server prints (`spec.predictor.containers[0].name`) and the same wording.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

Schema = dict[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One field error, as a `causes` entry of an Invalid Status."""

    field: str
    reason: str
    detail: str

    @property
    def message(self) -> str:
        return f"{self.field}: {self.detail}"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def go_repr(value: Any) -> str:
    """A value as Go's field.Invalid prints it: strings quoted, numbers bare, the rest as JSON."""
    if isinstance(value, str):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _matches_type(value: Any, wanted: str) -> bool:
    actual = json_type(value)
    if wanted == "number":
        return actual in ("integer", "number")
    return actual == wanted


class StructuralSchema:
    """The openAPIV3Schema of one CRD version."""

    def __init__(self, schema: Schema) -> None:
        self.root = schema

    def prune(self, obj: dict[str, Any]) -> list[str]:
        """Drop unknown fields and non-nullable nulls in place (metadata is left to the caller)."""
        pruned: list[str] = []
        props = self.root.get("properties", {})
        for key in list(obj):
            if key in ("apiVersion", "kind", "metadata"):
                continue
            if key not in props:
                del obj[key]
                pruned.append(key)
            elif obj[key] is None and not props[key].get("nullable"):
                del obj[key]
            else:
                obj[key] = self._prune(obj[key], props[key], key, pruned)
        return pruned

    def _prune(self, value: Any, schema: Schema, path: str, pruned: list[str]) -> Any:
        if schema.get("type") == "integer" and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, dict):
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            keep_unknown = bool(schema.get("x-kubernetes-preserve-unknown-fields")) or extra is True
            for key in list(value):
                sub: Schema | None
                if key in props:
                    sub, sub_path = props[key], _child(path, key)
                elif isinstance(extra, dict):
                    sub, sub_path = extra, f"{path}[{key}]"
                else:
                    sub, sub_path = None, _child(path, key)
                if sub is None:
                    if not keep_unknown:
                        del value[key]
                        pruned.append(sub_path)
                elif value[key] is None and not sub.get("nullable"):
                    del value[key]
                else:
                    value[key] = self._prune(value[key], sub, sub_path, pruned)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                value[i] = self._prune(item, schema["items"], f"{path}[{i}]", pruned)
        return value

    def default(self, obj: dict[str, Any]) -> None:
        """Fill in `default`s of missing properties of every object present, in place."""
        self._default(obj, self.root)

    def _default(self, value: Any, schema: Schema) -> None:
        if isinstance(value, dict):
            props = schema.get("properties") or {}
            for key, sub in props.items():
                if key not in value and "default" in sub:
                    value[key] = json.loads(json.dumps(sub["default"]))
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                sub = props.get(key) or (extra if isinstance(extra, dict) else None)
                if sub is not None:
                    self._default(item, sub)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for item in value:
                self._default(item, schema["items"])

    def validate(self, obj: dict[str, Any]) -> list[FieldError]:
        errors: list[FieldError] = []
        props = self.root.get("properties", {})
        for key, value in obj.items():
            if key not in ("apiVersion", "kind", "metadata") and key in props:
                self._validate(value, props[key], key, errors)
        for key in self.root.get("required", []):
            if key not in obj:
                errors.append(FieldError(key, "FieldValueRequired", "Required value"))
        return errors

    def _validate(self, value: Any, schema: Schema, path: str, errors: list[FieldError]) -> None:
        def invalid(detail: str) -> None:
            errors.append(FieldError(path, "FieldValueInvalid", f"Invalid value: {go_repr(value)}: {detail}"))

        if value is None:
            if not schema.get("nullable"):
                given = "null"
                errors.append(
                    FieldError(
                        path,
                        "FieldValueInvalid",
                        f'Invalid value: "{given}": {path} in body must be of type '
                        f'{schema.get("type", "object")}: "{given}"',
                    )
                )
            return
        if schema.get("x-kubernetes-int-or-string"):
            if json_type(value) not in ("integer", "string"):
                given = json_type(value)
                errors.append(
                    FieldError(
                        path,
                        "FieldValueInvalid",
                        f'Invalid value: "{given}": {path} in body must be of type integer,string: "{given}"',
                    )
                )
            return
        wanted = schema.get("type")
        if wanted and not _matches_type(value, wanted):
            given = json_type(value)
            errors.append(
                FieldError(
                    path,
                    "FieldValueInvalid",
                    f'Invalid value: "{given}": {path} in body must be of type {wanted}: "{given}"',
                )
            )
            return
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(go_repr(v) for v in schema["enum"])
            errors.append(
                FieldError(
                    path, "FieldValueNotSupported", f"Unsupported value: {go_repr(value)}: supported values: {allowed}"
                )
            )
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                errors.append(
                    FieldError(path, "FieldValueTooLong", f"Too long: may not be more than {schema['maxLength']} bytes")
                )
            if "minLength" in schema and len(value) < schema["minLength"]:
                invalid(f"{path} in body should be at least {schema['minLength']} chars long")
            if "pattern" in schema and not _regex(schema["pattern"]).search(value):
                invalid(f"{path} in body should match '{schema['pattern']}'")
            if schema.get("format") == "date-time" and not _RFC3339.fullmatch(value):
                invalid(f"{path} in body must be of type date-time: {go_repr(value)}")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                invalid(f"{path} in body should be greater than or equal to {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                invalid(f"{path} in body should be less than or equal to {schema['maximum']}")
        elif isinstance(value, dict):
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    self._validate(item, props[key], _child(path, key), errors)
                elif isinstance(extra, dict):
                    self._validate(item, extra, f"{path}[{key}]", errors)
            for key in schema.get("required", []):
                if key not in value:
                    errors.append(FieldError(_child(path, key), "FieldValueRequired", "Required value"))
        elif isinstance(value, list):
            if "minItems" in schema and len(value) < schema["minItems"]:
                invalid(f"{path} in body should have at least {schema['minItems']} items")
            items = schema.get("items")
            if isinstance(items, dict):
                for i, item in enumerate(value):
                    self._validate(item, items, f"{path}[{i}]", errors)
            self._unique(value, schema, path, errors)

    @staticmethod
    def _unique(value: list[Any], schema: Schema, path: str, errors: list[FieldError]) -> None:
        list_type = schema.get("x-kubernetes-list-type")
        keys = schema.get("x-kubernetes-list-map-keys") or []
        if list_type not in ("set", "map"):
            return
        seen: list[Any] = []
        for i, item in enumerate(value):
            ident = [item.get(k) for k in keys] if list_type == "map" and keys and isinstance(item, dict) else item
            if ident in seen:
                shown = go_repr({k: item.get(k) for k in keys} if list_type == "map" else item)
                errors.append(FieldError(f"{path}[{i}]", "FieldValueDuplicate", f"Duplicate value: {shown}"))
            seen.append(ident)


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@dataclass(frozen=True)
class CrdVersion:
    """What the store needs of one served version of a CRD."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    list_kind: str
    short_names: tuple[str, ...]
    namespaced: bool
    status_subresource: bool
    schema: StructuralSchema | None
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), hash=False, compare=False)


@cache
def load_crd(path: Path, version: str | None = None) -> CrdVersion:
    """Read a CustomResourceDefinition YAML file (the storage version unless `version` is given)."""
    with path.open("rb") as fh:
        crd = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    spec = crd["spec"]
    versions = spec["versions"]
    chosen = next(v for v in versions if (v["name"] == version if version else v.get("storage")))
    schema = (chosen.get("schema") or {}).get("openAPIV3Schema")
    names = spec["names"]
    return CrdVersion(
        group=spec["group"],
        version=chosen["name"],
        plural=names["plural"],
        singular=names.get("singular", names["kind"].lower()),
        kind=names["kind"],
        list_kind=names.get("listKind", names["kind"] + "List"),
        short_names=tuple(names.get("shortNames", [])),
        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
        status_subresource="status" in (chosen.get("subresources") or {}),
        schema=StructuralSchema(schema) if schema else None,
        printer_columns=tuple(chosen.get("additionalPrinterColumns") or ()),
    )
