"""Fakes at the adapter's own wrapper boundary (Registry, Cluster), for unit tests of the reconcile core.

FakeCluster plays KServe a little: each spec change makes a new revision name; `roll()` sets the
status a controller would. Integration tests use the real wrappers against real servers instead.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from adapter.errors import NotFoundError, PermanentError, TransientError
from adapter.types import ModelFiles, ModelInfo, Snapshot, VersionInfo
from tests.adapter.kserve import status_for


class FakeRegistry:
    def __init__(self, tag: str = "stage=production") -> None:
        self.tag_key, self.tag_value = tag.split("=")
        self.versions: dict[tuple[str, str], VersionInfo] = {}
        self.aliases: dict[str, dict[str, str]] = {}
        self.model_tags: dict[str, dict[str, str]] = {}
        self.writes: Counter[str] = Counter()
        self.fail_next_write: Exception | None = None
        self.files: dict[tuple[str, str], ModelFiles | None] = {}  # none: artifacts MLflow does not serve
        self.file_reads: Counter[tuple[str, str]] = Counter()

    def add(self, name: str, version: str, **tags: str) -> None:
        self.versions[(name, version)] = VersionInfo(name=name, version=version, run_id=f"run{version}", tags=tags)
        self.model_tags.setdefault(name, {})
        self.aliases.setdefault(name, {})

    def tag(self, name: str, version: str, key: str, value: str | None) -> None:
        v = self.versions[(name, version)]
        tags = dict(v.tags)
        if value is None:
            tags.pop(key, None)
        else:
            tags[key] = value
        self.versions[(name, version)] = replace(v, tags=tags)

    def snapshot(self) -> Snapshot:
        snap = Snapshot()
        for name in self.model_tags:
            snap.models[name] = ModelInfo(name=name, aliases=dict(self.aliases[name]), tags=dict(self.model_tags[name]))
        for v in self.versions.values():
            if v.tags.get(self.tag_key) == self.tag_value:
                snap.tagged.setdefault(v.name, []).append(v)
            if "deployment.status" in v.tags:
                snap.managed.setdefault(v.name, []).append(v)
        return snap

    def get_version(self, name: str, version: str) -> VersionInfo:
        if (name, version) not in self.versions:
            raise NotFoundError(f"no version {name}/{version}")
        return self.versions[(name, version)]

    def model_files(self, version: VersionInfo) -> ModelFiles | None:
        self.file_reads[(version.name, version.version)] += 1
        return self.files.get((version.name, version.version))

    def _maybe_fail(self) -> None:
        if self.fail_next_write is not None:
            e, self.fail_next_write = self.fail_next_write, None
            raise e

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str | None]) -> None:
        self._maybe_fail()
        for k, val in tags.items():
            self.tag(name, version, k, val)
            self.writes["version_tag"] += 1

    def set_model_tags(self, name: str, tags: Mapping[str, str | None]) -> None:
        self._maybe_fail()
        for k, val in tags.items():
            if val is None:
                self.model_tags[name].pop(k, None)
            else:
                self.model_tags[name][k] = val
            self.writes["model_tag"] += 1


class FakeCluster:
    namespace = "models"

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.writes: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self.events: list[tuple[str, str]] = []
        self.errors: dict[str, list[Exception]] = {}  # verb -> errors to raise next

    def _err(self, verb: str) -> None:
        queue = self.errors.get(verb)
        if queue:
            raise queue.pop(0)

    def list_owned(self) -> list[dict[str, Any]]:
        self._err("list")
        return [
            copy.deepcopy(o)
            for o in self.objects.values()
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") == "service-builder"
        ]

    def list_all(self) -> list[dict[str, Any]]:
        self._err("list")
        self.reads["list"] += 1
        return [copy.deepcopy(o) for o in self.objects.values()]

    def get(self, name: str) -> dict[str, Any] | None:
        self._err("get")
        self.reads["get"] += 1
        o = self.objects.get(name)
        return copy.deepcopy(o) if o else None

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self._err("apply")
        name = manifest["metadata"]["name"]
        old = self.objects.get(name)
        new = copy.deepcopy(manifest)
        new["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Knative"  # as KServe rewrites it
        gen = 1
        if old is not None:
            gen = old["metadata"]["generation"] + (
                old["spec"] != new["spec"] or old["metadata"]["labels"] != new["metadata"]["labels"]
            )
            new["status"] = old.get("status", {})
        new["metadata"]["generation"] = gen
        self.objects[name] = new
        self.writes["apply"] += 1
        return copy.deepcopy(new)

    def delete(self, name: str) -> bool:
        self._err("delete")
        self.writes["delete"] += 1
        return self.objects.pop(name, None) is not None

    def event(self, isvc: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((reason, message))

    # ---- playing KServe ----
    def roll(self, name: str, state: str = "ready", message: str = "") -> None:
        """Set the status KServe would show for the latest revision: ready, failed or rolling."""
        obj = self.objects[name]
        obj["status"] = status_for(
            name, self.namespace, obj["metadata"]["generation"], obj.get("status"), state, message
        )


def transient(msg: str = "503 Service Unavailable") -> TransientError:
    return TransientError(f"Kubernetes apply: {msg}", status=503)


def permanent(msg: str = "422 InferenceService is invalid") -> PermanentError:
    return PermanentError(f"Kubernetes apply: {msg}", status=422)
