"""Reading a rollout's state out of an InferenceService's status (rules in shared/notes/kserve.md).

Pure. The revision that existed before this version was applied (`base_revision`, recorded in
MLflow before the apply) is what tells a fresh Ready from one left over by the previous revision.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from adapter.types import DEPLOYING, FAILED, READY, Rollout

_MAX_MESSAGE = 500


def _short(text: str) -> str:
    """One line of at most 500 characters, keeping the start and the end (where a crash says why)."""
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE else text[:150] + " … " + text[-(_MAX_MESSAGE - 153) :]


_REVISION = re.compile(r"[a-z0-9-]+-predictor-\d{5}")


def _about_other_revision(message: str, created: str) -> bool:
    """A condition whose message names a revision other than the newest is stale news."""
    named = set(_REVISION.findall(message or ""))
    return bool(named) and created not in named


def conditions(isvc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = isvc.get("status") or {}
    out: dict[str, dict[str, Any]] = {}
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and isinstance(c.get("type"), str):
            out[c["type"]] = c
    return out


def predictor_status(isvc: dict[str, Any]) -> dict[str, Any]:
    return ((isvc.get("status") or {}).get("components") or {}).get("predictor") or {}


def latest_created_revision(isvc: dict[str, Any] | None) -> str:
    return str(predictor_status(isvc).get("latestCreatedRevision") or "") if isvc else ""


def traffic(isvc: dict[str, Any]) -> list[tuple[str, int, bool, str]]:
    """The predictor's traffic split: (revision, percent, is latest, tag URL) per entry."""
    out = []
    for entry in predictor_status(isvc).get("traffic") or []:
        if not isinstance(entry, dict) or not entry.get("revisionName"):
            continue
        try:
            percent = int(entry.get("percent") or 0)
        except (TypeError, ValueError):
            continue
        out.append(
            (str(entry["revisionName"]), percent, entry.get("latestRevision") is True, str(entry.get("url") or ""))
        )
    return out


def interpret(
    isvc: dict[str, Any],
    *,
    base_revision: str,
    started_at: datetime | None,
    now: datetime,
    deadline_seconds: float,
    canary: int | None = None,
) -> Rollout:
    """`deploying`, `ready` or `failed`, with KServe's reason and the URL when known.

    With `canary` (a percent below 100) and a previous revision still in the split, the new revision
    is ready when it holds exactly that share; otherwise when it holds all traffic."""
    status = isvc.get("status") or {}
    url = str(status.get("url") or "")
    conds = conditions(isvc)
    pred = predictor_status(isvc)
    created = str(pred.get("latestCreatedRevision") or "")
    ready_rev = str(pred.get("latestReadyRevision") or "")
    ours_exists = bool(created) and created != base_revision

    if ours_exists:
        false = [
            c
            for t in ("PredictorConfigurationReady", "PredictorReady", "Ready")
            if (c := conds.get(t, {})) and c.get("status") == "False"
        ]
        # The first False condition decides (the revision's own, which carries the container's termination message
        # when it failed, before the route's "RevisionMissing"); if it speaks of an older revision, it is stale news.
        if false and not _about_other_revision(false[0].get("message", ""), created):
            reason = false[0].get("reason") or false[0].get("type")
            message = false[0].get("message") or "not ready"
            return Rollout(FAILED, _short(f"{reason}: {message}"), url, created)
        model_status = status.get("modelStatus") or {}
        if model_status.get("transitionStatus") == "BlockedByFailedLoad":
            info = model_status.get("lastFailureInfo") or {}
            detail = info.get("message") or info.get("reason") or "model failed to load"
            return Rollout(FAILED, _short(f"BlockedByFailedLoad: {detail}"), url, created)
        ready = conds.get("Ready", {}).get("status") == "True"
        split = traffic(isvc)
        latest = [p for rev, p, is_latest, _ in split if is_latest]
        has_previous = any(not is_latest for _, _, is_latest, _ in split)
        expected = canary if canary is not None and has_previous else 100
        if ready and ready_rev == created and (not latest or latest[0] == expected):
            return Rollout(READY, "", url, created)

    if started_at is not None and (now - started_at).total_seconds() > deadline_seconds:
        waiting = conds.get("PredictorReady") or conds.get("Ready") or {}
        detail = waiting.get("message") or waiting.get("reason") or "no new revision became ready"
        return Rollout(
            FAILED,
            _short(f"ProgressDeadlineExceeded: not ready after {deadline_seconds:.0f}s: {detail}"),
            url,
            created,
        )
    return Rollout(DEPLOYING, "", url, created if ours_exists else "")
