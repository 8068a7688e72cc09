"""The planner: one pure function from (registry snapshot, observed InferenceServices) to what to do.

`plan()` decides, for every model in scope, the one effect on the cluster (apply a manifest, delete a service,
or nothing) and the MLflow tags to write once that effect has happened. `refused()` gives the tags to write
instead when the cluster refuses the effect. Neither does I/O, reads a clock or keeps state: the executor
(`reconcile.py`) passes in the time and what it remembers (the fingerprints that failed permanently), performs
the effects, and records outcomes only after they happened (controller-runtime's CreateOrUpdate).

Rollout bookkeeping lives on the InferenceService (`bookkeeping.py`); MLflow receives only what users read.
Versions deployed before that (MLflow tags `deployment.base_revision`/`deployment.started_at`, no annotations)
are adopted: compared field by field once, read with those tags, and never redeployed for the change of
bookkeeping alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adapter import bookkeeping, images, inference_log, naming, ownership
from adapter.overrides import OverrideError, Overrides, resolve
from adapter.render import CONTAINER, Manifest, render
from adapter.rollout import interpret, traffic
from adapter.selection import select
from adapter.settings import AdapterSettings
from adapter.types import (
    ACTIVE_STATES,
    ANN_MODEL_NAME,
    ANN_MODEL_VERSION,
    ANN_MODEL_VERSION_URL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    TAG_BASE_REVISION,
    TAG_DEPLOYED,
    TAG_DEPLOYED_VERSION,
    TAG_ENDPOINT,
    TAG_INFERENCE_LOG,
    TAG_ISVC,
    TAG_MESSAGE,
    TAG_REVISION,
    TAG_REVISION_URL,
    TAG_STARTED,
    TAG_STATUS,
    TAG_TRAFFIC,
    TAG_UPDATED,
    TAG_URL,
    Action,
    ModelFiles,
    Rollout,
    Selection,
    Snapshot,
    Status,
    VersionInfo,
)

Changes = dict[str, str | None]  # tag -> value (None deletes)
LEGACY_TAGS = (TAG_BASE_REVISION, TAG_STARTED)
# Predictor fields only a `serving.*` tag sets; legacy comparison must notice when a tag that set one is removed.
_TAG_ONLY_FIELDS = ("canaryTrafficPercent", "containerConcurrency")
_IGNORED = {
    ("metadata", "annotations", "serving.kserve.io/deploymentMode"),  # KServe stores Serverless as Knative
    ("metadata", "annotations", ANN_MODEL_VERSION_URL),  # added with the bookkeeping: not worth a redeploy
}


@dataclass(frozen=True)
class TagWrite:
    """Tags for one model version (`version` set) or for the registered model (`version` empty)."""

    model: str
    version: str
    changes: Changes


@dataclass(frozen=True)
class ModelPlan:
    """What to do for one model. `apply`/`delete` is the effect; `tags` go out only after it succeeded,
    in order, each version's `deployment.status` last and the registered-model tags after the versions."""

    model: str
    version: str = ""
    isvc: str = ""  # namespace/name
    apply: Manifest | None = None
    delete: str = ""  # name of the InferenceService to delete
    action: Action = Action.UNCHANGED  # what the effect is, once it has happened
    status: Status | None = None
    message: str = ""
    tags: tuple[TagWrite, ...] = ()
    fingerprint: str = ""  # of the desired manifest; what a permanent refusal is remembered by
    requeue_after: float | None = None  # seconds until the outcome changes with no event (a rollout's deadline)


@dataclass(frozen=True)
class World:
    """Everything `plan()` reads."""

    settings: AdapterSettings
    snapshot: Snapshot
    observed: Mapping[str, Mapping[str, Any]]  # InferenceService name -> object (ours or not)
    now: datetime
    missing: frozenset[tuple[str, str]] = frozenset()  # (model, version) selected but not in the registry
    terminal: Mapping[str, str] = field(default_factory=dict)  # model -> fingerprint refused permanently
    # (model, version) -> its MLmodel flavors and requirements.txt; None: MLflow does not serve its files;
    # a string: why they could not be read. Only for versions whose image must be chosen (`files_needed`).
    files: Mapping[tuple[str, str], ModelFiles | str | None] = field(default_factory=dict)


