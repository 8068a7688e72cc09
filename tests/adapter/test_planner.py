"""The pure planner, table-tested: (registry snapshot, observed InferenceServices) -> effect and tags.

Observed statuses come from tests/adapter/kserve.py, whose reading is checked against the real KServe controller
(tests/adapter/test_cluster.py::test_the_unit_tests_fake_kserve_status_reads_as_real_kserves)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapter import bookkeeping, planner
from adapter.overrides import resolve
from adapter.render import render
from adapter.settings import AdapterSettings
from adapter.types import ModelInfo, Snapshot, VersionInfo
from tests.adapter.kserve import status_for

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = AdapterSettings(k8s_name_space="models", predictor_image="img:1", rollout_deadline_seconds=600)
URL = "http://m-predictor.models.example.com"
READY_V1 = {
    "deployment.status": "ready",
    "deployed": "true",
    "deployment.url": URL,
    "model_endpoint": f"{URL}/m/api/",
    "deployment.inferenceservice": "models/m",
    "deployment.revision": "m-predictor-00001",
    "deployment.updated_at": "2026-03-01T11:00:00+00:00",
    "deployment.inference_log": "metadata -> stdout",
}


def version(v: str, **tags: str) -> VersionInfo:
    return VersionInfo("m", v, run_id=f"r{v}", tags=tags)


def obj(v: str, state: str = "ready", *, generation: int = 1, previous: dict | None = None, **tags: str) -> dict:
    """An InferenceService as this adapter left it for version `v`, with KServe's status for `state`."""
    vi = version(v, **tags)
    doc = bookkeeping.stamp(render(S, vi, overrides=resolve(S, {}, vi.tags)), previous, NOW - timedelta(minutes=5))
    doc["metadata"]["generation"] = generation
    doc["status"] = status_for("m", "models", generation, (previous or {}).get("status"), state)
    return doc


@dataclass
class Case:
    id: str
    versions: list[VersionInfo]
    observed: dict[str, Any] | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    model_tags: dict[str, str] = field(default_factory=dict)
    terminal: str = ""
    missing: bool = False
    # expected
    effect: str = ""  # "", "apply", "delete"
    action: str = "unchanged"
    status: str | None = None
    writes: dict[str, dict[str, str | None]] = field(default_factory=dict)  # version ("" = model) -> changes


def world(c: Case) -> planner.World:
    snap = Snapshot()
    snap.models["m"] = ModelInfo("m", aliases=c.aliases, tags=c.model_tags)
    for v in c.versions:
        if v.tags.get("stage") == "production":
            snap.tagged.setdefault("m", []).append(v)
        if "deployment.status" in v.tags:
            snap.managed.setdefault("m", []).append(v)
    missing = frozenset({("m", c.aliases["production"])}) if c.missing else frozenset()
    observed = {"m": c.observed} if c.observed else {}
    files = {("m", v.version): None for v in c.versions}  # artifacts MLflow does not serve: PREDICTOR_IMAGE
    return planner.World(S, snap, observed, NOW, missing, {"m": c.terminal} if c.terminal else {}, files)


V1_READY = obj("1", stage="production")
V2_OVER_V1 = copy.deepcopy(V1_READY)

CASES = [
    Case(
        "first version: create, then deploying",
        [version("1", stage="production")],
        effect="apply",
        action="created",
        status="deploying",
        writes={
            "1": {"deployment.inferenceservice": "models/m", "deployed": "false", "deployment.status": "deploying"}
        },
    ),
    Case(
        "KServe reports ready: tags only, endpoint before status, then the model",
        [version("1", stage="production", **{"deployment.status": "deploying", "deployed": "false"})],
        observed=V1_READY,
        status="ready",
        writes={
            "1": {
                "deployment.url": URL,
                "deployed": "true",
                "deployment.revision": "m-predictor-00001",
                "model_endpoint": f"{URL}/m/api/",
                "deployment.status": "ready",
            },
            "": {"deployed": "true", "deployed_version": "1"},
        },
    ),
    Case(
        "nothing new: no effect, no write",
        [version("1", stage="production", **READY_V1)],
        observed=V1_READY,
        model_tags={"deployed": "true", "deployed_version": "1"},
        status="ready",
    ),
    Case(
        "a new version: one update; the old one keeps serving meanwhile",
        [version("1", **READY_V1), version("2", stage="production")],
        observed=V1_READY,
        model_tags={"deployed": "true", "deployed_version": "1"},
        effect="apply",
        action="updated",
        status="deploying",
        writes={
            "2": {
                "deployment.inferenceservice": "models/m",
                "deployment.url": URL,
                "deployed": "false",
                "deployment.status": "deploying",
            }
        },
    ),
    Case(
        "no longer marked: delete, retired, model not deployed",
        [version("1", **READY_V1)],
        observed=V1_READY,
        model_tags={"deployed": "true", "deployed_version": "1"},
        effect="delete",
        action="deleted",
        status="retired",
        writes={
            "1": {"deployed": "false", "model_endpoint": None, "deployment.status": "retired"},
            "": {"deployed": "false", "deployed_version": None},
        },
    ),
    Case(
        "the alias names a version that does not exist",
        [version("1")],
        aliases={"production": "9"},
        missing=True,
        action="skipped",
        status="failed",
    ),
    Case(
        "an invalid owner tag: nothing applied, the rule in the message",
        [version("1", stage="production", **{"serving.min_replicas": "-1"})],
        action="skipped",
        status="failed",
        writes={"1": {"deployment.inferenceservice": "models/m", "deployed": "false", "deployment.status": "failed"}},
    ),
]
CASES.append(
    Case(
        "a manifest refused before: skipped without a write until it changes",
        [version("1", stage="production", **{"deployment.status": "failed", "deployment.message": "403"})],
        terminal=bookkeeping.fingerprint(render(S, version("1", stage="production"))),
        action="skipped",
        status="failed",
    )
)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    (p,) = planner.plan(world(case))
    effect = "apply" if p.apply is not None else "delete" if p.delete else ""
    assert (effect, p.action, p.status) == (case.effect, case.action, case.status), p.message
    got = {w.version: w.changes for w in p.tags}
    assert set(got) == set(case.writes), got
    for v, want in case.writes.items():
        changes = got[v]
        assert {k: changes.get(k) for k in want} == want, changes
        if v:
            assert list(changes)[-1] == "deployment.status"  # a reader who sees the status sees the rest
            assert changes["deployment.updated_at"] == NOW.isoformat(timespec="seconds")
    if "" in got:
        assert p.tags[-1].version == ""  # the registered model's tags after its versions'


