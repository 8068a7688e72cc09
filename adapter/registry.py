"""The adapter's only door to MLflow: reads the registry in a few cheap calls, writes tags back.

Maps every MLflow client error to the adapter's own (`TransientError`, `PermanentError`,
`NotFoundError`) and counts calls per operation (`calls`, which the benchmark reports, and the Prometheus
`service_builder_api_calls`/`_errors` with system="mlflow"; a not-found answer is not an error).
Nothing here decides anything: the reconcile core does, on the plain data this returns.
"""

from __future__ import annotations

import posixpath
import threading
import urllib.parse
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException, RestException

from adapter import metrics
from adapter.errors import NotFoundError, PermanentError, TransientError
from adapter.types import TAG_STATUS, ModelFiles, ModelInfo, Snapshot, VersionInfo

T = TypeVar("T")

_PERMANENT_CODES = {
    "INVALID_PARAMETER_VALUE",
    "BAD_REQUEST",
    "RESOURCE_ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "INVALID_STATE",
    "MALFORMED_REQUEST",
    "CUSTOMER_UNAUTHORIZED",
}
_PAGE = 1000
_FILES_CACHED = 4096  # versions whose MLmodel and requirements.txt are kept (a version's files never change)
_MAX_FILE = 1 << 20  # an MLmodel or requirements.txt larger than this is not a model's


