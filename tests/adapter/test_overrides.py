"""Model owners' `serving.*` tags: every override, every validation rule, caps, and the reconcile outcome."""

from __future__ import annotations

import pytest

from adapter.overrides import OverrideError, effective, quantity, resolve
from adapter.reconcile import Reconciler
from adapter.render import CONTAINER, render
from adapter.settings import AdapterSettings
from adapter.types import VersionInfo
from tests.adapter import crd
from tests.adapter.fakes import FakeCluster, FakeRegistry

S = AdapterSettings(
    predictor_image="img:1",
    serving_image_allowlist="img:2-gpu, img:3",
    serving_env_allowlist="LOG_LEVEL,OMP_NUM_THREADS",
    serving_max_replicas_cap=5,
    serving_cpu_cap="2",
    serving_memory_cap="4Gi",
    serving_timeout_cap=120,
)


def rendered(**tags: str) -> dict:
    o = resolve(S, {}, tags)
    doc = render(S, VersionInfo("m", "1", tags=tags), overrides=o)
    assert crd.errors(doc) == []
    return doc


def pred(doc: dict) -> dict:
    return doc["spec"]["predictor"]


def cont(doc: dict) -> dict:
    return pred(doc)["containers"][0]


@pytest.mark.parametrize(
    ("tag", "value", "read", "expected"),
    [
        ("serving.min_replicas", "2", lambda d: pred(d)["minReplicas"], 2),
        ("serving.min_replicas", "0", lambda d: pred(d)["minReplicas"], 0),
        ("serving.max_replicas", "5", lambda d: pred(d)["maxReplicas"], 5),
        ("serving.scale_metric", "rps", lambda d: pred(d)["scaleMetric"], "rps"),
        ("serving.scale_target", "50", lambda d: pred(d)["scaleTarget"], 50),
        ("serving.container_concurrency", "4", lambda d: pred(d)["containerConcurrency"], 4),
        ("serving.timeout_seconds", "120", lambda d: pred(d)["timeout"], 120),
        ("serving.canary_percent", "25", lambda d: pred(d)["canaryTrafficPercent"], 25),
        ("serving.canary_percent", "100", lambda d: "canaryTrafficPercent" in pred(d), False),
        ("serving.cpu_request", "500m", lambda d: cont(d)["resources"]["requests"]["cpu"], "500m"),
        ("serving.cpu_limit", "1.5", lambda d: cont(d)["resources"]["limits"]["cpu"], "1.5"),
        ("serving.memory_request", "256Mi", lambda d: cont(d)["resources"]["requests"]["memory"], "256Mi"),
        ("serving.memory_limit", "4Gi", lambda d: cont(d)["resources"]["limits"]["memory"], "4Gi"),
        ("serving.image", "img:2-gpu", lambda d: cont(d)["image"], "img:2-gpu"),
        (
            "serving.max_body",
            "32Mi",
            lambda d: {e["name"]: e.get("value") for e in cont(d)["env"]}["MAX_BODY_BYTES"],
            "33554432",
        ),
        (
            "serving.env.OMP_NUM_THREADS",
            "1",
            lambda d: {e["name"]: e.get("value") for e in cont(d)["env"]}["OMP_NUM_THREADS"],
            "1",
        ),
    ],
)
def test_each_override_lands_in_the_manifest(tag: str, value: str, read, expected) -> None:
    assert read(rendered(**{tag: value})) == expected


@pytest.mark.parametrize(
    ("tag", "value", "rule"),
    [
        ("serving.min_replicas", "-1", "whole number"),
        ("serving.min_replicas", "two", "whole number"),
        ("serving.min_replicas", "6", "between 0 and 5"),
        ("serving.max_replicas", "0", "between 1 and 5"),
        ("serving.max_replicas", "99", "between 1 and 5"),
        ("serving.scale_metric", "qps", "one of cpu, memory, concurrency, rps"),
        ("serving.scale_target", "0", "between 1"),
        ("serving.container_concurrency", "1.5", "whole number"),
        ("serving.timeout_seconds", "121", "between 1 and 120"),
        ("serving.canary_percent", "101", "between 0 and 100"),
        ("serving.cpu_request", "2 cores", "not a Kubernetes quantity"),
        ("serving.cpu_limit", "3", "exceeds the cluster cap of 2"),
        ("serving.memory_limit", "5Gi", "exceeds the cluster cap of 4Gi"),
        ("serving.memory_request", "0", "more than 0"),
        ("serving.image", "evil.example/miner:latest", "SERVING_IMAGE_ALLOWLIST"),
        ("serving.max_body", "1Gi", "exceeds the cluster cap of 64Mi"),
        ("serving.max_body", "100", "at least 1Ki"),
        ("serving.max_body", "2048.5", "whole number of bytes"),
        ("serving.env.AWS_SECRET_ACCESS_KEY", "x", "SERVING_ENV_ALLOWLIST"),
        ("serving.env.bad-name", "x", "SERVING_ENV_ALLOWLIST"),
        ("serving.replicas", "2", "unknown setting"),
    ],
)
def test_each_invalid_tag_names_the_tag_and_the_rule(tag: str, value: str, rule: str) -> None:
    with pytest.raises(OverrideError) as e:
        resolve(S, {}, {tag: value})
    assert tag in str(e.value) and rule in str(e.value) and "version tag" in str(e.value)


