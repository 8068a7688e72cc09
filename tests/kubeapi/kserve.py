"""KServe's side of a cluster, for tests that play it: its admission webhook and realistic statuses.

`kserve_webhook` is an admission hook (`KubeApiServer(admission=[kserve_webhook])`) doing what KServe's
webhook does to what the API stores or accepts: it rejects names outside `[a-z]([-a-z0-9]*[a-z0-9])?`
(403, as controller-runtime denies) and rewrites the 0.15 deployment-mode names to the 0.16+ ones
(`Serverless` -> `Knative`, `RawDeployment` -> `Standard`), so a reconciler that diffs that annotation
against the cluster shows up as a loop. `isvc_status` builds the status KServe writes for a
predictor revision that is ready, rolling out or failed (shapes from /work/shared/notes/kserve.md).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from tests.kubeapi.kinds import Kind
from tests.kubeapi.store import AdmissionDenied

Obj = dict[str, Any]
WEBHOOK = "inferenceservice.kserve-webhook-server.validator"
NAME_FORMAT = "[a-z]([-a-z0-9]*[a-z0-9])?"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODE_RENAMES = {"Serverless": "Knative", "RawDeployment": "Standard"}


def kserve_webhook(kind: Kind, operation: str, obj: Obj, old: Obj | None) -> None:
    """KServe's InferenceService defaulter/validator, the parts visible through the API."""
    if kind.plural != "inferenceservices":
        return
    name = obj["metadata"].get("name", "")
    if not re.fullmatch(NAME_FORMAT, name):
        raise AdmissionDenied(
            WEBHOOK,
            f'the InferenceService "{name}" is invalid: a InferenceService name must consist of lower case '
            "alphanumeric characters or '-', and must start with alphabetical character. "
            f'(e.g. "my-name" or "abc-123", regex used for validation is \'{NAME_FORMAT}\')',
        )
    annotations = obj["metadata"].get("annotations") or {}
    if annotations.get(MODE_ANNOTATION) in MODE_RENAMES:
        annotations[MODE_ANNOTATION] = MODE_RENAMES[annotations[MODE_ANNOTATION]]


def _condition(type_: str, status: str, reason: str = "", message: str = "") -> Obj:
    condition: Obj = {
        "type": type_,
        "status": status,
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def isvc_status(
    name: str,
    namespace: str,
    revision: int = 1,
    state: str = "Ready",
    message: str = "",
    canary_percent: int | None = None,
    domain: str = "example.com",
) -> Obj:
    """The status of an InferenceService whose predictor revision `revision` is Ready/RollingOut/Failed.

    With Kourier (`disableIstioVirtualHost`) the URL is `http://<name>-predictor.<ns>.<domain>`. While
    rolling out or after a failure, the previous revision keeps serving; with `canary_percent`, the
    latest ready revision gets that share and the previous one (tag `prev`) the rest.
    """
    if state not in ("Ready", "RollingOut", "Failed"):
        raise ValueError(f"state must be Ready, RollingOut or Failed, not {state!r}")
    host = f"{name}-predictor.{namespace}"
    url = f"http://{host}.{domain}"
    latest = f"{name}-predictor-{revision:05d}"
    previous = f"{name}-predictor-{revision - 1:05d}" if revision > 1 else None
    ready_revision = latest if state == "Ready" else previous
    if state == "Ready" and canary_percent is not None and previous:
        traffic = [
            {"revisionName": latest, "percent": canary_percent, "latestRevision": True, "tag": "latest"},
            {"revisionName": previous, "percent": 100 - canary_percent, "latestRevision": False, "tag": "prev"},
        ]
    elif ready_revision:
        traffic = [{"revisionName": ready_revision, "percent": 100, "latestRevision": ready_revision == latest}]
    else:
        traffic = []
    if state == "Ready":
        predictor_ready = _condition("PredictorReady", "True")
    elif state == "RollingOut":
        predictor_ready = _condition(
            "PredictorReady",
            "Unknown",
            "RevisionMissing",
            f'Configuration "{name}-predictor" is waiting for a Revision to become ready.',
        )
    else:
        failure = f'Revision "{latest}" failed with message: {message or "Container failed with: ExitCode1"}.'
        predictor_ready = _condition("PredictorReady", "False", "RevisionFailed", failure)
    serving = ready_revision is not None
    overall = predictor_ready["status"] if state != "Ready" or serving else "Unknown"
    ready = {**predictor_ready, "type": "Ready", "status": overall}
    predictor: Obj = {
        "url": url,
        "address": {"url": f"http://{host}.svc.cluster.local"},
        "latestCreatedRevision": latest,
        "traffic": traffic,
    }
    if ready_revision:
        predictor["latestReadyRevision"] = ready_revision
        rolled_out = ready_revision if canary_percent is None else previous
        predictor["latestRolledoutRevision"] = rolled_out
        if previous and (canary_percent is not None or rolled_out == latest):
            predictor["previousRolledoutRevision"] = previous
    model_status: Obj = {
        "transitionStatus": {"Ready": "UpToDate", "RollingOut": "InProgress", "Failed": "BlockedByFailedLoad"}[state],
        "states": {
            "activeModelState": "Loaded" if serving else "Pending",
            "targetModelState": "Loaded" if state == "Ready" else "Pending",
        },
    }
    if state == "Failed":
        model_status["states"]["targetModelState"] = "FailedToLoad"
        model_status["lastFailureInfo"] = {"reason": "ModelLoadFailed", "message": message or "ExitCode1"}
    return {
        "url": url,
        "address": {"url": f"http://{host}.svc.cluster.local"},
        "observedGeneration": revision,
        "conditions": [
            _condition("IngressReady", "True" if serving else "Unknown"),
            _condition("PredictorConfigurationReady", predictor_ready["status"]),
            predictor_ready,
            _condition("PredictorRouteReady", "True" if serving else "Unknown"),
            ready,
        ],
        "components": {"predictor": predictor},
        "modelStatus": model_status,
    }
