"""Unit tests of the reconcile core, with fakes at the adapter's own Registry/Cluster boundary."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from adapter import naming
from adapter.reconcile import Reconciler
from adapter.settings import AdapterSettings
from tests.adapter.fakes import FakeCluster, FakeRegistry, permanent, transient


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        self.mono = 1000.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.advance(s)

    def advance(self, s: float) -> None:
        self.t += timedelta(seconds=s)
        self.mono += s


@pytest.fixture
def env():
    settings = AdapterSettings(k8s_name_space="models", predictor_image="img:1", rollout_deadline_seconds=600)
    reg, cluster, clock = FakeRegistry(), FakeCluster(), Clock()
    rec = Reconciler(settings, reg, cluster, now=clock.now, monotonic=clock.monotonic, sleep=clock.sleep)
    return rec, reg, cluster, clock


def serve(env, name: str = "risk", version: str = "1") -> None:
    """Mark `version` production and converge until KServe reports it ready."""
    rec, reg, cluster, _ = env
    reg.add(name, version, stage="production")
    rec.run_pass()
    cluster.roll(name, "ready")
    rec.run_pass()


def tags(reg: FakeRegistry, name: str, version: str) -> dict[str, str]:
    return dict(reg.versions[(name, version)].tags)


def test_production_version_is_created_then_ready(env) -> None:
    rec, reg, cluster, _ = env
    reg.add("risk", "1", stage="production")
    reg.add("other", "1")
    out = rec.run_pass().by_model()
    assert set(out) == {"risk"}
    assert (out["risk"].action, out["risk"].status) == ("created", "deploying")
    t = tags(reg, "risk", "1")
    assert t["deployment.status"] == "deploying" and t["deployed"] == "false"
    assert t["deployment.inferenceservice"] == "models/risk"
    assert "risk" in cluster.objects

    cluster.roll("risk", "ready")
    out = rec.run_pass().by_model()
    assert (out["risk"].action, out["risk"].status) == ("unchanged", "ready")
    t = tags(reg, "risk", "1")
    assert t["deployment.status"] == "ready" and t["deployed"] == "true"
    assert t["deployment.url"] == "http://risk-predictor.models.example.com"
    assert t["model_endpoint"] == "http://risk-predictor.models.example.com/risk/api/"
    assert t["deployment.revision"] == "risk-predictor-00001"
    assert "deployment.message" not in t
    assert reg.model_tags["risk"] == {"deployed": "true", "deployed_version": "1"}


def test_second_pass_with_nothing_new_writes_nothing(env) -> None:
    rec, reg, cluster, _ = env
    serve(env)
    before_reg, before_k8s = sum(reg.writes.values()), sum(cluster.writes.values())
    out = rec.run_pass().by_model()
    assert out["risk"].action == "unchanged" and out["risk"].tag_writes == 0
    assert sum(reg.writes.values()) == before_reg and sum(cluster.writes.values()) == before_k8s


def test_new_version_rolls_out_and_supersedes_the_old_one_once_ready(env) -> None:
    rec, reg, cluster, _ = env
    serve(env)
    reg.add("risk", "2", stage="production")
    out = rec.run_pass().by_model()
    assert (out["risk"].version, out["risk"].action, out["risk"].status) == ("2", "updated", "deploying")
    annotations = cluster.objects["risk"]["metadata"]["annotations"]
    assert annotations["service-builder.io/base-revision"] == "risk-predictor-00001"  # on the object, not in MLflow
    assert "deployment.base_revision" not in tags(reg, "risk", "2")
    # The old Ready is the previous revision's: v2 is not ready, v1 still serves.
    out = rec.run_pass().by_model()
    assert out["risk"].status == "deploying"
    assert tags(reg, "risk", "1")["deployed"] == "true"
    assert reg.model_tags["risk"]["deployed_version"] == "1"
    cluster.roll("risk", "rolling")
    assert rec.run_pass().by_model()["risk"].status == "deploying"
    cluster.roll("risk", "ready")
    assert rec.run_pass().by_model()["risk"].status == "ready"
    t1, t2 = tags(reg, "risk", "1"), tags(reg, "risk", "2")
    assert (t1["deployment.status"], t1["deployed"]) == ("superseded", "false") and "model_endpoint" not in t1
    assert (t2["deployment.status"], t2["deployed"]) == ("ready", "true")
    assert reg.model_tags["risk"] == {"deployed": "true", "deployed_version": "2"}


def test_failed_new_version_leaves_the_old_one_serving(env) -> None:
    rec, reg, cluster, _ = env
    serve(env)
    reg.add("risk", "2", stage="production")
    rec.run_pass()
    cluster.roll("risk", "failed", 'Revision "risk-predictor-00002" failed with message: ExitCode1')
    out = rec.run_pass().by_model()
    assert out["risk"].status == "failed"
    t2 = tags(reg, "risk", "2")
    assert t2["deployment.status"] == "failed" and "ExitCode1" in t2["deployment.message"]
    assert t2["deployed"] == "false"
    assert tags(reg, "risk", "1")["deployed"] == "true"
    assert reg.model_tags["risk"]["deployed_version"] == "1"
    # Moving the marker back to v1 rolls back; v2 is superseded.
    reg.tag("risk", "2", "stage", None)
    out = rec.run_pass().by_model()
    assert (out["risk"].version, out["risk"].action) == ("1", "updated")
    assert tags(reg, "risk", "2")["deployment.status"] == "superseded"
    # v1 never stopped serving: it stays deployed through its own re-rollout.
    t1 = tags(reg, "risk", "1")
    assert t1["deployed"] == "true" and "model_endpoint" in t1
    assert reg.model_tags["risk"] == {"deployed": "true", "deployed_version": "1"}
    cluster.roll("risk", "ready")
    assert rec.run_pass().by_model()["risk"].status == "ready"
    assert tags(reg, "risk", "1")["deployment.status"] == "ready"


def test_retire_deletes_the_service_and_marks_the_version(env) -> None:
    rec, reg, cluster, _ = env
    serve(env)
    reg.tag("risk", "1", "stage", "archived")
    out = rec.run_pass().by_model()
    assert (out["risk"].action, out["risk"].status) == ("deleted", "retired")
    assert "risk" not in cluster.objects
    t = tags(reg, "risk", "1")
    assert (t["deployment.status"], t["deployed"]) == ("retired", "false") and "model_endpoint" not in t
    assert reg.model_tags["risk"] == {"deployed": "false"}
    writes = sum(reg.writes.values()) + sum(cluster.writes.values())
    assert rec.run_pass().outcomes == [] and sum(reg.writes.values()) + sum(cluster.writes.values()) == writes


def test_alias_selection_and_deleted_model(env) -> None:
    rec, reg, cluster, _ = env
    reg.add("risk", "1")
    reg.add("risk", "2")
    reg.aliases["risk"]["production"] = "2"
    assert rec.run_pass().by_model()["risk"].version == "2"
    # The model disappears from MLflow altogether: its service is deleted all the same.
    reg.versions.clear()
    reg.model_tags.clear()
    reg.aliases.clear()
    out = rec.run_pass().by_model()
    assert out["risk"].action == "deleted" and not cluster.objects


def test_unowned_service_with_the_wanted_name_is_never_touched(env) -> None:
    rec, reg, cluster, _ = env
    cluster.objects["risk"] = {"metadata": {"name": "risk", "labels": {}, "annotations": {}}, "spec": {"x": 1}}
    reg.add("risk", "1", stage="production")
    out = rec.run_pass().by_model()
    assert out["risk"].status == "failed"
    t = tags(reg, "risk", "1")
    assert t["deployment.status"] == "failed" and "not managed by service-builder" in t["deployment.message"]
    assert cluster.objects["risk"]["spec"] == {"x": 1} and cluster.writes["apply"] == 0
    # Removing the marker never deletes what is not ours.
    reg.tag("risk", "1", "stage", None)
    rec.run_pass()
    assert "risk" in cluster.objects and cluster.writes["delete"] == 0


def test_colliding_names_are_caught(env) -> None:
    rec, reg, cluster, _ = env
    reg.add("Risk Model", "1", stage="production")
    rec.run_pass()
    taken = naming.isvc_name("Risk Model")
    # A second model literally named like the first one's service name.
    reg.add(taken, "1", stage="production")
    out = rec.run_pass().by_model()
    assert out[taken].status == "failed" and "already serves MLflow model 'Risk Model'" in out[taken].message
    assert cluster.objects[taken]["metadata"]["annotations"]["mlflow.org/model-name"] == "Risk Model"


def test_transient_errors_are_retried_within_the_pass(env) -> None:
    rec, reg, cluster, clock = env
    reg.add("risk", "1", stage="production")
    cluster.errors["apply"] = [transient(), transient("429 Too Many Requests")]
    out = rec.run_pass().by_model()
    assert out["risk"].action == "created" and clock.slept == [0.2, 0.5]


def test_persistent_transient_error_backs_off_one_model_only(env) -> None:
    rec, reg, cluster, clock = env
    reg.add("a", "1", stage="production")
    reg.add("b", "1", stage="production")
    cluster.errors["apply"] = [transient() for _ in range(5)]  # 'a' goes first and eats them all
    out = rec.run_pass().by_model()
    assert out["a"].action == "error" and out["b"].action == "created"
    assert out["a"].requeue_after == 1.0, "looked at again when the backoff ends, event or not"
    clock.advance(0.25)
    again = rec.run_pass().by_model()["a"]
    assert again.action == "skipped" and again.requeue_after == 0.75  # backing off, for what is left of it
    clock.advance(1.25)
    assert rec.run_pass().by_model()["a"].action == "created"


def test_permanent_error_fails_and_is_not_retried_until_input_changes(env) -> None:
    rec, reg, cluster, _ = env
    reg.add("risk", "1", stage="production")
    cluster.errors["apply"] = [permanent()]
    out = rec.run_pass().by_model()
    assert out["risk"].status == "failed"
    assert "422" in tags(reg, "risk", "1")["deployment.message"]
    assert rec.run_pass().by_model()["risk"].action == "skipped" and cluster.writes["apply"] == 0
    reg.add("risk", "2", stage="production")
    assert rec.run_pass().by_model()["risk"].action == "created"


def test_rollout_deadline(env) -> None:
    rec, reg, _cluster, clock = env
    reg.add("risk", "1", stage="production")
    assert rec.run_pass().by_model()["risk"].requeue_after == pytest.approx(600.05)
    clock.advance(599)
    out = rec.run_pass().by_model()["risk"]
    assert out.status == "deploying" and out.requeue_after == pytest.approx(1.05), "requeued for the deadline"
    clock.advance(out.requeue_after)
    out = rec.run_pass(only=["risk"]).by_model()["risk"]
    assert out.status == "failed" and "ProgressDeadlineExceeded" in out.message, "failed at the deadline"
    assert out.requeue_after is None
    assert rec.run_pass().by_model()["risk"].tag_writes == 0


def test_a_ready_rollout_asks_for_no_requeue(env) -> None:
    rec = env[0]
    serve(env)
    assert rec.run_pass().by_model()["risk"].requeue_after is None


def test_a_targeted_reconcile_reads_its_models_services_only(env) -> None:
    rec, reg, cluster, _ = env
    serve(env, "a")
    serve(env, "b")
    cluster.reads.clear()
    reg.add("a", "2", stage="production")
    out = rec.run_pass(only={"a"}).by_model()
    assert set(out) == {"a"} and out["a"].action == "updated"
    assert cluster.reads == {"get": 1}, "one get, no list of the namespace"
    cluster.reads.clear()
    assert set(rec.run_pass().by_model()) == {"a", "b"} and cluster.reads == {"list": 1}


def test_crash_between_apply_and_write_back_converges(env) -> None:
    rec, reg, cluster, clock = env
    reg.add("risk", "1", stage="production")
    rec.run_pass()
    cluster.roll("risk", "ready")

    class Crash(BaseException):
        pass

    reg.add("risk", "2", stage="production")
    # Let the intent write go through, then die at the first write after the apply.
    original = reg.set_version_tags
    calls = {"n": 0}

    def flaky(name, version, t):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash()
        original(name, version, t)

    reg.set_version_tags = flaky  # type: ignore[method-assign]
    with pytest.raises(Crash):
        rec.run_pass()
    reg.set_version_tags = original  # type: ignore[method-assign]
    assert cluster.writes["apply"] == 2
    fresh = Reconciler(rec.settings, reg, cluster, now=clock.now, monotonic=clock.monotonic, sleep=clock.sleep)
    assert fresh.run_pass().by_model()["risk"].action == "unchanged"
    assert cluster.writes["apply"] == 2
    cluster.roll("risk", "ready")
    assert fresh.run_pass().by_model()["risk"].status == "ready"
    assert tags(reg, "risk", "1")["deployment.status"] == "superseded"


def test_registry_down_skips_the_pass_with_one_line(env, caplog) -> None:
    rec, reg, _cluster, _ = env
    from adapter.errors import TransientError

    def down():
        raise TransientError("MLflow at http://x unreachable (search_registered_models)")

    reg.snapshot = down  # type: ignore[method-assign]
    result = rec.run_pass()
    assert not result.ok and "unreachable" in result.error
    assert [r.levelname for r in caplog.records if "Pass skipped" in r.getMessage()] == ["WARNING"]


def test_an_unexpected_error_fails_one_model_only(env) -> None:
    rec, reg, cluster, _ = env
    reg.add("a", "1", stage="production")
    reg.add("b", "1", stage="production")
    cluster.errors["apply"] = [RuntimeError("boom")]
    out = rec.run_pass().by_model()
    assert out["a"].action == "error" and "RuntimeError" in out["a"].message
    assert out["b"].action == "created"
    assert rec.run_pass().by_model()["a"].action == "created"


def test_retire_after_a_canary_clears_traffic_tags(env) -> None:
    rec, reg, _cluster, _ = env
    serve(env)
    reg.tag("risk", "1", "deployment.traffic", "v2:10% v1:90%")
    reg.tag("risk", "1", "deployment.revision_url", "http://prev-risk")
    reg.tag("risk", "1", "stage", None)
    rec.run_pass()
    t = tags(reg, "risk", "1")
    assert t["deployment.status"] == "retired"
    assert "deployment.traffic" not in t and "deployment.revision_url" not in t


class TimedRegistry(FakeRegistry):
    """Records each version-tag call's key and time span, and how many calls were in flight at once."""

    def __init__(self, fail_key: str = "") -> None:
        super().__init__()
        self.calls: list[tuple[str, str, float, float]] = []  # (model, key, start, end)
        self.in_flight = self.most_in_flight = 0
        self.fail_key = fail_key
        self._guard = threading.Lock()

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str | None]) -> None:
        (key,) = tags  # the executor sends one tag per call
        with self._guard:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        start = time.monotonic()
        try:
            time.sleep(0.02)
            if key == self.fail_key:
                raise permanent(f"400 cannot set {key}")
            super().set_version_tags(name, version, tags)
        finally:
            with self._guard:
                self.in_flight -= 1
                self.calls.append((name, key, start, time.monotonic()))


