"""The executor: registry and cluster in, the planner's effects performed, outcomes recorded after the fact.

One pass reads the registry snapshot and every InferenceService in the namespace, fetches the few selected
versions the snapshot lacks, asks the pure planner (`planner.plan`) what to do, and performs each model's
plan: the effect (server-side apply or delete) with retries, then its tags in the planner's order (each
version's `deployment.status` last, so a reader who sees `ready` also sees the endpoint). Models are executed
concurrently, and so are the tags of one write but its status (both bounded by WRITEBACK_CONCURRENCY); one
model's failure never stops the others. Transient errors are retried in the pass, then backed off per model;
a permanent refusal is reported as `failed` and not retried until the desired manifest changes.
Level-triggered and idempotent: a second pass changes nothing. `run_pass(only=...)` reconciles a few models (a
webhook, a watch event, a requeue) the same way, reading just their InferenceServices; each outcome says when to
look again without an event (`requeue_after`: a rollout's deadline, a transient failure's backoff).

`Effects` is the one place that writes to the cluster (server-side apply, delete) and `retrying` the one retry
policy; the `mlflow deployments` plugin (`plugin.py`) uses both too.

Imports no MLflow or Kubernetes client: it talks to a `Registry` and a `Cluster` (the wrappers in
`registry.py` and `kube.py`, or fakes in unit tests).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar

from adapter import metrics, naming, planner
from adapter.errors import AdapterError, NotFoundError, PermanentError, TransientError
from adapter.log import kv
from adapter.planner import ModelPlan, TagWrite
from adapter.settings import AdapterSettings
from adapter.types import TAG_STATUS, Action, ModelFiles, Snapshot, Status, VersionInfo

log = logging.getLogger("adapter.reconcile")

# Backoff between passes for a model that keeps failing transiently, seconds (kopf-style, as data).
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
# Retries inside one pass, seconds.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
T = TypeVar("T")


class Registry(Protocol):
    def snapshot(self) -> Snapshot: ...
    def get_version(self, name: str, version: str) -> VersionInfo: ...
    def model_files(self, version: VersionInfo) -> ModelFiles | None: ...
    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str | None]) -> None: ...
    def set_model_tags(self, name: str, tags: Mapping[str, str | None]) -> None: ...


class Cluster(Protocol):
    namespace: str

    def list_all(self) -> list[dict[str, Any]]: ...
    def get(self, name: str) -> dict[str, Any] | None: ...
    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]: ...
    def delete(self, name: str) -> bool: ...
    def event(self, isvc: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None: ...


@dataclass
class Outcome:
    """What one model's reconcile did (set after the effects happened)."""

    model: str
    version: str = ""
    isvc: str = ""
    action: Action = Action.UNCHANGED
    status: Status | None = None
    message: str = ""
    tag_writes: int = 0
    requeue_after: float | None = None  # reconcile again in this many seconds, event or not


@dataclass
class PassResult:
    ok: bool = True
    error: str = ""
    outcomes: list[Outcome] = field(default_factory=list)

    def by_model(self) -> dict[str, Outcome]:
        return {o.model: o for o in self.outcomes}

    @property
    def failed(self) -> list[Outcome]:
        """Models in error after this pass: an effect refused or failing, or a failed deployment."""
        return [o for o in self.outcomes if o.action == Action.ERROR or o.status == Status.FAILED]


def retrying(
    fn: Callable[[], T],
    *,
    delays: Iterable[float] = RETRY_DELAYS,
    sleep: Callable[[float], None] = time.sleep,
    counter: Any = None,
) -> T:
    """`fn()`, retried on transient errors after each of `delays`; the last error is raised. `counter` (a
    Prometheus counter with a `result` label) counts the outcome: ok or error."""
    for delay in (*delays, None):
        try:
            value = fn()
        except TransientError:
            if delay is None:
                if counter is not None:
                    counter.labels(result="error").inc()
                raise
            sleep(delay)
            continue
        except AdapterError:
            if counter is not None:
                counter.labels(result="error").inc()
            raise
        if counter is not None:
            counter.labels(result="ok").inc()
        return value
    raise AssertionError("unreachable")