# ---- selection -------------------------------------------------------------------------------
def selection(settings: AdapterSettings, snap: Snapshot, name: str) -> Selection | None:
    model = snap.models.get(name)
    if model is None:
        return None
    s = settings
    return select(model, snap.tagged.get(name, []), alias=s.deploy_alias, tag=s.deploy_tag, stage=s.deploy_stage)


def wanted_versions(settings: AdapterSettings, snap: Snapshot) -> set[tuple[str, str]]:
    """Selected versions the snapshot does not hold (the executor fetches them before planning)."""
    out = set()
    for name in snap.models:
        sel = selection(settings, snap, name)
        if sel is not None and snap.known_version(name, sel.version) is None:
            out.add((name, sel.version))
    return out


def files_needed(world: World) -> list[VersionInfo]:
    """Selected versions whose predictor image can only be chosen from their model files (read before planning)."""
    out = []
    for name in in_scope(world):
        sel = selection(world.settings, world.snapshot, name)
        version = world.snapshot.known_version(name, sel.version) if sel else None
        if version is None or (name, version.version) in world.files:
            continue
        model = world.snapshot.models.get(name)
        try:
            overrides = resolve(world.settings, model.tags if model else {}, version.tags)
        except OverrideError:
            continue  # the plan fails on the tag anyway
        if _image_without_files(world, version, overrides, _owned(world, name)) is None:
            out.append(version)
    return out


def _image_without_files(
    world: World, version: VersionInfo, overrides: Overrides, owned: Mapping[str, Any] | None
) -> str | None:
    """The predictor image when the model files are not needed to choose it: a `serving.image` tag; the local
    target (its predictors run this Python, whatever the image); the image already serving this version while the
    catalog still lists it (a steady pass reads no model file). None: choose from the files."""
    s = world.settings
    override = overrides.values.get("image")
    if override:
        return str(override)
    if s.deploy_target == "local":
        return s.predictor_image
    if owned is not None and _annotations(owned).get(ANN_MODEL_VERSION) == version.version:
        containers = ((owned.get("spec") or {}).get("predictor") or {}).get("containers") or []
        current = next((c.get("image") for c in containers if c.get("name") == CONTAINER), None)
        if current in {spec.image for spec in s.catalog}:
            return str(current)
    return None


def _image(world: World, version: VersionInfo, overrides: Overrides, owned: Mapping[str, Any] | None) -> str:
    """The predictor image for `version`: without its files when possible, else the first of PREDICTOR_IMAGES
    that covers its MLmodel flavor and requirements.txt (PREDICTOR_IMAGE when MLflow does not serve the files).
    Raises NoImage naming what is missing."""
    image = _image_without_files(world, version, overrides, owned)
    if image is not None:
        return image
    return image_from_files(
        world.settings, world.files.get((version.name, version.version), "its model files were not read")
    )


def image_from_files(settings: AdapterSettings, files: ModelFiles | str | None) -> str:
    """The first of PREDICTOR_IMAGES that covers these model files (MLmodel flavor, requirements.txt);
    PREDICTOR_IMAGE when MLflow does not serve them (None). A string is why they could not be read. Raises NoImage
    naming what is missing (the plugin chooses with this too)."""
    if isinstance(files, str):
        raise images.NoImage(f"cannot choose a predictor image: {files}")
    if files is None:
        return settings.predictor_image
    return images.choose(settings.catalog, files.flavors, images.requirements(files.requirements))


def _owned(world: World, name: str) -> Mapping[str, Any] | None:
    observed = world.observed.get(naming.isvc_name(name))
    return observed if observed is not None and _ours(observed) and _model_of(observed) == name else None


def in_scope(world: World) -> list[str]:
    """Models to reconcile: selected for serving, owning a service here, or still marked active in MLflow."""
    s, snap = world.settings, world.snapshot
    names = {n for n in snap.models if selection(s, snap, n) is not None}
    names |= {m for obj in world.observed.values() if _ours(obj) and (m := _model_of(obj)) and s.in_scope(m)}
    names |= {
        n
        for n, vs in snap.managed.items()
        if any(v.tags.get(TAG_STATUS) in ACTIVE_STATES or v.tags.get(TAG_DEPLOYED) == "true" for v in vs)
    }
    return sorted(names)


