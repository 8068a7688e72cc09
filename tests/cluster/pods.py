"""Small helpers of the cluster tier: pods through the real kubectl, waited on, read back."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.controlplane.plane import ControlPlane


def pod(plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return dict(json.loads(plane.kubectl("get", "pod", name, "-n", namespace, "-o", "json").stdout))


def wait_pod(plane: ControlPlane, namespace: str, name: str, until: Any, timeout: float = 180) -> dict[str, Any]:
    """The pod once `until(pod)` holds; on timeout, an error with its status and events."""
    deadline = time.monotonic() + timeout
    while True:
        obj = pod(plane, namespace, name)
        if until(obj):
            return obj
        if time.monotonic() > deadline:
            events = plane.kubectl("get", "events", "-n", namespace, check=False).stdout
            raise TimeoutError(f"pod {namespace}/{name}: {json.dumps(obj.get('status'))[:3000]}\n{events[-3000:]}")
        time.sleep(0.5)


def ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def terminated(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The first container's last termination (current or previous), if any."""
    for status in (obj.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state", {}).get("terminated") or status.get("lastState", {}).get("terminated")
        if state:
            return dict(state)
    return None


def namespace(plane: ControlPlane, name: str, timeout: float = 60) -> str:
    """A new namespace, once kube-controller-manager has made its `default` ServiceAccount (pods need it)."""
    plane.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    deadline = time.monotonic() + timeout
    while plane.kubectl("get", "serviceaccount", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no default ServiceAccount in {name} after {timeout}s")
        time.sleep(0.3)
    return name
