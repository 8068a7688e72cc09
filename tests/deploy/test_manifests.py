"""The kustomize output of every overlay: it builds, it validates offline against the Kubernetes
version the e2e runs, RBAC is least privilege, no secret is inlined, and the settings it carries are
ones the adapter accepts."""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.conftest import OVERLAYS, REPO, of_kind, one, pod_spec

PREDICTOR_REVIEWS = "service-builder-predictor-reviews"
K8S_VERSION = "1.34.0"  # the node image of the kind release scripts/e2e.sh pins (tests/deploy/test_versions.py)
ADAPTER_VERBS = {"serving.kserve.io/inferenceservices": ["get", "list", "watch", "create", "patch", "delete"]}
SECRETISH = re.compile(r"(PASSWORD|TOKEN|SECRET|ACCESS_KEY|API_KEY|CREDENTIAL)", re.I)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_offline_strict(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objs = built[overlay]
    assert objs, f"{overlay} built nothing"
    for obj in objs:
        # Strict: unknown fields are errors too. All kinds here are core Kubernetes kinds.
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_namespaced_and_labelled(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    for obj in built[overlay]:
        if obj["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace"), f"{overlay}: {obj['kind']} has no namespace"
        assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of"), obj["metadata"]["name"]


def _rules(objs: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The Role's rules as (group/resource, resourceNames, verbs), one per resource."""
    return sorted(
        (f"{group}/{resource}" if group else resource, tuple(rule.get("resourceNames") or ()), tuple(rule["verbs"]))
        for rule in one(objs, "Role")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    )


RECONCILE_RULES = [
    ("events", (), ("create",)),
    ("serving.kserve.io/inferenceservices", (), tuple(ADAPTER_VERBS["serving.kserve.io/inferenceservices"])),
]
# Leader election of `run`: its own Lease by name (get, update); create cannot be restricted by name.
LEASE_RULES = [
    ("coordination.k8s.io/leases", (), ("create",)),
    ("coordination.k8s.io/leases", ("service-builder",), ("get", "update")),
]


def named(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("overlay", ["deploy", "deploy/cronjob", "deploy/e2e"])
def test_rbac_is_exactly_what_the_adapter_uses(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    from adapter.settings import AdapterSettings

    objs = built[overlay]
    # The only cluster-wide grant is the predictors' (test_predictors_may_only_create_the_two_reviews).
    assert [o["metadata"]["name"] for o in of_kind(objs, "ClusterRole") + of_kind(objs, "ClusterRoleBinding")] == [
        PREDICTOR_REVIEWS,
        PREDICTOR_REVIEWS,
    ]
    # The CronJob's `sync` never campaigns for the Lease: its Role has no Lease rules.
    expected = RECONCILE_RULES if overlay == "deploy/cronjob" else sorted(RECONCILE_RULES + LEASE_RULES)
    assert _rules(objs) == expected
    assert AdapterSettings.model_fields["leader_election_lease_name"].default == "service-builder"
    for rule in one(objs, "Role")["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}"
        assert "nonResourceURLs" not in rule
        if "resourceNames" in rule:
            assert rule["resources"] == ["leases"] and "create" not in rule["verbs"]
    binding, sa, role = one(objs, "RoleBinding"), named(objs, "ServiceAccount", "service-builder"), one(objs, "Role")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    ]
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == sa["metadata"]["namespace"]


@pytest.mark.parametrize("overlay", ["deploy", "deploy/cronjob", "deploy/e2e"])
def test_predictors_may_only_create_the_two_reviews(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    """The kubernetes auth mode's predictors: their ServiceAccount (the adapter's default PREDICTOR_SERVICE_ACCOUNT,
    in the models' namespace) may create TokenReviews and SubjectAccessReviews, nothing else."""
    from adapter.settings import AdapterSettings

    objs = built[overlay]
    sa = named(objs, "ServiceAccount", AdapterSettings.model_fields["predictor_service_account"].default)
    role = named(objs, "ClusterRole", PREDICTOR_REVIEWS)
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ]
    binding = named(objs, "ClusterRoleBinding", PREDICTOR_REVIEWS)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": PREDICTOR_REVIEWS,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": sa["metadata"]["namespace"]}
    ]
    assert sa["metadata"]["namespace"] == one(objs, "Role")["metadata"]["namespace"]  # where the models are


def _workload(objs: list[dict[str, Any]]) -> dict[str, Any]:
    workloads = of_kind(objs, "Deployment") + of_kind(objs, "CronJob")
    assert len(workloads) == 1, [w["kind"] for w in workloads]
    return workloads[0]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_values_anywhere(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    objs = built[overlay]
    assert not of_kind(objs, "Secret"), "Secrets are referenced, never shipped"
    for cm in of_kind(objs, "ConfigMap"):
        for key in cm.get("data", {}):
            if key.endswith("_NAME"):  # the name of a Secret, e.g. PREDICTOR_SECRET_NAME: a reference
                continue
            assert not SECRETISH.search(key), f"{overlay}: ConfigMap key {key} looks like a credential"
    for obj in objs:
        if obj["kind"] not in ("Deployment", "CronJob"):
            continue
        for c in pod_spec(obj)["containers"]:
            for env in c.get("env", []):
                if SECRETISH.search(env["name"]):
                    assert "value" not in env, f"{overlay}: {env['name']} has an inline value"


@pytest.mark.parametrize("overlay", ["deploy", "deploy/cronjob", "deploy/e2e"])
def test_adapter_pod_takes_settings_from_the_configmap_and_credentials_by_reference(
    built: dict[str, list[dict[str, Any]]], overlay: str
) -> None:
    objs = built[overlay]
    spec = pod_spec(_workload(objs))
    assert spec["serviceAccountName"] == named(objs, "ServiceAccount", "service-builder")["metadata"]["name"]
    (container,) = spec["containers"]
    sources = container["envFrom"]
    assert {"configMapRef": {"name": one(objs, "ConfigMap")["metadata"]["name"]}} in sources
    # The Deployment needs the Secret (MLFLOW_WEBHOOK_SECRET, MLflow credentials); a sync pass of the
    # CronJob runs without one when MLflow needs no credentials.
    optional = {"optional": True} if overlay == "deploy/cronjob" else {}
    assert {"secretRef": {"name": "service-builder-credentials", **optional}} in sources
    namespace_env = next(e for e in container["env"] if e["name"] == "K8S_NAME_SPACE")
    assert namespace_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


@pytest.mark.parametrize("overlay", ["deploy", "deploy/cronjob", "deploy/e2e", "deploy/e2e-mlflow"])
def test_pods_run_non_root_and_locked_down(built: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    workload = _workload(built[overlay])
    spec = pod_spec(workload)
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"]:
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert c["resources"]["requests"] and c["resources"]["limits"]


def test_deployment_runs_two_replicas_rolling_with_probes_metrics_and_a_disruption_budget(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    objs = built["deploy"]
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    # The new pod is up (as standby) before an old one stops and hands over its Lease.
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    template = dep["spec"]["template"]
    (c,) = template["spec"]["containers"]
    assert c["args"] == ["run"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert ports[get["port"]] == 8090
    pod_name = next(e for e in c["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "the Lease identity is the pod"
    ann = template["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == "/metrics"
    assert int(ann["prometheus.io/port"]) == 8090
    pdb = one(objs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    svc = one(objs, "Service")
    assert svc["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 8090 and ports[port["targetPort"]] == 8090
    settings = one(objs, "ConfigMap")["data"]
    assert settings["WEBHOOK_PORT"] == "8090"


def test_cronjob_variant_syncs_every_two_minutes_never_overlapping(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["deploy/cronjob"]
    assert not of_kind(objs, "Deployment") and not of_kind(objs, "Service")
    assert not of_kind(objs, "PodDisruptionBudget")
    cron = one(objs, "CronJob")
    assert cron["spec"]["schedule"] == "*/2 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (c,) = pod_spec(cron)["containers"]
    assert c["args"] == ["sync"]
    assert c["image"] == one(built["deploy"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    # Every pass must end before the next one would start.
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 120


def test_e2e_images_skip_tag_resolution_and_use_the_kind_loaded_copy(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["deploy/e2e"]
    (c,) = pod_spec(one(objs, "Deployment"))["containers"]
    assert c["image"].startswith(("kind.local/", "dev.local/"))
    assert c["imagePullPolicy"] == "IfNotPresent"
    settings = one(objs, "ConfigMap")["data"]
    assert settings["PREDICTOR_IMAGE"].startswith(("kind.local/", "dev.local/"))
    script = (REPO / "scripts" / "e2e.sh").read_text()
    assert f'ADAPTER_IMAGE="{c["image"]}"' in script
    assert f'PREDICTOR_IMAGE="{settings["PREDICTOR_IMAGE"]}"' in script


def test_e2e_tracking_uris_name_the_mlflow_service(built: dict[str, list[dict[str, Any]]]) -> None:
    svc = one(built["deploy/e2e-mlflow"], "Service")
    (port,) = svc["spec"]["ports"]
    url = f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local:{port['port']}"
    settings = one(built["deploy/e2e"], "ConfigMap")["data"]
    assert settings["MLFLOW_TRACKING_URI"] == url
    assert settings["PREDICTOR_TRACKING_URI"] == url
    # ... and MLflow accepts that Host header (its DNS-rebinding guard answers 403 otherwise).
    args = pod_spec(one(built["deploy/e2e-mlflow"], "Deployment"))["containers"][0]["args"]
    allowed = next(a.split("=", 1)[1] for a in args if a.startswith("--allowed-hosts=")).split(",")
    assert url.removeprefix("http://") in allowed


def test_e2e_mlflow_serves_artifacts_from_sqlite_on_a_pvc(built: dict[str, list[dict[str, Any]]]) -> None:
    objs = built["deploy/e2e-mlflow"]
    dep = one(objs, "Deployment")
    spec = pod_spec(dep)
    (c,) = spec["containers"]
    assert c["command"] == ["mlflow", "server"]
    assert "--serve-artifacts" in c["args"]
    assert c["image"] == f"ghcr.io/mlflow/mlflow:v{version('mlflow')}", "server and client versions must match"
    backend = next(a.split("=", 1)[1] for a in c["args"] if a.startswith("--backend-store-uri="))
    artifacts = next(a.split("=", 1)[1] for a in c["args"] if a.startswith("--artifacts-destination="))
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
    }
    (volume,) = claims
    assert backend.startswith(f"sqlite:///{mounts[volume]}/") and artifacts.startswith(mounts[volume] + "/")
    assert claims[volume] == one(objs, "PersistentVolumeClaim")["metadata"]["name"]
    assert dep["spec"]["strategy"]["type"] == "Recreate"  # a ReadWriteOnce volume


@pytest.mark.parametrize("overlay", ["deploy", "deploy/e2e"])
def test_configmap_settings_are_accepted_by_the_adapter(
    built: dict[str, list[dict[str, Any]]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adapter.settings import AdapterSettings

    data = one(built[overlay], "ConfigMap")["data"]
    unknown = {k for k in data if k.lower() not in AdapterSettings.model_fields}
    assert not unknown, f"{overlay}: settings the adapter does not know: {sorted(unknown)}"
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("K8S_NAME_SPACE", one(built[overlay], "Deployment")["metadata"]["namespace"])
    settings = AdapterSettings()
    assert settings.deploy_target == "kserve"
    assert settings.webhook_port == 8090
