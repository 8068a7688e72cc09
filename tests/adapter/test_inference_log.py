"""The inference log from the adapter's side: `serving.log` / `serving.log.sample` tags (validated, with the
platform's defaults and limits, also as the plugin's `-C` keys), the sink settings rendered into the
InferenceService (credentials only as secretKeyRef), the local target's table, and `deployment.inference_log`."""

from __future__ import annotations

import pytest
import yaml

from adapter import inference_log
from adapter.local import predictor_env
from adapter.overrides import OverrideError, effective, resolve, resolve_layers
from adapter.reconcile import Reconciler
from adapter.render import CONTAINER, render, to_yaml
from adapter.settings import AdapterSettings
from adapter.types import OWN_TAG_KEYS, TAG_INFERENCE_LOG, VersionInfo
from tests.adapter import crd
from tests.adapter.fakes import FakeCluster, FakeRegistry

S = AdapterSettings(predictor_image="img:1", k8s_name_space="models")
TABLE = AdapterSettings(
    predictor_image="img:1",
    inference_log_sinks="table,stdout",
    inference_log_table_uri="s3://audit-logs/inference",
    mlflow_s3_endpoint_url="http://minio.storage:9000",
    inference_log_secret_name="inference-log",
    inference_log_modes_allowed="metadata,full",
    inference_log_sample_cap=0.5,
    inference_log_sample=0.1,
)


def env_of(doc: dict) -> dict[str, dict]:
    container = next(c for c in doc["spec"]["predictor"]["containers"] if c["name"] == CONTAINER)
    return {e["name"]: e for e in container["env"]}


def rendered(settings: AdapterSettings, model_tags: dict | None = None, **version_tags: str) -> dict:
    o = resolve(settings, model_tags or {}, version_tags)
    doc = render(settings, VersionInfo("Risk Model", "3", tags=version_tags), overrides=o)
    assert crd.errors(doc) == []
    return doc


def test_platform_defaults_without_tags():
    env = env_of(rendered(S))
    assert env["INFERENCE_LOG_MODE"]["value"] == "metadata" and env["INFERENCE_LOG_SAMPLE"]["value"] == "1.0"
    assert env["INFERENCE_LOG_SINKS"]["value"] == "stdout"
    assert not {"INFERENCE_LOG_TABLE_URI", "INFERENCE_LOG_CLOUDEVENTS_URL", "INFERENCE_LOG_HASH_KEY"} & set(env)


def test_tags_set_the_policy_version_over_model():
    doc = rendered(S, {"serving.log": "metadata"}, **{"serving.log": "full", "serving.log.sample": "0.25"})
    env = env_of(doc)
    assert env["INFERENCE_LOG_MODE"]["value"] == "full" and env["INFERENCE_LOG_SAMPLE"]["value"] == "0.25"
    assert list(env).count("INFERENCE_LOG_MODE") == 1
    rows = {key: (value, source) for key, value, source in effective(doc, resolve(S, {}, {}), CONTAINER)}
    assert rows["log"] == ("full", "INFERENCE_LOG_MODE") and rows["log.sample"] == ("0.25", "INFERENCE_LOG_SAMPLE")
    o = resolve(S, {"serving.log": "metadata"}, {"serving.log": "full"})
    rows = {key: source for key, _, source in effective(doc, o, CONTAINER)}
    assert rows["log"] == "version tag"


@pytest.mark.parametrize(
    ("settings", "tag", "value", "rule"),
    [
        (S, "serving.log", "verbose", "must be one of off, metadata, full"),
        (S, "serving.log.sample", "1.5", "must be between 0 and 1"),
        (S, "serving.log.sample", "nan", "must be between 0 and 1"),
        (S, "serving.log.sample", "a tenth", "must be a number between 0 and 1"),
        (TABLE, "serving.log", "off", "is not allowed here (INFERENCE_LOG_MODES_ALLOWED: metadata,full)"),
        (TABLE, "serving.log.sample", "0.9", "exceeds the cluster cap of 0.5"),
    ],
)
def test_bad_tags_say_which_and_why(settings, tag, value, rule):
    with pytest.raises(OverrideError) as e:
        resolve(settings, {}, {tag: value})
    assert f"version tag {tag}={value!r}" in str(e.value) and rule in str(e.value)


def test_the_plugins_config_keys_are_the_same_settings():
    o = resolve_layers(S, [("-C", {"log": "full", "log.sample": "0.5"})], spelling="")
    assert o.values == {"log": "full", "log.sample": "0.5"}
    with pytest.raises(OverrideError, match=r"-C log='loud'"):
        resolve_layers(S, [("-C", {"log": "loud"})], spelling="")


