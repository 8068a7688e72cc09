"""The adapter's Prometheus metrics as the real servers drive them: calls and errors per system and kind (real
MLflow, the real kube-apiserver through the fault proxy), and a pass's duration, result and last-success time
(`manager.observed_pass` around a real reconcile)."""

from __future__ import annotations

import time

import pytest

from adapter import metrics, naming
from adapter.errors import NotFoundError, TransientError
from adapter.manager import observed_pass
from adapter.registry import MlflowRegistry
from tests.adapter.conftest import World


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def calls(system: str, kind: str) -> tuple[float, float]:
    return (
        value("service_builder_api_calls_total", system=system, kind=kind),
        value("service_builder_api_errors_total", system=system, kind=kind),
    )


def test_mlflow_calls_and_errors_by_kind(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    live = MlflowRegistry(tracking_uri, tag_key="stage", tag_value="production", name_like="no-such-%")
    before = calls("mlflow", "search_registered_models")
    live.snapshot()
    assert calls("mlflow", "search_registered_models") == (before[0] + 1, before[1])
    before = calls("mlflow", "get_model_version")
    with pytest.raises(NotFoundError):
        live.get_version("no-such-model", "1")
    assert calls("mlflow", "get_model_version") == (before[0] + 1, before[1]), "not found is an answer"
    down = MlflowRegistry("http://127.0.0.1:9", tag_key="stage", tag_value="production")
    before = calls("mlflow", "search_registered_models")
    with pytest.raises(TransientError):
        down.snapshot()
    assert calls("mlflow", "search_registered_models") == (before[0] + 1, before[1] + 1)


def test_kubernetes_calls_and_errors_by_kind(world: World) -> None:
    cluster = world.reconciler().cluster
    before = calls("kubernetes", "get_inferenceservice")
    assert cluster.get("absent") is None
    assert calls("kubernetes", "get_inferenceservice") == (before[0] + 1, before[1]), "404 is an answer"
    world.kube.inject("GET", "/inferenceservices", 500)
    before = calls("kubernetes", "list_inferenceservices")
    with pytest.raises(TransientError):
        cluster.list_owned()
    assert calls("kubernetes", "list_inferenceservices") == (before[0] + 1, before[1] + 1)
    world.kube.drop("GET", "/inferenceservices", times=None)  # every try, urllib3's own retries included
    with pytest.raises(TransientError, match="unreachable"):
        cluster.list_owned()
    world.kube.clear_faults()
    assert calls("kubernetes", "list_inferenceservices") == (before[0] + 2, before[1] + 2)


def test_a_pass_is_timed_and_counted_by_result(world: World) -> None:
    rec = world.reconciler()
    name = world.model("counted", stage="production")

    def snapshot() -> tuple[float, float, float, float, float]:
        return (
            value("service_builder_passes_total", result="ok"),
            value("service_builder_passes_total", result="skipped"),
            value("service_builder_passes_total", result="error"),
            value("service_builder_pass_duration_seconds_count"),
            value("service_builder_last_successful_pass_timestamp_seconds"),
        )

    ok, skipped, error, timed, _ = snapshot()
    started = time.time()
    assert observed_pass(rec)[0] == "ok"
    assert world.isvc(naming.isvc_name(name)) is not None
    after = snapshot()
    assert after[:4] == (ok + 1, skipped, error, timed + 1)
    assert started <= after[4] <= time.time()

    world.kube.inject("GET", "/inferenceservices", 503)  # the pass cannot read the cluster: skipped
    assert observed_pass(rec)[0] == "skipped"
    skipped_after = snapshot()
    assert skipped_after[:4] == (ok + 1, skipped + 1, error, timed + 2)
    assert skipped_after[4] == after[4], "a skipped pass reached nothing: no new success time"

    world.mlflow.create_model_version(name, source="s3://models/none", tags={"stage": "production"})
    world.kube.inject("PATCH", "/inferenceservices/", 500, times=None)  # its apply fails: the model is in error
    assert observed_pass(rec)[0] == "error"
    world.kube.clear_faults()
    error_after = snapshot()
    assert error_after[:4] == (ok + 1, skipped + 1, error + 1, timed + 3)
    assert error_after[4] > after[4], "a pass with models in error still reached MLflow and Kubernetes"
