"""The run loop's watch against the real kube-apiserver and KServe controller (Knative played), real MLflow, and the
fault proxy in between: with POLL_INTERVAL_SECONDS=600 and no webhooks, KServe's status reaches MLflow through the
watch alone, and still does when the watch is dropped mid-stream, expires (a real 410 Gone from the API server),
meets 500s and 429s on the watch or on the relist, or stalls silently. Each converges with one apply and no
wrong tag (every `deployment.status` the adapter wrote is logged and checked). Also: a rollout fails at its
deadline, not at the next poll, and an idle adapter calls nothing."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adapter import metrics, naming
from adapter.manager import Manager
from tests.adapter.conftest import World


def until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def restarts(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("service_builder_watch_restarts_total", {"reason": reason}) or 0.0


@pytest.fixture
def adapter(world: World, caplog: pytest.LogCaptureFixture) -> Iterator[Callable[..., Manager]]:
    """`start(**settings)`: `service-builder run`'s loop in a thread (POLL_INTERVAL_SECONDS=600, no webhooks, one
    replica), reaching the API server through the fault proxy."""
    caplog.set_level(logging.INFO)
    running: list[tuple[Manager, threading.Thread]] = []

    def start(**settings: Any) -> Manager:
        world.settings = world.settings.model_copy(
            update={"poll_interval_seconds": 600, "webhook_port": 0, "leader_election": False, **settings}
        )
        manager = Manager.from_settings(world.settings, world.reconciler())
        thread = threading.Thread(target=manager.run, name="run-loop", daemon=True)
        thread.start()
        running.append((manager, thread))
        return manager

    yield start
    for manager, thread in running:
        manager.shutdown()
        thread.join(timeout=30)
        assert not thread.is_alive()


def tagged(caplog: pytest.LogCaptureFixture, name: str, version: str = "1") -> list[str]:
    """Every `deployment.status` the adapter wrote to this version, in order."""
    out = []
    for r in caplog.records:
        text = r.getMessage()
        if text.startswith("Tagged model version") and f"model={name} " in text and f" version={version} " in text:
            out.append(re.search(r"status=(\w+)", text).group(1))  # type: ignore[union-attr]
    return out


def deploying(world: World, adapter: Callable[..., Manager], **settings: Any) -> tuple[str, str]:
    """A model marked production, applied by the loop's first pass, its watch open, and all quiet: KServe has
    stopped writing the service, and no reconcile is queued or running (one would read whatever is there, watch
    or not). Returns (model, InferenceService)."""
    name = world.model("watched", stage="production")
    isvc = naming.isvc_name(name)
    manager = adapter(**settings)
    until(lambda: world.tags(name, 1).get("deployment.status") == "deploying", 60, "the first pass")
    until(lambda: world.kube.open_watches() == 1, 30, "the watch")
    seen = {"version": "", "since": time.monotonic()}

    def quiet() -> bool:
        version = str(((world.isvc(isvc) or {}).get("metadata") or {}).get("resourceVersion"))
        if version != seen["version"]:
            seen.update(version=version, since=time.monotonic())
        due = [manager.queue.due_in(n) for n in manager.queue.pending]  # (the rollout's deadline is, in 600 s)
        idle = all(d is not None and d > 60 for d in due) and not manager.in_pass.is_set()
        return idle and time.monotonic() - float(seen["since"]) > 1.5

    until(quiet, 30, "KServe and the adapter to be done with the first apply")
    return name, isvc


def lists(world: World) -> int:
    return world.kube.count("GET", world.isvc_path, watch=False) - world.kube.count(
        "GET", world.isvc_path + "/", watch=False
    )


def converged(world: World, caplog: pytest.LogCaptureFixture, name: str, isvc: str) -> None:
    until(lambda: world.tags(name, 1).get("deployment.status") == "ready", 60, "ready, through the watch")
    t = world.tags(name, 1)
    assert t["deployed"] == "true" and t["deployment.url"] and "deployment.message" not in t
    assert world.kube.count("PATCH", f"{world.isvc_path}/{isvc}") == 1, "one apply"
    assert tagged(caplog, name) == ["deploying", "ready"], "no wrong tag on the way"


def test_kserves_status_reaches_mlflow_through_the_watch_alone(world: World, adapter, caplog) -> None:
    name, isvc = deploying(world, adapter)
    world.play(isvc, "ready")
    converged(world, caplog, name, isvc)


def test_failed_and_superseded_reach_mlflow_through_the_watch(world: World, adapter, caplog) -> None:
    name = world.model("rolled", stage="production")
    isvc = naming.isvc_name(name)
    manager = adapter()
    until(lambda: world.tags(name, 1).get("deployment.status") == "deploying", 60, "the first pass")
    world.play(isvc, "ready")
    until(lambda: world.tags(name, 1).get("deployment.status") == "ready", 60, "v1 ready")
    world.mlflow.create_model_version(name, "s3://models/none", tags={"stage": "production"})
    manager.queue.request(name, reason="webhook")  # what the webhook would do
    until(lambda: world.tags(name, 2).get("deployment.status") == "deploying", 60, "v2 applied")
    world.play(isvc, "failed", message="the model cannot be served")
    until(lambda: world.tags(name, 2).get("deployment.status") == "failed", 60, "v2 failed, through the watch")
    assert "the model cannot be served" in world.tags(name, 2)["deployment.message"]
    assert world.tags(name, 1)["deployed"] == "true", "v1 still serves"
    world.mlflow.create_model_version(name, "s3://models/none", tags={"stage": "production"})
    manager.queue.request(name, reason="webhook")
    until(lambda: world.tags(name, 3).get("deployment.status") == "deploying", 60, "v3 applied")
    world.play(isvc, "ready")
    until(lambda: world.tags(name, 1).get("deployment.status") == "superseded", 60, "v1 superseded")
    assert world.tags(name, 3)["deployment.status"] == "ready"
    assert world.kube.count("PATCH", f"{world.isvc_path}/{isvc}") == 3, "one apply per version"
    assert tagged(caplog, name, "2") == ["deploying", "failed", "superseded"]


def test_a_watch_dropped_mid_stream_resumes_where_it_was(world: World, adapter, caplog) -> None:
    name, isvc = deploying(world, adapter)
    listed, errors = lists(world), restarts("error")
    assert world.kube.stall_watches() == 1  # the events below stay in flight ...
    world.play(isvc, "ready")
    assert world.kube.cut_watches() == 1  # ... and the connection drops with them
    converged(world, caplog, name, isvc)
    assert restarts("error") > errors and lists(world) == listed, "resumed from its version, no relist"


def test_a_watch_that_expires_lists_again(world: World, adapter, caplog) -> None:
    name, isvc = deploying(world, adapter)
    listed, expired = lists(world), restarts("expired")
    assert world.kube.stall_watches() == 1
    world.play(isvc, "ready")
    world.kube.expire_watches()  # the next watch asks for a version the API server no longer holds: 410 Gone
    world.kube.cut_watches()
    converged(world, caplog, name, isvc)
    assert restarts("expired") == expired + 1 and lists(world) == listed + 1, "one relist, which found the change"


@pytest.mark.parametrize("status", [500, 429])
def test_errors_on_the_watch_are_backed_off(world: World, adapter, caplog, status: int) -> None:
    name, isvc = deploying(world, adapter)
    listed = lists(world)
    assert world.kube.stall_watches() == 1
    world.play(isvc, "ready")
    world.kube.inject("GET", world.isvc_path, status, headers={"Retry-After": "1"}, times=2, watch=True)
    world.kube.cut_watches()
    converged(world, caplog, name, isvc)
    failed = [e for e in world.kube.requests(watch=True) if e[2] == status]
    assert len(failed) == 2 and lists(world) == listed, "two refused watches, then resumed without a relist"


def test_errors_on_the_relist_are_backed_off(world: World, adapter, caplog) -> None:
    name, isvc = deploying(world, adapter)
    listed = lists(world)
    assert world.kube.stall_watches() == 1
    world.play(isvc, "ready")
    world.kube.expire_watches()
    the_list = re.compile(re.escape(world.isvc_path) + "$")
    world.kube.inject("GET", the_list, 500, watch=False)
    world.kube.inject("GET", the_list, 429, headers={"Retry-After": "1"}, watch=False)
    world.kube.cut_watches()
    converged(world, caplog, name, isvc)
    refused = [e[2] for e in world.kube.requests(watch=False) if e[1] == world.isvc_path and e[2] in (500, 429)]
    assert refused == [500, 429] and lists(world) == listed + 3, "two refused relists, then one that worked"


def test_a_silently_stalled_watch_is_restarted(world: World, adapter, caplog) -> None:
    name, isvc = deploying(world, adapter, watch_stall_seconds=3)
    listed, stalled = lists(world), restarts("stalled")
    world.kube.stall_watches(new_ones=True)  # open, and silent: no event, no bookmark, not even its end
    world.play(isvc, "ready")
    until(lambda: restarts("stalled") > stalled, 30, "the adapter to give up on the silent watch")
    assert world.tags(name, 1)["deployment.status"] == "deploying", "nothing came through"
    world.kube.resume_watches()
    converged(world, caplog, name, isvc)
    assert lists(world) == listed, "restarted from its version, no relist"


def test_a_rollout_fails_at_its_deadline_not_at_the_next_poll(world: World, adapter, caplog) -> None:
    name, _ = deploying(world, adapter, rollout_deadline_seconds=3)
    until(lambda: world.tags(name, 1).get("deployment.status") == "failed", 30, "the deadline (the poll is 600 s)")
    assert "ProgressDeadlineExceeded: not ready after 3s" in world.tags(name, 1)["deployment.message"]
    assert tagged(caplog, name) == ["deploying", "failed"]


def test_an_idle_adapter_calls_nothing(world: World, adapter, caplog) -> None:
    name, isvc = deploying(world, adapter)
    world.play(isvc, "ready")
    converged(world, caplog, name, isvc)
    time.sleep(2.0)  # KServe's last status writes, and the reconciles they wake, are over
    world.kube.reset_log()
    mlflow_before = sum(
        v for (n, labels), v in _samples("service_builder_api_calls_total").items() if ("system", "mlflow") in labels
    )
    time.sleep(5.0)
    assert world.kube.log == [], "no Kubernetes request but the watch that stays open"
    mlflow_after = sum(
        v for (n, labels), v in _samples("service_builder_api_calls_total").items() if ("system", "mlflow") in labels
    )
    assert mlflow_after == mlflow_before, "no MLflow call"
    assert world.kube.open_watches() == 1


def _samples(name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.REGISTRY.collect()
        for s in family.samples
        if s.name == name
    }