class Effects:
    """The writes to the cluster, each retried (`retrying`) and counted: a server-side apply, a delete."""

    def __init__(
        self,
        cluster: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
        retry_delays: Iterable[float] = RETRY_DELAYS,
    ) -> None:
        self.cluster = cluster
        self.sleep = sleep
        self.retry_delays = tuple(retry_delays)

    def retrying(self, fn: Callable[[], T], counter: Any = None) -> T:
        return retrying(fn, delays=self.retry_delays, sleep=self.sleep, counter=counter)

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply `manifest` (creates it when missing); the object as stored."""
        return self.retrying(lambda: self.cluster.apply(manifest), counter=metrics.APPLIES)

    def delete(self, name: str) -> bool:
        """Delete the InferenceService `name`; False when it was gone already."""
        return self.retrying(lambda: self.cluster.delete(name), counter=metrics.DELETES)


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
        self.effects = Effects(cluster, sleep=sleep, retry_delays=retry_delays)
        self.backoff_delays = tuple(backoff)
        self._backoff: dict[str, tuple[int, float]] = {}  # model -> (failures, not before)
        self._terminal: dict[str, str] = {}  # model -> fingerprint refused permanently
        self._lock = threading.Lock()

    # ---- one pass -------------------------------------------------------------------------
    def run_pass(self, only: Iterable[str] | None = None) -> PassResult:
        """Reconcile every model (or just `only`); never raises for a model's or a server's failure."""
        only = None if only is None else sorted(set(only))
        try:
            snap = self.registry.snapshot()
            observed = self._observe(only)
        except AdapterError as e:
            log.warning("Pass skipped: %s; next pass retries", e.message)
            return PassResult(ok=False, error=e.message)
        missing, unreachable = self._fetch_selected(snap)
        world = planner.World(self.settings, snap, observed, self.now(), frozenset(missing), dict(self._terminal))
        world = replace(world, files=self._fetch_files(world, unreachable))
        plans = [p for p in planner.plan(world, only) if p.model not in unreachable]
        result = PassResult(outcomes=[unreachable[m] for m in sorted(unreachable) if only is None or m in set(only)])
        workers = max(1, min(self.settings.writeback_concurrency, len(plans)))
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile") as pool,
            ThreadPoolExecutor(max_workers=self.settings.writeback_concurrency, thread_name_prefix="tags") as tags,
        ):
            result.outcomes += pool.map(lambda p: self._guarded(world, p, tags), plans)
        result.outcomes.sort(key=lambda o: o.model)
        if only is None:
            self._count(result)
        return result

    def _observe(self, only: list[str] | None) -> dict[str, dict[str, Any]]:
        """The InferenceServices a pass reads: every one in the namespace (one list), or those of `only`'s models
        (one get each: fresh, even just after this adapter's own apply)."""
        if only is None:
            return {str(o["metadata"]["name"]): o for o in self.cluster.list_all()}
        observed = {}
        for model in only:
            name = naming.isvc_name(model)
            obj = self._retrying(partial(self.cluster.get, name))
            if obj is not None:
                observed[name] = obj
        return observed

    def _fetch_selected(self, snap: Snapshot) -> tuple[set[tuple[str, str]], dict[str, Outcome]]:
        """Selected versions the snapshot lacks, fetched into it: (those that do not exist, models not reachable)."""
        missing: set[tuple[str, str]] = set()
        unreachable: dict[str, Outcome] = {}
        for name, version in sorted(planner.wanted_versions(self.settings, snap)):
            try:
                snap.fetched[(name, version)] = self._retrying(partial(self.registry.get_version, name, version))
            except NotFoundError:
                missing.add((name, version))
            except AdapterError as e:
                unreachable[name] = self._failed(name, version, "", e)
        return missing, unreachable

    def _fetch_files(
        self, world: planner.World, unreachable: dict[str, Outcome]
    ) -> dict[tuple[str, str], ModelFiles | str | None]:
        """The model files (MLmodel, requirements.txt) of the versions whose image must be chosen from them."""
        files: dict[tuple[str, str], ModelFiles | str | None] = {}
        for v in planner.files_needed(world):
            try:
                files[(v.name, v.version)] = self._retrying(partial(self.registry.model_files, v))
            except PermanentError as e:
                files[(v.name, v.version)] = e.message
            except AdapterError as e:
                unreachable[v.name] = self._failed(v.name, v.version, "", e)
        return files

    def _count(self, result: PassResult) -> None:
        by_status: dict[str, int] = dict.fromkeys([s.value for s in Status], 0)
        for o in result.outcomes:
            if o.status is not None:
                by_status[o.status.value] += 1
        for status, n in by_status.items():
            metrics.MODELS.labels(status=status).set(n)

    # ---- one model ------------------------------------------------------------------------
    def _failed(self, model: str, version: str, isvc: str, e: AdapterError) -> Outcome:
        """The outcome of a transient failure: backed off per model (BACKOFF), requeued when the backoff ends."""
        with self._lock:
            failures, _ = self._backoff.get(model, (0, 0.0))
            delay = self.backoff_delays[min(failures, len(self.backoff_delays) - 1)]
            self._backoff[model] = (failures + 1, self.monotonic() + delay)
        log.warning("Reconcile will be retried %s", kv(model=model, retry_in=f"{delay:g}s", error=e.message))
        return Outcome(model, version, isvc, Action.ERROR, message=e.message, requeue_after=delay)

    def _guarded(self, world: planner.World, p: ModelPlan, tags: ThreadPoolExecutor) -> Outcome:
        _, not_before = self._backoff.get(p.model, (0, 0.0))
        if self.monotonic() < not_before:
            wait = not_before - self.monotonic()
            message = "backing off after transient errors"
            return Outcome(p.model, p.version, p.isvc, Action.SKIPPED, message=message, requeue_after=wait)
        try:
            outcome = self._execute(world, p, tags)
        except TransientError as e:
            return self._failed(p.model, p.version, p.isvc, e)
        except AdapterError as e:  # a permanent refusal of a tag write (the effect's is handled in _execute)
            log.error("Write-back refused %s", kv(model=p.model, error=e.message))
            return Outcome(p.model, p.version, p.isvc, Action.ERROR, message=e.message)
        except Exception as e:
            log.exception("Reconcile crashed %s", kv(model=p.model, error=type(e).__name__))
            return Outcome(p.model, p.version, p.isvc, Action.ERROR, message=f"unexpected {type(e).__name__}: {e}")
        with self._lock:
            self._backoff.pop(p.model, None)
        return outcome

    def _execute(self, world: planner.World, p: ModelPlan, tags: ThreadPoolExecutor) -> Outcome:
        out = Outcome(p.model, p.version, p.isvc, p.action, p.status, p.message, requeue_after=p.requeue_after)
        fields = {"model": p.model, "version": p.version, "isvc": p.isvc}
        try:
            if p.apply is not None:
                applied = self.effects.apply(p.apply)
                verb = p.action.value.capitalize()
                log.info("%s InferenceService %s", verb, kv(**fields, action=p.action))
                self.cluster.event(applied, verb, f"MLflow model version {p.version} applied")
            elif p.delete:
                self.effects.delete(p.delete)
                log.info("Deleted InferenceService %s", kv(**fields, action=Action.DELETED))
            elif p.status not in (Status.RETIRED, None) and p.action == Action.UNCHANGED:
                log.info("InferenceService unchanged %s", kv(**fields, action=Action.UNCHANGED))
        except PermanentError as e:
            if not isinstance(e, NotFoundError):  # a missing namespace may appear without any registry change
                with self._lock:
                    self._terminal[p.model] = p.fingerprint
            log.error("Cannot deploy %s", kv(**fields, error=e.message))
            out = replace(out, action=Action.ERROR, status=Status.FAILED, message=e.message, requeue_after=None)
            out.tag_writes = self._write(planner.refused(world, p, e.message), fields, tags)
            return out
        if p.apply is not None:
            with self._lock:
                self._terminal.pop(p.model, None)
        out.tag_writes = self._write(p.tags, fields, tags)
        if out.tag_writes and p.status == Status.FAILED:
            what = "Cannot deploy %s" if p.action == Action.SKIPPED else "Rollout failed %s"
            log.error(what, kv(**fields, error=p.message))
        return out

    def _write(self, writes: Iterable[TagWrite], fields: Mapping[str, str], pool: ThreadPoolExecutor) -> int:
        """The planner's tag writes, in its order; the count of tags written. MLflow sets one tag per call: the
        tags of one write go out at the same time, except `deployment.status`, sent once all the others landed."""
        n = 0
        for w in writes:
            status = w.changes.get(TAG_STATUS) if w.version else None
            first = {k: v for k, v in w.changes.items() if not (w.version and k == TAG_STATUS)}
            self._concurrently(pool, [partial(self._set, w, {k: v}) for k, v in first.items()])
            if status is not None:
                self._concurrently(pool, [partial(self._set, w, {TAG_STATUS: status})])
                log.info("Tagged model version %s", kv(**{**fields, "version": w.version}, status=status))
            n += len(w.changes)
        return n

    def _set(self, w: TagWrite, changes: Mapping[str, str | None]) -> None:
        if w.version:
            write = partial(self.registry.set_version_tags, w.model, w.version, changes)
        else:
            write = partial(self.registry.set_model_tags, w.model, changes)
        self._retrying(write, counter=metrics.TAG_WRITES)

    @staticmethod
    def _concurrently(pool: ThreadPoolExecutor, calls: list[Callable[[], None]]) -> None:
        """Run `calls` on the pass's tag-writer pool (at most WRITEBACK_CONCURRENCY in flight for the whole
        pass); wait for all, then raise the first error."""
        futures = [pool.submit(call) for call in calls]
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def _retrying(self, fn: Callable[[], T], counter: Any = None) -> T:
        return self.effects.retrying(fn, counter=counter)
