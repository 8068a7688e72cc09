"""`mlflow deployments ... -t kserve`: MLflow's own CLI and Python client on the adapter's engine, against the real
KServe controller (Knative played), with a real predictor process started from what KServe rendered."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.deployments import get_deploy_client
from mlflow.exceptions import MlflowException

from adapter import naming, overrides
from tests.plugin.conftest import Plugin, one_error_line, write_rows
from tests.servers import free_port, stop_group, wait_http


def _rows(n: int = 5) -> pd.DataFrame:
    from tests.predictor import models

    return pd.DataFrame(models.breast_cancer(n)[0], columns=models.FEATURES)


def _finish(proc: Any, timeout: float = 180) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err


def test_create_get_predict_update_with_a_canary_and_delete_from_the_mlflow_cli(plugin: Plugin) -> None:
    from tests.predictor import models

    w = plugin.world
    model = f"{w.prefix}risk"
    models.train_classifier(model)
    models.train_classifier(model)  # version 2
    name = f"{w.prefix}risk"
    started = time.monotonic()
    create = plugin.start("create", "--name", name, "-m", f"models:/{model}/1", "-C", "min_replicas=1")
    plugin.await_isvc(name)
    applied = time.monotonic() - started
    predictor, url = plugin.serve(name)
    try:
        w.play(name, "ready", url=url)
        out, err = _finish(create)
        ready = time.monotonic() - started
        print(f"\ncreate: applied after {applied:.2f}s, ready (predictor started, Knative played) after {ready:.2f}s")
        assert f"deployment {name} is created" in out and "sklearn" in out
        progress = [line.removeprefix(f"kserve: {w.ns}/{name}: ") for line in err.splitlines()]
        assert progress[0] == f"created (models:/{model}/1)" and progress[1] == "deploying", err
        assert progress[-1] == f"ready at {url} (Swagger UI: {url}/{naming.service_path(model)}/api/)", err
        isvc = w.isvc(name)
        assert isvc is not None
        assert isvc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "service-builder-plugin"
        assert isvc["spec"]["predictor"]["minReplicas"] == 1
        managers = {e["manager"] for e in isvc["metadata"]["managedFields"] if not e.get("subresource")}
        assert "service-builder-plugin" in managers and "service-builder" not in managers

        got = plugin.get(name)
        assert (got["status"], got["url"], got["model_uri"]) == ("ready", url, f"models:/{model}/1")
        assert got["swagger_url"] == f"{url}/{naming.service_path(model)}/api/"
        assert got["revision"] == f"{name}-predictor-00001" and got["message"] == ""
        with urllib.request.urlopen(got["swagger_url"], timeout=10) as page:
            assert "swagger-ui" in page.read().decode()

        rows = _rows()
        expected = mlflow.pyfunc.load_model(f"models:/{model}/1").predict(rows).tolist()
        said = plugin.cli("predict", "--name", name, "-I", str(write_rows(plugin.tmp / "rows.json", rows)))
        assert said.returncode == 0, said.stderr
        assert json.loads(said.stdout.strip().splitlines()[-1])["predictions"] == expected
        client = get_deploy_client(plugin.target)
        assert client.predict(name, rows).get_predictions(predictions_format="ndarray").tolist() == expected
        assert client.predict(name, {"dataframe_records": rows.to_dict(orient="records")})["predictions"] == expected

        update = plugin.start("update", "--name", name, "-m", f"models:/{model}/2", "-C", "canary_percent=20")
        deadline = time.monotonic() + 120
        while (w.isvc(name) or {}).get("metadata", {}).get("annotations", {}).get("mlflow.org/model-version") != "2":
            assert time.monotonic() < deadline and update.poll() is None, update.stderr
            time.sleep(0.2)
        w.play(name, "ready", url=url)
        out, err = _finish(update)
        assert f"Deployment {name} is updated" in out
        got = plugin.get(name)
        assert (got["status"], got["url"], got["model_uri"]) == ("ready", url, f"models:/{model}/2")
        assert got["revision"] == f"{name}-predictor-00002"
        assert json.loads(got["traffic"].replace("'", '"')) == {
            f"{name}-predictor-00002": 20,
            f"{name}-predictor-00001": 80,
        }
        assert json.loads(got["config"].replace("'", '"')) == {"min_replicas": "1"}  # kept; the canary is not
        stored = w.isvc(name)
        assert stored is not None and stored["spec"]["predictor"]["minReplicas"] == 1
        assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 20

        # Promotion: an update without a canary gives the new revision all traffic (the canary was that update's).
        promote = plugin.start("update", "--name", name)
        deadline = time.monotonic() + 120
        while len(w.knative.service(w.ns, name)["spec"].get("traffic") or []) > 1:
            assert time.monotonic() < deadline and promote.poll() is None, promote.stderr  # KServe drops the split
            time.sleep(0.2)
        w.play(name, "ready", url=url)
        _finish(promote)
        got = plugin.get(name)
        assert (got["status"], got["model_uri"]) == ("ready", f"models:/{model}/2")
        assert got["revision"] == f"{name}-predictor-00002"  # promotion moves traffic, not the revision
        assert json.loads(got["traffic"].replace("'", '"')) == {f"{name}-predictor-00002": 100}

        listed = plugin.cli("list")
        assert listed.returncode == 0 and f"'name': '{name}'" in listed.stdout
        gone = plugin.cli("delete", "--name", name)
        assert gone.returncode == 0 and f"Deployment {name} is deleted" in gone.stdout
        assert w.isvc(name) is None
        assert one_error_line(plugin.cli("get", "--name", name)) == f"Error: no deployment {name!r} in namespace {w.ns}"
    finally:
        stop_group(predictor)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["-C", "replicas=2"], "unknown config key replicas (-C); valid keys: " + ", ".join(overrides.known_keys())),
        (["-C", "max_replicas=50"], "-C max_replicas='50': must be between 1 and 10"),
        (["-C", "min_replicas=3", "-C", "max_replicas=2"], "min_replicas=3 (-C) is above max_replicas=2 (-C)"),
        (["-C", "env.AWS_SECRET_ACCESS_KEY=x"], "'AWS_SECRET_ACCESS_KEY' is not in SERVING_ENV_ALLOWLIST"),
        (["-C", "timeout=soon"], "-C timeout='soon': must be a number between 0 and"),
        (["--name", "Risk_Model"], "--name 'Risk_Model' is not a DNS-1035 label"),
        (["--name", "r" * 46], "is longer than 45 characters"),
        (["-m", "models:/{prefix}nope/1"], "model URI models:/{prefix}nope/1 does not exist"),
        (["-m", "models:/{model}/7"], "model URI models:/{model}/7 does not exist"),
        (["-m", "models:/{model}@champion"], "model URI models:/{model}@champion does not exist"),
        (["-m", "runs:/abc/model"], "the kserve target deploys registered versions"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_is_created(plugin: Plugin, args: list[str], says: str) -> None:
    w = plugin.world
    model = w.model("bad")
    given = {"--name": "risk", "-m": f"models:/{model}/1"}
    rest: list[str] = []
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in given:
            given[flag] = value.format(prefix=w.prefix, model=model)
        else:
            rest += [flag, value]
    line = one_error_line(plugin.cli("create", *[x for kv in given.items() for x in kv], *rest))
    assert says.format(prefix=w.prefix, model=model) in line, line
    assert w.isvcs() == []


def test_the_python_client_pins_an_alias_waits_and_reports_kserves_failure_reason(plugin: Plugin) -> None:
    w = plugin.world
    model = w.model("alias", versions=2)
    w.mlflow.set_registered_model_alias(model, "champion", "2")
    client = get_deploy_client(plugin.target)
    d = client.create_deployment("quick", f"models:/{model}@champion", config={"timeout": 0})
    assert (d["status"], d["model_uri"], d["model_version"]) == ("deploying", f"models:/{model}/2", "2")
    assert [x["name"] for x in client.list_deployments()] == ["quick"]
    with pytest.raises(MlflowException) as exists:
        client.create_deployment("quick", f"models:/{model}/1")
    assert exists.value.error_code == "RESOURCE_ALREADY_EXISTS"
    assert "`mlflow deployments update`" in exists.value.message
    with pytest.raises(MlflowException) as explained:
        client.explain("quick", pd.DataFrame({"a": [1]}))
    assert explained.value.error_code == "NOT_IMPLEMENTED" and "not supported" in explained.value.message

    failure: list[BaseException] = []

    def create() -> None:
        try:
            client.create_deployment("broken", f"models:/{model}/1", config={"timeout": "120"})
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=create)
    thread.start()
    plugin.await_isvc("broken")
    w.play("broken", "failed", "Container failed with: custom_predictor: the model's MLmodel names no flavor")
    thread.join(timeout=60)
    assert not thread.is_alive() and len(failure) == 1 and isinstance(failure[0], MlflowException)
    message = failure[0].message
    assert message.startswith("deployment 'broken' failed: RevisionFailed: Revision \"broken-predictor-00001\"")
    assert "custom_predictor: the model's MLmodel names no flavor" in message
    assert f"`mlflow deployments delete -t kserve:/{w.ns} --name broken` removes it" in message
    assert client.get_deployment("broken")["status"] == "failed"

    with pytest.raises(MlflowException) as late:  # nobody plays Knative for this one
        client.create_deployment("slow", f"models:/{model}/1", config={"timeout": "1"})
    assert late.value.message.startswith("deployment 'slow' not ready after 1s (status deploying)")
    assert client.get_deployment("slow")["status"] == "deploying"


def _untouched(now: dict[str, Any] | None, before: dict[str, Any], by: str) -> bool:
    """Same spec generation, labels and annotations, and `by` holds no field of it (KServe still writes status)."""
    assert now is not None
    managers = {e["manager"] for e in now["metadata"]["managedFields"]}
    same = all(now["metadata"].get(k) == before["metadata"].get(k) for k in ("generation", "labels", "annotations"))
    return same and by not in managers


def test_the_plugin_and_the_registry_adapter_never_touch_each_others_services(plugin: Plugin) -> None:
    w = plugin.world
    client = get_deploy_client(plugin.target)
    theirs = w.model("registry", stage="production")
    isvc = naming.isvc_name(theirs)
    rec = w.reconciler()
    assert rec.run_pass().by_model()[theirs].action == "created"
    before = w.isvc(isvc)
    assert before is not None
    for attempt in (
        lambda: client.update_deployment(isvc, f"models:/{theirs}/1", config={"min_replicas": "2"}),
        lambda: client.delete_deployment(isvc),
        lambda: client.create_deployment(isvc, f"models:/{theirs}/1"),
    ):
        with pytest.raises(MlflowException) as refused:
            attempt()
        assert "managed by the service-builder registry adapter" in refused.value.message
        assert "production marker" in refused.value.message
    line = one_error_line(plugin.cli("delete", "--name", isvc))
    assert "managed by the service-builder registry adapter" in line
    assert _untouched(w.isvc(isvc), before, by="service-builder-plugin")
    assert client.list_deployments() == []

    # The other way: a plugin deployment under the name the adapter would give a newly marked model.
    mine = w.model("mine")
    name = naming.isvc_name(mine)
    client.create_deployment(name, f"models:/{mine}/1", config={"timeout": "0"})
    kept = w.isvc(name)
    assert kept is not None
    w.mlflow.set_model_version_tag(mine, "1", "stage", "production")
    out = rec.run_pass().by_model()[mine]
    assert out.status == "failed" and out.action == "skipped"
    message = w.tags(mine, 1)["deployment.message"]
    assert message == (
        f"InferenceService {w.ns}/{name} is managed by the mlflow deployments plugin"
        f" (`mlflow deployments delete -t kserve:/{w.ns} --name {name}` removes it); left untouched"
    )
    assert _untouched(w.isvc(name), kept, by="service-builder")


def test_help_documents_every_config_key(plugin: Plugin) -> None:
    out = plugin.cli("help")
    assert out.returncode == 0, out.stderr
    for key, spec in overrides.FIELDS.items():
        assert f"  {key}" in out.stdout and spec.help in out.stdout, key
    for key in ("env.<NAME>", "timeout", "port"):
        assert f"  {key}" in out.stdout
    for command in ("create", "get", "predict", "update", "delete"):
        assert f"mlflow deployments {command} -t kserve:/" in out.stdout


def test_run_local_serves_the_version_with_a_predictor_process(plugin: Plugin) -> None:
    from tests.predictor import models

    model = f"{plugin.world.prefix}local"
    uri = models.train_classifier(model)
    port = free_port()
    proc = plugin.start("run-local", "--name", "risk", "-m", uri, "-C", f"port={port}", "-C", "env.LOG_LEVEL=DEBUG")
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=180, proc=proc)
        assert proc.stderr is not None
        key = ""
        while not key:  # the progress lines on stderr: the key is shown once, before the predictor's log
            line = proc.stderr.readline()
            assert line, "no API key was shown"
            key = line.split("API key (shown once): ", 1)[1].strip() if "API key (shown once): " in line else ""
        rows = _rows(3)
        body = json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()
        anonymous = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(anonymous, timeout=30)
        assert refused.value.code == 401
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            got = json.loads(answer.read())["predictions"]
        assert got == mlflow.pyfunc.load_model(uri).predict(rows).tolist()
    finally:
        stop_group(proc)
    assert plugin.world.isvcs() == []


def test_the_plugin_applies_and_retries_as_the_reconciler_does(plugin: Plugin, tmp_path, monkeypatch) -> None:
    """Through the fault proxy: refused applies are retried by the reconciler's own retry policy, and the one apply
    that goes through is the reconciler's (counted in its `service_builder_applies_total`)."""
    from adapter import metrics
    from tests.plugin.conftest import kubeconfig

    w = plugin.world
    s = w.settings
    config = kubeconfig(tmp_path / "proxied", w.kube.url, w.plane.ca, s.k8s_api_key.get_secret_value(), w.ns)
    monkeypatch.setenv("KUBECONFIG", str(config))
    model = w.model("retried")
    applied = metrics.REGISTRY.get_sample_value("service_builder_applies_total", {"result": "ok"}) or 0.0
    w.kube.inject("PATCH", f"{w.isvc_path}/retried", 503, times=2)
    w.kube.inject("GET", f"{w.isvc_path}/retried", 500)  # the read before the apply, once
    d = get_deploy_client(plugin.target).create_deployment("retried", f"models:/{model}/1", config={"timeout": 0})
    assert d["status"] == "deploying" and w.isvc("retried") is not None
    patches = [e[2] for e in w.kube.log if e[0] == "PATCH" and e[1].endswith("/retried")]
    assert patches == [503, 503, 201], "two refused, the third went through: one apply"
    assert metrics.REGISTRY.get_sample_value("service_builder_applies_total", {"result": "ok"}) == applied + 1
