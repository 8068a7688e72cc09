"""The local target end to end: real MLflow, real predictor processes on 127.0.0.1, no cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from adapter import naming
from adapter.errors import PermanentError
from adapter.local import LocalCluster, _alive
from adapter.reconcile import Reconciler
from adapter.registry import MlflowRegistry
from adapter.settings import AdapterSettings
from tests.predictor.models import FEATURES, breast_cancer, train_classifier
from tests.servers import free_port, sample, scrape

ROW = dict(zip(FEATURES, [float(x) for x in breast_cancer(1)[0][0]], strict=True))


def settings_for(tracking_uri: str, state: Path, prefix: str) -> AdapterSettings:
    return AdapterSettings(
        mlflow_tracking_uri=tracking_uri,
        deploy_target="local",
        service_builder_state_dir=state,
        model_name_like=f"{prefix}%",
        deploy_stage="",
    )


def run_env(tracking_uri: str, state: Path, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of `service-builder run` on the local target for the models named `prefix`..."""
    return dict(
        os.environ,
        MLFLOW_TRACKING_URI=tracking_uri,
        DEPLOY_TARGET="local",
        SERVICE_BUILDER_STATE_DIR=str(state),
        MODEL_NAME_LIKE=f"{prefix}%",
        **extra,
    )


def reconciler(s: AdapterSettings, cluster: LocalCluster) -> Reconciler:
    reg = MlflowRegistry(s.mlflow_tracking_uri, tag_key=s.tag_key, tag_value=s.tag_value, name_like=s.model_name_like)
    return Reconciler(s, reg, cluster, retry_delays=(0.1,))


def until(rec: Reconciler, name: str, status: str, timeout: float = 90.0) -> None:
    """Rounds of the `run` loop: a supervisor tick, then a pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec.cluster.tick()
        out = rec.run_pass().by_model().get(name)
        if out is not None and out.status == status:
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} not {status} after {timeout}s: {out}")


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def new_key(s: AdapterSettings) -> str:
    """An API key for the local predictors, made as `make demo` makes one: the predictor's keygen, into the state
    dir's keys file."""
    keys = s.local_api_keys_file
    Path(keys).parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "custom_predictor.auth", "keygen", "test", "--keys-file", keys]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def post(url: str, body: dict, key: str | None) -> dict:
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_local_target_lifecycle(tracking_uri: str, tmp_path: Path) -> None:
    prefix = f"loc{os.getpid()}-"
    name = f"{prefix}Risk"
    train_classifier(name)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    client.set_model_version_tag(name, "1", "stage", "production")
    s = settings_for(tracking_uri, tmp_path / "state", prefix)
    key = new_key(s)
    cluster = LocalCluster(s)
    rec = reconciler(s, cluster)
    isvc = naming.isvc_name(name)
    try:
        until(rec, name, "ready")
        tags = client.get_model_version(name, "1").tags
        url = tags["deployment.url"]
        assert url.startswith("http://127.0.0.1:") and tags["deployed"] == "true"
        assert tags["model_endpoint"] == f"{url}/{naming.service_path(name)}/api/"
        status, page = get(tags["model_endpoint"])
        assert status == 200 and b"swagger" in page.lower()
        predict = f"{url}/{naming.service_path(name)}/api/v1/predict"
        with pytest.raises(urllib.error.HTTPError) as refused:
            post(predict, {"records": [ROW]}, None)
        assert refused.value.code == 401  # local predictors want a key too
        pred = post(predict, {"records": [ROW]}, key)
        assert pred["version"] == "1" and len(pred["predictions"]) == 1

        # A second adapter on the same state dir is refused (no duplicates).
        with pytest.raises(PermanentError, match="another service-builder"):
            LocalCluster(s)

        # Crash: reported failed with its exit code and last log lines; reads (a pass, `status`) start nothing;
        # the supervisor's tick restarts it and it is ready again.
        state_file = s.service_builder_state_dir / "services" / f"{isvc}.json"
        pid = json.loads(state_file.read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)
        time.sleep(0.3)
        out = rec.run_pass().by_model()[name]
        assert out.status == "failed" and "exited with code -9" in out.message
        assert "exited with code" in client.get_model_version(name, "1").tags["deployment.message"]
        reader = LocalCluster(s, manage=False)
        for _ in range(3):
            (view,) = reader.list_owned()
            assert view["status"]["conditions"][0]["reason"] == "RevisionFailed"
            assert cluster.get(isvc)["status"]["conditions"][0]["status"] == "False"
            rec.run_pass()
        assert json.loads(state_file.read_text())["pid"] == pid, "a read restarted the predictor"
        reader.tick()  # a read-only cluster supervises nothing either
        assert json.loads(state_file.read_text())["pid"] == pid
        cluster.tick()
        new_pid = json.loads(state_file.read_text())["pid"]
        assert new_pid != pid and _alive(new_pid)
        # Until the restart is ready it is reported failed, with the crashed run's log lines (not the new run's).
        restarted = cluster.get(isvc)["status"]["conditions"][0]  # the new process needs about a second
        assert restarted["status"] == "False" and "exited with code -9: last log lines: " in restarted["message"]
        assert "Uvicorn running" in restarted["message"], "the crashed run's lines"
        until(rec, name, "ready")
        cluster.tick()  # the next supervision round forgets the crash of a predictor that is ready again
        recovered = json.loads(state_file.read_text())
        assert recovered["pid"] == new_pid and "lastExitCode" not in recovered and "lastLog" not in recovered

        # A new version replaces the process on the same URL.
        train_classifier(name)
        client.set_model_version_tag(name, "2", "stage", "production")
        until(rec, name, "ready")
        assert not _alive(new_pid)
        v2 = client.get_model_version(name, "2").tags
        assert v2["deployment.url"] == url and v2["deployed"] == "true"
        assert client.get_model_version(name, "1").tags["deployment.status"] == "superseded"
        assert post(predict, {"records": [ROW]}, key)["version"] == "2"

        # Retire: the process is gone.
        last_pid = json.loads((s.service_builder_state_dir / "services" / f"{isvc}.json").read_text())["pid"]
        client.delete_model_version_tag(name, "2", "stage")
        client.delete_model_version_tag(name, "1", "stage")  # else v1 is still marked: a rollback, not a retire
        out = rec.run_pass().by_model()[name]
        assert out.action == "deleted" and not _alive(last_pid)
        assert client.get_model_version(name, "2").tags["deployment.status"] == "retired"
    finally:
        cluster.close()


