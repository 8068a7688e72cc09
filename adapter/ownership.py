"""Who owns an InferenceService, and the refusal to touch one owned by someone else (pure).

Two writers share a namespace: the registry-driven adapter (`app.kubernetes.io/managed-by=service-builder`,
planner.py) and the `mlflow deployments` plugin (`service-builder-plugin`, plugin.py). Each changes or
deletes only what carries its own value; `refusal()` is the one message both give for the rest, naming the
owner and how that owner changes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapter.types import ANN_MODEL_NAME, MANAGED_BY, MANAGED_BY_LABEL, PLUGIN_MANAGED_BY


def owner(obj: Mapping[str, Any]) -> str:
    """The object's `app.kubernetes.io/managed-by` label ("" when it has none)."""
    return str((((obj.get("metadata") or {}).get("labels")) or {}).get(MANAGED_BY_LABEL) or "")


def refusal(obj: Mapping[str, Any], me: str, namespace: str) -> str | None:
    """None when `me` (a managed-by value) owns `obj` (in `namespace`); else why it is left untouched, naming
    its owner."""
    who = owner(obj)
    if who == me:
        return None
    meta = obj.get("metadata") or {}
    name, ns = str(meta.get("name") or ""), namespace
    ref = f"InferenceService {ns}/{name}"
    if who == PLUGIN_MANAGED_BY:
        return (
            f"{ref} is managed by the mlflow deployments plugin"
            f" (`mlflow deployments delete -t kserve:/{ns} --name {name}` removes it); left untouched"
        )
    if who == MANAGED_BY:
        model = str((meta.get("annotations") or {}).get(ANN_MODEL_NAME) or "")
        return (
            f"{ref} is managed by the service-builder registry adapter (MLflow model {model!r}): change it with"
            " the registry's production marker (alias, version tag or stage), not with mlflow deployments"
        )
    if who:
        return f"{ref} exists and is managed by {who!r}; left untouched"
    return f"{ref} exists and is not managed by service-builder (no {MANAGED_BY_LABEL} label); left untouched"
