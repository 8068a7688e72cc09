"""The objects of the stand-in API server and the rules kube-apiserver's registry applies to writes.

Server-set metadata (uid, resourceVersion, generation, creationTimestamp, managedFields), status
subresource separation, resourceVersion preconditions, server-side apply with field ownership, CRD
schema pruning/defaulting/validation (schema.py), ObjectMeta validation (selectors.py), finalizers, and
a history of watch events. Thread-safe: every operation holds one lock; `changed` wakes watchers.
server.py maps HTTP requests onto these operations.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from tests.kubeapi import patches
from tests.kubeapi.errors import ApiError
from tests.kubeapi.kinds import Kind
from tests.kubeapi.ownership import (
    META_SCHEMA,
    MISSING,
    FieldPath,
    Schema,
    deep_merge,
    delete_path,
    drop_nulls,
    fields_v1,
    get_path,
    is_key_field,
    leaf_paths,
    overlap,
    render,
)
from tests.kubeapi.schema import FieldError, go_repr
from tests.kubeapi.selectors import (
    dns1123_subdomain_errors,
    field_selector,
    label_selector,
    label_value_errors,
    qualified_name_errors,
)

Obj = dict[str, Any]
Admission = Callable[[Kind, str, Obj, "Obj | None"], None]  # (kind, CREATE|UPDATE, new object, old object)
OwnerKey = tuple[str, str, str]  # (manager, "Apply" | "Update", subresource)

OBJECT_META_KEYS = {
    "name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
    "finalizers", "managedFields", "selfLink",
}  # fmt: skip
OWNED_META_KEYS = ("labels", "annotations", "finalizers", "ownerReferences")
SERVER_META_KEYS = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class AdmissionDenied(Exception):
    """Raised by an admission hook to reject a write, as a validating webhook does (403 by default)."""

    def __init__(self, webhook: str, message: str, code: int = 403) -> None:
        super().__init__(message)
        self.webhook, self.message, self.code = webhook, message, code


@dataclass
class Owner:
    paths: frozenset[FieldPath]
    time: str


@dataclass
class Stored:
    obj: Obj
    owners: dict[OwnerKey, Owner] = field(default_factory=dict)


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str
    kind: Kind
    namespace: str
    obj: Obj
    prev: Obj | None


@dataclass
class WriteResult:
    obj: Obj
    code: int
    warnings: list[str]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_body(raw: bytes, yaml_ok: bool = False) -> Any:
    try:
        if yaml_ok:
            return yaml.safe_load(raw.decode("utf-8")) if raw.strip() else None
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        kind = "yaml" if yaml_ok else "json"
        raise ApiError.bad_request(f"error decoding {kind} body: {e}") from None


class Store:
    """All objects of all kinds, the resourceVersion counter and the watch history."""

    def __init__(self, kinds: Iterable[Kind], namespaces: Iterable[str] | None = None) -> None:
        self.kinds = list(kinds)
        self.namespaces = set(namespaces) if namespaces is not None else None
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 1
        self.history: list[WatchEvent] = []
        self.history_floor = 0
        self._objects: dict[tuple[str, str, str], Stored] = {}
        self.admission: list[Admission] = []  # mutating/validating admission hooks, run on create/update

    # ---- reads -------------------------------------------------------------------------------------

    def _stored(self, kind: Kind, namespace: str, name: str) -> Stored:
        stored = self._objects.get((kind.resource, namespace, name))
        if stored is None:
            raise ApiError.not_found(kind.plural, kind.group, name)
        return stored

    def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        with self.lock:
            return copy.deepcopy(self._stored(kind, namespace, name).obj)

    def find(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        with self.lock:
            stored = self._objects.get((kind.resource, namespace, name))
            return copy.deepcopy(stored.obj) if stored else None

    def matcher(self, kind: Kind, labels: str | None, fields: str | None) -> Callable[[Obj], bool]:
        by_label = label_selector(labels)
        by_field = field_selector(fields, kind.field_selectors)
        return lambda obj: by_label(obj) and by_field(obj)

    def items(self, kind: Kind, namespace: str | None) -> list[Obj]:
        with self.lock:
            keys = sorted(k for k in self._objects if k[0] == kind.resource and namespace in (None, k[1]))
            return [copy.deepcopy(self._objects[k].obj) for k in keys]

    def list_objects(
        self,
        kind: Kind,
        namespace: str | None,
        labels: str | None = None,
        fields: str | None = None,
        limit: int = 0,
        cont: str | None = None,
    ) -> Obj:
        matches = self.matcher(kind, labels, fields)
        with self.lock:
            rv = self.rv
            items = [o for o in self.items(kind, namespace) if matches(o)]
        if cont:
            try:
                after = json.loads(base64.urlsafe_b64decode(cont.encode()))
            except ValueError:
                raise ApiError.bad_request("continue key is not valid") from None
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > after]
        meta: Obj = {"resourceVersion": str(rv)}
        if limit and len(items) > limit:
            last = items[limit - 1]["metadata"]
            key = json.dumps([last.get("namespace", ""), last["name"]]).encode()
            meta["continue"] = base64.urlsafe_b64encode(key).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        if not kind.group:  # items of built-in lists carry no kind/apiVersion
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        return {"kind": kind.list_kind, "apiVersion": kind.api_version, "metadata": meta, "items": items}

    # ---- shared write machinery --------------------------------------------------------------------

    def _check_namespace(self, namespace: str) -> None:
        if self.namespaces is not None and namespace not in self.namespaces:
            raise ApiError(
                404, f'namespaces "{namespace}" not found', "NotFound", {"name": namespace, "kind": "namespaces"}
            )

    def _conflict(self, kind: Kind, name: str, why: str) -> ApiError:
        details = {"name": name, "group": kind.group, "kind": kind.plural}
        return ApiError(409, f'Operation cannot be fulfilled on {kind.resource} "{name}": {why}', "Conflict", details)

    def _invalid(self, kind: Kind, name: str, errors: list[FieldError], group: str | None = None) -> ApiError:
        messages = [e.message for e in errors]
        text = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
        causes = [{"reason": e.reason, "message": e.detail, "field": e.field} for e in errors]
        details: Obj = {"name": name, "group": kind.group if group is None else group, "kind": kind.kind}
        details["causes"] = causes
        return ApiError(422, f'{kind.group_kind} "{name}" is invalid: {text}', "Invalid", details)

    def _prepare(self, kind: Kind, obj: Obj, validation: str | None) -> list[str]:
        """Prune unknown fields (returning them as warnings) and fill in defaults, in place."""
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        unknown = [f"metadata.{k}" for k in meta if k not in OBJECT_META_KEYS]
        for key in list(meta):
            if key not in OBJECT_META_KEYS:
                del meta[key]
        if kind.schema is not None:
            unknown += kind.schema.prune(obj)
            kind.schema.default(obj)
            if not kind.group:  # a built-in type: a wrong type is a decoding error (400), not Invalid (422)
                decode_errors = kind.schema.validate(obj)
                if decode_errors:
                    raise ApiError.bad_request(
                        f'{kind.kind} in version "{kind.version}" cannot be handled as a {kind.kind}: '
                        + "; ".join(e.message for e in decode_errors)
                    )
        if kind.normalize is not None:
            kind.normalize(obj)
        if unknown and validation == "Strict":
            raise ApiError.bad_request("strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown))
        if validation == "Ignore":
            return []
        return [f'unknown field "{u}"' for u in unknown]

    def _meta_errors(self, obj: Obj) -> list[FieldError]:
        meta = obj["metadata"]
        errors: list[FieldError] = []
        name = meta.get("name")
        if not name:
            errors.append(
                FieldError("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")
            )
        elif not isinstance(name, str):
            errors.append(
                FieldError("metadata.name", "FieldValueInvalid", f"Invalid value: {go_repr(name)}: must be a string")
            )
        else:
            field_name = (
                "metadata.generateName"
                if meta.get("generateName") and name.startswith(meta["generateName"])
                else "metadata.name"
            )
            for e in dns1123_subdomain_errors(name):
                errors.append(FieldError(field_name, "FieldValueInvalid", f"Invalid value: {go_repr(name)}: {e}"))
        for section in ("labels", "annotations"):
            values = meta.get(section)
            if values is None:
                continue
            if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
                raise ApiError.bad_request(
                    f"json: cannot unmarshal metadata.{section}: must be a map of string keys to string values"
                )
            for key, value in values.items():
                for e in qualified_name_errors(key):
                    errors.append(
                        FieldError(f"metadata.{section}", "FieldValueInvalid", f"Invalid value: {go_repr(key)}: {e}")
                    )
                if section == "labels":
                    for e in label_value_errors(value):
                        errors.append(
                            FieldError("metadata.labels", "FieldValueInvalid", f"Invalid value: {go_repr(value)}: {e}")
                        )
        annotations = meta.get("annotations") or {}
        size = sum(len(k) + len(v) for k, v in annotations.items())
        if size > 256 * 1024:
            errors.append(
                FieldError("metadata.annotations", "FieldValueTooLong", "Too long: must have at most 262144 bytes")
            )
        for i, fin in enumerate(meta.get("finalizers") or []):
            for e in qualified_name_errors(str(fin)):
                errors.append(
                    FieldError(f"metadata.finalizers[{i}]", "FieldValueInvalid", f"Invalid value: {go_repr(fin)}: {e}")
                )
        return errors

    def _validate(self, kind: Kind, obj: Obj) -> None:
        errors = self._meta_errors(obj)
        if kind.schema is not None and kind.group:
            errors += kind.schema.validate(obj)
        if kind.validate_extra is not None:
            errors += kind.validate_extra(obj)
        if errors:
            raise self._invalid(kind, str(obj["metadata"].get("name", "")), errors)

    def _ownable(self, kind: Kind, obj: Obj) -> Obj:
        view = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        meta = {
            k: obj.get("metadata", {}).get(k) for k in OWNED_META_KEYS if obj.get("metadata", {}).get(k) is not None
        }
        if meta:
            view["metadata"] = meta
        return view

    def _in_section(self, kind: Kind, path: FieldPath, sub: str) -> bool:
        is_status = kind.status_subresource and path[:1] == ("status",)
        return is_status if sub == "status" else not is_status

    def _section(self, kind: Kind, view: Obj, sub: str) -> Obj:
        if sub == "status":
            return {"status": view["status"]} if "status" in view else {}
        if kind.status_subresource:
            return {k: v for k, v in view.items() if k != "status"}
        return view

    def _finish(
        self, kind: Kind, old: Obj | None, candidate: Obj, sub: str, validation: str | None
    ) -> tuple[Obj, list[str]]:
        """The object a write would store: subresource rules applied, server metadata kept, defaults set."""
        new = copy.deepcopy(candidate)
        if sub == "status":
            assert old is not None
            new = copy.deepcopy(old)
            if "status" in candidate:
                new["status"] = copy.deepcopy(candidate["status"])
            else:
                new.pop("status", None)
        elif kind.status_subresource:
            if old is not None and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        for key in ("managedFields", "resourceVersion", "generation", "selfLink"):
            meta.pop(key, None)
        if old is not None:
            for key in (*SERVER_META_KEYS, "name", "namespace", "generateName"):
                if key in old["metadata"]:
                    meta[key] = old["metadata"][key]
                else:
                    meta.pop(key, None)
        warnings = self._prepare(kind, new, validation)
        return new, warnings

    def _comparable(self, obj: Obj) -> Obj:
        meta = {k: v for k, v in obj["metadata"].items() if k not in ("managedFields", "resourceVersion", "generation")}
        return {**obj, "metadata": meta}

    def _spec_part(self, kind: Kind, obj: Obj) -> Obj:
        skip = (
            ("apiVersion", "kind", "metadata", "status")
            if kind.status_subresource
            else ("apiVersion", "kind", "metadata")
        )
        return {k: v for k, v in obj.items() if k not in skip}

    def _record(self, type_: str, kind: Kind, obj: Obj, prev: Obj | None) -> None:
        namespace = obj["metadata"].get("namespace", "")
        self.history.append(WatchEvent(self.rv, type_, kind, namespace, copy.deepcopy(obj), prev))
        self.changed.notify_all()

    def _commit(
        self,
        kind: Kind,
        old: Stored | None,
        new: Obj,
        owners: dict[OwnerKey, frozenset[FieldPath]],
        code: int,
        warnings: list[str],
        dry_run: bool,
        operation: str | None = None,
    ) -> WriteResult:
        if operation is not None:
            self._admit(kind, operation, new, old.obj if old else None)
        self._validate(kind, new)
        owned = self._ownable(kind, new)
        owners = {k: frozenset(p for p in v if get_path(owned, p) is not MISSING) for k, v in owners.items()}
        owners = {k: v for k, v in owners.items() if v}
        if old is not None:
            same_owners = {k: o.paths for k, o in old.owners.items()} == owners
            if same_owners and self._comparable(old.obj) == self._comparable(new):
                return WriteResult(copy.deepcopy(old.obj), 200, warnings)
        meta = new["metadata"]
        stamp = now()
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = stamp
            if kind.generation:
                meta["generation"] = 1
        elif kind.generation:
            bump = self._spec_part(kind, old.obj) != self._spec_part(kind, new)
            meta["generation"] = old.obj["metadata"].get("generation", 1) + (1 if bump else 0)
        times = {
            k: (old.owners[k].time if old is not None and k in old.owners and old.owners[k].paths == v else stamp)
            for k, v in owners.items()
        }
        entries = []
        for (manager, operation, sub), paths in owners.items():
            entry = {
                "manager": manager,
                "operation": operation,
                "apiVersion": kind.api_version,
                "time": times[(manager, operation, sub)],
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(paths),
            }
            if sub:
                entry["subresource"] = sub
            entries.append(entry)
        if entries:
            meta["managedFields"] = entries
        if dry_run:
            if old is not None:
                meta["resourceVersion"] = old.obj["metadata"]["resourceVersion"]
            return WriteResult(new, code, warnings)
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        key = (kind.resource, meta.get("namespace", ""), meta["name"])
        self._objects[key] = Stored(new, {k: Owner(v, times[k]) for k, v in owners.items()})
        self._record("ADDED" if old is None else "MODIFIED", kind, new, old.obj if old else None)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(kind, key)
        return WriteResult(copy.deepcopy(new), code, warnings)

    def _admit(self, kind: Kind, operation: str, new: Obj, old: Obj | None) -> None:
        """Admission hooks may change `new` in place (mutating webhooks) or raise AdmissionDenied."""
        for hook in self.admission:
            try:
                hook(kind, operation, new, copy.deepcopy(old) if old else None)
            except AdmissionDenied as e:
                message = f'admission webhook "{e.webhook}" denied the request: {e.message}'
                raise ApiError(e.code, message) from None

    def _remove(self, kind: Kind, key: tuple[str, str, str]) -> Obj:
        stored = self._objects.pop(key)
        self.rv += 1
        gone = copy.deepcopy(stored.obj)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record("DELETED", kind, gone, stored.obj)
        return gone

    def _update_owners(
        self, kind: Kind, old: Stored | None, new: Obj, manager: str, sub: str
    ) -> dict[OwnerKey, frozenset[FieldPath]]:
        """An Update-operation write: the writer takes every field it changed, from everybody."""
        old_view = self._ownable(kind, old.obj) if old else {}
        new_view = self._ownable(kind, new)
        changed = {
            p for p in leaf_paths(new_view, self._own_schema(kind))
            if self._in_section(kind, p, sub) and get_path(old_view, p) != get_path(new_view, p)
        }  # fmt: skip
        owners: dict[OwnerKey, frozenset[FieldPath]] = {}
        for key, owner in (old.owners if old else {}).items():
            owners[key] = frozenset(q for q in owner.paths if not any(overlap(q, p) for p in changed))
        me = (manager, "Update", sub)
        owners[me] = owners.get(me, frozenset()) | changed
        return owners

    # ---- verbs -------------------------------------------------------------------------------------

    def create(
        self, kind: Kind, namespace: str, body: Any, manager: str, dry_run: bool = False, validation: str | None = None
    ) -> WriteResult:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        self._check_kind(kind, body)
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        if kind.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        candidate = copy.deepcopy(body)
        candidate["metadata"] = dict(meta, namespace=namespace) if kind.namespaced else dict(meta)
        with self.lock:
            self._check_namespace(namespace)
            if not candidate["metadata"].get("name") and isinstance(candidate["metadata"].get("generateName"), str):
                base = candidate["metadata"]["generateName"][:58]
                candidate["metadata"]["name"] = base + "".join(random.choices(_NAME_CHARS, k=5))
            new, warnings = self._finish(kind, None, candidate, "", validation)
            name = str(new["metadata"].get("name") or "")
            if name and (kind.resource, namespace, name) in self._objects:
                details = {"name": name, "group": kind.group, "kind": kind.plural}
                raise ApiError(409, f'{kind.resource} "{name}" already exists', "AlreadyExists", details)
            owners = self._update_owners(kind, None, new, manager, "")
            return self._commit(kind, None, new, owners, 201, warnings, dry_run, "CREATE")

    def _check_kind(self, kind: Kind, body: Obj) -> None:
        if not kind.group:  # built-in kinds take their type from the URL when the body omits it
            body.setdefault("apiVersion", kind.api_version)
            body.setdefault("kind", kind.kind)
        api_version, kind_name = body.get("apiVersion"), body.get("kind")
        if not kind_name:
            raise ApiError.bad_request(f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
        if api_version != kind.api_version or kind_name != kind.kind:
            raise ApiError.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({kind.api_version}), or the kind ({kind_name}) is not {kind.kind}"
            )

    def _check_name(self, body: Obj, name: str, required: bool = True) -> None:
        given = (body.get("metadata") or {}).get("name")
        if given != name and (required or given not in (None, "")):
            raise ApiError.bad_request(f"the name of the object ({given}) does not match the name on the URL ({name})")

    def _check_rv(self, kind: Kind, stored: Stored, body: Obj) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and str(wanted) != stored.obj["metadata"]["resourceVersion"]:
            why = "the object has been modified; please apply your changes to the latest version and try again"
            raise self._conflict(kind, stored.obj["metadata"]["name"], why)

    def replace(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        body: Any,
        manager: str,
        sub: str = "",
        dry_run: bool = False,
        validation: str | None = None,
    ) -> WriteResult:
        if not isinstance(body, dict):
            raise ApiError.bad_request("the body of the request must be a JSON object")
        self._check_kind(kind, body)
        self._check_name(body, name)
        if (body.get("metadata") or {}).get("namespace") not in (None, "", namespace):
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        with self.lock:
            old = self._stored(kind, namespace, name)
            self._check_rv(kind, old, body)
            new, warnings = self._finish(kind, old.obj, body, sub, validation)
            owners = self._update_owners(kind, old, new, manager, sub)
            return self._commit(kind, old, new, owners, 200, warnings, dry_run, None if sub else "UPDATE")

    def patch(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        content_type: str,
        raw: bytes,
        manager: str | None,
        sub: str = "",
        force: bool = False,
        dry_run: bool = False,
        validation: str | None = None,
    ) -> WriteResult:
        if content_type == APPLY_PATCH:
            if not manager:
                cause = {
                    "reason": "FieldValueRequired",
                    "message": "Required value: is required for apply patch",
                    "field": "fieldManager",
                }
                details = {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [cause]}
                message = (
                    'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch'
                )
                raise ApiError(422, message, "Invalid", details)
            return self.apply(
                kind, namespace, name, parse_body(raw, yaml_ok=True), manager, sub, force, dry_run, validation
            )
        # Built-in kinds also take strategic merge patches (approximated here by a merge patch);
        # custom resources do not, and the real server answers 415.
        builtin_strategic = content_type == STRATEGIC_PATCH and not kind.group
        if content_type not in (MERGE_PATCH, JSON_PATCH) and not builtin_strategic:
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                "UnsupportedMediaType",
            )
        body = parse_body(raw)
        with self.lock:
            old = self._stored(kind, namespace, name)
            current = copy.deepcopy(old.obj)
            if content_type == JSON_PATCH:
                try:
                    candidate = patches.json_patch(current, body)
                except ValueError as e:
                    raise ApiError.bad_request(str(e)) from None
                except patches.PatchError as e:
                    raise ApiError(
                        422, str(e), "Invalid", {"causes": [{"reason": "FieldValueInvalid", "message": str(e)}]}
                    ) from None
            else:  # merge patch (and strategic merge patch on built-in kinds, approximated by merge patch)
                if isinstance(body, dict):
                    self._check_rv(kind, old, body)
                candidate = patches.merge_patch(current, body)
            if not isinstance(candidate, dict) or not isinstance(candidate.get("metadata"), dict):
                raise ApiError.bad_request("the patched object must be a JSON object with metadata")
            self._check_name(candidate, name)
            if candidate["metadata"].get("namespace", "") != old.obj["metadata"].get("namespace", ""):
                raise ApiError.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            if content_type == JSON_PATCH:
                self._check_rv(kind, old, candidate)
            new, warnings = self._finish(kind, old.obj, candidate, sub, validation)
            owners = self._update_owners(kind, old, new, manager or "unknown", sub)
            return self._commit(kind, old, new, owners, 200, warnings, dry_run, None if sub else "UPDATE")

    def apply(
        self,
        kind: Kind,
        namespace: str,
        name: str,
        config: Any,
        manager: str,
        sub: str = "",
        force: bool = False,
        dry_run: bool = False,
        validation: str | None = None,
    ) -> WriteResult:
        """Server-side apply: merge the manager's config, drop what it stopped applying, report conflicts."""
        if not isinstance(config, dict):
            raise ApiError.bad_request("apply patch must be an object (YAML or JSON mapping)")
        self._check_kind(kind, config)
        self._check_name(config, name, required=False)
        config = drop_nulls(copy.deepcopy(config))
        meta = config.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError.bad_request("metadata must be an object")
        if "managedFields" in meta:
            raise ApiError.bad_request("metadata.managedFields must be nil")
        if kind.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise ApiError.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        warnings = self._prepare(kind, config, validation)
        view = self._section(kind, self._ownable(kind, config), sub)
        schema = self._own_schema(kind)
        mine = frozenset(leaf_paths(view, schema))
        me: OwnerKey = (manager, "Apply", sub)
        with self.lock:
            old = self._objects.get((kind.resource, namespace, name))
            if old is None:
                if sub == "status":
                    raise ApiError.not_found(kind.plural, kind.group, name)
                self._check_namespace(namespace)
                candidate = {**view, "metadata": {**view.get("metadata", {}), "name": name}}
                if kind.namespaced:
                    candidate["metadata"]["namespace"] = namespace
                new, more = self._finish(kind, None, candidate, "", validation)
                return self._commit(kind, None, new, {me: mine}, 201, warnings + more, dry_run, "CREATE")
            self._check_rv(kind, old, config)
            merged = deep_merge(old.obj, view, schema)
            compare = copy.deepcopy(merged)
            if kind.schema is not None:
                kind.schema.default(compare)
            old_view, merged_view = self._ownable(kind, old.obj), self._ownable(kind, compare)
            owners = {k: set(o.paths) for k, o in old.owners.items()}
            conflicts: list[tuple[OwnerKey, FieldPath, FieldPath]] = []
            for key, paths in owners.items():
                if key == me:
                    continue
                for q in paths:
                    for p in mine:
                        if overlap(p, q):
                            shorter = p if len(p) <= len(q) else q
                            if get_path(old_view, shorter) != get_path(merged_view, shorter):
                                conflicts.append((key, q, p))
            if conflicts and not force:
                raise self._apply_conflict(kind, name, conflicts)
            for key, q, _p in conflicts:
                owners[key].discard(q)
            self._drop_stale(merged, owners, me, mine)
            owners[me] = set(mine)
            new, more = self._finish(kind, old.obj, merged, sub, validation)
            final = {k: frozenset(v) for k, v in owners.items()}
            return self._commit(kind, old, new, final, 200, warnings + more, dry_run, None if sub else "UPDATE")

    @staticmethod
    def _drop_stale(
        merged: Obj, owners: dict[OwnerKey, set[FieldPath]], me: OwnerKey, mine: frozenset[FieldPath]
    ) -> None:
        """Remove what `me` applied before and omits now, unless another manager owns it too."""
        others = [q for key, paths in owners.items() if key != me for q in paths]
        stale = [s for s in owners.get(me, set()) - mine if not any(overlap(s, q) for q in others)]
        items: set[FieldPath] = set()  # whole list items nobody else touches and this config no longer names
        for path in stale:
            for i, element in enumerate(path):
                prefix = path[: i + 1]
                if isinstance(element, tuple) and not any(overlap(prefix, q) for q in [*others, *mine]):
                    items.add(prefix)
                    break
        for prefix in sorted(items, key=len):
            delete_path(merged, prefix)
        for path in stale:
            if not any(path[: len(item)] == item for item in items) and not is_key_field(path):
                delete_path(merged, path)

    def _own_schema(self, kind: Kind) -> Schema:
        """The schema ownership is tracked against: the kind's own, with ObjectMeta's list and map types."""
        props = dict(kind.schema.root.get("properties") or {}) if kind.schema is not None else {}
        return {"type": "object", "properties": {**props, "metadata": META_SCHEMA}}

    def _apply_conflict(
        self, kind: Kind, name: str, conflicts: list[tuple[OwnerKey, FieldPath, FieldPath]]
    ) -> ApiError:
        causes = []
        for (manager, _op, _sub), _q, p in conflicts:
            cause = {
                "reason": "FieldManagerConflict",
                "message": f'conflict with "{manager}" using {kind.api_version}',
                "field": render(p),
            }
            if cause not in causes:
                causes.append(cause)
        if len(causes) == 1:
            text = f"Apply failed with 1 conflict: {causes[0]['message']}: {causes[0]['field']}"
        else:
            text = f"Apply failed with {len(causes)} conflicts: " + "\n".join(
                f"{c['message']}: {c['field']}" for c in causes
            )
        details = {"name": name, "group": kind.group, "kind": kind.plural, "causes": causes}
        return ApiError(409, text, "Conflict", details)

    def delete(self, kind: Kind, namespace: str, name: str, options: Any = None, dry_run: bool = False) -> WriteResult:
        with self.lock:
            old = self._stored(kind, namespace, name)
            pre = (options or {}).get("preconditions") or {} if isinstance(options, dict) else {}
            meta = old.obj["metadata"]
            for field_name, actual in (("uid", meta.get("uid")), ("resourceVersion", meta.get("resourceVersion"))):
                if pre.get(field_name) and pre[field_name] != actual:
                    label = "UID" if field_name == "uid" else "ResourceVersion"
                    why = (
                        f"Precondition failed: {label} in precondition: {pre[field_name]}, "
                        f"{label} in object meta: {actual}"
                    )
                    raise self._conflict(kind, name, why)
            if dry_run:
                return WriteResult(copy.deepcopy(old.obj), 200, [])
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return WriteResult(copy.deepcopy(old.obj), 200, [])
                new = copy.deepcopy(old.obj)
                new["metadata"]["deletionTimestamp"] = now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                owners = {k: o.paths for k, o in old.owners.items()}
                return self._commit(kind, old, new, owners, 200, [], False)
            gone = self._remove(kind, (kind.resource, namespace, name))
            if kind.returns_deleted_object:
                return WriteResult(gone, 200, [])
            details = {"name": name, "group": kind.group, "kind": kind.plural, "uid": gone["metadata"]["uid"]}
            success = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
            return WriteResult(success, 200, [])

    # ---- watch -------------------------------------------------------------------------------------

    def events_after(self, rv: int) -> list[WatchEvent]:
        """Watch events newer than `rv`; raises ApiError 410 if that history was compacted away."""
        with self.lock:
            if rv < self.history_floor:
                raise ApiError(410, f"too old resource version: {rv} ({self.history_floor})", "Expired")
            return [e for e in self.history if e.rv > rv]

    def compact(self) -> None:
        """Forget the watch history, as etcd compaction does: older resourceVersions now answer 410."""
        with self.lock:
            self.history.clear()
            self.history_floor = self.rv