def plan(world: World, only: Iterable[str] | None = None) -> list[ModelPlan]:
    names = in_scope(world)
    if only is not None:
        names = [n for n in names if n in set(only)]
    return [plan_model(world, n) for n in names]


# ---- one model -------------------------------------------------------------------------------
def plan_model(world: World, name: str) -> ModelPlan:
    s, snap = world.settings, world.snapshot
    isvc = naming.isvc_name(name)
    ref = f"{s.k8s_name_space}/{isvc}"
    observed = world.observed.get(isvc)
    owned = _owned(world, name)
    managed = snap.managed.get(name, [])
    sel = selection(s, snap, name)
    if sel is None:
        return _retire(world, name, managed, owned, ref)

    version = snap.known_version(name, sel.version)
    if version is None or (name, sel.version) in world.missing:
        msg = f"{sel.reason} points to version {sel.version}, which does not exist"
        return ModelPlan(name, sel.version, ref, action=Action.SKIPPED, status=Status.FAILED, message=msg)
    if observed is not None and owned is None:
        return _fail(world, version, ref, _not_ours(observed, ref, name))
    model = snap.models.get(name)
    try:
        overrides = resolve(s, model.tags if model else {}, version.tags)
        desired = render(s, version, overrides=overrides, image=_image(world, version, overrides, owned))
    except (OverrideError, images.NoImage) as e:
        return _fail(world, version, ref, str(e))
    fp = bookkeeping.fingerprint(desired)
    if world.terminal.get(name) == fp:
        message = version.tags.get(TAG_MESSAGE, "")
        return ModelPlan(name, version.version, ref, action=Action.SKIPPED, status=Status.FAILED, message=message)

    kept = bookkeeping.read(owned)
    if owned is None:
        apply, action = True, Action.CREATED
    elif kept is None:  # deployed before the bookkeeping moved onto the object
        apply = _annotations(owned).get(ANN_MODEL_VERSION) != version.version or not _legacy_same(desired, owned)
        action = Action.UPDATED
    else:
        apply, action = bookkeeping.changed(desired, owned, s.field_manager), Action.UPDATED
    manifest = bookkeeping.stamp(desired, owned, world.now) if apply else None
    after = {**(owned or {}), "metadata": manifest["metadata"]} if manifest is not None else dict(owned or {})
    kept = bookkeeping.read(after)
    if kept is not None:
        base, started = kept.base_revision, kept.started_at
    else:  # adopted as it is: its rollout is read with the tags the previous adapter kept in MLflow
        base, started = version.tags.get(TAG_BASE_REVISION, ""), bookkeeping.parse_time(version.tags.get(TAG_STARTED))
    rollout = interpret(
        after,
        base_revision=base,
        started_at=started,
        now=world.now,
        deadline_seconds=s.rollout_deadline_seconds,
        canary=overrides.canary_percent,
    )
    container = next(c for c in desired["spec"]["predictor"]["containers"] if c.get("name") == CONTAINER)
    log_target = inference_log.describe(container.get("env") or [])
    tags = _rollout_tags(
        world, version, rollout, ref, managed, traffic(after), legacy_done=kept is not None, log_target=log_target
    )
    return ModelPlan(
        name,
        version.version,
        ref,
        apply=manifest,
        action=action if manifest is not None else Action.UNCHANGED,
        status=Status(rollout.state),
        message=rollout.message,
        tags=tags,
        fingerprint=fp,
        requeue_after=deadline_in(world, rollout, started),
    )


# Past the deadline by this much when the requeue comes: `interpret` fails a rollout strictly after it.
DEADLINE_MARGIN = 0.05


def deadline_in(world: World, rollout: Rollout, started: datetime | None) -> float | None:
    """Seconds until a rollout still deploying reaches ROLLOUT_DEADLINE_SECONDS (None: nothing to wait for)."""
    if rollout.state != Status.DEPLOYING or started is None:
        return None
    elapsed = (world.now - started).total_seconds()
    return max(0.0, world.settings.rollout_deadline_seconds - elapsed) + DEADLINE_MARGIN


def refused(world: World, p: ModelPlan, message: str) -> tuple[TagWrite, ...]:
    """The tags to write when the cluster refused `p`'s effect permanently (instead of `p.tags`)."""
    version = world.snapshot.known_version(p.model, p.version)
    if version is None:
        return ()
    return _fail(world, version, p.isvc, message).tags


