"""The kinds the stand-in serves: where each lives in the API and which registry rules apply to it.

`crd_kind` reads a CustomResourceDefinition (schema, status subresource, printer columns); `EVENTS` is
core/v1 Event with the types of its Go struct (wrong types are decoding errors, 400) and the legacy
event validation rules. Used by store.py (the registry) and server.py (routing, discovery).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.kubeapi.schema import FieldError, StructuralSchema, go_repr, load_crd

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """One served resource: where it lives in the API and which registry rules apply to it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    list_kind: str
    namespaced: bool = True
    status_subresource: bool = False
    schema: StructuralSchema | None = None
    short_names: tuple[str, ...] = ()
    generation: bool = True
    returns_deleted_object: bool = True  # CRs answer DELETE with the object, most built-ins with a Status
    field_selectors: tuple[str, ...] = ("metadata.name", "metadata.namespace")
    validate_extra: Callable[[Obj], list[FieldError]] | None = None
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), hash=False, compare=False)
    normalize: Callable[[Obj], None] | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def group_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind


def crd_kind(path: Path, version: str | None = None) -> Kind:
    crd = load_crd(path, version)
    return Kind(
        group=crd.group,
        version=crd.version,
        plural=crd.plural,
        singular=crd.singular,
        kind=crd.kind,
        list_kind=crd.list_kind,
        namespaced=crd.namespaced,
        status_subresource=crd.status_subresource,
        schema=crd.schema,
        short_names=crd.short_names,
        printer_columns=crd.printer_columns,
    )


def _validate_event(event: Obj) -> list[FieldError]:
    """The legacy core/v1 Event rules of kube-apiserver (ValidateEventCreate)."""
    errors = []
    namespace = event["metadata"].get("namespace", "")
    involved = event.get("involvedObject")
    if not isinstance(involved, dict):
        return [FieldError("involvedObject", "FieldValueRequired", "Required value")]
    involved_ns = involved.get("namespace", "") or ""
    if not event.get("eventTime"):
        ok = namespace in ("", "default") if not involved_ns else namespace == involved_ns
    else:
        ok = bool(involved_ns) or namespace in ("default", "kube-system")
        for required in ("reportingComponent", "reportingInstance", "action", "reason"):
            if not event.get(required):
                errors.append(FieldError(required, "FieldValueRequired", "Required value"))
    if not ok:
        detail = f"Invalid value: {go_repr(involved_ns)}: does not match event.namespace"
        errors.append(FieldError("involvedObject.namespace", "FieldValueInvalid", detail))
    return errors


_STR: Obj = {"type": "string"}
_TIME: Obj = {"type": "string", "format": "date-time"}
_REF: Obj = {
    "type": "object",
    "properties": {k: _STR for k in ("apiVersion", "fieldPath", "kind", "name", "namespace", "resourceVersion", "uid")},
}
EVENT_SCHEMA = StructuralSchema(
    {
        "type": "object",
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": {"type": "object"},
            "involvedObject": _REF,
            "related": _REF,
            **{k: _STR for k in ("reason", "message", "type", "action", "reportingComponent", "reportingInstance")},
            "count": {"type": "integer", "format": "int32"},
            "firstTimestamp": _TIME,
            "lastTimestamp": _TIME,
            "eventTime": _TIME,
            "source": {"type": "object", "properties": {"component": _STR, "host": _STR}},
            "series": {"type": "object", "properties": {"count": {"type": "integer"}, "lastObservedTime": _TIME}},
        },
    }
)


def _normalize_event_times(event: Obj) -> None:
    """metav1.Time is written back in UTC to the second, MicroTime (eventTime) to the microsecond."""
    for key, micro in (("firstTimestamp", False), ("lastTimestamp", False), ("eventTime", True)):
        if isinstance(event.get(key), str):
            when = datetime.fromisoformat(event[key].replace("Z", "+00:00")).astimezone(UTC)
            event[key] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


EVENTS = Kind(
    group="",
    version="v1",
    plural="events",
    singular="event",
    kind="Event",
    list_kind="EventList",
    short_names=("ev",),
    generation=False,
    returns_deleted_object=False,
    field_selectors=(
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    schema=EVENT_SCHEMA,
    validate_extra=_validate_event,
    normalize=_normalize_event_times,
)
