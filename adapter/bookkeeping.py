"""Rollout bookkeeping kept on the InferenceService it describes (as kopf keeps progress on its objects).

Three annotations, written in the same server-side apply as the spec they describe:
- `service-builder.io/fingerprint`: a hash of the desired manifest. Change detection compares it with the
  fingerprint of what would be applied now: nothing else about the observed object is diffed.
- `service-builder.io/base-revision`: the Knative revision that existed before this spec was applied, so a
  Ready left over from the previous revision never counts as this one's.
- `service-builder.io/rollout-started`: when this spec was first applied (the rollout deadline runs from it).

KServe copies every InferenceService annotation into the Knative revision template, so any change to these
annotations creates a revision. They change together, and only when the fingerprint does; the fingerprint
leaves out `canaryTrafficPercent`, the one field that moves traffic without making a revision (a promotion
or a rollback must not start new pods), and `changed()` compares that field by itself.

Pure: no client, no clock (callers pass `now`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapter.rollout import latest_created_revision

PREFIX = "service-builder.io/"
ANN_FINGERPRINT = PREFIX + "fingerprint"
ANN_BASE_REVISION = PREFIX + "base-revision"
ANN_STARTED = PREFIX + "rollout-started"
KEYS = (ANN_FINGERPRINT, ANN_BASE_REVISION, ANN_STARTED)
TRAFFIC_FIELD = "canaryTrafficPercent"


@dataclass(frozen=True)
class Bookkeeping:
    fingerprint: str
    base_revision: str
    started_at: datetime | None


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _traffic(obj: Mapping[str, Any] | None) -> Any:
    return (((obj or {}).get("spec") or {}).get("predictor") or {}).get(TRAFFIC_FIELD)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def fingerprint(manifest: Mapping[str, Any]) -> str:
    """Hash of the manifest without our own annotations and without the traffic field."""
    doc = copy.deepcopy(dict(manifest))
    ann = (doc.get("metadata") or {}).get("annotations") or {}
    for key in KEYS:
        ann.pop(key, None)
    (doc.get("spec") or {}).get("predictor", {}).pop(TRAFFIC_FIELD, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


def read(obj: Mapping[str, Any] | None) -> Bookkeeping | None:
    """The bookkeeping on an observed object; None when it has none (never applied by this adapter version)."""
    ann = _annotations(obj)
    if not ann.get(ANN_FINGERPRINT):
        return None
    return Bookkeeping(ann[ANN_FINGERPRINT], ann.get(ANN_BASE_REVISION, ""), parse_time(ann.get(ANN_STARTED)))


def changed(desired: Mapping[str, Any], observed: Mapping[str, Any] | None, field_manager: str = "") -> bool:
    """Whether `desired` must be applied over `observed` (which carries bookkeeping): another fingerprint, another
    traffic split, or a spec field we set that another field manager has since taken over (an edit by hand)."""
    kept = read(observed)
    if kept is None or kept.fingerprint != fingerprint(desired) or _traffic(desired) != _traffic(observed):
        return True
    return bool(field_manager) and edited_by_others(desired, observed, field_manager)


def _paths(node: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The leaf field paths of a managedFields `fieldsV1` tree (`f:name`, `k:{json}`, `v:json` steps)."""
    out: list[tuple[str, ...]] = []
    for key, sub in node.items():
        if key == ".":
            continue
        path = (*prefix, key)
        if isinstance(sub, Mapping) and any(k != "." for k in sub):
            out += _paths(sub, path)
        else:
            out.append(path)
    return out


def _sets(doc: Any, path: tuple[str, ...]) -> bool:
    """Whether `doc` (our manifest) sets the field at a managedFields path."""
    node = doc
    for step in path:
        kind, _, arg = step.partition(":")
        if kind == "f" and isinstance(node, Mapping) and arg in node:
            node = node[arg]
        elif kind == "k" and isinstance(node, list):
            keys = json.loads(arg)
            node = next(
                (i for i in node if isinstance(i, Mapping) and all(i.get(k) == v for k, v in keys.items())), None
            )
            if node is None:
                return False
        elif kind == "v" and isinstance(node, list):
            return json.loads(arg) in node
        else:
            return False
    return True


def edited_by_others(desired: Mapping[str, Any], observed: Mapping[str, Any] | None, field_manager: str) -> bool:
    """Whether another field manager (kubectl edit, a patch) now owns a spec field `desired` sets.

    Server-side apply records who owns each field (`metadata.managedFields`); an update by someone else takes
    the fields it changed, and our forced apply takes them back, after which this is false again: no apply loop.
    Status writers (KServe's controller) and fields we never set do not count."""
    for e in ((observed or {}).get("metadata") or {}).get("managedFields") or []:
        if not isinstance(e, Mapping) or e.get("subresource") or e.get("manager") == field_manager:
            continue
        spec = (e.get("fieldsV1") or {}).get("f:spec")
        if isinstance(spec, Mapping) and any(_sets(desired.get("spec"), p) for p in _paths(spec)):
            return True
    return False


def stamp(desired: dict[str, Any], observed: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """`desired` with its bookkeeping annotations: kept from `observed` while the fingerprint is the same, else
    a new rollout (the revision observed now is the base; it starts `now`)."""
    fp = fingerprint(desired)
    kept = read(observed)
    if kept is not None and kept.fingerprint == fp:
        base, started = kept.base_revision, kept.started_at or now
    else:
        base, started = latest_created_revision(dict(observed) if observed else None), now
    ann = desired.setdefault("metadata", {}).setdefault("annotations", {})
    ann[ANN_FINGERPRINT] = fp
    ann[ANN_BASE_REVISION] = base
    ann[ANN_STARTED] = started.astimezone(UTC).isoformat(timespec="seconds")
    return desired
