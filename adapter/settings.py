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

    mlflow_tracking_uri: str = Field("http://127.0.0.1:5000", description="MLflow server the adapter polls.")
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
    poll_interval_seconds: float = Field(30.0, gt=0, description="Seconds between passes of `run`.")
    deploy_target: Literal["kserve", "local"] = Field("kserve", description="Where models are served.")
    deploy_alias: str = Field("production", description="Alias that marks the version to serve.")
    deploy_tag: str = Field("stage=production", description="Version tag `key=value` that marks it.")
    deploy_stage: str = Field("Production", description="Legacy stage that marks it; empty disables.")
    model_name_like: str = Field(
        "", description="Only models whose name matches this MLflow LIKE pattern (e.g. `team-a-%`); empty: all."
    )
    predictor_tracking_uri: str = Field("", description="Tracking URI as predictor pods see it.")
    mlflow_ui_url: str = Field(
        "", description="MLflow UI as users reach it, for the links on each InferenceService; default the tracking URI."
    )
    predictor_secret_name: str = Field(
        "", description="Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY for the predictor; empty: none."
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
    serving_image_allowlist: str = Field(
        "", description="Images a tag may choose (comma list) besides PREDICTOR_IMAGE."
    )
    serving_env_allowlist: str = Field(
        "LOG_LEVEL,KERNELS,VERIFY_KERNEL,REQUIREMENTS_CHECK",
        description="Env names a `serving.env.<NAME>` tag may set.",
    )
    field_manager: str = Field("service-builder", description="Server-side apply field manager.")
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
    pod_name: str = Field("", description="This replica's identity in the Lease (the Deployment sets POD_NAME).")
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

    @field_validator("serving_cpu_cap", "serving_memory_cap")
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
