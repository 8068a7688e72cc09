"""Playing Knative Serving on the real control plane, as KServe's own controller tests do.

KServe turns each InferenceService into a Knative Service `<isvc>-predictor`; with no Knative controllers
running, nothing would ever report on it. `Knative.play()` writes that Service's status the way Knative's
controller would: a new revision whenever `spec.template` changed since the last one, its readiness
(ready, rolling, failed), the URL, and the traffic split resolved from the `spec.traffic` that KServe wrote
(so canary percentages and `prev`/`latest` tags come from KServe's own logic). It then waits until the real
KServe controller has carried the news into the InferenceService's status, which is what the adapter reads.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "serving.knative.dev", "v1"
DOMAIN = "example.com"


@dataclass
class _Service:
    revisions: list[tuple[str, str]] = field(default_factory=list)  # (name, template hash), oldest first
    ready: str = ""  # the latest ready revision


class Knative:
    """The Knative Serving status writer for one control plane (admin client)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.objects = client.CustomObjectsApi(api)
        self._services: dict[tuple[str, str], _Service] = {}

    def service(self, namespace: str, isvc: str, timeout: float = 20) -> dict[str, Any]:
        """The Knative Service KServe created for `isvc` (waits for KServe to create or update it)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return dict(
                    self.objects.get_namespaced_custom_object(
                        GROUP, VERSION, namespace, "services", f"{isvc}-predictor"
                    )
                )
            except ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def play(self, namespace: str, isvc: str, state: str = "ready", message: str = "", url: str = "") -> str:
        """Report the Knative Service of `isvc` as `ready`, `rolling` or `failed` (with `message`); `url` replaces
        the route's `http://<ksvc>.<ns>.example.com` (a predictor process the test started, say).

        Returns the name of the revision the current template runs as."""
        ksvc = self._current(namespace, isvc)
        name = ksvc["metadata"]["name"]
        svc = self._services.setdefault((namespace, name), _Service())
        digest = hashlib.sha256(json.dumps(ksvc["spec"].get("template"), sort_keys=True).encode()).hexdigest()
        if not svc.revisions or svc.revisions[-1][1] != digest:
            svc.revisions.append((f"{name}-{len(svc.revisions) + 1:05d}", digest))
        latest = svc.revisions[-1][0]
        if state == "ready":
            svc.ready = latest
        conditions = _conditions(state, latest, message)
        status: dict[str, Any] = {
            "observedGeneration": ksvc["metadata"]["generation"],
            "latestCreatedRevisionName": latest,
            "conditions": conditions,
        }
        if svc.ready:
            host = f"{name}.{namespace}.{DOMAIN}"
            status.update(
                latestReadyRevisionName=svc.ready,
                url=url or f"http://{host}",
                address={"url": f"http://{name}.{namespace}.svc.cluster.local"},
                traffic=_traffic(ksvc["spec"].get("traffic") or [], svc.ready, host),
            )
        self.objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "services", name, {"status": status}
        )
        self._await_kserve(namespace, isvc, latest, state)
        return latest

    def _current(self, namespace: str, isvc: str, timeout: float = 20) -> dict[str, Any]:
        """The Knative Service once KServe has written the InferenceService's current spec into it."""
        deadline = time.monotonic() + timeout
        settle = time.monotonic() + 5  # a canary change KServe has not written yet (below): waited for this long
        while True:
            obj = self.objects.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", isvc
            )
            ksvc = self.service(namespace, isvc, timeout)
            version = (obj["metadata"].get("annotations") or {}).get("mlflow.org/model-version")
            template = ((ksvc["spec"].get("template") or {}).get("metadata") or {}).get("annotations") or {}
            if version is None or template.get("mlflow.org/model-version") == version:
                if _traffic_as_asked(obj, ksvc) or time.monotonic() > settle:
                    return ksvc
            elif time.monotonic() > deadline:
                raise TimeoutError(f"KServe did not update {ksvc['metadata']['name']} to version {version}")
            time.sleep(0.1)

    def _await_kserve(self, namespace: str, isvc: str, revision: str, state: str, timeout: float = 20) -> None:
        want = {"ready": "True", "rolling": "Unknown", "failed": "False"}[state]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.objects.get_namespaced_custom_object(
                "serving.kserve.io", "v1beta1", namespace, "inferenceservices", isvc
            )
            status = obj.get("status") or {}
            pred = (status.get("components") or {}).get("predictor") or {}
            conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            if pred.get("latestCreatedRevision") == revision and conds.get("PredictorReady") == want:
                return
            time.sleep(0.1)
        raise TimeoutError(f"KServe did not report {state} {revision} on {namespace}/{isvc} in {timeout}s")


def _traffic_as_asked(isvc: dict[str, Any], ksvc: dict[str, Any]) -> bool:
    """Whether KServe has written the InferenceService's canary split into the Knative Service: a promotion or a
    rollback changes only the traffic, no revision, so the template alone cannot tell (status played from the
    old split would be read as the old rollout)."""
    canary = ((isvc.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    traffic = ksvc["spec"].get("traffic") or []
    latest = next((t.get("percent") for t in traffic if t.get("latestRevision")), None)
    return latest == canary if canary is not None else latest in (None, 100)


def _conditions(state: str, revision: str, message: str) -> list[dict[str, Any]]:
    if state == "ready":
        return [{"type": t, "status": "True"} for t in ("Ready", "ConfigurationsReady", "RoutesReady")]
    if state == "rolling":
        return [
            {"type": "Ready", "status": "Unknown", "reason": "RevisionMissing"},
            {"type": "ConfigurationsReady", "status": "Unknown", "reason": "RevisionMissing"},
            {"type": "RoutesReady", "status": "True"},
        ]
    text = f'Revision "{revision}" failed with message: {message}.'
    return [
        {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": text},
        {"type": "ConfigurationsReady", "status": "False", "reason": "RevisionFailed", "message": text},
        {"type": "RoutesReady", "status": "True"},
    ]


def _traffic(spec: list[dict[str, Any]], ready: str, host: str) -> list[dict[str, Any]]:
    """Knative's status.traffic: the spec's targets, `latestRevision` resolved to the latest ready revision."""
    out = []
    for target in spec or [{"latestRevision": True, "percent": 100}]:
        entry: dict[str, Any] = {
            "revisionName": ready if target.get("latestRevision") else target.get("revisionName"),
            "percent": target.get("percent", 0),
            "latestRevision": bool(target.get("latestRevision")),
        }
        if target.get("tag"):
            entry["tag"] = target["tag"]
            entry["url"] = f"http://{target['tag']}-{host}"
        out.append(entry)
    return out
