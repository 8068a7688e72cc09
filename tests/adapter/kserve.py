"""The status KServe shows for the latest revision, for the unit tests' FakeCluster (tests/adapter/fakes.py); its
reading is checked against the real KServe controller in tests/adapter/test_cluster.py."""

from __future__ import annotations

import copy
from typing import Any


def status_for(
    name: str,
    namespace: str,
    generation: int,
    previous: dict[str, Any] | None,
    state: str,
    message: str = "",
    canary: int | None = None,
) -> dict[str, Any]:
    """`state`: ready (latest revision serves 100 %, or `canary` percent with the previous rolled-out
    revision taking the rest, tagged latest/prev as with tag routing), rolling (created, not ready),
    failed (RevisionFailed)."""
    status = copy.deepcopy(previous or {})
    rev = f"{name}-predictor-{generation:05d}"
    pred = status.setdefault("components", {}).setdefault("predictor", {})
    prev_ready = pred.get("latestReadyRevision", "")
    pred["latestCreatedRevision"] = rev
    if state == "ready":
        rolled_out = pred.get("latestRolledoutRevision") or ""
        pred["latestReadyRevision"] = rev
        host = f"{name}-predictor.{namespace}.example.com"
        if canary is not None and rolled_out and rolled_out != rev:
            pred["traffic"] = [
                {
                    "revisionName": rev,
                    "percent": canary,
                    "latestRevision": True,
                    "tag": "latest",
                    "url": f"http://latest-{host}",
                },
                {
                    "revisionName": rolled_out,
                    "percent": 100 - canary,
                    "latestRevision": False,
                    "tag": "prev",
                    "url": f"http://prev-{host}",
                },
            ]
        else:
            pred["traffic"] = [{"revisionName": rev, "percent": 100, "latestRevision": True}]
            pred["latestRolledoutRevision"] = rev
    ready = {"ready": "True", "failed": "False", "rolling": "Unknown"}[state]
    # While a new revision rolls out, the previous one keeps the service Ready.
    overall = "True" if state == "rolling" and prev_ready else ready
    status["url"] = f"http://{name}-predictor.{namespace}.example.com"
    status["conditions"] = [
        {"type": "Ready", "status": overall},
        {
            "type": "PredictorReady",
            "status": ready,
            "reason": "RevisionFailed" if state == "failed" else "",
            "message": message,
        },
    ]
    return status