def test_pairs_are_checked() -> None:
    with pytest.raises(OverrideError, match=r"min_replicas=4 .* above serving\.max_replicas=2"):
        resolve(S, {"serving.min_replicas": "4"}, {"serving.max_replicas": "2"})
    with pytest.raises(OverrideError, match=r"cpu_request=2 is above serving\.cpu_limit=500m"):
        resolve(S, {}, {"serving.cpu_request": "2", "serving.cpu_limit": "500m"})


def test_version_tag_wins_and_sources_are_reported() -> None:
    o = resolve(S, {"serving.min_replicas": "1", "serving.max_replicas": "4"}, {"serving.min_replicas": "2"})
    assert o.values == {"min_replicas": 2, "max_replicas": 4}
    doc = render(S, VersionInfo("m", "1"), overrides=o)
    rows = {k: (v, src) for k, v, src in effective(doc, o, CONTAINER)}
    assert rows["min_replicas"] == ("2", "version tag")
    assert rows["max_replicas"] == ("4", "model tag")
    assert rows["scale_metric"] == ("concurrency", "template")
    assert rows["image"] == ("img:1", "PREDICTOR_IMAGE")


def test_quantities() -> None:
    assert quantity("250m") * 4 == quantity("1")
    assert quantity("1Gi") == 1024 * quantity("1Mi")
    with pytest.raises(ValueError):
        quantity("1.5.5")


def test_invalid_tag_fails_the_model_and_applies_nothing() -> None:
    reg, cluster = FakeRegistry(), FakeCluster()
    rec = Reconciler(S, reg, cluster)
    reg.add("m", "1", stage="production")
    reg.add("ok", "1", stage="production")
    reg.model_tags["m"]["serving.cpu_limit"] = "64"
    out = rec.run_pass().by_model()
    assert out["m"].status == "failed" and "model tag serving.cpu_limit" in out["m"].message
    assert "m" not in cluster.objects and out["ok"].action == "created"
    assert "exceeds the cluster cap" in reg.versions[("m", "1")].tags["deployment.message"]


def test_a_tag_change_on_an_unchanged_version_is_exactly_one_update() -> None:
    reg, cluster = FakeRegistry(), FakeCluster()
    rec = Reconciler(S, reg, cluster)
    reg.add("m", "1", stage="production")
    rec.run_pass()
    cluster.roll("m", "ready")
    rec.run_pass()
    applies = cluster.writes["apply"]
    reg.tag("m", "1", "serving.min_replicas", "1")
    assert rec.run_pass().by_model()["m"].action == "updated"
    assert cluster.objects["m"]["spec"]["predictor"]["minReplicas"] == 1
    for _ in range(2):
        assert rec.run_pass().by_model()["m"].action == "unchanged"
    assert cluster.writes["apply"] == applies + 1


def test_pairs_are_checked_against_the_template_too() -> None:
    with pytest.raises(
        OverrideError, match=r"serving\.min_replicas \(version tag\)=4 is above max_replicas \(template\)=3"
    ):
        rendered(**{"serving.min_replicas": "4"})
    with pytest.raises(
        OverrideError, match=r"memory_request \(version tag\)=3Gi is above memory_limit \(template\)=2Gi"
    ):
        rendered(**{"serving.memory_request": "3Gi"})


def test_hostile_env_value_stays_a_value() -> None:
    import yaml

    from adapter.render import to_yaml

    hostile = "x\nkind: Secret\nmetadata: {name: pwned}"
    doc = rendered(**{"serving.env.LOG_LEVEL": hostile})
    env = {e["name"]: e.get("value") for e in cont(doc)["env"]}
    assert env["LOG_LEVEL"] == hostile
    assert yaml.safe_load(to_yaml(doc)) == doc and doc["kind"] == "InferenceService"


def test_by_default_owners_may_switch_the_predictors_kernels() -> None:
    """The predictor's numpy kernels and their check can be turned off for one model from MLflow."""
    settings = AdapterSettings(predictor_image="img:1")
    tags = {"serving.env.KERNELS": "false", "serving.env.VERIFY_KERNEL": "false"}
    doc = render(settings, VersionInfo("m", "1", tags=tags), overrides=resolve(settings, {}, tags))
    env = {e["name"]: e.get("value") for e in cont(doc)["env"]}
    assert (env["KERNELS"], env["VERIFY_KERNEL"]) == ("false", "false")
    with pytest.raises(OverrideError, match="SERVING_ENV_ALLOWLIST"):
        resolve(settings, {}, {"serving.env.FAST_PATH": "false"})


def test_local_predictors_never_inherit_the_adapters_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8S_API_KEY", "k8s-token")
    monkeypatch.setenv("MLFLOW_WEBHOOK_SECRET", "hook-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "mlflow-token")
    env = AdapterSettings().local_predictor_env()
    assert "K8S_API_KEY" not in env and "MLFLOW_WEBHOOK_SECRET" not in env
    assert env["AWS_SECRET_ACCESS_KEY"] == "s3-secret" and env["MLFLOW_TRACKING_TOKEN"] == "mlflow-token"


@pytest.mark.parametrize(
    ("pattern", "name", "hit"),
    [
        ("team-a-%", "team-a-risk", True),
        ("team-a-%", "team-b-risk", False),
        ("m_1", "mx1", True),
        ("a.b%", "axb", False),
    ],
)
def test_model_name_like_scope(pattern: str, name: str, hit: bool) -> None:
    assert AdapterSettings(model_name_like=pattern).in_scope(name) is hit