# ---- outcomes as tags ------------------------------------------------------------------------
def _fail(world: World, version: VersionInfo, ref: str, message: str) -> ModelPlan:
    wanted: Changes = {
        TAG_MESSAGE: message,
        TAG_ISVC: ref,
        TAG_DEPLOYED: version.tags.get(TAG_DEPLOYED, "false"),
        TAG_STATUS: Status.FAILED,
    }
    writes = _version_write(world, version, wanted)
    return ModelPlan(
        version.name,
        version.version,
        ref,
        action=Action.SKIPPED,
        status=Status.FAILED,
        message=message,
        tags=writes,
    )


def _retire(
    world: World, name: str, managed: list[VersionInfo], owned: Mapping[str, Any] | None, ref: str
) -> ModelPlan:
    writes: list[TagWrite] = []
    first = ""
    for v in managed:
        if v.tags.get(TAG_STATUS) in ACTIVE_STATES or v.tags.get(TAG_DEPLOYED) == "true":
            first = first or v.version
            writes += _version_write(world, v, {**_gone(Status.RETIRED), TAG_STATUS: Status.RETIRED})
    if name in world.snapshot.models:
        writes += _model_write(world, name, "")
    delete = str((owned.get("metadata") or {}).get("name", "")) if owned is not None else ""
    return ModelPlan(
        name,
        first,
        ref,
        delete=delete,
        action=Action.DELETED if delete else Action.UNCHANGED,
        status=Status.RETIRED,
        tags=tuple(writes),
    )


def _gone(status: Status) -> Changes:
    return {
        TAG_DEPLOYED: "false",
        TAG_ENDPOINT: None,
        TAG_MESSAGE: None,
        TAG_TRAFFIC: None,
        TAG_REVISION_URL: None,
        **dict.fromkeys(LEGACY_TAGS),
    }


def _rollout_tags(
    world: World,
    version: VersionInfo,
    rollout: Rollout,
    ref: str,
    managed: list[VersionInfo],
    split: list[tuple[str, int, bool, str]],
    legacy_done: bool,
    log_target: str = "",
) -> tuple[TagWrite, ...]:
    tags = version.tags
    others = [v for v in managed if v.version != version.version]
    shares, urls = _shares(version, rollout, others, split)
    canary = rollout.state == Status.READY and len(shares) > 1 and shares.get(version.version, 100) < 100
    split_text = " ".join(f"v{v}:{p}%" for v, p in sorted(shares.items(), key=lambda i: -int(i[0])))
    serving_before = tags.get(TAG_DEPLOYED) == "true"
    wanted: Changes = {TAG_ISVC: ref}
    if log_target:
        wanted[TAG_INFERENCE_LOG] = log_target  # kept after the version retires: where its records went
    if rollout.url:
        wanted[TAG_URL] = rollout.url
    if legacy_done:
        wanted.update(dict.fromkeys(LEGACY_TAGS))
    if rollout.state == Status.READY:
        serves = shares.get(version.version, 100) > 0
        wanted[TAG_DEPLOYED] = "true" if serves else "false"
        wanted[TAG_REVISION] = rollout.revision or None
        wanted[TAG_MESSAGE] = None
        wanted[TAG_TRAFFIC] = split_text if canary else None
        wanted[TAG_REVISION_URL] = urls.get(version.version) if canary else None
        if rollout.url:
            wanted[TAG_ENDPOINT] = f"{rollout.url}/{naming.service_path(version.name)}/api/" if serves else None
    else:
        wanted[TAG_MESSAGE] = rollout.message if rollout.state == Status.FAILED else None
        # A version still serving (say, a rollback onto it) keeps its endpoint while its new revision rolls out.
        wanted[TAG_DEPLOYED] = "true" if serving_before else "false"
        if not serving_before:
            wanted[TAG_ENDPOINT] = None
    wanted[TAG_STATUS] = rollout.state
    writes = list(_version_write(world, version, wanted))

    serving = {version.version} if wanted[TAG_DEPLOYED] == "true" else set()
    for other in others:
        was_serving = other.tags.get(TAG_DEPLOYED) == "true"
        if canary and shares.get(other.version, 0) > 0:
            serving.add(other.version)  # still takes part of the traffic
            change: Changes = {TAG_DEPLOYED: "true", TAG_TRAFFIC: split_text, TAG_REVISION_URL: urls.get(other.version)}
            writes += _version_write(world, other, change)
        elif rollout.state == Status.READY or not was_serving:
            if other.tags.get(TAG_STATUS) in ACTIVE_STATES or was_serving:
                writes += _version_write(world, other, {**_gone(Status.SUPERSEDED), TAG_STATUS: Status.SUPERSEDED})
        elif was_serving:
            serving.add(other.version)
    main = max(serving, key=lambda v: (shares.get(v, 0), int(v)), default="")
    writes += _model_write(world, version.name, main)
    return tuple(writes)


