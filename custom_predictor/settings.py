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
        description="Once serving, run scikit-learn on probe rows in a low-priority child process and compare it with"
        " the numpy kernel; on a difference, or when the check cannot run, scikit-learn serves from then on.",
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
    # Who may call the data routes (custom_predictor/auth, docs/security.md). The adapter renders these.
    auth_modes: str = Field(
        "none",
        description="How callers authenticate: a comma list of oidc (bearer JWTs of AUTH_OIDC_ISSUER), kubernetes"
        " (bearer tokens checked with a TokenReview, authorized with a SubjectAccessReview for get on this"
        " InferenceService) and apikey (keys hashed in AUTH_API_KEYS_FILE); or none (every caller is anonymous).",
    )
    auth_allow: str = Field(
        "",
        description="Who may call once authenticated (oidc and apikey; kubernetes lets RBAC decide): a comma list"
        " of group:<name>, user:<subject>, serviceaccount:<namespace>/<name or *>, apikey:<id>; empty: anyone"
        " authenticated.",
    )
    auth_guard_docs: bool = Field(
        False, description="Also require a credential for the Swagger page and openapi.json (they hold no data)."
    )
    auth_guard_metrics: bool = Field(False, description="Also require a credential for /metrics.")
    auth_cache_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="How long a verified token (oidc) or a review's answer (kubernetes) is reused; 0: never.",
    )
    auth_cache_size: int = Field(10_000, ge=1, description="Most credentials kept in that cache (least recent go).")
    auth_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Longest wait for the OIDC issuer or the Kubernetes API server."
    )
    auth_oidc_issuer: str = Field(
        "", description="OIDC issuer URL, exactly as in the tokens' `iss` (discovery and JWKS are read from it)."
    )
    auth_oidc_audience: str = Field("", description="Audiences accepted in the tokens' `aud` (comma list).")
    auth_oidc_ca_file: str = Field("", description="CA bundle for the issuer's TLS certificate; empty: the system's.")
    auth_oidc_subject_claim: str = Field("sub", description="The claim naming the caller (e.g. email, upn).")
    auth_oidc_groups_claim: str = Field("groups", description="The claim listing the caller's groups.")
    auth_oidc_leeway_seconds: int = Field(30, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat.")
    auth_oidc_kubernetes_credentials: bool = Field(
        False,
        description="Send the predictor's own Kubernetes credentials with discovery and JWKS requests: only for the"
        " Kubernetes API server as issuer (its discovery needs system:service-account-issuer-discovery, which"
        " Kubernetes grants every ServiceAccount).",
    )
    auth_oidc_jwks_refresh_seconds: float = Field(
        300.0, gt=0, description="Re-read the issuer's keys this often (in the background)."
    )
    auth_oidc_jwks_min_interval_seconds: float = Field(
        10.0, ge=0, description="A token with an unknown key id re-reads the keys at most this often."
    )
    auth_kubernetes_audiences: str = Field(
        "",
        description="Audiences the TokenReview asks for (comma list); empty: the API server's own. Set one (e.g."
        " the InferenceService's name) so that tokens sent here are of no use against the API server.",
    )
    auth_api_keys_file: str = Field(
        "",
        description="The API keys file (lines `<id> sha256:<hex>`, `python -m custom_predictor.auth keygen`),"
        " re-read when it changes: a mounted Kubernetes Secret rotates without a redeploy.",
    )
    kubeconfig: str = Field(
        "", description="Kubeconfig with the predictor's own credentials (kubernetes mode outside a pod)."
    )
    kubernetes_service_host: str = Field("", description="Set by Kubernetes in every pod: the API server's host.")
    kubernetes_service_port: int = Field(443, ge=1, le=65535, description="Set by Kubernetes: the API server's port.")
    auth_service_account_dir: str = Field(
        "/var/run/secrets/kubernetes.io/serviceaccount",
        description="Where the pod's ServiceAccount token and CA are mounted (in a pod, kubernetes mode).",
    )
    termination_message_path: str = Field(
        "/dev/termination-log",
        description="Where a permanent failure's one-line reason is written too: Kubernetes' termination-message"
        " file by default (the kubelet creates it in every container and shows it as the container's termination"
        " message, under any pod spec); written only if it exists, or if set to another path whose folder exists;"
        " empty: nowhere.",
    )

    # The inference log (custom_predictor/inference_log, docs/inference-log.md). The adapter renders these from
    # its own settings and the model's `serving.log` / `serving.log.sample` tags; credentials by Secret reference.
    inference_log_mode: Literal["off", "metadata", "full"] = Field(
        "metadata",
        description="off: no record; metadata: one record per call without bodies; full: with the request and"
        " response bodies of the sampled calls (sensitive inputs as keyed hashes).",
    )
    inference_log_sample: float = Field(
        1.0, ge=0.0, le=1.0, description="Under full, the share of calls whose bodies are kept (by request id)."
    )
    inference_log_sinks: str = Field(
        "stdout",
        description="Where records go, comma-separated: stdout (JSON lines), cloudevents (KServe's logger format"
        " to INFERENCE_LOG_CLOUDEVENTS_URL), table (Parquet files at INFERENCE_LOG_TABLE_URI).",
    )
    inference_log_cloudevents_url: str = Field("", description="HTTP(S) URL the cloudevents sink posts to.")
    inference_log_cloudevents_concurrency: int = Field(
        8, ge=1, le=64, description="Events the cloudevents sink has in flight at once (one connection each)."
    )
    inference_log_table_uri: str = Field(
        "", description="Where the table sink writes: s3://bucket/prefix, or a local directory (path or file://)."
    )
    inference_log_s3_endpoint_url: str = Field(
        "", description="S3-compatible endpoint of the table (e.g. http://minio:9000); empty: AWS."
    )
    inference_log_s3_region: str = Field("", description="Region of the table's bucket; empty: the SDK's default.")
    inference_log_s3_access_key_id: SecretStr | None = Field(
        None, description="Access key of the table's bucket (from a Secret); empty: the AWS SDK's own chain."
    )
    inference_log_s3_secret_access_key: SecretStr | None = Field(
        None, description="Secret key of the table's bucket (from a Secret)."
    )
    inference_log_hash_key: SecretStr | None = Field(
        None,
        description="Key of the keyed hash (HMAC-SHA256) that replaces sensitive values, from a Secret; shared by"
        " every predictor so hashes join. Empty: a random key per process.",
    )
    inference_log_max_body_chars: int = Field(
        65_536, ge=256, description="Longest request or response body kept, in characters; longer ones are cut."
    )
    inference_log_queue_records: int = Field(
        10_000, ge=1, description="Most records waiting per sink; when full, new records are dropped and counted."
    )
    inference_log_queue_bytes: int = Field(
        64 * 2**20, ge=2**16, description="Most bytes of records waiting per sink (bodies included); then dropped."
    )
    inference_log_batch_rows: int = Field(
        1000, ge=1, description="A batch is written when it holds this many records (or is old enough)."
    )
    inference_log_batch_seconds: float = Field(
        10.0,
        gt=0,
        description="A batch is written when its oldest record waited this long: with INFERENCE_LOG_BATCH_ROWS,"
        " the most a crash (SIGKILL) can lose.",
    )
    inference_log_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest wait for one answer of a sink (an HTTP post, an S3 upload)."
    )
    inference_log_flush_seconds: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM, how long the log may take to write what it holds; keep it under the termination"
        " grace period.",
    )

    @model_validator(mode="after")
    def _inference_log(self) -> Settings:
        sinks = self.inference_log_sink_list
        unknown = [s for s in sinks if s not in ("stdout", "cloudevents", "table")]
        if unknown or not sinks:
            raise ValueError(f"INFERENCE_LOG_SINKS: {unknown or sinks} unknown; use stdout, cloudevents, table")
        if "cloudevents" in sinks and not re.match(r"^https?://[^\s/]+", self.inference_log_cloudevents_url):
            raise ValueError("INFERENCE_LOG_CLOUDEVENTS_URL must be an http(s) URL for the cloudevents sink")
        if "table" in sinks:
            uri = self.inference_log_table_uri
            if uri.startswith("s3://"):
                if not re.match(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", uri):
                    raise ValueError("INFERENCE_LOG_TABLE_URI: s3://<bucket>[/<prefix>] with a valid bucket name")
            elif not (uri.startswith("/") or uri.startswith("file:///")):
                raise ValueError("INFERENCE_LOG_TABLE_URI must be s3://bucket/prefix or an absolute local path")
        if self.inference_log_s3_endpoint_url and not re.match(r"^https?://", self.inference_log_s3_endpoint_url):
            raise ValueError("INFERENCE_LOG_S3_ENDPOINT_URL must be an http(s) URL")
        return self

    @property
    def inference_log_sink_list(self) -> list[str]:
        return [s.strip() for s in self.inference_log_sinks.split(",") if s.strip()]

    @model_validator(mode="after")
    def _needs_a_model(self) -> Settings:
        if not self.model_uri and not (self.model_name and (self.model_version or self.model_source)):
            raise ValueError("set MODEL_URI, or MODEL_NAME with MODEL_VERSION (or MODEL_SOURCE)")
        if self.service_path is not None and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", self.service_path):
            raise ValueError("SERVICE_PATH must be lowercase letters, digits and '-', e.g. breast-cancer-risk")
        return self

    @model_validator(mode="after")
    def _auth(self) -> Settings:
        from custom_predictor.auth.allow import AllowList, AllowListError

        modes = self.auth_mode_set
        if not modes:
            if self.auth_allow.strip():
                raise ValueError("AUTH_ALLOW needs AUTH_MODES other than none")
            return self
        if "oidc" in modes:
            issuer = self.auth_oidc_issuer
            if not re.fullmatch(r"https://[^\s/?#]+(/[^\s?#]*)?", issuer) and not re.fullmatch(
                r"http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]+)?(/[^\s?#]*)?", issuer
            ):
                raise ValueError("AUTH_MODES oidc needs AUTH_OIDC_ISSUER, an https:// URL (http:// only on loopback)")
            if not self.oidc_audiences:
                raise ValueError("AUTH_MODES oidc needs AUTH_OIDC_AUDIENCE, the audience tokens must be issued for")
        if "kubernetes" in modes and not (self.inferenceservice_namespace and self.inferenceservice_name):
            raise ValueError(
                "AUTH_MODES kubernetes needs INFERENCESERVICE_NAMESPACE and INFERENCESERVICE_NAME (what callers need"
                " `get` on)"
            )
        if "apikey" in modes and not self.auth_api_keys_file:
            raise ValueError("AUTH_MODES apikey needs AUTH_API_KEYS_FILE")
        try:
            AllowList.parse(self.auth_allow)
        except AllowListError as e:
            raise ValueError(f"AUTH_ALLOW: {e}") from None
        return self

    @property
    def auth_mode_set(self) -> frozenset[str]:
        """AUTH_MODES as a set (empty for none); ValueError names a mode that does not exist."""
        words = {w.strip().lower() for w in self.auth_modes.split(",") if w.strip()}
        if words == {"none"}:
            return frozenset()
        unknown = sorted(words - {"oidc", "kubernetes", "apikey"})
        if unknown or not words:
            raise ValueError(
                f"AUTH_MODES {self.auth_modes[:80]!r}: a comma list of oidc, kubernetes, apikey; or none alone"
            )
        return frozenset(words)

    @property
    def oidc_audiences(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.auth_oidc_audience.split(",") if a.strip())

    @property
    def kubernetes_audiences(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.auth_kubernetes_audiences.split(",") if a.strip())

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