def test_run_stops_its_predictors_and_a_restart_makes_no_duplicate(tracking_uri: str, tmp_path: Path) -> None:
    prefix = f"run{os.getpid()}-"
    name = f"{prefix}model"
    train_classifier(name)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    client.set_registered_model_alias(name, "production", "1")
    state = tmp_path / "state"
    port = free_port()
    env = run_env(
        tracking_uri,
        state,
        prefix,
        POLL_INTERVAL_SECONDS="0.5",
        WEBHOOK_HOST="127.0.0.1",
        WEBHOOK_PORT=str(port),
        K8S_API="http://127.0.0.1:9",  # nothing there: the local target needs no Lease (its lock file does the job)
    )
    log = tmp_path / "run.log"

    def start() -> subprocess.Popen:
        with open(log, "a") as out:
            return subprocess.Popen([sys.executable, "-m", "adapter", "run"], env=env, stderr=out)

    def predictor_pids() -> set[int]:
        out = subprocess.run(
            ["pgrep", "-f", "-x", f"{sys.executable} -m custom_predictor"], capture_output=True, text=True
        )
        mine = set()
        for pid in map(int, out.stdout.split()):
            try:
                # Predictors get an allow-listed env: find ours by this model's service path.
                if f"SERVICE_PATH={naming.service_path(name)}\0".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                    mine.add(pid)
            except OSError:
                pass
        return mine

    def wait_ready(timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.get_model_version(name, "1").tags.get("deployment.status") == "ready":
                return
            time.sleep(0.3)
        raise AssertionError("not ready")

    first = start()
    try:
        wait_ready()
        pids = predictor_pids()
        assert len(pids) == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            assert json.loads(r.read()) == {"status": "ready", "leader": True}
        assert sample(scrape(f"http://127.0.0.1:{port}/metrics"), "service_builder_leader") == 1
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        time.sleep(0.5)
        assert predictor_pids() == set(), "run left an orphan predictor"
        client.delete_model_version_tag(name, "1", "deployment.status")  # forget, so readiness is re-proven
        second = start()
        try:
            wait_ready()
            assert len(predictor_pids()) == 1
        finally:
            second.send_signal(signal.SIGINT)
            assert second.wait(timeout=30) == 0
        assert predictor_pids() == set()
        text = log.read_text()
        assert "Lease" not in text and "Traceback" not in text
    finally:
        for p in (first,):
            if p.poll() is None:
                p.kill()


def test_a_model_that_cannot_be_served_reports_the_predictors_line(tracking_uri: str, tmp_path: Path) -> None:
    """A failed self-test ends the predictor with one line; the local target reports that line (as Knative does
    from the termination message), keeps the service failed without restarting it, and MLflow shows it."""
    import tempfile

    import yaml

    from tests.predictor import models

    prefix = f"bad{os.getpid()}-"
    name = f"{prefix}Risk"
    with tempfile.TemporaryDirectory() as tmp:
        folder = models.save_contract_model(Path(tmp) / "model", contract=models.contract_dict(expected=[1, 1, 1]))
        assert yaml.safe_load((folder / "contract.yaml").read_text())["test_data"]["expected"] == [1, 1, 1]
        models._register(folder, name)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    client.set_model_version_tag(name, "1", "stage", "production")
    s = settings_for(tracking_uri, tmp_path / "state", prefix)
    cluster = LocalCluster(s)
    rec = reconciler(s, cluster)
    try:
        until(rec, name, "failed")
        reason = "self-test failed: test_data row 0: expected 1, the model returned 0"
        line = f"custom_predictor: model {name} version 1 cannot be served: {reason}"
        message = client.get_model_version(name, "1").tags["deployment.message"]
        assert message.endswith(f"predictor exited with code 2: {line}"), message
        state = json.loads((s.service_builder_state_dir / "services" / f"{naming.isvc_name(name)}.json").read_text())
        time.sleep(1.5)  # past the first restart delay: a model that cannot be served is not restarted
        cluster.tick()  # records the exit
        cluster.tick()  # would restart a crashed predictor
        assert rec.run_pass().by_model()[name].status == "failed"
        again = json.loads((s.service_builder_state_dir / "services" / f"{naming.isvc_name(name)}.json").read_text())
        assert again["pid"] == 0 and again["exitCode"] == 2 and again["revision"] == state["revision"]
    finally:
        cluster.close()


def test_run_learns_of_readiness_and_exits_from_the_supervisor(tracking_uri: str, tmp_path: Path) -> None:
    """With POLL_INTERVAL_SECONDS=600 only the supervisor's news can move the status: ready as soon as the predictor
    answers, failed as soon as it dies, ready again once its restart answers."""
    prefix = f"news{os.getpid()}-"
    name = f"{prefix}model"
    train_classifier(name)
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    client.set_model_version_tag(name, "1", "stage", "production")
    state = tmp_path / "state"
    env = run_env(tracking_uri, state, prefix, DEPLOY_STAGE="", POLL_INTERVAL_SECONDS="600", WEBHOOK_PORT="0")
    log = tmp_path / "run.log"

    def status() -> str:
        return str(client.get_model_version(name, "1").tags.get("deployment.status"))

    def wait(what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while status() != what:
            assert time.monotonic() < deadline, f"not {what} after {timeout}s: {status()}"
            time.sleep(0.2)

    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "adapter", "run"], env=env, stderr=out)
    try:
        wait("ready")
        state_file = state / "services" / f"{naming.isvc_name(name)}.json"
        pid = json.loads(state_file.read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)
        wait("failed")
        assert "exited with code -9" in client.get_model_version(name, "1").tags["deployment.message"]
        wait("ready")  # restarted by the supervisor after its backoff, and reported as soon as it answers
        assert json.loads(state_file.read_text())["pid"] != pid
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert "cause=change" in text, "the supervisor's news woke the reconciles"
    assert text.count("Full pass") <= 1, "one full pass at start; the poll never came"
