"""The predictors' inference log as the adapter sets it up: env for the predictor container, and the
`deployment.inference_log` tag saying where a version's records go.

Pure. `env(settings)` gives the platform's sink settings and default policy as container env values, and the
Secret references for the redaction key and the table's S3 credentials (never values); the owner's
`serving.log` / `serving.log.sample` tags then replace INFERENCE_LOG_MODE / INFERENCE_LOG_SAMPLE through
`overrides`. `describe(container_env)` reads a rendered container's env back into one line for people, e.g.
`metadata -> table s3://logs/inference/model=risk/version=3/`, credentials and URL queries left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from adapter.settings import AdapterSettings

MODE_ENV, SAMPLE_ENV = "INFERENCE_LOG_MODE", "INFERENCE_LOG_SAMPLE"
SECRET_KEYS = ("INFERENCE_LOG_HASH_KEY", "INFERENCE_LOG_S3_ACCESS_KEY_ID", "INFERENCE_LOG_S3_SECRET_ACCESS_KEY")


def env(settings: AdapterSettings) -> list[dict[str, Any]]:
    """Container env entries (`{"name", "value"}` or `{"name", "valueFrom": {"secretKeyRef"}}`)."""
    s = settings
    values = {
        MODE_ENV: s.inference_log_mode,
        SAMPLE_ENV: str(s.inference_log_sample),
        "INFERENCE_LOG_SINKS": ",".join(s.inference_log_sink_list),
    }
    sinks = s.inference_log_sink_list
    if "cloudevents" in sinks:
        values["INFERENCE_LOG_CLOUDEVENTS_URL"] = s.inference_log_cloudevents_url
    if "table" in sinks:
        values["INFERENCE_LOG_TABLE_URI"] = s.inference_log_table_location
        endpoint = s.inference_log_s3_endpoint_url or s.mlflow_s3_endpoint_url
        if endpoint and s.inference_log_table_location.startswith("s3://"):
            values["INFERENCE_LOG_S3_ENDPOINT_URL"] = endpoint
        if s.inference_log_s3_region:
            values["INFERENCE_LOG_S3_REGION"] = s.inference_log_s3_region
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items()]
    if s.inference_log_secret_name:
        for key in SECRET_KEYS:
            ref = {"name": s.inference_log_secret_name, "key": key, "optional": True}
            out.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return out


def _public(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def describe(container_env: Iterable[Mapping[str, Any]]) -> str:
    """Where a rendered predictor sends its records, with its policy: the `deployment.inference_log` tag."""
    values = {e.get("name"): str(e["value"]) for e in container_env if "value" in e}
    mode = values.get(MODE_ENV, "metadata")
    if mode == "off":
        return "off"
    policy = f"full (bodies of {float(values.get(SAMPLE_ENV, '1')):.0%} of calls)" if mode == "full" else mode
    places = []
    for sink in (s.strip() for s in values.get("INFERENCE_LOG_SINKS", "stdout").split(",") if s.strip()):
        if sink == "table":
            root = values.get("INFERENCE_LOG_TABLE_URI", "").rstrip("/")
            model = quote(values.get("MODEL_NAME", ""), safe="")
            version = quote(values.get("MODEL_VERSION", ""), safe="")
            places.append(f"table {root}/model={model}/version={version}/")
        elif sink == "cloudevents":
            places.append(f"cloudevents {_public(values.get('INFERENCE_LOG_CLOUDEVENTS_URL', ''))}")
        else:
            places.append(sink)
    return f"{policy} -> {', '.join(places)}"
