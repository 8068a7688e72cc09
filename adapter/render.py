"""The desired InferenceService for one model version: the YAML template as data, with fields set.

Pure (apart from reading the template file once): `render()` takes settings and registry values and
returns a dict. Registry values are only ever set as string values in the parsed structure; they
never become YAML text. Credentials enter by reference (`secretKeyRef`, the API-key Secret's volume, the
predictor's ServiceAccount: `auth.apply`), never by value.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from adapter import auth, inference_log, naming
from adapter.overrides import Overrides
from adapter.overrides import apply as apply_overrides
from adapter.settings import AdapterSettings
from adapter.types import (
    ANN_MODEL_NAME,
    ANN_MODEL_URI,
    ANN_MODEL_VERSION,
    ANN_MODEL_VERSION_URL,
    ANN_RUN_ID,
    LABEL_MODEL_VERSION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    VersionInfo,
)

Manifest = dict[str, Any]
CONTAINER = "kserve-container"


class TemplateError(ValueError):
    """The InferenceService template is not usable; says which file and what is wrong."""


@lru_cache(maxsize=8)
def _load(path: Path) -> Manifest:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise TemplateError(f"{path}: cannot read the InferenceService template: {e}") from e
    if not isinstance(doc, dict) or doc.get("kind") != "InferenceService":
        raise TemplateError(f"{path}: not an InferenceService manifest")
    containers = doc.get("spec", {}).get("predictor", {}).get("containers")
    if not isinstance(containers, list) or not any(c.get("name") == CONTAINER for c in containers):
        raise TemplateError(f"{path}: spec.predictor.containers needs a container named {CONTAINER}")
    return doc


def load_template(path: Path) -> Manifest:
    """A fresh deep copy of the parsed template."""
    return copy.deepcopy(_load(path.resolve()))


def model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def _set_env(env: list[dict[str, Any]], name: str, value: str | None = None, **ref: Any) -> None:
    entry: dict[str, Any] = {"name": name, **({"value": value} if value is not None else ref)}
    for i, item in enumerate(env):
        if item.get("name") == name:
            env[i] = entry
            return
    env.append(entry)


def render(
    settings: AdapterSettings,
    version: VersionInfo,
    uri: str | None = None,
    overrides: Overrides | None = None,
    image: str | None = None,
    *,
    name: str | None = None,
    managed_by: str = MANAGED_BY,
) -> Manifest:
    """The InferenceService that serves `version` of its model on `image` (default PREDICTOR_IMAGE), with the
    owner's validated overrides. `name` (default: derived from the model name) and `managed_by` are the plugin's
    (its deployments are named by their user and carry their own owner)."""
    doc = load_template(settings.template_path)
    name = name or naming.isvc_name(version.name)
    uri = uri or model_uri(version.name, version.version)

    meta = doc.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = settings.k8s_name_space
    labels = meta.setdefault("labels", {}) or {}
    labels[MANAGED_BY_LABEL] = managed_by
    labels[LABEL_MODEL_VERSION] = version.version
    meta["labels"] = labels
    ann = meta.setdefault("annotations", {}) or {}
    ann[ANN_MODEL_NAME] = version.name
    ann[ANN_MODEL_VERSION] = version.version
    ann[ANN_MODEL_URI] = uri
    ann[ANN_MODEL_VERSION_URL] = settings.model_version_url(version.name, version.version)
    if version.run_id:
        ann[ANN_RUN_ID] = version.run_id
    meta["annotations"] = ann

    predictor = doc["spec"]["predictor"]
    pann = predictor.setdefault("annotations", {}) or {}
    pann[ANN_MODEL_VERSION] = version.version  # a new version is a new Knative revision
    predictor["annotations"] = pann

    container = next(c for c in predictor["containers"] if c.get("name") == CONTAINER)
    container["image"] = image or settings.predictor_image
    env = container.setdefault("env", []) or []
    container["env"] = env
    _set_env(env, "MODEL_NAME", version.name)
    _set_env(env, "MODEL_VERSION", version.version)
    _set_env(env, "MODEL_URI", uri)
    if version.run_id:
        _set_env(env, "MODEL_RUN_ID", version.run_id)
    _set_env(env, "SERVICE_PATH", naming.service_path(version.name))
    _set_env(env, "INFERENCESERVICE_NAMESPACE", settings.k8s_name_space)  # who is asked for (auth, inference log)
    _set_env(env, "INFERENCESERVICE_NAME", name)
    _set_env(env, "MLFLOW_TRACKING_URI", settings.tracking_uri_for_predictor)
    if settings.mlflow_s3_endpoint_url:
        _set_env(env, "MLFLOW_S3_ENDPOINT_URL", settings.mlflow_s3_endpoint_url)
    if settings.predictor_secret_name:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ref = {"name": settings.predictor_secret_name, "key": key, "optional": True}
            _set_env(env, key, valueFrom={"secretKeyRef": ref})
    for entry in inference_log.env(settings):  # platform defaults; `serving.log*` tags override below
        _set_env(env, entry["name"], entry.get("value"), **{k: v for k, v in entry.items() if k == "valueFrom"})
    if overrides is not None:
        apply_overrides(doc, overrides, CONTAINER)
    values = overrides.values if overrides is not None else {}
    modes = values.get("auth") or auth.parse_modes(auth.default_modes(settings), set(auth.MODES), True)
    auth.apply(doc, settings, modes, values.get("auth.allow", ""), CONTAINER)
    return doc


def to_yaml(doc: Manifest) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)