def _shares(
    version: VersionInfo, rollout: Rollout, others: list[VersionInfo], split: list[tuple[str, int, bool, str]]
) -> tuple[dict[str, int], dict[str, str]]:
    """Traffic percent and tag URL per model version, from KServe's split and the revisions recorded in MLflow."""
    by_revision = {v.tags.get(TAG_REVISION): v.version for v in others}
    shares: dict[str, int] = {}
    urls: dict[str, str] = {}
    for revision, percent, _latest, url in split:
        owner = version.version if rollout.revision and revision == rollout.revision else by_revision.get(revision)
        if owner is None:
            continue
        shares[owner] = shares.get(owner, 0) + percent
        if url:
            urls[owner] = url
    return shares, urls


def _version_write(world: World, version: VersionInfo, wanted: Changes) -> tuple[TagWrite, ...]:
    """The changes `wanted` makes to the version's tags (none: nothing), `deployment.status` last."""
    changes = _diff(version.tags, wanted)
    if not changes:
        return ()
    status = changes.pop(TAG_STATUS, None) if TAG_STATUS in changes else None
    changes[TAG_UPDATED] = world.now.astimezone(UTC).isoformat(timespec="seconds")
    if status is not None:
        changes[TAG_STATUS] = status
    return (TagWrite(version.name, version.version, changes),)


def _model_write(world: World, name: str, serving: str) -> tuple[TagWrite, ...]:
    model = world.snapshot.models.get(name)
    tags = model.tags if model else {}
    if not serving and TAG_DEPLOYED not in tags:
        return ()  # never deployed: nothing to say
    changes = _diff(tags, {TAG_DEPLOYED: "true" if serving else "false", TAG_DEPLOYED_VERSION: serving or None})
    return (TagWrite(name, "", changes),) if changes else ()


def _diff(current: Mapping[str, str], wanted: Mapping[str, str | None]) -> Changes:
    return {
        k: (str(v) if v is not None else None)
        for k, v in wanted.items()
        if current.get(k) != v and not (v is None and k not in current)
    }


# ---- ownership -------------------------------------------------------------------------------
def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _ours(obj: Mapping[str, Any]) -> bool:
    return _labels(obj).get(MANAGED_BY_LABEL) == MANAGED_BY


def _model_of(obj: Mapping[str, Any]) -> str:
    return str(_annotations(obj).get(ANN_MODEL_NAME) or "")


def _not_ours(obj: Mapping[str, Any], ref: str, name: str) -> str:
    if _ours(obj):
        return f"InferenceService {ref} already serves MLflow model {_model_of(obj)!r}; names collide, left untouched"
    return ownership.refusal(obj, MANAGED_BY, ref.partition("/")[0]) or f"InferenceService {ref} is not ours"


# ---- adopting services deployed before the bookkeeping was on the object ---------------------
def _legacy_same(desired: Any, observed: Any, path: tuple[str, ...] = ()) -> bool:
    """Every field we set has the same value in the observed object (and no tag-only field was dropped)."""
    if not path:
        want = (desired.get("spec") or {}).get("predictor") or {}
        have = (observed.get("spec") or {}).get("predictor") or {}
        if any(key in have and key not in want for key in _TAG_ONLY_FIELDS):
            return False
    if path in _IGNORED:
        return True
    if isinstance(desired, dict):
        return isinstance(observed, dict) and all(
            _legacy_same(v, observed.get(k), (*path, str(k))) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(observed, list)
            and len(desired) == len(observed)
            and all(_legacy_same(d, o, path) for d, o in zip(desired, observed, strict=True))
        )
    return bool(desired == observed)
