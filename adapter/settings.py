"""Settings of the adapter (service-builder): the one place that reads the environment.

Built once at start (`AdapterSettings()`), then passed down. Env names keep those of the DPM360
Service Builder (`MLFLOW_TRACKING_URI`, `K8S_NAME_SPACE`, `K8S_API`, `K8S_API_KEY`,
`MLFLOW_S3_ENDPOINT_URL`). S3 credentials are never read here: the predictor gets them by
reference to the Kubernetes Secret named by `PREDICTOR_SECRET_NAME`.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from adapter.images import CatalogError, ImageSpec, parse_catalog

_TAG_KEY = re.compile(r"^[A-Za-z0-9_.\-/ ]{1,250}$")
_TAG_VALUE = re.compile(r"^[^'`\\\n\r]{1,250}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "inferenceservice_templates"


class AdapterSettings(BaseSettings):
    """Everything the adapter can be told, from the environment (or a `.env` file)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    mlflow_tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        description="MLflow server the adapter polls (its credentials: MLFLOW_TRACKING_USERNAME/PASSWORD or"
        " MLFLOW_TRACKING_TOKEN, read by the MLflow client).",
    )
    k8s_name_space: str = Field("default", description="Namespace the InferenceServices live in.")
    predictor_image: str = Field(
        "ghcr.io/service-builder/custom-predictor:0.1.0",
        description="The base predictor image (scikit-learn, XGBoost, LightGBM, pyfunc); the default catalog adds"
        " the same name with -pytorch for PyTorch models. Used as is when MLflow does not serve the artifacts.",
    )
    predictor_images: str = Field(
        "",
        description="The image catalog, JSON: [{image, covers: base|pytorch} or {image, flavors, libraries}], first"
        " match wins (adapter/images.py); empty: PREDICTOR_IMAGE (base) and its -pytorch variant.",
    )
    poll_interval_seconds: float = Field(
        30.0,
        gt=0,
        description="Seconds between full passes of `run` (the resync: webhooks and the watch act in between).",
    )
    deploy_target: Literal["kserve", "local"] = Field("kserve", description="Where models are served.")
    deploy_alias: str = Field("production", description="Alias that marks the version to serve.")
    deploy_tag: str = Field("stage=production", description="Version tag `key=value` that marks it.")
    deploy_stage: str = Field("Production", description="Legacy stage that marks it; empty disables.")
    model_name_like: str = Field(
        "", description="Only models whose name matches this MLflow LIKE pattern (e.g. `team-a-%`); empty: all."
    )
    predictor_tracking_uri: str = Field(
        "", description="Tracking URI as predictor pods see it; empty: MLFLOW_TRACKING_URI."
    )
    mlflow_ui_url: str = Field(
        "", description="MLflow UI as users reach it, for the links on each InferenceService; default the tracking URI."
    )
    predictor_secret_name: str = Field(
        "",
        description="Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the predictor, referenced"
        " (secretKeyRef): its values never enter a manifest; empty: none.",
    )
    mlflow_s3_endpoint_url: str = Field("", description="S3 endpoint for MLflow artifacts (not a secret).")
    writeback_concurrency: int = Field(
        8, ge=1, le=64, description="Models reconciled at the same time in a pass, and MLflow tag writes in flight."
    )
    rollout_deadline_seconds: float = Field(600.0, gt=0, description="A rollout not ready by then: failed.")
    template_path: Path = Field(TEMPLATE_DIR / "inferenceservice.yaml", description="InferenceService template.")
    # Caps and allow-lists for model owners' `serving.*` tags (defaults are the template's values).
    serving_max_replicas_cap: int = Field(10, ge=1, description="Highest min/max replicas a tag may ask for.")
    serving_cpu_cap: str = Field("4", description="Highest CPU request/limit a tag may ask for.")
    serving_memory_cap: str = Field("16Gi", description="Highest memory request/limit a tag may ask for.")
    serving_timeout_cap: int = Field(900, ge=1, description="Longest request timeout a tag may ask for, seconds.")
    serving_max_body_cap: str = Field(
        "64Mi",
        description="Largest request body a `serving.max_body` tag may allow (the predictor's default is 16Mi;"
        " a body still needs room in its memory budget: docs/predictor.md).",
    )
    serving_image_allowlist: str = Field(
        "", description="Images a tag may choose (comma list) besides PREDICTOR_IMAGE."
    )
    serving_env_allowlist: str = Field(
        "LOG_LEVEL,KERNELS,VERIFY_KERNEL,REQUIREMENTS_CHECK",
        description="Env names a `serving.env.<NAME>` tag may set.",
    )
    # Who may call the predictors (adapter/auth.py, docs/security.md): the platform's defaults and limits.
    predictor_auth: str = Field(
        "",
        description="Auth modes of every model unless its serving.auth tag says otherwise: a comma list of oidc,"
        " kubernetes, apikey, or none (only with PREDICTOR_AUTH_ALLOW_ANONYMOUS); empty: kubernetes on a cluster,"
        " apikey with DEPLOY_TARGET=local.",
    )
    predictor_auth_modes_allowed: str = Field(
        "oidc,kubernetes,apikey",
        description="Modes a serving.auth tag may choose (oidc only with PREDICTOR_AUTH_OIDC_ISSUER).",
    )
    predictor_auth_allow_anonymous: bool = Field(
        False, description="Whether a model may serve without authentication (serving.auth=none)."
    )
    predictor_auth_oidc_issuer: str = Field("", description="OIDC issuer of the oidc mode (exactly as in `iss`).")
    predictor_auth_oidc_audience: str = Field("", description="Audiences the oidc mode accepts (comma list).")
    predictor_auth_oidc_ca_file: str = Field(
        "", description="CA bundle of the issuer, a path inside the predictor pod; empty: the image's."
    )
    predictor_auth_oidc_subject_claim: str = Field("sub", description="Claim naming the caller (e.g. email, upn).")
    predictor_auth_oidc_groups_claim: str = Field("groups", description="Claim listing the caller's groups.")
    predictor_auth_oidc_kubernetes_credentials: bool = Field(
        False,
        description="The issuer is this cluster's API server: predictors read its discovery and keys with their"
        " ServiceAccount (PREDICTOR_SERVICE_ACCOUNT).",
    )
    predictor_auth_kubernetes_audiences: str = Field(
        "", description="Audiences the kubernetes mode's TokenReview asks for (comma list); empty: the API server's."
    )
    predictor_auth_api_keys_secret: str = Field(
        "{name}-api-keys",
        description="The Secret holding a model's API keys file (key `keys`), `{name}` its InferenceService's name;"
        " mounted read-only and optional, never read by the adapter.",
    )
    predictor_auth_api_keys_file: str = Field(
        "",
        description="Local predictors (DEPLOY_TARGET=local, run-local): the API keys file they read instead of a"
        " mounted Secret; empty: <SERVICE_BUILDER_STATE_DIR>/api-keys locally.",
    )
    predictor_auth_cache_seconds: float = Field(
        60.0, ge=0, le=3600, description="How long a predictor reuses a verified token or a review's answer."
    )
    predictor_auth_guard_docs: bool = Field(False, description="Predictors also guard their Swagger page and spec.")
    predictor_auth_guard_metrics: bool = Field(False, description="Predictors also guard /metrics.")
    predictor_service_account: str = Field(
        "service-builder-predictor",
        description="ServiceAccount of predictors whose mode calls the Kubernetes API (deploy/base grants it create"
        " on tokenreviews and subjectaccessreviews, nothing else).",
    )
    # How `mlflow deployments predict -t kserve` authenticates to a protected predictor (first one set wins).
    predictor_token_file: str = Field("", description="predict: a file holding a bearer token (re-read each call).")
    predictor_token: SecretStr = Field(SecretStr(""), description="predict: a bearer token (OIDC or Kubernetes).")
    predictor_api_key: SecretStr = Field(SecretStr(""), description="predict: an API key (sbk_...).")
    field_manager: str = Field("service-builder", description="Server-side apply field manager.")
    # The predictors' inference log (docs/inference-log.md): platform defaults and limits of the `serving.log` and
    # `serving.log.sample` tags, and the sinks every predictor writes to (credentials by Secret reference only).
    inference_log_mode: Literal["off", "metadata", "full"] = Field(
        "metadata", description="Default of `serving.log`: off, metadata (every call, no bodies) or full (bodies)."
    )
    inference_log_sample: float = Field(
        1.0, ge=0.0, le=1.0, description="Default of `serving.log.sample`: share of calls whose bodies `full` keeps."
    )
    inference_log_modes_allowed: str = Field(
        "off,metadata,full", description="Values a `serving.log` tag may choose (comma list), e.g. metadata,full."
    )
    inference_log_sample_cap: float = Field(
        1.0, ge=0.0, le=1.0, description="Highest `serving.log.sample` a tag may ask for."
    )
    inference_log_sinks: str = Field(
        "",
        description="Where predictors send records (comma list of stdout, cloudevents, table); empty: stdout, or"
        " table with DEPLOY_TARGET=local.",
    )
    inference_log_cloudevents_url: str = Field(
        "", description="URL of the CloudEvents sink (a Knative broker, a KServe-logger consumer)."
    )
    inference_log_table_uri: str = Field(
        "",
        description="Where the inference table goes: s3://bucket/prefix or an absolute path; empty with"
        " DEPLOY_TARGET=local: <SERVICE_BUILDER_STATE_DIR>/inference-log.",
    )
    inference_log_s3_endpoint_url: str = Field(
        "", description="S3 endpoint of the inference table; empty: MLFLOW_S3_ENDPOINT_URL."
    )
    inference_log_s3_region: str = Field("", description="Region of the inference table's bucket.")
    inference_log_secret_name: str = Field(
        "",
        description="Secret the predictors read INFERENCE_LOG_HASH_KEY (the redaction key) and"
        " INFERENCE_LOG_S3_ACCESS_KEY_ID / INFERENCE_LOG_S3_SECRET_ACCESS_KEY from, by reference; empty: none"
        " (hashes then differ per pod; S3 credentials from the AWS SDK's chain, e.g. PREDICTOR_SECRET_NAME's).",
    )
    # Kubernetes access: K8S_API + K8S_API_KEY override in-cluster and kubeconfig.
    k8s_api: str = Field("", description="API server URL (with K8S_API_KEY).")
    k8s_api_key: SecretStr = Field(SecretStr(""), description="Bearer token for K8S_API.")
    k8s_verify_ssl: bool = Field(True, description="Verify the API server certificate (K8S_API mode).")
    k8s_ca_file: str = Field("", description="CA bundle that signed the API server certificate (K8S_API mode).")
    k8s_request_timeout_seconds: float = Field(30.0, gt=0, description="Longest wait for one API server answer.")
    kubeconfig: str = Field("", description="Path to a kubeconfig (default ~/.kube/config).")
    # Webhook receiver (`run` only); WEBHOOK_PORT=0 turns it off.
    webhook_host: str = Field("0.0.0.0", description="Bind address of the webhook receiver.")
    webhook_port: int = Field(8090, ge=0, le=65535, description="Port of the receiver; 0 disables it.")
    mlflow_webhook_secret: SecretStr = Field(SecretStr(""), description="HMAC secret of MLflow webhooks.")
    health_stall_seconds: float = Field(
        300.0, gt=0, description="`/healthz` fails when the run loop has not come round for this long."
    )
    watch_stall_seconds: float = Field(
        300.0,
        gt=0,
        description="`run`: a watch of the owned InferenceServices that brings no event and no bookmark for this long"
        " is restarted; the API server is asked to end each watch sooner (after half to nine tenths of it, with a"
        " bookmark), so only a stalled one ever waits that long.",
    )
    # Leader election (`run` with DEPLOY_TARGET=kserve): only the holder of the Lease reconciles.
    leader_election: bool = Field(True, description="Elect one leader among replicas with a Lease; false: always lead.")
    leader_election_lease_name: str = Field(
        "service-builder", description="Name of the coordination.k8s.io Lease (the Role grants exactly this name)."
    )
    leader_election_lease_duration_seconds: float = Field(
        15.0, gt=0, description="A Lease not renewed for this long may be taken by another replica."
    )
    leader_election_renew_deadline_seconds: float = Field(
        10.0, gt=0, description="The leader steps down when it could not renew for this long."
    )
    leader_election_retry_period_seconds: float = Field(
        2.0, gt=0, description="Seconds between attempts to acquire or renew the Lease."
    )
    pod_name: str = Field(
        "", description="This replica's identity in the Lease (the Deployment sets POD_NAME); empty: host name and pid."
    )
    pod_ip: str = Field(
        "",
        description="This replica's address (the Deployment sets POD_IP from status.podIP): the leader publishes"
        " its webhook receiver's URL on the Lease, and a standby forwards deliveries there; empty: no forwarding.",
    )
    # MLflow client behaviour: short retries so one pass never hangs on a down server.
    mlflow_http_request_max_retries: int = Field(2, ge=0, description="MLflow client retries per call.")
    mlflow_http_request_backoff_factor: int = Field(1, ge=0, description="MLflow client backoff.")
    mlflow_http_request_timeout: int = Field(15, gt=0, description="MLflow client timeout, seconds.")
    # Local target (DEPLOY_TARGET=local).
    service_builder_state_dir: Path = Field(Path(".state"), description="Local target state and logs.")
    log_level: str = Field("INFO", description="Log level.")

    @model_validator(mode="after")
    def _catalog(self) -> AdapterSettings:
        try:
            parse_catalog(self.predictor_images, self.predictor_image)
        except CatalogError as e:
            raise ValueError(str(e)) from None
        return self

    @model_validator(mode="after")
    def _inference_log(self) -> AdapterSettings:
        allowed = self.inference_log_allowed_modes
        if not allowed or not allowed <= {"off", "metadata", "full"}:
            raise ValueError("INFERENCE_LOG_MODES_ALLOWED must list some of off, metadata, full")
        if self.inference_log_mode not in allowed:
            raise ValueError(f"INFERENCE_LOG_MODE={self.inference_log_mode} is not in INFERENCE_LOG_MODES_ALLOWED")
        if self.inference_log_sample > self.inference_log_sample_cap:
            raise ValueError("INFERENCE_LOG_SAMPLE is above INFERENCE_LOG_SAMPLE_CAP")
        sinks = self.inference_log_sink_list
        if not set(sinks) <= {"stdout", "cloudevents", "table"}:
            raise ValueError("INFERENCE_LOG_SINKS may list stdout, cloudevents, table")
        if "cloudevents" in sinks and not re.match(r"^https?://[^\s/]+", self.inference_log_cloudevents_url):
            raise ValueError("INFERENCE_LOG_CLOUDEVENTS_URL must be an http(s) URL for the cloudevents sink")
        if "table" in sinks:
            uri = self.inference_log_table_location
            if not (re.match(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$", uri) or uri.startswith("/")):
                raise ValueError("INFERENCE_LOG_TABLE_URI must be s3://bucket/prefix or an absolute path")
        if self.inference_log_secret_name and not re.match(
            r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", self.inference_log_secret_name
        ):
            raise ValueError("INFERENCE_LOG_SECRET_NAME must be a Kubernetes Secret name")
        return self

    @property
    def inference_log_allowed_modes(self) -> set[str]:
        return {m.strip() for m in self.inference_log_modes_allowed.split(",") if m.strip()}

    @property
    def inference_log_sink_list(self) -> list[str]:
        """INFERENCE_LOG_SINKS, or the target's default: stdout on KServe, the local table locally."""
        sinks = [s.strip() for s in self.inference_log_sinks.split(",") if s.strip()]
        return sinks or (["table"] if self.deploy_target == "local" else ["stdout"])

    @property
    def inference_log_table_location(self) -> str:
        """INFERENCE_LOG_TABLE_URI; locally by default `inference-log/` in the state dir (an absolute path)."""
        if self.inference_log_table_uri:
            return self.inference_log_table_uri
        if self.deploy_target == "local":
            return str(self.service_builder_state_dir.resolve() / "inference-log")
        return ""

    @property
    def catalog(self) -> tuple[ImageSpec, ...]:
        """PREDICTOR_IMAGES, parsed (validated at start; parsed once per value)."""
        return parse_catalog(self.predictor_images, self.predictor_image)

    @property
    def allowed_images(self) -> set[str]:
        """Images a `serving.image` tag may choose: the catalog's, PREDICTOR_IMAGE and SERVING_IMAGE_ALLOWLIST."""
        extra = {i.strip() for i in self.serving_image_allowlist.split(",") if i.strip()}
        return {self.predictor_image, *(spec.image for spec in self.catalog), *extra}

    @field_validator("deploy_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        key, sep, value = v.partition("=")
        if not sep or not _TAG_KEY.match(key.strip()) or not _TAG_VALUE.match(value.strip()):
            raise ValueError("DEPLOY_TAG must be key=value (no quotes, backticks or backslashes)")
        return v

    @field_validator("model_name_like")
    @classmethod
    def _like(cls, v: str) -> str:
        if v and not _TAG_VALUE.match(v):
            raise ValueError("MODEL_NAME_LIKE may not hold quotes, backticks or backslashes")
        return v

    @field_validator("serving_cpu_cap", "serving_memory_cap", "serving_max_body_cap")
    @classmethod
    def _cap(cls, v: str) -> str:
        if not re.match(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$", v.strip()):
            raise ValueError("must be a Kubernetes quantity such as 4, 500m or 16Gi")
        return v.strip()

    @field_validator("deploy_alias")
    @classmethod
    def _alias(cls, v: str) -> str:
        if v and not re.match(r"^[A-Za-z0-9_\-]{1,255}$", v):
            raise ValueError("DEPLOY_ALIAS may hold letters, digits, '_' and '-' only")
        return v

    @field_validator("k8s_name_space")
    @classmethod
    def _namespace(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 63:
            raise ValueError("K8S_NAME_SPACE must be a DNS-1123 label")
        return v

    @field_validator("leader_election_lease_name")
    @classmethod
    def _lease_name(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", v) or len(v) > 253:
            raise ValueError("LEADER_ELECTION_LEASE_NAME must be a DNS-1123 subdomain")
        return v

    @model_validator(mode="after")
    def _auth(self) -> AdapterSettings:
        from adapter import auth

        allowed = {w.strip().lower() for w in self.predictor_auth_modes_allowed.split(",") if w.strip()}
        if not allowed <= set(auth.MODES):
            raise ValueError(f"PREDICTOR_AUTH_MODES_ALLOWED: a comma list of {', '.join(auth.MODES)}")
        configured = set(auth.MODES) if self.predictor_auth_oidc_issuer else set(auth.MODES) - {"oidc"}
        try:
            auth.parse_modes(auth.default_modes(self), configured, self.predictor_auth_allow_anonymous)
        except ValueError as e:
            raise ValueError(f"PREDICTOR_AUTH: {e}") from None
        issuer = self.predictor_auth_oidc_issuer
        if issuer and not re.fullmatch(r"https://[^\s/?#]+(/[^\s?#]*)?", issuer):
            raise ValueError("PREDICTOR_AUTH_OIDC_ISSUER must be an https:// URL")
        if issuer and not self.predictor_auth_oidc_audience.strip(","):
            raise ValueError("PREDICTOR_AUTH_OIDC_ISSUER needs PREDICTOR_AUTH_OIDC_AUDIENCE")
        secret = self.predictor_auth_api_keys_secret.replace("{name}", "x")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,200}[a-z0-9])?", secret):
            raise ValueError("PREDICTOR_AUTH_API_KEYS_SECRET: a Secret name, {name} standing for the model's")
        if self.predictor_service_account and not _DNS_LABEL.match(self.predictor_service_account):
            raise ValueError("PREDICTOR_SERVICE_ACCOUNT must be a ServiceAccount name")
        return self

    @property
    def local_api_keys_file(self) -> str:
        """The API keys file of local predictors (PREDICTOR_AUTH_API_KEYS_FILE or <state dir>/api-keys)."""
        return self.predictor_auth_api_keys_file or str((self.service_builder_state_dir / "api-keys").resolve())

    @model_validator(mode="after")
    def _election_timing(self) -> AdapterSettings:
        # client-go's rule: the leader stops before its Lease can expire, and retries several times before that.
        if not (
            self.leader_election_lease_duration_seconds
            > self.leader_election_renew_deadline_seconds
            > self.leader_election_retry_period_seconds
        ):
            raise ValueError(
                "leader election needs LEADER_ELECTION_LEASE_DURATION_SECONDS > "
                "LEADER_ELECTION_RENEW_DEADLINE_SECONDS > LEADER_ELECTION_RETRY_PERIOD_SECONDS"
            )
        return self

    @property
    def identity(self) -> str:
        """Who holds the Lease: POD_NAME (unique in the namespace), else host and process id."""
        return self.pod_name or f"{socket.gethostname()}_{os.getpid()}"

    @property
    def tag_key(self) -> str:
        return self.deploy_tag.partition("=")[0].strip()

    @property
    def tag_value(self) -> str:
        return self.deploy_tag.partition("=")[2].strip()

    @property
    def tracking_uri_for_predictor(self) -> str:
        return self.predictor_tracking_uri or self.mlflow_tracking_uri

    def model_version_url(self, name: str, version: str) -> str:
        """The MLflow UI page of a model version (credentials in the URI are never part of it)."""
        parts = urlsplit(self.mlflow_ui_url or self.mlflow_tracking_uri)
        host = parts.netloc.rpartition("@")[2]
        base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        return f"{base}/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"

    def webhook_url(self, port: int) -> str:
        """Where other replicas reach this one's receiver ("" without POD_IP)."""
        if not self.pod_ip:
            return ""
        host = f"[{self.pod_ip}]" if ":" in self.pod_ip else self.pod_ip
        return f"http://{host}:{port}/webhooks/mlflow"

    def in_scope(self, model_name: str) -> bool:
        """Whether MODEL_NAME_LIKE (an MLflow LIKE pattern: % any run, _ one character) admits the name."""
        if not self.model_name_like:
            return True
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in self.model_name_like)
        return re.fullmatch(pattern, model_name, flags=re.DOTALL) is not None

    def local_predictor_env(self) -> dict[str, str]:
        """The environment a local predictor process inherits: what it needs to run and to reach MLflow
        and S3, never the adapter's own credentials (K8S_API_KEY, MLFLOW_WEBHOOK_SECRET)."""
        keep = (
            "PATH",
            "HOME",
            "LANG",
            "TZ",
            "TMPDIR",
            "VIRTUAL_ENV",
            "PYTHONPATH",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE",
        )
        prefixes = ("LC_", "AWS_", "MLFLOW_")
        return {
            k: v
            for k, v in os.environ.items()
            if (k in keep or k.startswith(prefixes)) and k != "MLFLOW_WEBHOOK_SECRET"
        }

    def export_mlflow_client_env(self) -> None:
        """Hand the MLflow client its retry/timeout knobs (it reads them from the process env)."""
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.mlflow_http_request_max_retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(self.mlflow_http_request_backoff_factor)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.mlflow_http_request_timeout)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
