"""Plain data passed between the registry wrapper, the cluster wrapper and the reconcile core.

No client types cross this line: the wrappers translate SDK objects into these, so the core and
its tests never see MLflow or Kubernetes classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

# Model-version tags written back by the adapter (the webhook receiver ignores these keys).
TAG_STATUS = "deployment.status"
TAG_DEPLOYED = "deployed"
TAG_ENDPOINT = "model_endpoint"
TAG_URL = "deployment.url"
TAG_ISVC = "deployment.inferenceservice"
TAG_MESSAGE = "deployment.message"
TAG_UPDATED = "deployment.updated_at"
TAG_REVISION = "deployment.revision"
TAG_BASE_REVISION = "deployment.base_revision"
TAG_STARTED = "deployment.started_at"
TAG_TRAFFIC = "deployment.traffic"
TAG_REVISION_URL = "deployment.revision_url"
TAG_INFERENCE_LOG = "deployment.inference_log"  # where the version's inference records go (docs/inference-log.md)
# Registered-model tags.
TAG_DEPLOYED_VERSION = "deployed_version"

OWN_TAG_KEYS = frozenset(
    {
        TAG_STATUS,
        TAG_DEPLOYED,
        TAG_ENDPOINT,
        TAG_URL,
        TAG_ISVC,
        TAG_MESSAGE,
        TAG_UPDATED,
        TAG_REVISION,
        TAG_BASE_REVISION,
        TAG_STARTED,
        TAG_DEPLOYED_VERSION,
        TAG_TRAFFIC,
        TAG_REVISION_URL,
        TAG_INFERENCE_LOG,
    }
)


class Status(StrEnum):
    """Values of `deployment.status`."""

    DEPLOYING = "deploying"
    READY = "ready"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # a newer version took over
    RETIRED = "retired"  # no longer marked for serving


class Action(StrEnum):
    """What a pass did to a model's InferenceService; set only after the effect happened."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"  # nothing attempted (backing off, a known permanent failure, an invalid input)
    ERROR = "error"  # an effect or a write-back was refused or kept failing


DEPLOYING, READY, FAILED, SUPERSEDED, RETIRED = (
    Status.DEPLOYING,
    Status.READY,
    Status.FAILED,
    Status.SUPERSEDED,
    Status.RETIRED,
)
ACTIVE_STATES = frozenset({DEPLOYING, READY, FAILED})

# Labels and annotations on owned InferenceServices.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "service-builder"  # the registry-driven adapter
# Deployments made with `mlflow deployments ... -t kserve` (adapter/plugin.py): their own owner and field manager.
PLUGIN_MANAGED_BY = "service-builder-plugin"
PLUGIN_FIELD_MANAGER = "service-builder-plugin"
ANN_MODEL_NAME = "mlflow.org/model-name"
ANN_MODEL_VERSION = "mlflow.org/model-version"
ANN_RUN_ID = "mlflow.org/run-id"
ANN_MODEL_URI = "mlflow.org/model-uri"
ANN_MODEL_VERSION_URL = "mlflow.org/model-version-url"  # the version's page in the MLflow UI
LABEL_MODEL_VERSION = "mlflow.org/model-version"
ANN_FLAVOR = "mlflow.org/flavor"  # the MLmodel flavor served (plugin deployments)


@dataclass(frozen=True)
class VersionInfo:
    """One model version as the registry reports it."""

    name: str
    version: str
    run_id: str = ""
    source: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    stage: str = ""

    @property
    def number(self) -> int:
        return int(self.version)


@dataclass(frozen=True)
class ModelFiles:
    """What a version's model says it needs: its MLmodel flavors and its requirements.txt (None: no such file)."""

    flavors: Mapping[str, object]
    requirements: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: its aliases, tags and the newest version per legacy stage."""

    name: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    stage_versions: tuple[VersionInfo, ...] = ()


@dataclass
class Snapshot:
    """What the registry says in one pass, fetched with a handful of calls."""

    models: dict[str, ModelInfo] = field(default_factory=dict)
    tagged: dict[str, list[VersionInfo]] = field(default_factory=dict)  # carry DEPLOY_TAG
    managed: dict[str, list[VersionInfo]] = field(default_factory=dict)  # carry deployment.status
    fetched: dict[tuple[str, str], VersionInfo] = field(default_factory=dict)  # selected, fetched one by one

    def known_version(self, name: str, version: str) -> VersionInfo | None:
        if (name, version) in self.fetched:
            return self.fetched[(name, version)]
        for group in (self.managed.get(name, ()), self.tagged.get(name, ())):
            for v in group:
                if v.version == version:
                    return v
        model = self.models.get(name)
        for v in model.stage_versions if model else ():
            if v.version == version:
                return v
        return None


@dataclass(frozen=True)
class Selection:
    """The version chosen for serving and why (`alias:production`, `tag:stage=production`, ...)."""

    version: str
    reason: str


@dataclass(frozen=True)
class Rollout:
    """The rollout state read from an InferenceService's status."""

    state: str  # deploying | ready | failed
    message: str = ""
    url: str = ""
    revision: str = ""
