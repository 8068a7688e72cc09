"""The watch on what the adapter owns: each change to one of its InferenceServices queues that model's reconcile.

Client-go's reflector, in small, over a `WatchSource` (`kube.KubeCluster`, or a fake in unit tests):
- list the owned InferenceServices (the `app.kubernetes.io/managed-by` label), then watch from the list's
  resourceVersion with bookmarks; the API server ends each watch after a random half to nine tenths of
  `stall_seconds`, with a bookmark 2 s before, and the next one resumes where it stopped;
- 410 Gone (the version left the API server's history): list again. What changed meanwhile is found by
  comparing each object's resourceVersion with the one last seen (only a name, a version and a model name are
  kept per object, never the object), and only those models are queued;
- a dropped connection, a 500 or a 429 (on the watch or on the list): back off (`BACKOFF`), then resume; the
  backoff starts over once an event arrives;
- a stalled watch, no event and no bookmark for `stall_seconds` (a healthy one brings at least the bookmark
  before its end, and the API server sends others when it has news): restarted from the last version seen.

It calls `changed(model)` for each added, modified or deleted owned InferenceService whose model `wanted()`
admits, and `resync()` after its first list (it knew nothing before: the caller runs a full pass, which reads
everything). It decides nothing else: the reconcile reads the registry and the object itself, level-triggered,
as for a poll or a webhook. The run loop (`adapter.manager`) runs it only while this replica leads.
Imports no client.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from adapter import metrics
from adapter.errors import AdapterError, ExpiredError, PermanentError
from adapter.log import kv
from adapter.types import ANN_MODEL_NAME

log = logging.getLogger("adapter.watch")

BACKOFF = (0.2, 1.0, 2.0, 5.0, 10.0, 30.0)
# The API server keeps each watch open for a random part of stall_seconds in this range (spreading restarts, as
# client-go does), and sends a bookmark 2 s before it ends it: a healthy watch is never taken for a stalled one.
WATCH_TIMEOUT = (0.5, 0.9)


class Stream(Protocol):
    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]: ...
    def close(self) -> None: ...


class WatchSource(Protocol):
    namespace: str

    def list_owned_versioned(self) -> tuple[list[dict[str, Any]], str]: ...
    def watch_owned(self, resource_version: str, timeout_seconds: int, stall_seconds: float) -> Stream: ...


def model_of(obj: Mapping[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_MODEL_NAME) or "")


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("name") or ""), str(meta.get("resourceVersion") or "")


class Watcher:
    """Lists and watches the owned InferenceServices of one namespace in a thread, from `start()` to `stop()`."""

    def __init__(
        self,
        source: WatchSource,
        *,
        stall_seconds: float,
        wanted: Callable[[str], bool] = lambda model: True,
        backoff: Iterable[float] = BACKOFF,
        timeout: tuple[float, float] = WATCH_TIMEOUT,
    ) -> None:
        self.source = source
        self.stall_seconds = stall_seconds
        self.wanted = wanted
        self.backoff = tuple(backoff)
        self.timeout = timeout
        self.resource_version = ""  # where the next watch starts ("" : list first)
        self.synced = threading.Event()  # set by every list
        self._known: dict[str, tuple[str, str]] | None = None  # name -> (resourceVersion, model); None: never listed
        self._changed: Callable[[str], None] = lambda model: None
        self._resync: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._stream: Stream | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def owned(self) -> int:
        """How many owned InferenceServices it knows of."""
        return len(self._known or {})

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self, changed: Callable[[str], None], resync: Callable[[], None]) -> None:
        """Start from a fresh list (a new leader, or a restart): nothing of an earlier run is kept."""
        self._changed, self._resync = changed, resync
        self._known, self.resource_version = None, ""
        self.synced.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    # ---- the loop -------------------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        where = self.source.namespace
        while not self._stop.is_set():
            try:
                if not self.resource_version:
                    self._list()
                if self._watch():  # an event came: the connection works
                    failures = 0
                elif not self._stop.is_set():  # ended at once, empty: do not spin
                    self._stop.wait(self.backoff[min(failures, len(self.backoff) - 1)])
                    failures += 1
                metrics.WATCH_RESTARTS.labels("ended").inc()
            except ExpiredError:
                log.info("Watch expired; listing again %s", kv(namespace=where, version=self.resource_version))
                metrics.WATCH_RESTARTS.labels("expired").inc()
                self.resource_version = ""
            except AdapterError as e:
                stalled = "no event or bookmark" in e.message
                metrics.WATCH_RESTARTS.labels("stalled" if stalled else "error").inc()
                if self._stop.is_set():
                    break
                delay = 0.0 if stalled else self.backoff[min(failures, len(self.backoff) - 1)]
                failures += 0 if stalled else 1
                level = logging.ERROR if isinstance(e, PermanentError) else logging.WARNING
                log.log(level, "Watch interrupted %s", kv(namespace=where, retry_in=f"{delay:g}s", error=e.message))
                self._stop.wait(delay)
            except Exception:  # a surprise must not end the watch: polling would be all that is left
                log.exception("Watch crashed; restarting %s", kv(namespace=where))
                failures += 1
                self._stop.wait(self.backoff[min(failures, len(self.backoff) - 1)])

    def _list(self) -> None:
        items, version = self.source.list_owned_versioned()
        seen = {}
        for obj in items:
            name, rv = _meta(obj)
            seen[name] = (rv, model_of(obj))
        known, self._known = self._known, seen
        self.resource_version = version
        if known is None:
            log.info("Watch listed %s", kv(namespace=self.source.namespace, owned=len(seen), version=version))
            self.synced.set()
            self._resync()
            return
        changed = {
            (seen.get(name) or known[name])[1]
            for name in seen.keys() | known.keys()
            if seen.get(name) != known.get(name)
        }
        log.info(
            "Watch relisted %s",
            kv(namespace=self.source.namespace, owned=len(seen), changed=len(changed), version=version),
        )
        self.synced.set()
        for model in sorted(changed):
            self._queue(model)

    def _watch(self) -> bool:
        """One watch request, to its end; True when at least one event (or bookmark) came."""
        low, high = (max(1, int(self.stall_seconds * part)) for part in self.timeout)
        timeout = random.randint(low, max(low, high))  # noqa: S311 - spreading restarts, not a secret
        stream = self.source.watch_owned(self.resource_version, timeout, self.stall_seconds)
        with self._lock:
            if self._stop.is_set():
                return False
            self._stream = stream
        got = False
        try:
            for kind, obj in stream:
                got = True
                metrics.WATCH_EVENTS.labels(kind.lower()).inc()
                name, rv = _meta(obj)
                if rv:
                    self.resource_version = rv
                if kind == "BOOKMARK" or not name or self._known is None:
                    continue
                model = model_of(obj)
                if kind == "DELETED":
                    self._known.pop(name, None)
                elif self._known.get(name) == (rv, model):
                    continue  # seen already (by a list)
                else:
                    self._known[name] = (rv, model)
                self._queue(model)
                if self._stop.is_set():
                    break
        finally:
            with self._lock:
                self._stream = None
        return got

    def _queue(self, model: str) -> None:
        if model and self.wanted(model):
            self._changed(model)
