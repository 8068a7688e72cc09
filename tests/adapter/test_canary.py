"""Canary, promotion and rollback from MLflow tags, against the real KServe controller (its traffic split;
Knative played)."""

from __future__ import annotations

from adapter import naming
from tests.adapter.conftest import World

ISVC_PATH = "/inferenceservices/"


def canary_field(world: World, isvc: str) -> int | None:
    obj = world.isvc(isvc)
    assert obj is not None
    return obj["spec"]["predictor"].get("canaryTrafficPercent")


def test_canary_then_promote_then_a_rollback(world: World) -> None:
    name = world.model("canary", versions=3)
    isvc = naming.isvc_name(name)
    client = world.mlflow
    client.set_model_version_tag(name, "1", "stage", "production")
    rec = world.reconciler()
    rec.run_pass()
    world.play(isvc, "ready")
    rec.run_pass()

    # v2 with 20 % of the traffic.
    client.set_model_version_tag(name, "2", "serving.canary_percent", "20")
    client.set_model_version_tag(name, "2", "stage", "production")
    assert rec.run_pass().by_model()[name].action == "updated"
    assert canary_field(world, isvc) == 20
    world.play(isvc, "ready")
    assert rec.run_pass().by_model()[name].status == "ready"
    t1, t2 = world.tags(name, 1), world.tags(name, 2)
    assert t2["deployment.traffic"] == t1["deployment.traffic"] == "v2:20% v1:80%"
    assert t1["deployed"] == t2["deployed"] == "true" and t1["deployment.status"] == "ready"
    assert t2["deployment.revision_url"].startswith("http://latest-")
    assert t1["deployment.revision_url"].startswith("http://prev-")
    assert client.get_registered_model(name).tags["deployed_version"] == "1"  # most of the traffic

    # Promote: removing the tag is exactly one update, and the field leaves the object.
    client.delete_model_version_tag(name, "2", "serving.canary_percent")
    world.kube.reset_log()
    assert rec.run_pass().by_model()[name].action == "updated"
    assert world.kube.count("PATCH", ISVC_PATH) == 1 and canary_field(world, isvc) is None
    world.play(isvc, "ready")
    rec.run_pass()
    t1, t2 = world.tags(name, 1), world.tags(name, 2)
    assert (t1["deployment.status"], t1["deployed"]) == ("superseded", "false") and "deployment.traffic" not in t1
    assert t2["deployed"] == "true" and "deployment.traffic" not in t2
    assert client.get_registered_model(name).tags["deployed_version"] == "2"
    world.kube.reset_log()
    assert rec.run_pass().by_model()[name].action == "unchanged" and world.kube.count(writes_only=True) == 0

    # v3 as a canary, then rolled back with 0: all traffic returns to v2.
    client.set_model_version_tag(name, "3", "serving.canary_percent", "10")
    client.set_model_version_tag(name, "3", "stage", "production")
    rec.run_pass()
    world.play(isvc, "ready")
    rec.run_pass()
    assert world.tags(name, 3)["deployment.traffic"] == "v3:10% v2:90%"
    client.set_model_version_tag(name, "3", "serving.canary_percent", "0")
    assert rec.run_pass().by_model()[name].action == "updated"
    assert canary_field(world, isvc) == 0
    world.play(isvc, "ready")
    rec.run_pass()
    t2, t3 = world.tags(name, 2), world.tags(name, 3)
    assert t3["deployed"] == "false" and "model_endpoint" not in t3
    assert t2["deployed"] == "true" and t3["deployment.traffic"] == "v3:0% v2:100%"
    assert client.get_registered_model(name).tags["deployed_version"] == "2"
