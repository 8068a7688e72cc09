"""What only a real control plane shows: the real API server's version, RBAC and admission; KServe's webhooks
and the Knative Service it renders from what the adapter applied; the real kubectl; deploy/ against the server;
and a predictor started exactly as KServe would start it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from adapter import naming
from tests.adapter.conftest import GROUP, PLURAL, VERSION, World
from tests.auth.conftest import PREDICTOR_ACCOUNT, Cluster
from tests.controlplane import build
from tests.controlplane.fixtures import Namespace, new_namespace
from tests.controlplane.plane import ControlPlane
from tests.deploy.conftest import OVERLAYS, kustomize
from tests.servers import free_port, stop_group, wait_http

REPO = Path(__file__).resolve().parents[2]


def test_the_api_server_and_kubectl_are_the_pinned_real_ones(control_plane: ControlPlane, admin_api: Any) -> None:
    want = build.version(next(c for c in build.COMPONENTS if c.name == "kube"))
    assert client.VersionApi(admin_api).get_code().git_version == want
    out = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == out["clientVersion"]["gitVersion"] == want


def test_kserve_defaults_what_the_adapter_applies_and_it_stays_unchanged(world: World) -> None:
    name = world.model("defaulted", stage="production")
    isvc = naming.isvc_name(name)
    rec = world.reconciler()
    assert rec.run_pass().by_model()[name].action == "created"
    stored = world.isvc(isvc)
    assert stored is not None
    # KServe's mutating webhook stored our "Serverless" as "Knative"; its controller rendered a Knative Service.
    assert stored["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    ksvc = world.knative.service(world.ns, isvc)
    assert ksvc["metadata"]["ownerReferences"][0]["name"] == isvc
    world.kube.reset_log()
    assert rec.run_pass().by_model()[name].action == "unchanged"
    assert world.kube.count(writes_only=True) == 0


def test_kserve_admission_refusal_is_written_to_mlflow(world: World, tmp_path: Path) -> None:
    """A template KServe's validating webhook refuses: the adapter reports KServe's own words, applies nothing."""
    template = yaml.safe_load(world.settings.template_path.read_text())
    template["spec"]["predictor"].update(minReplicas=5, maxReplicas=2)
    path = tmp_path / "inferenceservice.yaml"
    path.write_text(yaml.safe_dump(template))
    world.settings = world.settings.model_copy(update={"template_path": path})
    name = world.model("refused", stage="production")
    out = world.reconciler().run_pass().by_model()[name]
    assert out.status == "failed"
    message = world.tags(name, 1)["deployment.message"]
    assert "denied the request" in message and "'MinReplicas' cannot be greater than MaxReplicas" in message
    assert world.isvc(naming.isvc_name(name)) is None


def test_owner_overrides_reach_the_knative_service_kserve_renders(world: World) -> None:
    name = world.model("tuned")
    for key, value in {
        "stage": "production",
        "serving.min_replicas": "1",
        "serving.max_replicas": "4",
        "serving.scale_metric": "rps",
        "serving.scale_target": "50",
        "serving.cpu_limit": "1500m",
        "serving.memory_request": "1Gi",
        "serving.timeout_seconds": "30",
        "serving.env.LOG_LEVEL": "DEBUG",
    }.items():
        world.mlflow.set_model_version_tag(name, "1", key, value)
    assert world.reconciler().run_pass().by_model()[name].action == "created"
    ksvc = world.knative.service(world.ns, naming.isvc_name(name))
    template = ksvc["spec"]["template"]
    ann = template["metadata"]["annotations"]
    assert (ann["autoscaling.knative.dev/min-scale"], ann["autoscaling.knative.dev/max-scale"]) == ("1", "4")
    assert (ann["autoscaling.knative.dev/metric"], ann["autoscaling.knative.dev/target"]) == ("rps", "50")
    container = template["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "1500m" and container["resources"]["requests"]["memory"] == "1Gi"
    assert template["spec"]["timeoutSeconds"] == 30
    assert {"name": "LOG_LEVEL", "value": "DEBUG"} in container["env"]


def test_render_then_kubectl_apply_is_what_the_adapter_would_apply(world: World) -> None:
    name = world.model("rendered", stage="production")
    env = {
        "PATH": "/usr/bin:/bin",
        "K8S_NAME_SPACE": world.ns,
        "PREDICTOR_IMAGE": world.settings.predictor_image,
        "MLFLOW_TRACKING_URI": world.settings.mlflow_tracking_uri,
    }
    rendered = subprocess.run(
        [sys.executable, "-m", "adapter", "render", "--model", name, "--version", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    world.plane.kubectl(
        "apply", "--server-side", "--dry-run=server", "--field-manager=service-builder", "-f", "-", input=rendered
    )
    world.plane.kubectl("apply", "--server-side", "--field-manager=service-builder", "-f", "-", input=rendered)
    world.kube.reset_log()
    out = world.reconciler().run_pass().by_model()[name]
    assert out.action == "unchanged" and world.kube.count("PATCH") == 0


def _forbidden(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as refused:
        call()
    assert refused.value.status == 403
    body = json.loads(refused.value.body)
    assert body["reason"] == "Forbidden"
    return body


def test_the_adapter_token_is_least_privilege(
    control_plane: ControlPlane, admin_api: Any, k8s_namespace: Namespace
) -> None:
    ns = k8s_namespace.name
    other = new_namespace(control_plane, admin_api, prefix="other")
    api = control_plane.api_client(token=k8s_namespace.token)
    objects, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    assert objects.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"] == []
    who = f"system:serviceaccount:{ns}:service-builder"
    assert who in _forbidden(lambda: core.list_namespaced_secret(ns))["message"]
    _forbidden(lambda: core.read_namespaced_secret("anything", ns))
    _forbidden(lambda: objects.list_namespaced_custom_object(GROUP, VERSION, other.name, PLURAL))
    _forbidden(lambda: objects.list_cluster_custom_object(GROUP, VERSION, PLURAL))
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService", "metadata": {"name": "x"}, "spec": {}}
    _forbidden(lambda: objects.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "x", body))  # update
    _forbidden(lambda: objects.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL))
    _forbidden(lambda: core.list_namespaced_pod(ns))
    _forbidden(lambda: core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}}))
    api.close()


def test_kubectl_get_inferenceservices_shows_kserve_columns_and_mlflow_links(world: World) -> None:
    name = world.model("listed", stage="production")
    isvc = naming.isvc_name(name)
    rec = world.reconciler()
    rec.run_pass()
    world.play(isvc, "ready")
    rec.run_pass()
    table = world.plane.kubectl("get", "inferenceservices", "-n", world.ns).stdout.splitlines()
    assert table[0].split()[:5] == ["NAME", "URL", "READY", "PREV", "LATEST"]
    row = next(line.split() for line in table[1:] if line.startswith(isvc))
    assert row[1] == f"http://{isvc}-predictor.{world.ns}.example.com" and row[2] == "True" and row[3] == "100"
    links = world.plane.kubectl(
        "get", "isvc", isvc, "-n", world.ns, "-o", r"jsonpath={.metadata.annotations.mlflow\.org/model-version-url}"
    ).stdout
    assert links.startswith(world.settings.mlflow_tracking_uri) and links.endswith("/versions/1")


def test_every_deploy_overlay_is_accepted_by_the_api_server(control_plane: ControlPlane) -> None:
    for overlay in OVERLAYS:
        objs = kustomize(overlay)
        namespaces = [o for o in objs if o["kind"] == "Namespace"]
        control_plane.apply(namespaces)  # a server-side dry run cannot create the namespace its objects go into
        proc = control_plane.kubectl(
            "apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objs), check=False
        )
        assert proc.returncode == 0, f"{overlay}: {proc.stderr}"
        assert proc.stdout.count("(server dry run)") == len(objs), proc.stdout


def _container_env(admin_api: Any, ns: str, container: dict[str, Any]) -> dict[str, str]:
    """The env a kubelet would give `container`: values, and `secretKeyRef`s read from the Secret."""
    env: dict[str, str] = {}
    core = client.CoreV1Api(admin_api)
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        try:
            data = core.read_namespaced_secret(ref["name"], ns).data or {}
        except ApiException as e:
            if e.status == 404 and ref.get("optional"):
                continue
            raise
        if ref["key"] in data:
            env[item["name"]] = base64.b64decode(data[ref["key"]]).decode()
        elif not ref.get("optional"):
            raise AssertionError(f"Secret {ref['name']} lacks {ref['key']}")
    return env


def test_what_kserve_renders_starts_our_predictor(world: World, cluster: Cluster, tmp_path: Path) -> None:
    """The container KServe renders, run with exactly its env as a kubelet would (the Secret references resolved,
    the predictor's ServiceAccount token and CA where the kubelet mounts them): secure by default, it answers a
    token whose ServiceAccount a RoleBinding lets `get` this InferenceService, refuses one without (403) and a
    call without any (401)."""
    from tests.predictor import models

    name = f"{world.prefix}served"
    models.train_classifier(name)
    world.mlflow.set_registered_model_alias(name, "production", "1")
    secret = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret"}
    client.CoreV1Api(world.admin).create_namespaced_secret(
        world.ns, {"metadata": {"name": "mlflow-s3"}, "stringData": secret}
    )
    world.settings = world.settings.model_copy(update={"predictor_secret_name": "mlflow-s3"})
    rec = world.reconciler()
    rec.run_pass()
    isvc = naming.isvc_name(name)
    pod = world.knative.service(world.ns, isvc)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = _container_env(world.admin, world.ns, container)
    assert env["AWS_SECRET_ACCESS_KEY"] == "test-secret"  # by reference, resolved as the kubelet would
    assert env["AUTH_MODES"] == "kubernetes" and pod["serviceAccountName"] == PREDICTOR_ACCOUNT
    port = container["ports"][0]["containerPort"]
    # Knative reserves PORT (its webhook refuses a Service that sets it) and sets it to the containerPort: the
    # predictor's default.
    assert "PORT" not in env and port == 8080
    mounted = tmp_path / "serviceaccount"  # what the kubelet mounts for the pod's ServiceAccount
    mounted.mkdir()
    (mounted / "token").write_text(cluster.token(PREDICTOR_ACCOUNT))
    (mounted / "ca.crt").write_bytes(cluster.plane.ca.read_bytes())
    host, api_port = cluster.plane.url.removeprefix("https://").split(":")
    kubelet = {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": api_port,
        "AUTH_SERVICE_ACCOUNT_DIR": str(mounted),
    }
    # The image's entrypoint from this checkout, with exactly that env; only the port is a free one (8080 may be
    # taken on a shared machine) and the address loopback.
    local = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "custom_predictor"],
        env={"PATH": "/usr/bin:/bin", **env, **kubelet, "PORT": str(local), "HOST": "127.0.0.1"},
        stdout=(tmp_path / "predictor.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{local}"
        wait_http(f"{url}{container['readinessProbe']['httpGet']['path']}", timeout=120, proc=proc)
        world.play(isvc, "ready", url=url)
        rec.run_pass()
        tags = world.tags(name, 1)
        assert tags["deployment.status"] == "ready" and tags["deployment.url"] == url
        endpoint = tags["model_endpoint"]
        with urllib.request.urlopen(endpoint, timeout=10) as page:
            assert page.status == 200 and "swagger-ui" in page.read().decode()  # the docs: no credential
        cluster.isvc = isvc
        for account in ("reader", "stranger"):
            cluster.account(account)
        cluster.grant_get("reader", "reader-may-call")
        row = dict(zip(models.FEATURES, map(float, models.breast_cancer(1)[0][0]), strict=True))

        def predict(token: str | None) -> tuple[int, Any]:
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
            body = json.dumps({"records": [row]}).encode()
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(f"{endpoint}v1/predict", body, headers), timeout=10
                ) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        status, answer = predict(cluster.token("reader"))
        assert status == 200 and len(answer["predictions"]) == 1
        assert predict(cluster.token("stranger"))[0] == 403
        assert predict(None)[0] == 401
    finally:
        stop_group(proc)


def test_the_unit_tests_fake_kserve_status_reads_as_real_kserves(world: World) -> None:
    """tests/adapter/kserve.py (the status the unit tests' FakeCluster shows) read by the adapter gives the same
    rollout as the status the real KServe controller computes, for ready, rolling and failed revisions."""
    from datetime import UTC, datetime

    from adapter.rollout import interpret
    from tests.adapter.kserve import status_for

    name = world.model("fake-vs-real", versions=2)
    world.mlflow.set_model_version_tag(name, "1", "stage", "production")
    isvc = naming.isvc_name(name)
    rec = world.reconciler()
    rec.run_pass()
    now = datetime.now(UTC)
    fake_status: dict[str, Any] | None = None
    generation = 0
    for step, (state, message) in enumerate(
        [("ready", ""), ("rolling", ""), ("failed", "Container failed with: ExitCode1"), ("ready", "")]
    ):
        if step == 1:  # a new version: a new revision
            world.mlflow.set_model_version_tag(name, "2", "stage", "production")
            assert rec.run_pass().by_model()[name].action == "updated"
            generation += 1
        elif step == 0:
            generation = 1
        revision = world.play(isvc, state, message)
        real = world.isvc(isvc)
        assert real is not None
        said = f'Revision "{revision}" failed with message: {message}.' if message else ""  # as Knative says it
        fake_status = status_for(isvc, world.ns, generation, fake_status, state, said)
        fake = {**real, "status": fake_status}
        base = "" if step == 0 else f"{isvc}-predictor-00001"
        kw = {"base_revision": base, "started_at": now, "now": now, "deadline_seconds": 600}
        assert interpret(fake, **kw) == interpret(real, **kw), (state, json.dumps(real["status"], indent=1))


def test_a_dead_test_process_takes_its_control_plane_with_it(tmp_path: Path) -> None:
    """However a test session ends (even SIGKILL), no etcd, kube-apiserver or KServe manager is left behind."""
    import os
    import signal
    import time

    script = (
        "import json, pathlib, sys, time\n"
        "from tests.controlplane.plane import ControlPlane\n"
        f"plane = ControlPlane(pathlib.Path({str(tmp_path)!r}))\n"
        "plane.start()\n"
        "print(json.dumps([p.pid for p in plane.procs.values()]), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = json.loads(proc.stdout.readline())
        assert len(pids) == 3 and all(os.path.exists(f"/proc/{pid}") for pid in pids)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.2)
    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


_KNATIVE_ONLY = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds", "idleTimeoutSeconds")


def _pod_of(ksvc: dict[str, Any], name: str) -> dict[str, Any]:
    """The Pod a kubelet would run for a Knative Service's revision: its template's pod spec (Knative's own fields
    dropped, probe ports filled in as Knative fills them). Knative's queue-proxy sidecar is not in it."""
    spec = {k: v for k, v in ksvc["spec"]["template"]["spec"].items() if k not in _KNATIVE_ONLY}
    for container in spec["containers"]:
        port = container["ports"][0]["containerPort"]
        for probe in ("readinessProbe", "livenessProbe"):
            if "httpGet" in container.get(probe, {}) and not container[probe]["httpGet"].get("port"):
                container[probe]["httpGet"]["port"] = port
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_the_rendered_pod_meets_the_restricted_pod_security_standard(
    world: World, control_plane: ControlPlane, admin_api: Any
) -> None:
    """The Knative Service KServe renders from our InferenceService gives a Pod that the real API server's
    PodSecurity admission accepts in a namespace enforcing `restricted` (non-root, no privilege escalation, no
    capabilities, RuntimeDefault seccomp), with a read-only root; the same Pod without seccomp is refused there."""
    name = world.model("restricted")
    world.mlflow.set_registered_model_alias(name, "production", "1")
    world.reconciler().run_pass()
    pod = _pod_of(world.knative.service(world.ns, naming.isvc_name(name)), "predictor")
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp"}

    restricted = new_namespace(control_plane, admin_api, prefix="restricted")
    client.CoreV1Api(admin_api).patch_namespace(
        restricted.name, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    pods = client.CoreV1Api(admin_api)
    pods.create_namespaced_pod(restricted.name, pod, dry_run="All")  # admitted
    loose = json.loads(json.dumps(pod))
    del loose["spec"]["containers"][0]["securityContext"]["seccompProfile"]
    with pytest.raises(ApiException) as refused:
        pods.create_namespaced_pod(restricted.name, loose, dry_run="All")
    assert refused.value.status == 403 and "seccompProfile" in refused.value.body
