"""Where the model comes from: resolve the configured URI to a local folder plus registry metadata.

Fast path without importing mlflow (about 1.5 s of imports): for an http(s) tracking server and artifacts
proxied by it (`mlflow-artifacts:/`), the registry, logged-model and artifact REST endpoints are called directly.
Every other case (s3://, gs://, dbfs, ...) goes through `mlflow.artifacts`. A local folder (KServe's /mnt/models)
needs none. A logged model (`models:/m-<id>`, MLflow 3) is named by its logged name, as a registered one is.
Neighbours: `settings` names the model; `app` turns a `ModelSource` into routes; `runtime` loads it.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import posixpath
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from custom_predictor.settings import Settings

log = logging.getLogger("custom_predictor.source")


OnFile = Callable[[Path], object]


class SourceError(Exception):
    """The model cannot be found or downloaded; the message says which and why (no secrets)."""


class TransientSourceError(SourceError):
    """MLflow is unreachable or failing (connection refused, timeout, 5xx, 429): worth retrying."""


RETRY_DELAYS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0)
"""Seconds between attempts while MLflow is unreachable, the last one repeated (until MLFLOW_RETRY_SECONDS)."""
_TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}
_TRANSIENT_MLFLOW_CODES = {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}


def _http_error(message: str, e: urllib.error.HTTPError) -> SourceError:
    """`message` (with {code} and {detail}) as a transient error for 408/429/5xx, else a permanent one."""
    cls = TransientSourceError if e.code in _TRANSIENT_HTTP else SourceError
    return cls(message.format(code=e.code, detail=_error_detail(e)))


@dataclass
class ModelSource:
    """A model resolved to a local folder, with what the registry knows about it."""

    uri: str
    model_dir: Path
    mlmodel: dict[str, Any]
    name: str
    version: str | None = None
    run_id: str | None = None
    run: dict[str, dict[str, Any]] = field(default_factory=dict)
    contract_file: Path | None = None


class _Rest:
    """Minimal MLflow REST client over urllib (registry, runs, proxied artifacts)."""

    def __init__(self, base: str, settings: Settings) -> None:
        self.base = base.rstrip("/")
        self.headers = {"User-Agent": "custom-predictor"}
        if settings.mlflow_tracking_token:
            self.headers["Authorization"] = f"Bearer {settings.mlflow_tracking_token.get_secret_value()}"
        elif settings.mlflow_tracking_username and settings.mlflow_tracking_password:
            pair = f"{settings.mlflow_tracking_username}:{settings.mlflow_tracking_password.get_secret_value()}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()

    def _open(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(url, headers=self.headers)  # noqa: S310 - URL from settings
        return urllib.request.urlopen(req, timeout=60)  # noqa: S310

    def get(self, path: str, **params: str) -> dict[str, Any]:
        try:
            with self._open("/api/2.0/mlflow/" + path, params) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            raise _http_error(f"MLflow answered {{code}} to {path}: {{detail}}", e) from None
        except (urllib.error.URLError, OSError) as e:
            raise TransientSourceError(f"cannot reach the MLflow tracking server ({e.__class__.__name__})") from None

    def list_dir(self, rel: str) -> list[dict[str, Any]]:
        with self._open("/api/2.0/mlflow-artifacts/artifacts", {"path": rel}) as r:
            return list(json.loads(r.read()).get("files", []))

    def download_tree(self, rel: str, dest: Path, first: str | None = None, then: OnFile | None = None) -> None:
        """Download the artifact folder `rel` into `dest`; file `first` (if present) before the rest, then `then`."""
        files: list[str] = []
        pending = [""]
        while pending:
            sub = pending.pop()
            for f in self.list_dir(posixpath.join(rel, sub) if sub else rel):
                name = posixpath.join(sub, f["path"]) if sub else f["path"]
                if ".." in name.split("/") or name.startswith("/"):
                    raise SourceError(f"unsafe artifact path {name!r}")
                (pending if f.get("is_dir") else files).append(name)
        if not files:
            raise SourceError(f"no artifacts under {rel!r}")

        def fetch(name: str) -> None:
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            quoted = urllib.parse.quote(posixpath.join(rel, name))
            with self._open(f"/api/2.0/mlflow-artifacts/artifacts/{quoted}") as r, target.open("wb") as out:
                while chunk := r.read(1 << 20):
                    out.write(chunk)

        if first in files:
            fetch(first)
            files.remove(first)
            if then is not None:
                then(dest / first)
        if files:
            with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
                list(pool.map(fetch, files))


def _error_detail(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read())
        return f"{body.get('error_code', '')} {body.get('message', '')}".strip()[:300]
    except (ValueError, OSError):
        return e.reason if isinstance(e.reason, str) else "error"


_LOGGED_MODEL = re.compile(r"models:/(m-[0-9A-Za-z]+)/?")


def _logged_model_id(uri: str) -> str | None:
    """models:/m-0123abcd... (an MLflow 3 logged model, registered or not) -> "m-0123abcd...", else None."""
    m = _LOGGED_MODEL.fullmatch(uri)
    return m.group(1) if m else None


def _parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """models:/name/3 -> (name, "3", None); models:/name@prod -> (name, None, "prod")."""
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest and "/" not in rest.split("@", 1)[1]:
        name, alias = rest.rsplit("@", 1)
        return name, None, alias
    name, _, version = rest.rpartition("/")
    if not name:
        raise SourceError(
            f"model URI {uri!r} must be models:/<name>/<version>, models:/<name>@<alias> or models:/m-<model id>"
        )
    return name, version, None


def _rest_fetch(settings: Settings, uri: str, dest: Path, on_mlmodel: OnFile | None) -> ModelSource | None:
    """Resolve through REST; None when the URI or artifact store needs the mlflow library."""
    tracking = settings.mlflow_tracking_uri or ""
    if not tracking.startswith(("http://", "https://")):
        return None
    rest = _Rest(tracking, settings)
    name, version, run_id = settings.model_name or "", settings.model_version, settings.model_run_id
    if model_id := _logged_model_id(uri):
        info = rest.get(f"logged-models/{model_id}")["model"]["info"]
        name, run_id = info.get("name") or model_id, info.get("source_run_id") or run_id
        artifact_uri = info["artifact_uri"]
    elif uri.startswith("models:/"):
        name, version, alias = _parse_models_uri(uri)
        if version is not None and not version.isdigit():
            return None  # models:/name/Production (legacy stage): let mlflow resolve it
        if alias:
            mv = rest.get("registered-models/alias", name=name, alias=alias)["model_version"]
        else:
            mv = rest.get("model-versions/get", name=name, version=str(version))["model_version"]
        version, run_id = str(mv["version"]), mv.get("run_id") or run_id
        artifact_uri = rest.get("model-versions/get-download-uri", name=name, version=version)["artifact_uri"]
    elif uri.startswith("runs:/"):
        run_id, _, sub = uri.removeprefix("runs:/").partition("/")
        base = rest.get("runs/get", run_id=run_id)["run"]["info"]["artifact_uri"]
        artifact_uri = posixpath.join(base, sub)
    elif uri.startswith("mlflow-artifacts:/"):
        artifact_uri = uri
    else:
        return None
    if not artifact_uri.startswith("mlflow-artifacts:/") or artifact_uri.startswith("mlflow-artifacts://"):
        return None
    rel = artifact_uri.removeprefix("mlflow-artifacts:").lstrip("/")
    rest.download_tree(rel, dest, first="MLmodel", then=on_mlmodel)
    src = _finish(uri, dest, name, version, run_id)
    if src.run_id:
        src.run = _run_info(rest.get("runs/get", run_id=src.run_id)["run"])
        if src.contract_file is None:
            base = rest.get("runs/get", run_id=src.run_id)["run"]["info"]["artifact_uri"]
            if base.startswith("mlflow-artifacts:/") and not base.startswith("mlflow-artifacts://"):
                feats_rel = posixpath.join(base.removeprefix("mlflow-artifacts:").lstrip("/"), "features")
                try:
                    listing = rest.list_dir(feats_rel)
                except urllib.error.HTTPError:
                    listing = []
                if any(f["path"] == "contract.yaml" for f in listing):
                    rest.download_tree(feats_rel, dest.parent / "features")
                    src.contract_file = dest.parent / "features" / "contract.yaml"
    return src


def _run_info(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    data = run.get("data", {})
    return {
        "params": {p["key"]: p["value"] for p in data.get("params", [])},
        "metrics": {m["key"]: m["value"] for m in data.get("metrics", [])},
        "tags": {t["key"]: t["value"] for t in data.get("tags", []) if not t["key"].startswith("mlflow.")},
    }


def _finish(uri: str, model_dir: Path, name: str, version: str | None, run_id: str | None) -> ModelSource:
    mlmodel_path = model_dir / "MLmodel"
    if not mlmodel_path.is_file():
        raise SourceError(f"{uri}: no MLmodel file: this is not an MLflow model folder")
    try:
        mlmodel = yaml.safe_load(mlmodel_path.read_text()) or {}
    except yaml.YAMLError:
        raise SourceError(f"{uri}: MLmodel is not valid YAML") from None
    contract = model_dir / "contract.yaml"
    return ModelSource(
        uri=uri,
        model_dir=model_dir,
        mlmodel=mlmodel,
        name=name or str(mlmodel.get("model_id") or model_dir.name or "model"),
        version=version,
        run_id=run_id or mlmodel.get("run_id"),
        contract_file=contract if contract.is_file() else None,
    )


def _mlflow_fetch(settings: Settings, uri: str, dest: Path) -> ModelSource:
    import mlflow
    from mlflow.exceptions import MlflowException

    if settings.mlflow_tracking_uri:
        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    client = mlflow.MlflowClient()
    name, version, run_id = settings.model_name or "", settings.model_version, settings.model_run_id
    try:
        if model_id := _logged_model_id(uri):
            logged = client.get_logged_model(model_id)
            name, run_id = logged.name or model_id, logged.source_run_id or run_id
        elif uri.startswith("models:/"):
            name, version, alias = _parse_models_uri(uri)
            if alias:
                mv = client.get_model_version_by_alias(name, alias)
                version, run_id = str(mv.version), mv.run_id
            elif version and version.isdigit():
                run_id = client.get_model_version(name, version).run_id
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
        src = _finish(uri, local, name, version, run_id)
        if src.run_id:
            run = client.get_run(src.run_id)
            src.run = {
                "params": dict(run.data.params),
                "metrics": dict(run.data.metrics),
                "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
            }
            if src.contract_file is None and any(
                f.path == "features/contract.yaml" for f in client.list_artifacts(src.run_id, "features")
            ):
                feats = Path(client.download_artifacts(src.run_id, "features", str(dest.parent)))
                src.contract_file = feats / "contract.yaml"
    except MlflowException as e:
        cls = TransientSourceError if e.error_code in _TRANSIENT_MLFLOW_CODES else SourceError
        raise cls(f"cannot load {uri} from MLflow: {e.error_code}: {str(e.message)[:300]}") from None
    return src


def fetch(
    settings: Settings,
    on_mlmodel: OnFile | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ModelSource:
    """Resolve the settings' model to a local folder with its MLmodel, contract file and registry metadata.

    `on_mlmodel(path)` is called as soon as the MLmodel file is local (before the other files arrive), so the
    caller can start importing the flavor's libraries while the rest downloads. While MLflow is unreachable or
    failing, tries again after each of RETRY_DELAYS for up to MLFLOW_RETRY_SECONDS, then raises
    TransientSourceError; any other problem is a SourceError at once.
    """
    started = clock()
    for attempt in itertools.count(1):
        try:
            return _fetch_once(settings, on_mlmodel)
        except TransientSourceError as e:
            delay = RETRY_DELAYS[min(attempt - 1, len(RETRY_DELAYS) - 1)]
            if clock() + delay - started > settings.mlflow_retry_seconds:
                waited = clock() - started
                raise TransientSourceError(f"{e}; gave up after {attempt} attempts in {waited:.0f} s") from None
            log.warning("MLflow unreachable or failing (%s): attempt %d, retrying in %.1f s", e, attempt, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def _fetch_once(settings: Settings, on_mlmodel: OnFile | None) -> ModelSource:
    uri = settings.resolved_uri
    if uri.startswith("file://") or not re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", uri):
        local = Path(uri.removeprefix("file://"))
        if not local.is_dir():
            raise SourceError(f"model folder {local} does not exist")
        if on_mlmodel is not None and (local / "MLmodel").is_file():
            on_mlmodel(local / "MLmodel")
        return _finish(uri, local, settings.model_name or "", settings.model_version, settings.model_run_id)
    root = Path(settings.download_dir) if settings.download_dir else Path(tempfile.mkdtemp(prefix="model-"))
    dest = root / "model"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        src = _rest_fetch(settings, uri, dest, on_mlmodel)
    except urllib.error.HTTPError as e:
        raise _http_error(f"cannot download {uri}: HTTP {{code}} {{detail}}", e) from None
    except (urllib.error.URLError, OSError) as e:
        raise TransientSourceError(f"cannot download {uri} ({e.__class__.__name__})") from None
    if src is None:
        src = _mlflow_fetch(settings, uri, dest)
    if not src.name:
        src.name = settings.model_name or "model"
    return src