def _without_userinfo(uri: str) -> str:
    """`http://user:pass@host` -> `http://host`: never a credential in a message or log line."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=host))
    return uri


def _version(mv: ModelVersion) -> VersionInfo:
    return VersionInfo(
        name=str(mv.name),
        version=str(mv.version),
        run_id=str(mv.run_id or ""),
        source=str(mv.source or ""),
        tags=dict(mv.tags or {}),
        stage=str(mv.current_stage or ""),
    )


def _model(rm: RegisteredModel) -> ModelInfo:
    aliases = rm.aliases or {}
    if isinstance(aliases, list):  # some stores return [{alias, version}] entities
        aliases = {a.alias: a.version for a in aliases}
    return ModelInfo(
        name=str(rm.name),
        aliases={str(k): str(v) for k, v in aliases.items()},
        tags=dict(rm.tags or {}),
        stage_versions=tuple(_version(v) for v in (rm.latest_versions or [])),
    )


class MlflowRegistry:
    """Registry reads and tag writes over MLflow's REST API."""

    def __init__(self, tracking_uri: str, *, tag_key: str, tag_value: str, name_like: str = "") -> None:
        # Filter values come from validated settings (no quotes or backticks), never from the registry.
        self.tracking_uri = tracking_uri
        self._shown_uri = _without_userinfo(tracking_uri)
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        # MlflowClient's tag writes and get_model_version first fetch the registered model to refuse prompts: a
        # second REST call each. The adapter only touches models its searches returned (which exclude prompts),
        # so those calls go straight to the registry client MlflowClient itself delegates to.
        self._direct = self._client._get_registry_client()
        scope = f" AND name LIKE '{name_like}'" if name_like else ""
        self._model_filter = f"name LIKE '{name_like}'" if name_like else None
        self._tag_filter = f"tags.`{tag_key}` = '{tag_value}'{scope}"
        self._managed_filter = f"tags.`{TAG_STATUS}` LIKE '%'{scope}"
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._files: OrderedDict[tuple[str, str], ModelFiles | None] = OrderedDict()

    def _call(self, op: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._lock:
            self.calls[op] += 1
        metrics.CALLS.labels("mlflow", op).inc()
        try:
            return fn(*args, **kwargs)
        except RestException as e:
            code = str(e.error_code)
            if code == "RESOURCE_DOES_NOT_EXIST":
                raise NotFoundError(f"MLflow {op}: {e.message}", status=404) from None
            metrics.CALL_ERRORS.labels("mlflow", op).inc()
            if code in _PERMANENT_CODES:
                raise PermanentError(f"MLflow {op}: {code}: {e.message}", status=400) from None
            raise TransientError(f"MLflow {op}: {code}: {e.message}") from None
        except MlflowException as e:
            metrics.CALL_ERRORS.labels("mlflow", op).inc()
            code = str(e.error_code)
            if code in _PERMANENT_CODES:
                raise PermanentError(f"MLflow {op}: {code}: {e.message}") from None
            raise TransientError(f"MLflow at {self._shown_uri} unreachable or failing ({op})") from None
        except (requests.RequestException, OSError) as e:
            metrics.CALL_ERRORS.labels("mlflow", op).inc()
            raise TransientError(f"MLflow at {self._shown_uri} unreachable ({op}: {type(e).__name__})") from None

    def _all_versions(self, op: str, filter_string: str) -> list[VersionInfo]:
        out: list[VersionInfo] = []
        token: str | None = None
        while True:
            page = self._call(
                op,
                self._client.search_model_versions,
                filter_string=filter_string,
                max_results=_PAGE * 10,
                page_token=token,
            )
            out.extend(_version(mv) for mv in page)
            token = page.token
            if not token:
                return out

    def snapshot(self) -> Snapshot:
        """Every registered model with aliases and stages, the versions carrying the deploy tag, and
        the versions the adapter has written a status to: three calls for any number of models."""
        snap = Snapshot()
        token: str | None = None
        while True:
            page = self._call(
                "search_registered_models",
                self._client.search_registered_models,
                filter_string=self._model_filter,
                max_results=_PAGE,
                page_token=token,
            )
            for rm in page:
                info = _model(rm)
                snap.models[info.name] = info
            token = page.token
            if not token:
                break
        for v in self._all_versions("search_model_versions[tag]", self._tag_filter):
            snap.tagged.setdefault(v.name, []).append(v)
        for v in self._all_versions("search_model_versions[managed]", self._managed_filter):
            snap.managed.setdefault(v.name, []).append(v)
        return snap

    def get_version(self, name: str, version: str) -> VersionInfo:
        return _version(self._call("get_model_version", self._direct.get_model_version, name, version))

    def get_version_by_alias(self, name: str, alias: str) -> VersionInfo:
        op = "get_model_version_by_alias"
        return _version(self._call(op, self._client.get_model_version_by_alias, name, alias))

    def model_files(self, v: VersionInfo) -> ModelFiles | None:
        """The version's MLmodel flavors and requirements.txt, read once per version (cached) with two small
        downloads through MLflow's artifact API; None when MLflow does not serve the version's artifacts itself
        (s3://... read by the predictor with its own credentials). A version without an MLmodel, or with one
        that is not a mapping of flavors, is a PermanentError."""
        name, version = v.name, v.version
        key = (name, version)
        with self._lock:
            if key in self._files:
                return self._files[key]
        if v.source.startswith("mlflow-artifacts:/"):
            uri = v.source
        elif v.source.startswith(("models:/", "runs:/")) or not v.source:
            op = "get_model_version_download_uri"
            uri = self._call(op, self._client.get_model_version_download_uri, name, version)
        else:
            uri = v.source  # s3://, gs://, a path...: not MLflow's to serve
        files: ModelFiles | None = None
        if uri.startswith("mlflow-artifacts:/") and not uri.startswith("mlflow-artifacts://"):
            rel = uri.removeprefix("mlflow-artifacts:").lstrip("/")
            text = self._artifact(rel, "MLmodel")
            if text is None:
                raise PermanentError(f"version {version} has no MLmodel file: not an MLflow model")
            try:
                mlmodel = yaml.safe_load(text)
            except yaml.YAMLError:
                raise PermanentError(f"the MLmodel file of version {version} is not valid YAML") from None
            flavors = mlmodel.get("flavors") if isinstance(mlmodel, dict) else None
            if not isinstance(flavors, dict) or not flavors or not all(isinstance(k, str) for k in flavors):
                raise PermanentError(f"the MLmodel file of version {version} names no flavors")
            files = ModelFiles(flavors=flavors, requirements=self._artifact(rel, "requirements.txt"))
        with self._lock:
            self._files[key] = files
            while len(self._files) > _FILES_CACHED:
                self._files.popitem(last=False)
        return files

    def _artifact(self, rel: str, name: str) -> str | None:
        """One file of a proxied artifact folder as text, or None if it does not exist."""
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        endpoint = "/api/2.0/mlflow-artifacts/artifacts/" + urllib.parse.quote(posixpath.join(rel, name))
        creds = get_default_host_creds(self.tracking_uri)
        resp = self._call(f"download {name}", http_request, creds, endpoint, "GET", raise_on_status=False)
        if resp.status_code == 404:
            return None
        if resp.status_code in (408, 429) or resp.status_code >= 500:
            raise TransientError(f"MLflow at {self._shown_uri} answered {resp.status_code} to a {name} download")
        if resp.status_code != 200:
            raise PermanentError(f"MLflow answered {resp.status_code} to the {name} download", status=resp.status_code)
        if len(resp.content) > _MAX_FILE:
            raise PermanentError(f"the model's {name} is larger than {_MAX_FILE} bytes")
        return resp.content.decode("utf-8", errors="replace")

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str | None]) -> None:
        """Set (value) or delete (None) model-version tags, one call each."""
        for key, value in tags.items():
            if value is None:
                try:
                    self._call("delete_model_version_tag", self._direct.delete_model_version_tag, name, version, key)
                except NotFoundError:
                    pass
            else:
                self._call("set_model_version_tag", self._direct.set_model_version_tag, name, version, key, value)

    def set_model_tags(self, name: str, tags: Mapping[str, str | None]) -> None:
        """Set (value) or delete (None) registered-model tags."""
        for key, value in tags.items():
            if value is None:
                try:
                    self._call("delete_registered_model_tag", self._direct.delete_registered_model_tag, name, key)
                except NotFoundError:
                    pass
            else:
                self._call("set_registered_model_tag", self._direct.set_registered_model_tag, name, key, value)
