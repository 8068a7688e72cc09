"""The reconcile core: registry state in, InferenceServices and MLflow tags converged.

Level-triggered and idempotent (controller-runtime's model): for each model, read what the registry
wants and what the cluster has, render the desired InferenceService with a pure function, apply only
when it differs, read the rollout from KServe's status, and write tags back only when they change.
Running a pass twice changes nothing the second time.

Imports no MLflow or Kubernetes client: it talks to a `Registry` and a `Cluster` (the wrappers in
`registry.py` and `kube.py`, or fakes in unit tests). One model's failure never stops the others:
transient errors are retried in the pass and then backed off per model; permanent ones are reported
as `deployment.status=failed` and not retried until the desired state changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from adapter import images, naming
from adapter.errors import AdapterError, NotFoundError, PermanentError, TransientError
from adapter.log import kv
from adapter.overrides import OverrideError, Overrides, resolve
from adapter.render import CONTAINER, Manifest, render
from adapter.rollout import interpret, latest_created_revision, traffic
from adapter.selection import select
from adapter.settings import AdapterSettings
from adapter.types import (
    ACTIVE_STATES,
    ANN_MODEL_NAME,
    ANN_MODEL_VERSION,
    DEPLOYING,
    FAILED,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    READY,
    RETIRED,
    SUPERSEDED,
    TAG_BASE_REVISION,
    TAG_DEPLOYED,
    TAG_DEPLOYED_VERSION,
    TAG_ENDPOINT,
    TAG_ISVC,
    TAG_MESSAGE,
    TAG_REVISION,
    TAG_REVISION_URL,
    TAG_STARTED,
    TAG_STATUS,
    TAG_TRAFFIC,
    TAG_UPDATED,
    TAG_URL,
    ModelFiles,
    Rollout,
    Selection,
    Snapshot,
    VersionInfo,
)

log = logging.getLogger("adapter.reconcile")

# Backoff between passes for a model that keeps failing transiently, seconds (kopf-style, as data).
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# Retries inside one pass, seconds.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
# Fields the API server rewrites; never compared (KServe stores Serverless as Knative).
_IGNORED = {("metadata", "annotations", "serving.kserve.io/deploymentMode")}
# Predictor fields only a `serving.*` tag sets; removing the tag must remove them (promotion of a canary).
_TAG_ONLY_FIELDS = ("canaryTrafficPercent", "containerConcurrency")


class Registry(Protocol):
    def snapshot(self) -> Snapshot: ...
    def get_version(self, name: str, version: str) -> VersionInfo: ...
    def model_files(self, version: VersionInfo) -> ModelFiles | None: ...
    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str | None]) -> None: ...
    def set_model_tags(self, name: str, tags: Mapping[str, str | None]) -> None: ...


class Cluster(Protocol):
    namespace: str

    def list_owned(self) -> list[dict[str, Any]]: ...
    def get(self, name: str) -> dict[str, Any] | None: ...
    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]: ...
    def delete(self, name: str) -> bool: ...
    def event(self, isvc: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None: ...


@dataclass
class Outcome:
    """What one model's reconcile did."""

    model: str
    version: str = ""
    isvc: str = ""
    action: str = "unchanged"  # created | updated | unchanged | deleted | skipped | error
    status: str = ""
    message: str = ""
    tag_writes: int = 0


@dataclass
class PassResult:
    ok: bool = True
    error: str = ""
    outcomes: list[Outcome] = field(default_factory=list)

    def by_model(self) -> dict[str, Outcome]:
        return {o.model: o for o in self.outcomes}


