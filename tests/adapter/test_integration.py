"""The adapter against a real `mlflow server`, the real kube-apiserver and the real KServe controller (Knative played),
through the fault proxy with the adapter's own ServiceAccount token."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from adapter import naming
from tests.adapter import crd
from tests.adapter.conftest import World


def test_production_tag_to_ready_service_and_tags(world: World) -> None:
    name = world.model("risk", stage="production")
    world.model("plain")  # not marked: never deployed
    rec = world.reconciler()
    out = rec.run_pass().by_model()
    assert list(out) == [name] and out[name].action == "created"
    isvc = naming.isvc_name(name)
    obj = world.isvc(isvc)
    assert obj is not None and obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "service-builder"
    assert crd.errors({k: v for k, v in obj.items() if k != "status"}) == []
    assert world.tags(name, 1)["deployment.status"] == "deploying"

    world.play(isvc, "ready")
    out = rec.run_pass().by_model()
    assert out[name].status == "ready"
    t = world.tags(name, 1)
    url = f"http://{isvc}-predictor.{world.ns}.example.com"  # the Knative route, as KServe reports it with Kourier
    assert t["deployment.status"] == "ready" and t["deployed"] == "true"
    assert t["deployment.url"] == url and t["model_endpoint"] == f"{url}/{naming.service_path(name)}/api/"
    assert t["deployment.inferenceservice"] == f"{world.ns}/{isvc}"
    assert world.mlflow.get_registered_model(name).tags == {"deployed": "true", "deployed_version": "1"}


def test_second_sync_makes_zero_writes(world: World) -> None:
    name = world.model("risk", stage="production")
    rec = world.reconciler()
    rec.run_pass()
    world.play(naming.isvc_name(name), "ready")
    rec.run_pass()
    world.kube.reset_log()
    before = sum(v for k, v in rec.registry.calls.items() if k.startswith(("set_", "delete_")))
    fresh = world.reconciler()  # a new process (CronJob mode) as well as the same one
    for r in (rec, fresh):
        out = r.run_pass().by_model()
        assert out[name].action == "unchanged" and out[name].tag_writes == 0
    assert world.kube.count(writes_only=True) == 0
    assert sum(v for k, v in rec.registry.calls.items() if k.startswith(("set_", "delete_"))) == before
    assert sum(fresh.registry.calls.values()) == 3  # registered models, tagged versions, managed versions


def test_alias_new_version_rollout_then_retire(world: World) -> None:
    name = world.model("churn", versions=2)
    world.mlflow.set_registered_model_alias(name, "production", "1")
    rec = world.reconciler()
    isvc = naming.isvc_name(name)
    rec.run_pass()
    world.play(isvc, "ready")
    rec.run_pass()
    first_endpoint = world.tags(name, 1)["model_endpoint"]
    world.mlflow.set_registered_model_alias(name, "production", "2")
    out = rec.run_pass().by_model()
    assert (out[name].version, out[name].action) == ("2", "updated")
    assert world.isvc(isvc)["spec"]["predictor"]["annotations"]["mlflow.org/model-version"] == "2"
    world.play(isvc, "ready")
    rec.run_pass()
    assert world.tags(name, 2)["deployment.status"] == "ready"
    assert world.tags(name, 1)["deployment.status"] == "superseded" and world.tags(name, 1)["deployed"] == "false"
    assert world.tags(name, 2)["model_endpoint"] == first_endpoint  # the same URL for the new version

    world.mlflow.delete_registered_model_alias(name, "production")
    out = rec.run_pass().by_model()
    assert out[name].action == "deleted" and world.isvc(isvc) is None
    assert world.tags(name, 2)["deployment.status"] == "retired"
    assert world.mlflow.get_registered_model(name).tags == {"deployed": "false"}


def test_a_hand_edit_of_a_field_we_set_is_reverted_once(world: World) -> None:
    """Server-side apply's field ownership tells an edit by hand from KServe's own writes: a spec field we set and
    someone else now owns is applied back, once; a field we never set is theirs to keep."""
    name = world.model("edited", stage="production")
    isvc = naming.isvc_name(name)
    rec = world.reconciler()
    rec.run_pass()
    world.play(isvc, "ready")
    rec.run_pass()
    edit = '{"spec":{"predictor":{"minReplicas":2}}}'
    world.plane.kubectl("patch", "isvc", isvc, "-n", world.ns, "--type=merge", "-p", edit)
    assert rec.run_pass().by_model()[name].action == "updated"
    assert world.isvc(isvc)["spec"]["predictor"]["minReplicas"] == 0
    world.kube.reset_log()
    assert rec.run_pass().by_model()[name].action == "unchanged" and world.kube.count("PATCH") == 0
    theirs = '{"spec":{"predictor":{"nodeSelector":{"pool":"gpu"}}}}'
    world.plane.kubectl("patch", "isvc", isvc, "-n", world.ns, "--type=merge", "-p", theirs)
    assert rec.run_pass().by_model()[name].action == "unchanged" and world.kube.count("PATCH") == 0


def test_kubernetes_500_and_429_then_recovery(world: World) -> None:
    name = world.model("a", stage="production")
    world.kube.inject("PATCH", world.isvc_path, status=500, times=1)
    world.kube.inject("PATCH", world.isvc_path, status=429, headers={"Retry-After": "0"}, times=1)
    out = world.reconciler().run_pass().by_model()
    assert out[name].action == "created"
    assert world.kube.count("PATCH", world.isvc_path) == 3


def test_conflict_409_on_apply_is_retried(world: World) -> None:
    name = world.model("a", stage="production")
    world.kube.inject("PATCH", world.isvc_path, status=409, times=1)
    assert world.reconciler().run_pass().by_model()[name].action == "created"


def test_dropped_connection_is_retried(world: World) -> None:
    name = world.model("a", stage="production")
    world.kube.drop("PATCH", world.isvc_path, times=1)
    assert world.reconciler().run_pass().by_model()[name].action == "created"
    assert world.isvc(naming.isvc_name(name)) is not None


def test_slow_answers_time_out_and_the_retry_converges(world: World) -> None:
    """An apply answered after the client gave up still lands on the server: the retry applies the same thing."""
    world.settings = world.settings.model_copy(update={"k8s_request_timeout_seconds": 1.0})
    name = world.model("slow", stage="production")
    world.kube.slow("PATCH", world.isvc_path, seconds=2.5)
    out = world.reconciler().run_pass().by_model()[name]
    assert out.action == "created" and world.kube.count("PATCH", world.isvc_path) >= 2
    assert [o["metadata"]["name"] for o in world.isvcs()] == [naming.isvc_name(name)]
    world.kube.slow("GET", world.isvc_path, seconds=2.5, times=None)
    result = world.reconciler().run_pass()
    assert not result.ok and "unreachable" in result.error  # every list times out: the pass is skipped


def test_kubernetes_down_skips_the_pass_then_recovers(world: World) -> None:
    name = world.model("a", stage="production")
    world.kube.inject("GET", world.isvc_path, status=503, times=None)
    rec = world.reconciler()
    result = rec.run_pass()
    assert not result.ok and "503" in result.error
    world.kube.clear_faults()
    assert rec.run_pass().by_model()[name].action == "created"


def test_one_models_api_error_never_stops_the_others(world: World) -> None:
    bad = world.model("a-bad", stage="production")
    good = world.model("b-good", stage="production")
    world.kube.inject("PATCH", re.compile(re.escape(naming.isvc_name(bad))), status=403, times=None)
    out = world.reconciler().run_pass().by_model()
    assert out[bad].status == "failed" and "403" in world.tags(bad, 1)["deployment.message"]
    assert out[good].action == "created"


def test_never_ready_hits_the_deadline(world: World) -> None:
    name = world.model("slow", stage="production")
    skew = {"s": 0.0}
    rec = world.reconciler(now=lambda: datetime.now(UTC) + timedelta(seconds=skew["s"]))
    rec.run_pass()
    world.play(naming.isvc_name(name), "rolling")
    skew["s"] = 590
    assert rec.run_pass().by_model()[name].status == "deploying"
    skew["s"] = 610
    out = rec.run_pass().by_model()
    assert out[name].status == "failed"
    assert "ProgressDeadlineExceeded" in world.tags(name, 1)["deployment.message"]


def test_revision_failure_reason_reaches_mlflow(world: World) -> None:
    name = world.model("crash", stage="production")
    rec = world.reconciler()
    rec.run_pass()
    msg = f'Revision "{naming.isvc_name(name)}-predictor-00001" failed with message: Container failed with: ExitCode1.'
    world.play(naming.isvc_name(name), "failed", msg)
    rec.run_pass()
    t = world.tags(name, 1)
    assert t["deployment.status"] == "failed" and "ExitCode1" in t["deployment.message"]
    assert t["deployed"] == "false" and "model_endpoint" not in t


def test_unowned_service_with_the_same_name(world: World) -> None:
    name = world.model("mine", stage="production")
    isvc = naming.isvc_name(name)
    world.create_isvc(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": isvc},
            "spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "theirs:1"}]}},
        },
    )
    world.kube.reset_log()
    out = world.reconciler().run_pass().by_model()
    assert out[name].status == "failed"
    assert "not managed by service-builder" in world.tags(name, 1)["deployment.message"]
    assert world.kube.count(writes_only=True) == 0
    assert world.isvc(isvc)["spec"]["predictor"]["containers"][0]["image"] == "theirs:1"


def test_hostile_registry_input(world: World) -> None:
    suffixes = ["Risk Model", "risk model", "Ünïcødé 模型", "UPPER", "x" * 80, "risk_model"]
    names = [world.model(s, stage="production") for s in suffixes]
    hostile = world.model("tagged")
    world.mlflow.set_model_version_tag(hostile, "1", "stage", "production")
    world.mlflow.set_model_version_tag(hostile, "1", "serving.env.LOG_LEVEL", "x\nkind: Secret")
    out = world.reconciler().run_pass().by_model()
    assert all(out[n].action == "created" for n in [*names, hostile]), out
    objs = world.isvcs()
    assert len({o["metadata"]["name"] for o in objs}) == len(names) + 1
    for o in objs:
        assert re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", o["metadata"]["name"]) and len(o["metadata"]["name"]) <= 45
        assert o["kind"] == "InferenceService"
    stored = world.isvc(naming.isvc_name(hostile))
    env = {e["name"]: e.get("value") for e in stored["spec"]["predictor"]["containers"][0]["env"]}
    assert env["LOG_LEVEL"] == "x\nkind: Secret"  # a value, exactly; never YAML


def test_models_outside_the_scope_are_left_alone(world: World) -> None:
    outsider = f"other-{world.prefix}model"
    world.mlflow.create_registered_model(outsider)
    world.mlflow.create_model_version(outsider, source="s3://m/x", await_creation_for=0)
    world.mlflow.set_registered_model_alias(outsider, "production", "1")
    theirs = naming.isvc_name(outsider)
    world.create_isvc(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {
                "name": theirs,
                "labels": {"app.kubernetes.io/managed-by": "service-builder"},
                "annotations": {"mlflow.org/model-name": outsider},
            },
            "spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "other:1"}]}},
        },
    )
    mine = world.model("mine", stage="production")
    out = world.reconciler().run_pass().by_model()
    assert set(out) == {mine}
    assert world.isvc(theirs) is not None and "deployment.status" not in world.tags(outsider, 1)


def test_crash_between_apply_and_write_back(world: World) -> None:
    name = world.model("crashy", stage="production")
    rec = world.reconciler()

    class Crash(BaseException):
        pass

    calls = {"n": 0}

    def dying(*a, **kw):
        calls["n"] += 1
        raise Crash()  # the process dies right after the apply, as its first tag writes go out (concurrently)

    rec.registry.set_version_tags = dying
    try:
        rec.run_pass()
    except Crash:
        pass
    assert calls["n"] >= 1 and world.kube.count("PATCH", world.isvc_path) == 1
    assert "deployment.status" not in world.tags(name, 1)  # nothing was written before the apply
    fresh = world.reconciler()
    out = fresh.run_pass().by_model()
    assert out[name].action == "unchanged" and world.kube.count("PATCH", world.isvc_path) == 1
    assert world.tags(name, 1)["deployment.status"] == "deploying"
    world.play(naming.isvc_name(name), "ready")  # a Ready from before the crash's apply would not count
    assert fresh.run_pass().by_model()[name].status == "ready"
    assert len(world.isvcs()) == 1 and world.kube.count("PATCH", world.isvc_path) == 1


def test_mlflow_down_then_back(world: World, tmp_path) -> None:
    from tests.servers import MlflowServer, free_port

    port = free_port()
    server = MlflowServer(url=f"http://127.0.0.1:{port}", port=port, root=tmp_path)
    settings = world.settings.model_copy(update={"mlflow_tracking_uri": server.url})
    world.settings = settings
    rec = world.reconciler()
    result = rec.run_pass()
    assert not result.ok and "unreachable" in result.error
    server.start()
    try:
        from mlflow import MlflowClient

        client = MlflowClient(server.url, registry_uri=server.url)
        name = f"{world.prefix}back"
        client.create_registered_model(name)
        client.create_model_version(name, source="s3://models/x", tags={"stage": "production"})
        out = rec.run_pass().by_model()
        assert out[name].action == "created"
    finally:
        server.stop()


def _legacy_apply(world: World, name: str, version: str) -> None:
    """What the adapter before bookkeeping-on-the-object applied: today's manifest without the annotations it
    did not have (bookkeeping, the MLflow link), by the same field manager."""
    from adapter.render import render, to_yaml
    from adapter.types import ANN_MODEL_VERSION_URL, VersionInfo

    doc = render(world.settings, VersionInfo(name, version))
    del doc["metadata"]["annotations"][ANN_MODEL_VERSION_URL]
    world.plane.kubectl("apply", "--server-side", "--field-manager=service-builder", "-f", "-", input=to_yaml(doc))


def test_services_deployed_with_the_old_bookkeeping_are_adopted_without_a_redeploy(world: World) -> None:
    name = world.model("legacy", versions=2)
    isvc = naming.isvc_name(name)
    world.mlflow.set_model_version_tag(name, "1", "stage", "production")
    _legacy_apply(world, name, "1")
    rev1 = world.play(isvc, "ready")
    url = f"http://{isvc}-predictor.{world.ns}.example.com"
    old_tags = {
        "deployment.status": "ready",
        "deployed": "true",
        "model_endpoint": f"{url}/{naming.service_path(name)}/api/",
        "deployment.url": url,
        "deployment.inferenceservice": f"{world.ns}/{isvc}",
        "deployment.revision": rev1,
        "deployment.base_revision": "",
        "deployment.started_at": "2026-01-01T00:00:00+00:00",
        "deployment.updated_at": "2026-01-01T00:01:00+00:00",
    }
    for k, v in old_tags.items():
        world.mlflow.set_model_version_tag(name, "1", k, v)
    world.mlflow.set_registered_model_tag(name, "deployed", "true")
    world.mlflow.set_registered_model_tag(name, "deployed_version", "1")
    rec = world.reconciler()
    world.kube.reset_log()
    before = world.tags(name, 1)
    out = rec.run_pass().by_model()[name]
    assert (out.action, out.status) == ("unchanged", "ready")
    assert world.kube.count(writes_only=True) == 0  # no apply: no new revision, no redeploy
    # Only what the old adapter did not write yet: where the version's inference records go (and when it changed).
    now = world.tags(name, 1)
    assert {k for k in now if now[k] != before.get(k)} == {"deployment.inference_log", "deployment.updated_at"}
    assert out.tag_writes == 2

    # A rollout the old adapter started and did not finish: its base revision is in MLflow, a Ready is left over.
    world.mlflow.set_model_version_tag(name, "2", "stage", "production")
    _legacy_apply(world, name, "2")
    for k, v in {"deployment.status": "deploying", "deployment.base_revision": rev1, "deployed": "false"}.items():
        world.mlflow.set_model_version_tag(name, "2", k, v)
    world.mlflow.set_model_version_tag(name, "2", "deployment.started_at", old_tags["deployment.started_at"])
    rec = world.reconciler(now=lambda: datetime(2026, 1, 1, 0, 5, tzinfo=UTC))  # within the old deadline
    world.kube.reset_log()
    assert rec.run_pass().by_model()[name].status == "deploying"
    assert world.kube.count(writes_only=True) == 0
    world.play(isvc, "ready")
    out = rec.run_pass().by_model()[name]
    assert (out.action, out.status) == ("unchanged", "ready") and world.kube.count(writes_only=True) == 0
    assert world.tags(name, 1)["deployment.status"] == "superseded"
    assert world.tags(name, 2)["model_endpoint"] == old_tags["model_endpoint"]