def test_sinks_are_rendered_and_credentials_only_by_reference():
    doc = rendered(TABLE)
    env = env_of(doc)
    assert env["INFERENCE_LOG_SINKS"]["value"] == "table,stdout"
    assert env["INFERENCE_LOG_TABLE_URI"]["value"] == "s3://audit-logs/inference"
    assert env["INFERENCE_LOG_S3_ENDPOINT_URL"]["value"] == "http://minio.storage:9000", "MLflow's endpoint by default"
    assert env["INFERENCE_LOG_MODE"]["value"] == "metadata" and env["INFERENCE_LOG_SAMPLE"]["value"] == "0.1"
    for key in inference_log.SECRET_KEYS:
        assert env[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": "inference-log", "key": key, "optional": True}},
        }
    assert yaml.safe_load(to_yaml(doc)) == doc


def test_cloudevents_url_is_rendered():
    s = AdapterSettings(inference_log_sinks="cloudevents", inference_log_cloudevents_url="http://broker.ns/events")
    env = env_of(rendered(s))
    assert env["INFERENCE_LOG_CLOUDEVENTS_URL"]["value"] == "http://broker.ns/events"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"inference_log_sinks": "kafka"}, "INFERENCE_LOG_SINKS"),
        ({"inference_log_sinks": "cloudevents"}, "INFERENCE_LOG_CLOUDEVENTS_URL"),
        ({"inference_log_sinks": "table"}, "INFERENCE_LOG_TABLE_URI"),
        ({"inference_log_sinks": "table", "inference_log_table_uri": "logs/"}, "INFERENCE_LOG_TABLE_URI"),
        ({"inference_log_modes_allowed": "metadata,all"}, "INFERENCE_LOG_MODES_ALLOWED"),
        ({"inference_log_modes_allowed": "full"}, "INFERENCE_LOG_MODE=metadata is not in"),
        ({"inference_log_sample_cap": 0.1}, "INFERENCE_LOG_SAMPLE is above INFERENCE_LOG_SAMPLE_CAP"),
        ({"inference_log_secret_name": "Bad_Name"}, "INFERENCE_LOG_SECRET_NAME"),
    ],
)
def test_bad_platform_settings_are_refused_at_start(settings, problem):
    with pytest.raises(ValueError, match=problem):
        AdapterSettings(**settings)


def test_the_local_target_writes_the_table_into_its_state_dir(tmp_path):
    s = AdapterSettings(deploy_target="local", service_builder_state_dir=tmp_path / "state")
    env = predictor_env(rendered(s), {}, 8080)
    assert env["INFERENCE_LOG_SINKS"] == "table"
    assert env["INFERENCE_LOG_TABLE_URI"] == str((tmp_path / "state" / "inference-log").resolve())


@pytest.mark.parametrize(
    ("settings", "tags", "expected"),
    [
        (S, {}, "metadata -> stdout"),
        (S, {"serving.log": "off"}, "off"),
        (
            TABLE,
            {"serving.log": "full"},
            "full (bodies of 10% of calls) -> table s3://audit-logs/inference/model=Risk%20Model/version=3/, stdout",
        ),
        (
            AdapterSettings(
                inference_log_sinks="cloudevents",
                inference_log_cloudevents_url="https://user:pw@broker.ns/events?token=t",
            ),
            {},
            "metadata -> cloudevents https://broker.ns/events",
        ),
    ],
)
def test_describe_says_where_records_go_without_credentials(settings, tags, expected):
    assert inference_log.describe(env_of(rendered(settings, **tags)).values()) == expected


def test_each_deployed_version_carries_deployment_inference_log():
    reg, cluster = FakeRegistry(), FakeCluster()
    rec = Reconciler(TABLE, reg, cluster)
    reg.add("risk", "1", stage="production", **{"serving.log": "full"})
    rec.run_pass()
    cluster.roll("risk", "ready")
    rec.run_pass()
    tags = reg.versions[("risk", "1")].tags
    assert tags["deployment.status"] == "ready"
    assert (
        tags[TAG_INFERENCE_LOG]
        == "full (bodies of 10% of calls) -> table s3://audit-logs/inference/model=risk/version=1/, stdout"
    )
    assert TAG_INFERENCE_LOG in OWN_TAG_KEYS, "the webhook receiver ignores our own write"
    reg.tag("risk", "1", "serving.log", "metadata")
    rec.run_pass()
    assert reg.versions[("risk", "1")].tags[TAG_INFERENCE_LOG].startswith("metadata -> table")