def _timed(fail_key: str = "", concurrency: int = 4) -> tuple[Reconciler, TimedRegistry, FakeCluster]:
    settings = AdapterSettings(k8s_name_space="models", predictor_image="img:1", writeback_concurrency=concurrency)
    reg, cluster = TimedRegistry(fail_key), FakeCluster()
    return Reconciler(settings, reg, cluster, sleep=lambda _: None), reg, cluster


def test_tags_of_a_write_go_out_together_and_the_status_after_all_of_them() -> None:
    rec, reg, cluster = _timed()
    for name in ("a", "b", "c"):
        reg.add(name, "1", stage="production")
    rec.run_pass()
    for name in ("a", "b", "c"):
        cluster.roll(name, "ready")
    reg.calls.clear()
    out = rec.run_pass().by_model()
    assert all(o.status == "ready" for o in out.values())
    for name in ("a", "b", "c"):
        mine = [c for c in reg.calls if c[0] == name]
        (status,) = [c for c in mine if c[1] == "deployment.status"]
        others = [c for c in mine if c[1] != "deployment.status"]
        assert {c[1] for c in others} >= {"deployed", "model_endpoint", "deployment.url", "deployment.revision"}
        assert all(c[3] <= status[2] for c in others), f"{name}: status written before the tags it vouches for"
    assert 1 < reg.most_in_flight <= 4, reg.most_in_flight  # concurrent, and bounded by WRITEBACK_CONCURRENCY


def test_a_tag_that_cannot_be_written_keeps_the_status_from_being_written() -> None:
    rec, reg, cluster = _timed(fail_key="model_endpoint")
    reg.add("risk", "1", stage="production")
    rec.run_pass()
    cluster.roll("risk", "ready")
    out = rec.run_pass().by_model()["risk"]
    assert out.action == "error" and "cannot set model_endpoint" in out.message
    assert tags(reg, "risk", "1")["deployment.status"] != "ready", "ready without its endpoint"