def test_a_new_version_is_stamped_with_the_revision_it_replaces() -> None:
    c = Case("", [version("1", **READY_V1), version("2", stage="production")], observed=V1_READY)
    (p,) = planner.plan(world(c))
    assert p.apply is not None
    kept = bookkeeping.read(p.apply)
    assert kept == bookkeeping.Bookkeeping(bookkeeping.fingerprint(p.apply), "m-predictor-00001", NOW)


def test_the_status_last_order_holds_for_a_failure_too() -> None:
    c = Case("", [version("1", stage="production")])
    (p,) = planner.plan(world(c))
    tags = planner.refused(world(c), p, "Kubernetes apply: 403 forbidden")
    assert [list(t.changes)[-1] for t in tags] == ["deployment.status"]
    assert tags[0].changes["deployment.status"] == "failed" and "403" in str(tags[0].changes["deployment.message"])


@pytest.mark.parametrize(
    ("labels", "annotations", "says"),
    [
        ({}, {}, "not managed by service-builder"),
        ({"app.kubernetes.io/managed-by": "someone-else"}, {}, "managed by 'someone-else'"),
        (
            {"app.kubernetes.io/managed-by": "service-builder-plugin"},
            {"mlflow.org/model-name": "m"},
            "mlflow deployments plugin (`mlflow deployments delete -t kserve:/models --name m` removes it)",
        ),
        ({"app.kubernetes.io/managed-by": "service-builder"}, {"mlflow.org/model-name": "other"}, "names collide"),
    ],
)
def test_a_service_that_is_not_this_models_is_never_touched(labels: dict, annotations: dict, says: str) -> None:
    theirs = {"metadata": {"name": "m", "labels": labels, "annotations": annotations}, "spec": {}}
    c = Case("", [version("1", stage="production")], observed=theirs)
    p = planner.plan_model(world(c), "m")
    assert p.apply is None and not p.delete and p.status == "failed" and says in p.message


def test_canary_promotion_changes_traffic_and_not_the_revision_template() -> None:
    canary = obj("2", generation=2, previous=V1_READY, stage="production", **{"serving.canary_percent": "20"})
    tags = {"deployment.status": "ready", "deployed": "true", "deployment.revision": "m-predictor-00002"}
    c = Case("", [version("1", **READY_V1), version("2", stage="production", **tags)], observed=canary)
    (p,) = planner.plan(world(c))
    assert p.apply is not None and "canaryTrafficPercent" not in p.apply["spec"]["predictor"]
    keys = bookkeeping.KEYS
    assert {k: p.apply["metadata"]["annotations"][k] for k in keys} == {
        k: canary["metadata"]["annotations"][k] for k in keys
    }


def test_the_deadline_fails_a_rollout_that_never_gets_ready() -> None:
    rolling = obj("2", "rolling", generation=2, previous=V1_READY, stage="production")
    late = replace_now(NOW + timedelta(minutes=11))
    c = Case("", [version("1", **READY_V1), version("2", stage="production", **{"deployment.status": "deploying"})])
    c.observed = rolling
    (p,) = planner.plan(late(world(c)))
    assert p.status == "failed" and "ProgressDeadlineExceeded" in p.message


def test_legacy_services_are_read_with_the_tags_the_old_adapter_kept() -> None:
    legacy = copy.deepcopy(obj("2", "rolling", generation=2, previous=V1_READY, stage="production"))
    for key in bookkeeping.KEYS:
        del legacy["metadata"]["annotations"][key]
    legacy["status"]["conditions"][0]["status"] = "True"  # the previous revision's Ready, left over
    old = {"deployment.status": "deploying", "deployment.base_revision": "m-predictor-00001"}
    old["deployment.started_at"] = (NOW - timedelta(minutes=1)).isoformat()
    c = Case("", [version("1", **READY_V1), version("2", stage="production", **old)], observed=legacy)
    (p,) = planner.plan(world(c))
    assert p.apply is None and p.status == "deploying"
    assert all("deployment.base_revision" not in w.changes for w in p.tags)  # kept until the object has its own


def replace_now(now: datetime):
    def shift(w: planner.World) -> planner.World:
        return planner.World(w.settings, w.snapshot, w.observed, now, w.missing, w.terminal, w.files)

    return shift
