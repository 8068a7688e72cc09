"""The `mlflow deployments` target `kserve`: MLflow's own CLI and Python API onto the adapter's engine.

`mlflow deployments create -t kserve:/<namespace> --name risk -m models:/Risk/3 -C min_replicas=1` and
`mlflow.deployments.get_deploy_client("kserve:/<namespace>")` (entry point group `mlflow.deployments`, see
pyproject.toml), for data scientists who want an endpoint of their own without the registry's production marker.
No second engine: each `-C` key is the `serving.*` tag of the same name, validated by `overrides.resolve_layers`
(same rules, same caps); the manifest is `render.render`'s, on the image `planner.image_from_files` chooses from the
version's MLmodel and requirements.txt (`registry.MlflowRegistry`); it goes out through the reconciler's own
effects (`reconcile.Effects`: the one server-side apply, retried by the one retry policy, `reconcile.retrying`,
which the plugin's reads use too) with `bookkeeping.stamp`'s annotations, and its status is
`rollout.interpret`'s reading.
Deployments carry their own `app.kubernetes.io/managed-by` and field manager (`service-builder-plugin`);
`ownership.refusal` keeps the plugin and the registry adapter off each other's services.

Settings are the adapter's (`AdapterSettings`: MLFLOW_TRACKING_URI, PREDICTOR_IMAGE, the caps, KUBECONFIG or the
in-cluster account...); the target's `kserve:/<namespace>` overrides K8S_NAME_SPACE. Every failure is a
`PluginError`: an `MlflowException` with MLflow's error code that MLflow's click CLI prints as one line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
import requests
from mlflow.deployments import BaseDeploymentClient, PredictionsResponse
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INTERNAL_ERROR,
    INVALID_PARAMETER_VALUE,
    INVALID_STATE,
    NOT_IMPLEMENTED,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from pydantic import ValidationError

from adapter import bookkeeping, images, local, naming, overrides, ownership, planner, reconcile
from adapter.errors import AdapterError, NotFoundError, TransientError
from adapter.render import render
from adapter.rollout import interpret, traffic
from adapter.settings import AdapterSettings
from adapter.types import (
    ANN_FLAVOR,
    ANN_MODEL_NAME,
    ANN_MODEL_URI,
    ANN_MODEL_VERSION,
    FAILED,
    PLUGIN_FIELD_MANAGER,
    PLUGIN_MANAGED_BY,
    READY,
    ModelFiles,
    VersionInfo,
)

TARGET = "kserve"
ANN_CONFIG = "mlflow.org/deployment-config"  # the -C settings in force (JSON), kept across updates
DEFAULT_TIMEOUT = 600.0
DEFAULT_PORT = 8080
POLL_SECONDS = 1.0
WAIT_KEY = {"timeout": f"seconds create and update wait until ready (default {DEFAULT_TIMEOUT:g}; 0: do not wait)"}
LOCAL_KEY = {"port": f"run-local only: port of the predictor on 127.0.0.1 (default {DEFAULT_PORT})"}
_SCORING_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
T = TypeVar("T")


class PluginError(MlflowException, click.ClickException):  # type: ignore[misc]  # both declare `message`: the same text
    """An MlflowException that the `mlflow` CLI (click) prints as `Error: <message>`, exit code 1, no traceback."""

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE) -> None:
        MlflowException.__init__(self, message, error_code=error_code)  # its super() is ClickException's


def _settings(target_uri: str) -> AdapterSettings:
    from adapter.cli import invalid_configuration

    parts = urlsplit(target_uri)
    namespace = (parts.netloc or parts.path.strip("/")) if parts.scheme == TARGET else ""
    try:
        return AdapterSettings(k8s_name_space=namespace) if namespace else AdapterSettings()
    except ValidationError as e:
        raise PluginError(f"target {target_uri}: {invalid_configuration(e)}") from None


def _options(
    settings: AdapterSettings, config: Mapping[str, Any] | None, extra: Mapping[str, str], kept: Mapping[str, str]
) -> tuple[overrides.Overrides, dict[str, str], dict[str, str]]:
    """(validated overrides, the -C settings to keep on the deployment, the plugin's own keys) from `config` over
    the `kept` settings of the previous create or update. Unknown keys and bad values raise PluginError."""
    given = {str(k): str(v) for k, v in (config or {}).items()}
    own = {k: given.pop(k) for k in list(given) if k in extra}
    unknown = sorted(k for k in given if k not in overrides.FIELDS and not k.startswith("env."))
    if unknown:
        valid = ", ".join([*overrides.known_keys(), *extra])
        raise PluginError(f"unknown config key {', '.join(unknown)} (-C); valid keys: {valid}")
    layers = [("kept from the last update", dict(kept)), ("-C", given)]
    try:
        result = overrides.resolve_layers(settings, layers, spelling="")
    except overrides.OverrideError as e:
        raise PluginError(str(e)) from None
    keep = {k: v for k, v in {**kept, **given}.items() if k != "canary_percent"}  # a canary is one update's
    return result, keep, own


def _number(own: Mapping[str, str], key: str, default: float, top: float) -> float:
    try:
        value = float(own.get(key, default))
    except ValueError:
        value = math.nan
    if not 0 <= value <= top:  # also refuses nan
        raise PluginError(f"-C {key}={own[key][:40]!r}: must be a number between 0 and {top:g}")
    return value


def _mapped(fn: Callable[[], T]) -> T:
    """`fn()`, its adapter errors worded for MLflow's CLI."""
    try:
        return fn()
    except TransientError as e:
        raise PluginError(e.message, TEMPORARILY_UNAVAILABLE) from None
    except NotFoundError as e:
        raise PluginError(e.message, RESOURCE_DOES_NOT_EXIST) from None
    except AdapterError as e:
        raise PluginError(e.message, INVALID_PARAMETER_VALUE) from None


def _retrying(fn: Callable[[], T]) -> T:
    """`fn()` under the reconciler's retry policy (`reconcile.retrying`), its errors worded for MLflow's CLI."""
    return _mapped(lambda: reconcile.retrying(fn))


class KServeDeploymentClient(BaseDeploymentClient):
    """Deployments of registered MLflow model versions as KServe InferenceServices in one namespace."""

    def __init__(self, target_uri: str) -> None:
        super().__init__(target_uri)
        self.settings = _settings(target_uri)
        self.namespace = self.settings.k8s_name_space
        self._cluster: Any = None
        self._registry: Any = None

    @property
    def effects(self) -> reconcile.Effects:
        """The cluster writes, as the reconciler performs them."""
        return reconcile.Effects(self.cluster)

    @property
    def cluster(self) -> Any:
        if self._cluster is None:
            from adapter.kube import KubeCluster, api_client

            s = self.settings
            api = _retrying(lambda: api_client(s))
            self._cluster = KubeCluster(
                api, s.k8s_name_space, PLUGIN_FIELD_MANAGER, s.k8s_request_timeout_seconds, PLUGIN_MANAGED_BY
            )
        return self._cluster

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from adapter.registry import MlflowRegistry

            s = self.settings
            self._registry = MlflowRegistry(s.mlflow_tracking_uri, tag_key=s.tag_key, tag_value=s.tag_value)
        return self._registry

    # ---- reading -------------------------------------------------------------------------------
    def _existing(self, name: str, *, mine: bool) -> dict[str, Any]:
        """The deployment `name`; with `mine`, refused unless the plugin owns it."""
        if why := naming.invalid_isvc_name(name):
            raise PluginError(f"--name {why}")
        obj = _retrying(lambda: self.cluster.get(name))
        if obj is None:
            raise PluginError(f"no deployment {name!r} in namespace {self.namespace}", RESOURCE_DOES_NOT_EXIST)
        if mine and (refused := ownership.refusal(obj, PLUGIN_MANAGED_BY, self.namespace)):
            raise PluginError(refused, INVALID_STATE)
        return dict(obj)

    def _describe(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        ann = meta.get("annotations") or {}
        kept = bookkeeping.read(obj)
        canary = ((obj.get("spec") or {}).get("predictor") or {}).get(bookkeeping.TRAFFIC_FIELD)
        state = interpret(
            dict(obj),
            base_revision=kept.base_revision if kept else "",
            started_at=kept.started_at if kept else None,
            now=datetime.now(UTC),
            deadline_seconds=self.settings.rollout_deadline_seconds,
            canary=int(canary) if canary is not None and int(canary) < 100 else None,
        )
        path = naming.service_path(str(ann.get(ANN_MODEL_NAME) or ""))
        return {
            "name": meta.get("name"),
            "namespace": self.namespace,
            "model_uri": ann.get(ANN_MODEL_URI, ""),
            "model_version": ann.get(ANN_MODEL_VERSION, ""),
            "flavor": ann.get(ANN_FLAVOR, "python_function"),
            "status": state.state,
            "url": state.url,
            "swagger_url": f"{state.url}/{path}/api/" if state.url else "",
            "revision": state.revision,
            "traffic": {revision: percent for revision, percent, _, _ in traffic(dict(obj))},
            "message": state.message,
            "config": json.loads(ann.get(ANN_CONFIG) or "{}"),
            "managed_by": ownership.owner(obj),
        }

    def get_deployment(self, name: str, endpoint: str | None = None) -> dict[str, Any]:
        """Status (`deploying`, `ready`, `failed`), URL, Swagger URL, revision, traffic split and failure message."""
        return self._describe(self._existing(name, mine=False))

    def list_deployments(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        """The plugin's deployments in the namespace (never the registry adapter's)."""
        objs = _retrying(lambda: self.cluster.list_owned())
        return [self._describe(o) for o in sorted(objs, key=lambda o: o["metadata"]["name"])]

    # ---- writing -------------------------------------------------------------------------------
    def _version(self, model_uri: str) -> VersionInfo:
        """The registered version `models:/<name>/<version>` or `models:/<name>@<alias>` names, looked up."""
        rest = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else ""
        name, at, alias = rest.rpartition("@")
        if at:
            lookup = lambda: self.registry.get_version_by_alias(name, alias)  # noqa: E731
        else:
            name, _, number = rest.rpartition("/")
            lookup = lambda: self.registry.get_version(name, number)  # noqa: E731
        if not name or not (alias if at else number.isdigit()):
            raise PluginError(
                f"model URI {model_uri[:200]!r}: the kserve target deploys registered versions:"
                " models:/<name>/<version> or models:/<name>@<alias>"
            )
        try:
            return _retrying(lookup)
        except PluginError as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST" or (at and "not found" in e.message):
                raise PluginError(
                    f"model URI {model_uri} does not exist: {e.message}", RESOURCE_DOES_NOT_EXIST
                ) from None
            raise

    def _desired(
        self,
        name: str,
        model_uri: str,
        flavor: str | None,
        config: Mapping[str, Any] | None,
        extra: Mapping[str, str],
        kept: Mapping[str, str],
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(the manifest, the plugin's own -C keys) for `name` serving `model_uri` with `config` over `kept`."""
        if why := naming.invalid_isvc_name(name):
            raise PluginError(f"--name {why}")
        s = self.settings
        options, keep, own = _options(s, config, extra, kept)
        version = self._version(model_uri)
        files: ModelFiles | str | None = None
        if not options.values.get("image"):
            try:
                files = self.registry.model_files(version)
            except TransientError as e:
                raise PluginError(e.message, TEMPORARILY_UNAVAILABLE) from None
            except AdapterError as e:
                files = e.message  # image_from_files says why no image could be chosen
        flavors = files.flavors if isinstance(files, ModelFiles) else {}
        if flavor and flavors and flavor not in flavors:
            raise PluginError(f"{model_uri} has no flavor {flavor!r} (it has {', '.join(sorted(flavors))})")
        try:
            image = str(options.values.get("image") or planner.image_from_files(s, files))
            uri = f"models:/{version.name}/{version.version}"  # pinned: an alias moving later changes nothing
            doc = render(s, version, uri=uri, overrides=options, image=image, name=name, managed_by=PLUGIN_MANAGED_BY)
        except (overrides.OverrideError, images.NoImage) as e:
            raise PluginError(str(e)) from None
        ann = doc["metadata"]["annotations"]
        ann[ANN_FLAVOR] = (images.serving_flavor(flavors) if flavors else "") or flavor or "python_function"
        ann[ANN_CONFIG] = json.dumps(keep, sort_keys=True)
        return doc, own

    def _deploy(self, name: str, model_uri: str | None, flavor: str | None, config: Any, creating: bool) -> Any:
        if creating:  # every input is checked before the cluster is asked anything
            doc, own = self._desired(name, model_uri or "", flavor, config, WAIT_KEY, {})
            observed = _retrying(lambda: self.cluster.get(name))
            if observed is not None:
                there = f"deployment {name!r} exists in {self.namespace}: `mlflow deployments update` changes it"
                refused = ownership.refusal(observed, PLUGIN_MANAGED_BY, self.namespace)
                raise PluginError(refused or there, RESOURCE_ALREADY_EXISTS)
        else:
            observed = self._existing(name, mine=True)
            ann = observed["metadata"].get("annotations") or {}
            kept = json.loads(ann.get(ANN_CONFIG) or "{}")
            uri = model_uri or str(ann.get(ANN_MODEL_URI, ""))
            doc, own = self._desired(name, uri, flavor, config, WAIT_KEY, kept)
        timeout = _number(own, "timeout", DEFAULT_TIMEOUT, 7 * 86400)
        if observed is None or bookkeeping.changed(doc, observed, PLUGIN_FIELD_MANAGER):
            manifest = bookkeeping.stamp(doc, observed, datetime.now(UTC))
            _mapped(lambda: self.effects.apply(manifest))
            action = "updated" if observed is not None else "created"
        else:
            action = "unchanged"
        _progress(f"{self.namespace}/{name}: {action} ({doc['metadata']['annotations'][ANN_MODEL_URI]})")
        return self._wait(name, timeout) if timeout > 0 else self.get_deployment(name)

    def _wait(self, name: str, timeout: float) -> dict[str, Any]:
        """Poll until ready (the description), failed or `timeout` seconds (PluginError); a line per change."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            d = self.get_deployment(name)
            seen = (d["status"], d["revision"], d["message"])
            if seen != last:
                _progress(f"{self.namespace}/{name}: {d['status']}" + "".join(f" {x}" for x in seen[1:] if x))
                last = seen
            if d["status"] == READY:
                _progress(f"{self.namespace}/{name}: ready at {d['url']} (Swagger UI: {d['swagger_url']})")
                return d
            stays = f"`mlflow deployments delete -t kserve:/{self.namespace} --name {name}` removes it"
            if d["status"] == FAILED:
                raise PluginError(f"deployment {name!r} failed: {d['message']} ({stays})", INVALID_STATE)
            if time.monotonic() > deadline:
                raise PluginError(
                    f"deployment {name!r} not ready after {timeout:g}s (status {d['status']}); `mlflow deployments"
                    f" get` follows it, {stays}",
                    INTERNAL_ERROR,
                )
            time.sleep(POLL_SECONDS)

    def create_deployment(
        self,
        name: str,
        model_uri: str,
        flavor: str | None = None,
        config: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        """Deploy a registered version as InferenceService `name`; waits until ready (`-C timeout`)."""
        return dict(self._deploy(name, model_uri, flavor, config, creating=True))

    def update_deployment(
        self,
        name: str,
        model_uri: str | None = None,
        flavor: str | None = None,
        config: dict[str, Any] | None = None,
        endpoint: str | None = None,
    ) -> dict[str, Any]:
        """Roll out a new version or settings on the same URL (`-C canary_percent=20` for a canary); earlier -C
        settings stay unless given again."""
        return dict(self._deploy(name, model_uri, flavor, config, creating=False))

    def delete_deployment(self, name: str, config: dict[str, Any] | None = None, endpoint: str | None = None) -> None:
        self._existing(name, mine=True)
        _mapped(lambda: self.effects.delete(name))
        _progress(f"{self.namespace}/{name}: deleted")

    def predict(
        self, deployment_name: str | None = None, inputs: Any = None, endpoint: str | None = None
    ) -> PredictionsResponse:
        """POST `inputs` (a DataFrame, a dict, a list or an array) to the predictor's MLflow `/invocations`."""
        d = self.get_deployment(str(deployment_name))
        if not d["url"]:
            raise PluginError(f"deployment {deployment_name!r} has no URL yet (status {d['status']})", INVALID_STATE)
        try:
            answer = requests.post(
                f"{d['url']}/invocations",
                data=_payload(inputs),
                headers={"Content-Type": "application/json", **credentials(self.settings)},
                timeout=self.settings.k8s_request_timeout_seconds * 2,
            )
        except requests.RequestException as e:
            raise PluginError(
                f"the predictor at {d['url']} did not answer ({type(e).__name__})", INTERNAL_ERROR
            ) from None
        if answer.status_code in (401, 403):
            given = "the credential given was refused" if credentials(self.settings) else "no credential was given"
            raise PluginError(
                f"the predictor answered {answer.status_code}: {given}; set PREDICTOR_TOKEN_FILE, PREDICTOR_TOKEN or"
                " PREDICTOR_API_KEY (docs/security.md)",
                INVALID_PARAMETER_VALUE,
            )
        if answer.status_code != 200:
            try:
                said = str(answer.json().get("message") or answer.text)
            except ValueError:
                said = answer.text
            code = INVALID_PARAMETER_VALUE if answer.status_code < 500 else INTERNAL_ERROR
            raise PluginError(f"the predictor answered {answer.status_code}: {said[:500]}", code)
        return PredictionsResponse.from_json(answer.text)

    def explain(self, deployment_name: str | None = None, df: Any = None, endpoint: str | None = None) -> Any:
        raise PluginError(
            "explain is not supported by the kserve target: its predictor serves predictions only", NOT_IMPLEMENTED
        )


def credentials(settings: AdapterSettings) -> dict[str, str]:
    """The Authorization header `predict` sends: PREDICTOR_TOKEN_FILE (read now: projected tokens rotate), else
    PREDICTOR_TOKEN, else PREDICTOR_API_KEY; none when unset."""
    secret = settings.predictor_token.get_secret_value() or settings.predictor_api_key.get_secret_value()
    if settings.predictor_token_file:
        try:
            secret = Path(settings.predictor_token_file).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise PluginError(f"PREDICTOR_TOKEN_FILE {settings.predictor_token_file}: cannot read it ({e})") from None
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def _payload(inputs: Any) -> str:
    """The `/invocations` body: a dict already in one of MLflow's four forms as is, another dict as `inputs`,
    anything else (DataFrame, list, array) by MLflow's own serializer."""
    if isinstance(inputs, Mapping):
        body = dict(inputs) if any(k in inputs for k in _SCORING_KEYS) else {"inputs": dict(inputs)}
        return json.dumps(body)
    from mlflow.utils.proto_json_utils import dump_input_data

    return str(dump_input_data(inputs))


def _progress(line: str) -> None:
    click.echo(f"kserve: {line}", err=True)


def target_help() -> str:
    try:
        s = AdapterSettings()
    except ValidationError:
        s = AdapterSettings.model_construct()
    caps = (
        f"SERVING_MAX_REPLICAS_CAP={s.serving_max_replicas_cap}, SERVING_TIMEOUT_CAP={s.serving_timeout_cap},"
        f" SERVING_CPU_CAP={s.serving_cpu_cap}, SERVING_MEMORY_CAP={s.serving_memory_cap}"
    )
    keys = {**{k: f.help for k, f in overrides.FIELDS.items()}, "env.<NAME>": overrides.ENV_HELP, **WAIT_KEY}
    keys.update(LOCAL_KEY)
    width = max(map(len, keys))
    rows = "\n".join(f"  {k.ljust(width)}  {text}" for k, text in keys.items())
    return f"""Target kserve: registered MLflow model versions as KServe InferenceServices (service-builder).

Target URI: kserve (namespace K8S_NAME_SPACE, default "default") or kserve:/<namespace>. Kubernetes access:
K8S_API and K8S_API_KEY, else the in-cluster service account, else KUBECONFIG or ~/.kube/config. MLflow:
MLFLOW_TRACKING_URI. Images, caps and allow-lists: the adapter's settings (README, "Configuration").

--name: the InferenceService name, a DNS-1035 label of at most {naming.MAX_ISVC_NAME} characters.
-m: models:/<name>/<version> or models:/<name>@<alias> (the alias is resolved once: the service pins a version).

Config (-C key=value): each key is the serving.<key> tag of the registry adapter, validated the same way and held
to the same caps (here: {caps}).
Settings given to create or update stay for later updates; canary_percent applies to its own update only.
{rows}

  mlflow deployments create -t kserve:/team-a --name risk -m models:/Risk/3 -C min_replicas=1
  mlflow deployments get -t kserve:/team-a --name risk
  PREDICTOR_API_KEY=sbk_... mlflow deployments predict -t kserve:/team-a --name risk -I rows.json
  mlflow deployments update -t kserve:/team-a --name risk -m models:/Risk/4 -C canary_percent=20
  mlflow deployments delete -t kserve:/team-a --name risk

predict sends PREDICTOR_TOKEN_FILE's or PREDICTOR_TOKEN's bearer token, or PREDICTOR_API_KEY (docs/security.md).
Services the registry adapter manages are never changed or deleted from here, and the adapter leaves these alone.
"""


def _new_key(keys: Path, name: str) -> str:
    """A new API key for a local predictor: the predictor's own `keygen` adds its hashed entry to the local keys
    file (created 0600) and prints the key."""
    key_id = "run-local-" + ("".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "model")[:40]
    keys.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "custom_predictor.auth", "keygen", key_id.strip("-"), "--keys-file", str(keys)]
    made = subprocess.run(argv, capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise PluginError(f"cannot make an API key: {made.stderr.strip()}", INTERNAL_ERROR)
    return made.stdout.strip()


def run_local(name: str, model_uri: str, flavor: str | None = None, config: dict[str, Any] | None = None) -> None:
    """Serve `model_uri` with a predictor process on 127.0.0.1 (`-C port`), rendered and validated as `create`
    would, in the foreground until it exits (Ctrl-C). MLflow passes no target here: no cluster is involved."""
    client = KServeDeploymentClient(TARGET)
    client.settings = client.settings.model_copy(update={"deploy_target": "local"})  # auth as local predictors
    doc, own = client._desired(name, model_uri, flavor, config, LOCAL_KEY, {})
    port = int(_number(own, "port", DEFAULT_PORT, 65535))
    env = local.predictor_env(doc, client.settings.local_predictor_env(), port)
    _progress(f"{name}: {env['MODEL_URI']} on http://127.0.0.1:{port}/{env['SERVICE_PATH']}/api/ (Ctrl-C stops it)")
    if "apikey" in env.get("AUTH_MODES", "").split(","):
        _progress(f"{name}: API key (shown once): {_new_key(Path(env['AUTH_API_KEYS_FILE']), name)}")
    code = subprocess.run([sys.executable, "-m", "custom_predictor"], env=env, check=False).returncode
    if code not in (0, -2, 130):
        raise PluginError(f"the predictor exited with code {code} (its log is above)", INTERNAL_ERROR)
