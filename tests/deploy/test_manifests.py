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


def _command(container: dict[str, Any]) -> str:
    """The adapter command a container runs, as the adapter's own CLI parses its args."""
    from adapter.cli import parser

    return str(parser().parse_args(container["args"]).command)


def test_deployment_keeps_a_standby_through_rollouts_and_drains_and_probes_the_receiver(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    from adapter import webhooks
    from adapter.settings import AdapterSettings

    objs = built["deploy"]
    dep = one(objs, "Deployment")
    template = dep["spec"]["template"]
    (c,) = template["spec"]["containers"]
    assert _command(c) == "run"  # the loop with leader election, not one pass
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # A standby is always there: a new pod is up before an old one stops (and hands over its Lease), and a drain
    # may evict a replica while another one stays.
    replicas, pdb = dep["spec"]["replicas"], one(objs, "PodDisruptionBudget")
    rolling = dep["spec"]["strategy"]["rollingUpdate"]
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    assert 1 <= pdb["spec"]["minAvailable"] < replicas
    assert pdb["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    pod_name = next(e for e in c["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "the Lease identity is the pod"
    # Probes, metrics and the webhook Service all reach the port the adapter's settings make it listen on.
    listens = AdapterSettings(**{k.lower(): v for k, v in one(objs, "ConfigMap")["data"].items()}).webhook_port
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("readinessProbe", webhooks.READY_PATH), ("livenessProbe", webhooks.HEALTH_PATH)):
        get = c[probe]["httpGet"]
        assert get["path"] == path and ports[get["port"]] == listens
    ann = template["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/path"] == webhooks.METRICS_PATH
    assert int(ann["prometheus.io/port"]) == listens
    svc = one(objs, "Service")
    assert svc["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = svc["spec"]["ports"]
    assert ports[port["targetPort"]] == listens


def _minutes_between_runs(schedule: str) -> int:
    """How many minutes apart a cron schedule starts its jobs: `*/N * * * *`, `* * * * *` or a list of minutes an
    equal step apart; other forms fail here (teach this function before using them)."""
    minute, *rest = schedule.split()
    assert rest == ["*"] * 4, f"schedule {schedule!r}: only the minute field may vary"
    if minute == "*":
        return 1
    if minute.startswith("*/"):
        step = int(minute[2:])
        assert 60 % step == 0, f"schedule {schedule!r}: */{step} is not evenly spaced across the hour"
        return step
    starts = sorted(int(m) for m in minute.split(","))
    gaps = {b - a for a, b in zip(starts, [*starts[1:], starts[0] + 60], strict=True)}
    assert len(gaps) == 1, f"schedule {schedule!r}: the gaps between runs differ ({sorted(gaps)})"
    return gaps.pop()


def test_minutes_between_runs_reads_the_usual_schedules() -> None:
    assert [_minutes_between_runs(s) for s in ("*/2 * * * *", "* * * * *", "0,15,30,45 * * * *")] == [2, 1, 15]
    for uneven in ("0,10 * * * *", "*/7 * * * *", "*/5 3 * * *"):
        with pytest.raises(AssertionError):
            _minutes_between_runs(uneven)


def test_cronjob_variant_runs_one_pass_at_a_time_each_stopped_before_the_next_is_due(
    built: dict[str, list[dict[str, Any]]],
) -> None:
    objs = built["deploy/cronjob"]
    assert not of_kind(objs, "Deployment") and not of_kind(objs, "Service")
    assert not of_kind(objs, "PodDisruptionBudget")
    cron = one(objs, "CronJob")
    (c,) = pod_spec(cron)["containers"]
    assert _command(c) == "sync"  # one pass, then exit
    assert c["image"] == one(built["deploy"], "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    # Never two passes at once: a pass still running when the next is due holds it back, and a pass is stopped
    # before the next one is due, so one that hangs costs one turn, not all the following ones.
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    period = 60 * _minutes_between_runs(cron["spec"]["schedule"])
    assert cron["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] < period


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
    assert AdapterSettings().deploy_target == "kserve"
