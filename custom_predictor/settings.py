"""Predictor settings: the one place that reads the environment (pydantic-settings), built once in `__main__`.

Neighbours: `source` resolves the model these settings name; `app.create_app(settings)` builds the server.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def service_path_for(name: str) -> str:
    """URL path name for a model name: lowercased, runs outside [a-z0-9] -> one '-', trimmed; "model" if empty."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "model"


class Settings(BaseSettings):
    """Environment of one predictor process. Name a model by `MODEL_URI`, or by `MODEL_NAME` + `MODEL_VERSION`."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    model_uri: str | None = Field(
        None,
        description="Any MLflow model URI: models:/name/3, models:/name@alias, runs:/id/model, s3://..., "
        "or a local folder such as KServe's /mnt/models.",
    )
    model_name: str | None = Field(None, description="Registered model name (with MODEL_VERSION), as the seed.")
    model_version: str | None = Field(None, description="Registered model version (number or @alias name).")
    model_source: str | None = Field(None, description="Artifact URI of the version, used if MODEL_URI is unset.")
    model_run_id: str | None = Field(None, description="Run id of the version (for the API description).")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking server URI.")
    mlflow_tracking_token: SecretStr | None = Field(None, description="Bearer token for the tracking server.")
    mlflow_tracking_username: str | None = Field(None, description="Basic-auth user for the tracking server.")
    mlflow_tracking_password: SecretStr | None = Field(None, description="Basic-auth password.")
    mlflow_allow_pickle_deserialization: bool = Field(
        True, description="Same switch as MLflow's: allow loading pickled/skops models (fast path included)."
    )
    inferenceservice_namespace: str = Field(
        "", description="Namespace of the InferenceService serving this predictor (set by the adapter; empty locally)."
    )
    inferenceservice_name: str = Field(
        "", description="Name of the InferenceService serving this predictor (set by the adapter; empty locally)."
    )
    port: int = Field(8080, ge=1, le=65535, description="Port to listen on.")
    host: str = Field("0.0.0.0", description="Address to bind.")
    service_path: str | None = Field(None, description="URL path name; default derived from the model name.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    max_records: int = Field(10_000, ge=1, description="Most rows accepted in one request.")
    max_body_bytes: int = Field(
        16 * 2**20,
        ge=1024,
        description="Largest request body in bytes: a larger Content-Length is refused with 413 before the body is"
        " read, a streamed body once it crosses it (docs/predictor.md: what it costs in memory).",
    )
    memory_budget_share: float = Field(
        0.5,
        gt=0,
        le=0.9,
        description="Share of the container's memory limit (its cgroup; the machine's memory without one) that the"
        " bodies in flight may cost together when decoded; a request over it waits BUDGET_WAIT_SECONDS, then 503.",
    )
    memory_budget_bytes: int | None = Field(
        None, ge=1, description="The memory budget in bytes, instead of MEMORY_BUDGET_SHARE of the limit."
    )
    budget_wait_seconds: float = Field(
        2.0, ge=0, le=60, description="How long a request waits for room in the memory budget before its 503."
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=600,
        description="A request body must arrive within this many seconds of its first byte (a slow body: 408).",
    )
    predict_threads: int = Field(
        4, ge=1, le=64, description="Threads that run predictions (and decode large bodies) off the event loop."
    )
    access_log: bool = Field(
        False,
        description="One log line per request (method, path, status, latency, request id, caller); the inference"
        " log is the audit record.",
    )
    fast_path: bool = Field(True, description="Call scikit-learn estimators directly when the flavor allows it.")
    kernels: bool = Field(
        True,
        description="Evaluate covered scikit-learn models with numpy kernels (no scikit-learn import before the"
        " first prediction); needs FAST_PATH.",
    )
    verify_kernel: bool = Field(
        True,
        description="Once serving, run the library on probe rows in a low-priority child process (scikit-learn"
        " for a numpy kernel, torch.export.load for a pt2 archive the predictor read itself) and switch to it if"
        " the outputs differ.",
    )
    download_dir: str | None = Field(None, description="Where to download model artifacts (default: a temp dir).")
    requirements_check: Literal["strict", "warn", "off"] = Field(
        "strict",
        description="The model's requirements.txt against the installed libraries: strict fails for good on a"
        " missing library or another major version of the flavor's library; warn only logs it; off skips it.",
    )
    mlflow_retry_seconds: float = Field(
        50.0,
        ge=0,
        description="How long to keep retrying an unreachable or failing MLflow (5xx, 429, timeouts) with"
        " backoff before giving up; under the template's liveness window (6 x 10 s).",
    )
    termination_message_path: str = Field(
        "",
        description="A file to write a permanent failure's one-line reason to as well (the template sets"
        " Kubernetes' /dev/termination-log, read into the container's termination message); empty: none.",
    )

    @model_validator(mode="after")
    def _needs_a_model(self) -> Settings:
        if not self.model_uri and not (self.model_name and (self.model_version or self.model_source)):
            raise ValueError("set MODEL_URI, or MODEL_NAME with MODEL_VERSION (or MODEL_SOURCE)")
        if self.service_path is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.service_path):
            raise ValueError("SERVICE_PATH must be lowercase letters, digits and '-', e.g. breast-cancer-risk")
        return self

    @property
    def resolved_uri(self) -> str:
        """The MLflow URI to load: MODEL_URI, else models:/NAME/VERSION (or @alias), else MODEL_SOURCE."""
        if self.model_uri:
            return self.model_uri
        assert self.model_name
        if self.model_version:
            v = self.model_version
            return f"models:/{self.model_name}{v if v.startswith('@') else '/' + v}"
        assert self.model_source
        return self.model_source
