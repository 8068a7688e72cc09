"""Unit tests of the adapter's pure parts: naming, selection, rendering (against the real CRD), rollout."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from adapter import naming
from adapter.render import TemplateError, render, to_yaml
from adapter.rollout import interpret
from adapter.selection import select
from adapter.settings import AdapterSettings
from adapter.types import ModelInfo, VersionInfo
from tests.adapter import crd

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
HOSTILE = [
    "Breast Cancer_Risk",
    "risk model",
    "Ünïcødé-模型",
    "UPPER",
    "x" * 80,
    "9lives",
    "---",
    "a\nkind: Secret",
    "模型",
    "risk-model",
    "Risk-Model",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_isvc_names_are_dns1035_and_short(name: str) -> None:
    n = naming.isvc_name(name)
    assert DNS1035.match(n), n
    assert len(n) <= naming.MAX_ISVC_NAME
    assert naming.isvc_name(name) == n  # deterministic


def test_names_that_sanitize_alike_do_not_collide() -> None:
    names = ["risk model", "Risk Model", "risk_model", "risk-model", "RISK-MODEL", "risk--model"]
    assert len({naming.isvc_name(n) for n in names}) == len(names)
    long_a, long_b = "m" * 80 + "a", "m" * 80 + "b"
    assert naming.isvc_name(long_a) != naming.isvc_name(long_b)


def test_valid_names_stay_readable() -> None:
    assert naming.isvc_name("risk-model") == "risk-model"
    assert naming.isvc_name("Risk Model").startswith("risk-model-")
    assert naming.service_path("Breast Cancer_Risk") == "breast-cancer-risk"
    assert naming.service_path("模型") == "model"


def v(name: str, version: str, **tags: str) -> VersionInfo:
    return VersionInfo(name=name, version=version, tags=tags)


SEL = dict(alias="production", tag="stage=production", stage="Production")


def test_alias_wins_over_tag_and_stage() -> None:
    m = ModelInfo("m", aliases={"production": "2"}, stage_versions=(VersionInfo("m", "5", stage="Production"),))
    s = select(m, [v("m", "4"), v("m", "3")], **SEL)
    assert s is not None and (s.version, s.reason) == ("2", "alias:production")


def test_highest_tagged_version_wins_over_stage() -> None:
    m = ModelInfo("m", stage_versions=(VersionInfo("m", "9", stage="Production"),))
    s = select(m, [v("m", "3"), v("m", "10"), v("m", "4")], **SEL)
    assert s is not None and (s.version, s.reason) == ("10", "tag:stage=production")


def test_stage_is_the_last_resort_and_can_be_disabled() -> None:
    m = ModelInfo(
        "m", stage_versions=(VersionInfo("m", "2", stage="Staging"), VersionInfo("m", "7", stage="Production"))
    )
    s = select(m, [], **SEL)
    assert s is not None and (s.version, s.reason) == ("7", "stage:Production")
    assert select(m, [], alias="production", tag="stage=production", stage="") is None
    assert select(ModelInfo("m"), [], **SEL) is None


def test_other_aliases_do_not_count() -> None:
    assert select(ModelInfo("m", aliases={"champion": "3"}), [], **SEL) is None


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> AdapterSettings:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-secret-value")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "planted-key-id")
    monkeypatch.setenv("PREDICTOR_API_KEY", PLANTED_KEY)  # `predict`'s credentials: never in a manifest
    monkeypatch.setenv("PREDICTOR_TOKEN", "planted-bearer-token")
    return AdapterSettings(
        k8s_name_space="models",
        predictor_image="kind.local/custom-predictor:dev",
        mlflow_tracking_uri="http://mlflow.mlflow:5000",
        predictor_secret_name="mlflow-s3",
        mlflow_s3_endpoint_url="http://minio:9000",
        predictor_auth="apikey,kubernetes",
    )


PLANTED_KEY = "sbk_planted_" + "k" * 43


@pytest.mark.parametrize("name", HOSTILE)
def test_rendered_manifests_validate_strictly_against_the_crd(settings: AdapterSettings, name: str) -> None:
    doc = render(settings, VersionInfo(name, "3", run_id="abc123"))
    assert crd.errors(doc) == []
    meta = doc["metadata"]
    assert meta["name"] == naming.isvc_name(name) and meta["namespace"] == "models"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "service-builder"
    assert meta["annotations"]["mlflow.org/model-name"] == name
    assert doc["spec"]["predictor"]["minReplicas"] == 0
    assert doc["spec"]["predictor"]["annotations"]["mlflow.org/model-version"] == "3"
    # The YAML text round-trips to the same structure: untrusted values stayed values.
    assert yaml.safe_load(to_yaml(doc)) == doc


def test_strict_validation_catches_unknown_fields(settings: AdapterSettings) -> None:
    doc = render(settings, VersionInfo("m", "1"))
    doc["spec"]["predictor"]["minReplica"] = 0
    doc["spec"]["predictor"]["scaleMetric"] = "qps"
    errs = "\n".join(crd.errors(doc))
    assert "minReplica" in errs and "qps" in errs


def test_render_sets_model_env_and_references_secrets(settings: AdapterSettings) -> None:
    doc = render(settings, VersionInfo("Risk Model", "4", run_id="r1"))
    (container,) = doc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "kind.local/custom-predictor:dev"
    env = {e["name"]: e for e in container["env"]}
    assert env["MODEL_NAME"]["value"] == "Risk Model"
    assert env["MODEL_VERSION"]["value"] == "4"
    assert env["MODEL_URI"]["value"] == "models:/Risk Model/4"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.mlflow:5000"
    assert env["SERVICE_PATH"]["value"] == "risk-model"
    assert env["INFERENCESERVICE_NAME"]["value"] == doc["metadata"]["name"]
    assert env["INFERENCESERVICE_NAMESPACE"]["value"] == doc["metadata"]["namespace"]
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "mlflow-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}},
    }
    assert env["AUTH_MODES"]["value"] == "apikey,kubernetes"  # the API keys: a mounted Secret, by name
    assert doc["spec"]["predictor"]["volumes"][-1]["secret"]["secretName"] == f"{doc['metadata']['name']}-api-keys"
    text = to_yaml(doc)
    assert "planted-secret-value" not in text and "planted-key-id" not in text
    assert PLANTED_KEY not in text and "planted-bearer-token" not in text


def test_readiness_probe_is_knatives_aggressive_one(settings: AdapterSettings) -> None:
    """Knative probes every 50 ms until ready only when periodSeconds is 0, and then refuses failureThreshold and
    timeoutSeconds (serving's validateReadinessProbe): a sub-second predictor start stays sub-second."""
    (container,) = render(settings, VersionInfo("m", "1"))["spec"]["predictor"]["containers"]
    probe = container["readinessProbe"]
    assert probe["httpGet"]["path"] == "/v2/health/ready"
    assert probe.get("periodSeconds", 0) == 0 and "failureThreshold" not in probe and "timeoutSeconds" not in probe


def test_a_failing_predictors_line_reaches_the_termination_message(settings: AdapterSettings) -> None:
    """The predictor writes its one line to TERMINATION_MESSAGE_PATH and last in its log; FallbackToLogsOnError
    makes Kubernetes keep the log's end when the file is empty. The field sits where the CRD says (strict)."""
    doc = render(settings, VersionInfo("m", "1"))
    (container,) = doc["spec"]["predictor"]["containers"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"  # Kubernetes: File or this
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TERMINATION_MESSAGE_PATH"] == "/dev/termination-log"  # Kubernetes' default terminationMessagePath
    assert crd.errors(doc) == []
    container["terminationMessagePolicyy"] = container.pop("terminationMessagePolicy")
    assert any("terminationMessagePolicyy" in e for e in crd.errors(doc))


def test_bad_template_says_which_file(tmp_path, settings: AdapterSettings) -> None:
    bad = tmp_path / "isvc.yaml"
    bad.write_text("kind: Deployment\n")
    with pytest.raises(TemplateError, match=str(bad)):
        render(settings.model_copy(update={"template_path": bad}), VersionInfo("m", "1"))


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def isvc(ready: str, created: str, ready_rev: str, *, reason: str = "", message: str = "", traffic: int = 100):
    conds = [
        {"type": "Ready", "status": ready},
        {"type": "PredictorReady", "status": ready, "reason": reason, "message": message},
    ]
    return {
        "status": {
            "url": "http://m.models.example.com",
            "conditions": conds,
            "components": {
                "predictor": {
                    "latestCreatedRevision": created,
                    "latestReadyRevision": ready_rev,
                    "traffic": [{"revisionName": ready_rev, "percent": traffic, "latestRevision": True}],
                }
            },
        }
    }


def read(obj, base="", started=NOW, deadline=600.0, now=NOW):
    return interpret(obj, base_revision=base, started_at=started, now=now, deadline_seconds=deadline)


def test_fresh_create_becomes_ready() -> None:
    r = read(isvc("True", "m-predictor-00001", "m-predictor-00001"))
    assert (r.state, r.url, r.revision) == ("ready", "http://m.models.example.com", "m-predictor-00001")


def test_leftover_ready_of_the_previous_revision_does_not_count() -> None:
    r = read(isvc("True", "m-predictor-00001", "m-predictor-00001"), base="m-predictor-00001")
    assert r.state == "deploying"


def test_new_revision_rolling_then_ready() -> None:
    base = "m-predictor-00001"
    assert read(isvc("Unknown", "m-predictor-00002", base), base=base).state == "deploying"
    assert read(isvc("True", "m-predictor-00002", base), base=base).state == "deploying"
    assert read(isvc("True", "m-predictor-00002", "m-predictor-00002", traffic=10), base=base).state == "deploying"
    assert read(isvc("True", "m-predictor-00002", "m-predictor-00002"), base=base).state == "ready"


def test_revision_failed_reports_kserve_reason() -> None:
    msg = 'Revision "m-predictor-00002" failed with message: Container failed with: ExitCode1.'
    r = read(
        isvc("False", "m-predictor-00002", "m-predictor-00001", reason="RevisionFailed", message=msg),
        base="m-predictor-00001",
    )
    assert r.state == "failed" and r.message.startswith("RevisionFailed: Revision") and "ExitCode1" in r.message


def test_failure_of_an_older_revision_is_not_ours() -> None:
    obj = isvc("False", "m-predictor-00002", "m-predictor-00001", reason="RevisionFailed", message="old")
    assert read(obj, base="m-predictor-00002").state == "deploying"


def test_blocked_by_failed_load() -> None:
    obj = isvc("Unknown", "m-predictor-00001", "")
    obj["status"]["modelStatus"] = {
        "transitionStatus": "BlockedByFailedLoad",
        "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no such model"},
    }
    r = read(obj)
    assert r.state == "failed" and "no such model" in r.message


def test_deadline_turns_deploying_into_failed() -> None:
    obj = isvc("Unknown", "m-predictor-00002", "m-predictor-00001", reason="RevisionMissing", message="waiting")
    base = "m-predictor-00001"
    assert read(obj, base=base, now=NOW + timedelta(seconds=599)).state == "deploying"
    r = read(obj, base=base, now=NOW + timedelta(seconds=601))
    assert r.state == "failed" and "ProgressDeadlineExceeded" in r.message and "waiting" in r.message


def test_a_condition_about_another_revision_is_not_ours() -> None:
    msg = 'Revision "m-predictor-00002" failed with message: ExitCode1.'
    obj = isvc("False", "m-predictor-00003", "m-predictor-00001", reason="RevisionFailed", message=msg)
    assert read(obj, base="m-predictor-00002").state == "deploying"
    obj = isvc(
        "False",
        "m-predictor-00003",
        "m-predictor-00001",
        reason="RevisionFailed",
        message=msg.replace("00002", "00003"),
    )
    assert read(obj, base="m-predictor-00002").state == "failed"


def test_no_status_yet_is_deploying() -> None:
    assert read({}).state == "deploying"