def contains(desired: Any, observed: Any, path: tuple[str, ...] = ()) -> bool:
    """True when every field we set has the same value in the observed object."""
    if path in _IGNORED:
        return True
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return False
        return all(contains(v, observed.get(k), (*path, str(k))) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return False
        return all(contains(d, o, path) for d, o in zip(desired, observed, strict=True))
    return bool(desired == observed)


def _dropped(desired: Manifest, observed: Mapping[str, Any]) -> bool:
    """A field that only an owner's tag sets (not the template) was removed: apply, so SSA drops it."""
    want = desired.get("spec", {}).get("predictor", {})
    have = (observed.get("spec") or {}).get("predictor") or {}
    return any(key in have and key not in want for key in _TAG_ONLY_FIELDS)


def fingerprint(doc: Manifest) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _annotations(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _merge(tags: dict[str, str], changes: Mapping[str, str | None]) -> None:
    """Apply written changes to our copy of the tags (None deletes)."""
    for k, v in changes.items():
        if v is None:
            tags.pop(k, None)
        else:
            tags[k] = v


def _diff(current: Mapping[str, str], wanted: Mapping[str, str | None]) -> dict[str, str | None]:
    return {k: v for k, v in wanted.items() if current.get(k) != v and not (v is None and k not in current)}


class Reconciler:
    """Converges every registered model; `run_pass()` is one level-triggered pass."""

    def __init__(
        self,
        settings: AdapterSettings,
        registry: Registry,
        cluster: Cluster,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        retry_delays: Iterable[float] = RETRY_DELAYS,
        backoff: Iterable[float] = BACKOFF,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.cluster = cluster
        self.now = now
        self.monotonic = monotonic
        self.sleep = sleep
        self.retry_delays = tuple(retry_delays)
        self.backoff_delays = tuple(backoff)
        self._backoff: dict[str, tuple[int, float]] = {}  # model -> (failures, not before)
        self._terminal: dict[str, str] = {}  # model -> fingerprint that failed permanently
        self._tags: dict[tuple[str, str], dict[str, str]] = {}  # tags as written in this pass
        self._snap = Snapshot()

    # ---- one pass -------------------------------------------------------------------------
    def run_pass(self, only: Iterable[str] | None = None) -> PassResult:
        """Reconcile every model (or just `only`); never raises for a model's or a server's failure."""
        try:
            snap = self.registry.snapshot()
            owned = self.cluster.list_owned()
        except AdapterError as e:
            log.warning("Pass skipped: %s; next pass retries", e.message)
            return PassResult(ok=False, error=e.message)
        self._tags = {}
        self._snap = snap
        owned_by_model: dict[str, dict[str, Any]] = {}
        for obj in owned:
            model_name = _annotations(obj).get(ANN_MODEL_NAME)
            if model_name:
                owned_by_model[model_name] = obj
        names = {n for n, m in snap.models.items() if self._selection(snap, n) is not None}
        names |= {n for n in owned_by_model if self.settings.in_scope(n)}  # another adapter's scope: hands off
        names |= {
            n
            for n, vs in snap.managed.items()
            if any(v.tags.get(TAG_STATUS) in ACTIVE_STATES or v.tags.get(TAG_DEPLOYED) == "true" for v in vs)
        }
        if only is not None:
            names &= set(only)
        result = PassResult()
        for name in sorted(names):
            result.outcomes.append(self._guarded(name, snap, owned_by_model.get(name)))
        return result

    def _selection(self, snap: Snapshot, name: str) -> Selection | None:
        model = snap.models.get(name)
        if model is None:
            return None
        s = self.settings
        return select(model, snap.tagged.get(name, []), alias=s.deploy_alias, tag=s.deploy_tag, stage=s.deploy_stage)

    def _guarded(self, name: str, snap: Snapshot, observed: dict[str, Any] | None) -> Outcome:
        failures, not_before = self._backoff.get(name, (0, 0.0))
        if self.monotonic() < not_before:
            return Outcome(model=name, action="skipped", message="backing off after transient errors")
        last: TransientError | None = None
        for attempt, delay in enumerate((0.0, *self.retry_delays)):
            if delay:
                self.sleep(delay)
            try:
                outcome = self._reconcile(name, snap, observed if attempt == 0 else self._refetch(name))
                self._backoff.pop(name, None)
                return outcome
            except TransientError as e:
                last = e
            except AdapterError as e:  # permanent, and nothing more specific handled it
                log.error("Reconcile failed %s", kv(model=name, error=e.message))
                return Outcome(model=name, action="error", status=FAILED, message=e.message)
            except Exception as e:
                log.exception("Reconcile crashed %s", kv(model=name, error=type(e).__name__))
                return Outcome(model=name, action="error", message=f"unexpected {type(e).__name__}: {e}")
        delay = self.backoff_delays[min(failures, len(self.backoff_delays) - 1)]
        self._backoff[name] = (failures + 1, self.monotonic() + delay)
        message = last.message if last else "transient error"
        log.warning("Reconcile will be retried %s", kv(model=name, retry_in=f"{delay:g}s", error=message))
        return Outcome(model=name, action="error", message=message)

    def _refetch(self, name: str) -> dict[str, Any] | None:
        obj = self.cluster.get(naming.isvc_name(name))
        if obj is not None and _labels(obj).get(MANAGED_BY_LABEL) == MANAGED_BY:
            return obj
        return None

    # ---- one model ------------------------------------------------------------------------
    def _reconcile(self, name: str, snap: Snapshot, observed: dict[str, Any] | None) -> Outcome:
        model = snap.models.get(name)
        selection = self._selection(snap, name)
        managed = snap.managed.get(name, [])
        isvc = naming.isvc_name(name)
        ref = f"{self.cluster.namespace}/{isvc}"
        if selection is None:
            return self._retire(name, managed, observed, ref, registered=model is not None)

        try:
            version = snap.known_version(name, selection.version) or self.registry.get_version(name, selection.version)
        except NotFoundError:
            msg = f"{selection.reason} points to version {selection.version}, which does not exist"
            log.error("Cannot deploy %s", kv(model=name, version=selection.version, error=msg))
            return Outcome(model=name, version=selection.version, isvc=ref, action="error", status=FAILED, message=msg)
        out = Outcome(model=name, version=version.version, isvc=ref)

        if observed is None:
            existing = self.cluster.get(isvc)
            if existing is not None:
                if _labels(existing).get(MANAGED_BY_LABEL) != MANAGED_BY:
                    return self._fail(
                        out,
                        version,
                        f"InferenceService {ref} exists and is not managed by "
                        f"service-builder (label {MANAGED_BY_LABEL}); left untouched",
                    )
                other = _annotations(existing).get(ANN_MODEL_NAME)
                if other != name:
                    return self._fail(
                        out,
                        version,
                        f"InferenceService {ref} already serves MLflow model {other!r}; names collide, left untouched",
                    )
                observed = existing

        try:
            overrides = resolve(self.settings, model.tags if model else {}, version.tags)
            image = self._image(version, overrides, observed)
            desired = render(self.settings, version, overrides=overrides, image=image)
        except (OverrideError, images.NoImage) as e:
            return self._fail(out, version, str(e))
        fp = fingerprint(desired)
        tags = self._current_tags(version)
        if self._terminal.get(name) == fp:
            out.action, out.status, out.message = "skipped", FAILED, tags.get(TAG_MESSAGE, "")
            return out

        new_version = _annotations(observed).get(ANN_MODEL_VERSION) != version.version
        try:
            if observed is None or new_version:
                base = latest_created_revision(observed)
                serving = observed is not None and tags.get(TAG_DEPLOYED) == "true"
                if tags.get(TAG_STATUS) != DEPLOYING or tags.get(TAG_BASE_REVISION, "") != base:
                    # Record the intent before applying: a crash after the apply still knows which
                    # revision was there before, so a leftover Ready never counts as this version's.
                    self._write_version(
                        out,
                        version,
                        {
                            TAG_STATUS: DEPLOYING,
                            TAG_BASE_REVISION: base,
                            TAG_STARTED: self._iso(),
                            TAG_ISVC: ref,
                            # A version still serving (a rollback onto it) stays deployed meanwhile.
                            TAG_DEPLOYED: "true" if serving else "false",
                            TAG_MESSAGE: None,
                            TAG_ENDPOINT: tags.get(TAG_ENDPOINT) if serving else None,
                        },
                    )
                out.action = "created" if observed is None else "updated"
                observed = self.cluster.apply(desired)
                # The deadline runs from the apply that went through, not from retried attempts.
                self._write_version(out, version, {TAG_STARTED: self._iso()})
            elif not contains(desired, observed) or _dropped(desired, observed):
                self._write_version(out, version, {TAG_STARTED: self._iso()})
                observed = self.cluster.apply(desired)
                out.action = "updated"
        except TransientError:
            raise
        except PermanentError as e:
            if not isinstance(e, NotFoundError):  # a missing namespace may appear without any registry change
                self._terminal[name] = fp
            return self._fail(out, version, e.message)
        self._terminal.pop(name, None)
        if out.action in ("created", "updated"):
            log.info(
                "%s InferenceService %s",
                out.action.capitalize(),
                kv(model=name, version=version.version, isvc=ref, action=out.action),
            )
            self.cluster.event(observed, out.action.capitalize(), f"MLflow model version {version.version} applied")
        else:
            log.info(
                "InferenceService unchanged %s", kv(model=name, version=version.version, isvc=ref, action="unchanged")
            )

        tags = self._current_tags(version)
        rollout = interpret(
            observed,
            base_revision=tags.get(TAG_BASE_REVISION, ""),
            started_at=_parse_time(tags.get(TAG_STARTED)),
            now=self.now(),
            deadline_seconds=self.settings.rollout_deadline_seconds,
            canary=overrides.canary_percent,
        )
        self._write_rollout(out, version, rollout, ref, managed, traffic(observed))
        return out

    def _image(self, version: VersionInfo, overrides: Overrides, observed: Mapping[str, Any] | None) -> str:
        """The predictor image for `version`: its `serving.image` tag; the image already serving this version if
        the catalog still lists it (chosen when it was deployed: no MLflow read in a steady pass); else the first
        of PREDICTOR_IMAGES that covers its MLmodel flavor and requirements.txt, or NoImage. PREDICTOR_IMAGE when
        MLflow does not serve the version's files, and for the local target (its predictors run this Python,
        whatever the image; their own start-up check applies). Transient MLflow errors propagate (retried)."""
        override = overrides.values.get("image")
        if override:
            return str(override)
        if self.settings.deploy_target == "local":
            return self.settings.predictor_image
        if observed is not None and _annotations(observed).get(ANN_MODEL_VERSION) == version.version:
            containers = ((observed.get("spec") or {}).get("predictor") or {}).get("containers") or []
            current = next((c.get("image") for c in containers if c.get("name") == CONTAINER), None)
            if current in {spec.image for spec in self.settings.catalog}:
                return str(current)
        try:
            files = self.registry.model_files(version)
        except PermanentError as e:
            raise images.NoImage(f"cannot choose a predictor image: {e.message}") from None
        if files is None:
            return self.settings.predictor_image
        return images.choose(self.settings.catalog, files.flavors, images.requirements(files.requirements))

    # ---- write-back ------------------------------------------------------------------------
    def _write_rollout(
        self,
        out: Outcome,
        version: VersionInfo,
        rollout: Rollout,
        ref: str,
        managed: list[VersionInfo],
        split: list[tuple[str, int, bool, str]],
    ) -> None:
        tags = self._current_tags(version)
        others = [v for v in managed if v.version != version.version]
        shares, urls = self._shares(version, rollout, others, split)
        canary = rollout.state == READY and len(shares) > 1 and shares.get(version.version, 100) < 100
        split_text = " ".join(f"v{v}:{p}%" for v, p in sorted(shares.items(), key=lambda i: -int(i[0])))
        wanted: dict[str, str | None] = {TAG_STATUS: rollout.state, TAG_ISVC: ref}
        if rollout.url:
            wanted[TAG_URL] = rollout.url
        if rollout.state == READY:
            serves = shares.get(version.version, 100) > 0
            wanted[TAG_DEPLOYED] = "true" if serves else "false"
            wanted[TAG_REVISION] = rollout.revision or None
            wanted[TAG_MESSAGE] = None
            wanted[TAG_TRAFFIC] = split_text if canary else None
            wanted[TAG_REVISION_URL] = urls.get(version.version) if canary else None
            if rollout.url:
                wanted[TAG_ENDPOINT] = f"{rollout.url}/{naming.service_path(version.name)}/api/" if serves else None
        elif rollout.state == FAILED:
            wanted[TAG_MESSAGE] = rollout.message
            wanted[TAG_DEPLOYED] = tags.get(TAG_DEPLOYED, "false")
        else:
            wanted[TAG_MESSAGE] = None
            wanted[TAG_DEPLOYED] = tags.get(TAG_DEPLOYED, "false")
        self._write_version(out, version, wanted)
        out.status, out.message = rollout.state, rollout.message
        if rollout.state == FAILED and out.tag_writes:
            log.error(
                "Rollout failed %s", kv(model=version.name, version=version.version, isvc=ref, error=rollout.message)
            )

        serving = {version.version} if tags.get(TAG_DEPLOYED) == "true" else set()
        for other in others:
            otags = self._current_tags(other)
            was_serving = otags.get(TAG_DEPLOYED) == "true"
            if canary and shares.get(other.version, 0) > 0:
                serving.add(other.version)  # still takes part of the traffic
                self._write_version(
                    out,
                    other,
                    {TAG_DEPLOYED: "true", TAG_TRAFFIC: split_text, TAG_REVISION_URL: urls.get(other.version)},
                )
            elif rollout.state == READY or not was_serving:
                if otags.get(TAG_STATUS) in ACTIVE_STATES or was_serving:
                    self._write_version(
                        out,
                        other,
                        {
                            TAG_STATUS: SUPERSEDED,
                            TAG_DEPLOYED: "false",
                            TAG_ENDPOINT: None,
                            TAG_MESSAGE: None,
                            TAG_TRAFFIC: None,
                            TAG_REVISION_URL: None,
                        },
                    )
            elif was_serving:
                serving.add(other.version)
        main = max(serving, key=lambda v: (shares.get(v, 0), int(v)), default="")
        self._write_model(out, version.name, main)

    def _shares(
        self, version: VersionInfo, rollout: Rollout, others: list[VersionInfo], split: list[tuple[str, int, bool, str]]
    ) -> tuple[dict[str, int], dict[str, str]]:
        """Traffic percent and tag URL per model version, from KServe's split and recorded revisions."""
        by_revision = {self._current_tags(v).get(TAG_REVISION): v.version for v in others}
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

    def _retire(
        self, name: str, managed: list[VersionInfo], observed: dict[str, Any] | None, ref: str, *, registered: bool
    ) -> Outcome:
        out = Outcome(model=name, isvc=ref, status=RETIRED)
        if observed is not None:
            obj_name = (observed.get("metadata") or {}).get("name", "")
            if self.cluster.delete(obj_name):
                out.action = "deleted"
                log.info("Deleted InferenceService %s", kv(model=name, isvc=ref, action="deleted"))
        for v in managed:
            vt = self._current_tags(v)
            if vt.get(TAG_STATUS) in ACTIVE_STATES or vt.get(TAG_DEPLOYED) == "true":
                out.version = out.version or v.version
                self._write_version(
                    out,
                    v,
                    {
                        TAG_STATUS: RETIRED,
                        TAG_DEPLOYED: "false",
                        TAG_ENDPOINT: None,
                        TAG_MESSAGE: None,
                        TAG_TRAFFIC: None,
                        TAG_REVISION_URL: None,
                    },
                )
        if registered:
            self._write_model(out, name, "")
        return out

    def _fail(self, out: Outcome, version: VersionInfo, message: str) -> Outcome:
        tags = self._current_tags(version)
        self._write_version(
            out,
            version,
            {
                TAG_STATUS: FAILED,
                TAG_MESSAGE: message,
                TAG_ISVC: out.isvc,
                TAG_DEPLOYED: tags.get(TAG_DEPLOYED, "false"),
            },
        )
        if out.tag_writes:
            log.error("Cannot deploy %s", kv(model=version.name, version=version.version, isvc=out.isvc, error=message))
        out.action = "skipped" if out.action == "unchanged" else out.action
        out.status, out.message = FAILED, message
        return out

    def _current_tags(self, version: VersionInfo) -> dict[str, str]:
        key = (version.name, version.version)
        if key not in self._tags:
            self._tags[key] = dict(version.tags)
        return self._tags[key]

    def _write_version(self, out: Outcome, version: VersionInfo, wanted: Mapping[str, str | None]) -> None:
        current = self._current_tags(version)
        changes = _diff(current, wanted)
        if not changes:
            return
        changes[TAG_UPDATED] = self._iso()
        if TAG_STATUS in changes:  # written last (one call per tag): who sees the new status finds its message
            changes[TAG_STATUS] = changes.pop(TAG_STATUS)
        self.registry.set_version_tags(version.name, version.version, changes)
        _merge(current, changes)
        out.tag_writes += len(changes)
        if TAG_STATUS in changes:
            log.info(
                "Tagged model version %s",
                kv(model=version.name, version=version.version, isvc=out.isvc, status=changes[TAG_STATUS]),
            )

    def _write_model(self, out: Outcome, name: str, serving: str) -> None:
        key = (name, "")
        if key not in self._tags:
            model = self._snap.models.get(name)
            self._tags[key] = dict(model.tags) if model else {}
        tags = self._tags[key]
        wanted: dict[str, str | None] = {
            TAG_DEPLOYED: "true" if serving else "false",
            TAG_DEPLOYED_VERSION: serving or None,
        }
        if not serving and TAG_DEPLOYED not in tags:
            return  # never deployed: nothing to say
        changes = _diff(tags, wanted)
        if not changes:
            return
        self.registry.set_model_tags(name, changes)
        _merge(tags, changes)
        out.tag_writes += len(changes)

    def _iso(self) -> str:
        return self.now().astimezone(UTC).isoformat(timespec="seconds")
