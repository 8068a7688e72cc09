"""The adapter's only door to Kubernetes: InferenceServices (get, list owned, apply, delete, and the watch on
those it owns), Events, and the coordination.k8s.io Lease of leader election (get, create, replace:
`adapter.leader` decides what to write).

Uses the plain `kubernetes` client with dicts (the kserve SDK loses error codes and has no
server-side apply). Maps `ApiException` and urllib3 errors to the adapter's own exceptions:
404 -> NotFoundError; 409, 429, 5xx, timeouts and dropped connections -> TransientError; other
4xx -> PermanentError with the API server's message; a watch's 410 Gone -> ExpiredError. Every call is
counted in `adapter.metrics` by kind (`get_inferenceservice`, `apply_inferenceservice`, `watch_inferenceservices`,
`update_lease`, ...); failures other than 404 count as errors.

The watch is the client's own (`kubernetes.watch.Watch`, list then watch from the list's resourceVersion, with
bookmarks); `adapter.watch` decides when to list again, restart or back off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from adapter import metrics
from adapter.errors import ExpiredError, NotFoundError, PermanentError, TransientError
from adapter.settings import AdapterSettings
from adapter.types import MANAGED_BY, MANAGED_BY_LABEL

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
LEASES = ("coordination.k8s.io", "v1", "leases")
log = logging.getLogger(__name__)


def api_client(settings: AdapterSettings) -> client.ApiClient:
    """K8S_API + K8S_API_KEY if set; else the in-cluster service account; else KUBECONFIG/~/.kube/config."""
    if settings.k8s_api:
        cfg = client.Configuration()
        cfg.host = settings.k8s_api
        token = settings.k8s_api_key.get_secret_value()
        if token:
            cfg.api_key = {"authorization": token}
            cfg.api_key_prefix = {"authorization": "Bearer"}
        cfg.verify_ssl = settings.k8s_verify_ssl
        if settings.k8s_ca_file:
            cfg.ssl_ca_cert = settings.k8s_ca_file
        return client.ApiClient(cfg)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except ConfigException:
        pass
    try:
        cfg = client.Configuration()
        config.load_kube_config(config_file=settings.kubeconfig or None, client_configuration=cfg)
        return client.ApiClient(cfg)
    except (ConfigException, OSError) as e:
        raise PermanentError(f"no Kubernetes access: set K8S_API, KUBECONFIG, or run in a cluster ({e})") from None


def _status_message(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "{}")
        return str(body.get("message") or e.reason)
    except (ValueError, AttributeError):
        return str(e.reason)


def _kind(what: str) -> str:
    return "_".join(what.split()[:2])  # `verb resource [name]` -> verb_resource: a small, fixed set


def _mapped(what: str, e: ApiException) -> Exception:
    """The adapter's error for an API server's answer (counted as an error unless it is a 404)."""
    status = int(e.status or 0)
    msg = f"Kubernetes {what}: {status} {_status_message(e)}"
    if status == 404:
        return NotFoundError(msg, status=404)
    metrics.CALL_ERRORS.labels("kubernetes", _kind(what)).inc()
    if status == 410:
        return ExpiredError(msg, status=status)
    if status in (408, 409, 429) or status >= 500 or status == 0:
        return TransientError(msg, status=status)
    return PermanentError(msg, status=status)


class WatchStream:
    """One watch request: iterate for `(type, object)` (ADDED, MODIFIED, DELETED, BOOKMARK); `close()` from
    another thread ends it at once."""

    what = "watch inferenceservices"

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._watch = watch.Watch()
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._closed = False

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        metrics.CALLS.labels("kubernetes", _kind(self.what)).inc()
        try:
            for event in self._watch.stream(self._fn, *self._args, **self._kwargs):
                if isinstance(event, dict) and isinstance(event.get("raw_object"), dict):
                    yield str(event["type"]), event["raw_object"]
        except ApiException as e:
            raise _mapped(self.what, e) from None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            if self._closed:
                return
            metrics.CALL_ERRORS.labels("kubernetes", _kind(self.what)).inc()
            stall = self._kwargs["_request_timeout"][1]
            if isinstance(e, urllib3.exceptions.ReadTimeoutError) or "timed out" in str(e):
                raise TransientError(f"Kubernetes {self.what}: no event or bookmark for {stall:g}s") from None
            raise TransientError(f"Kubernetes {self.what}: connection lost ({type(e).__name__})") from None

    def close(self) -> None:
        self._closed = True
        self._watch.stop()


class KubeCluster:
    """InferenceServices in one namespace, as dicts."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        field_manager: str,
        timeout: float = 30.0,
        managed_by: str = MANAGED_BY,
    ) -> None:
        self.namespace = namespace
        self.field_manager = field_manager
        self.managed_by = managed_by  # the app.kubernetes.io/managed-by value of the objects this client owns
        self.timeout = (min(5.0, timeout), timeout)  # (connect, read) seconds
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kind = _kind(what)
        metrics.CALLS.labels("kubernetes", kind).inc()
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as e:
            raise _mapped(what, e) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            metrics.CALL_ERRORS.labels("kubernetes", kind).inc()
            raise TransientError(f"Kubernetes {what}: API server unreachable ({type(e).__name__})") from None

    def list_owned(self) -> list[dict[str, Any]]:
        """The InferenceServices labelled as ours (`app.kubernetes.io/managed-by=<managed_by>`)."""
        return self._list(label_selector=f"{MANAGED_BY_LABEL}={self.managed_by}")

    def list_all(self) -> list[dict[str, Any]]:
        """Every InferenceService in the namespace, ours or not (one call: unowned names are seen too)."""
        return self._list()

    def _list(self, **kw: str) -> list[dict[str, Any]]:
        return self._list_versioned(**kw)[0]

    def _list_versioned(self, **kw: str) -> tuple[list[dict[str, Any]], str]:
        res = self._call(
            "list inferenceservices",
            self._objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            **kw,
        )
        return list(res.get("items") or []), str((res.get("metadata") or {}).get("resourceVersion") or "")

    # ---- the watch on owned InferenceServices ----------------------------------------------------------
    def list_owned_versioned(self) -> tuple[list[dict[str, Any]], str]:
        """The owned InferenceServices and the list's resourceVersion, where a watch of them starts."""
        return self._list_versioned(label_selector=f"{MANAGED_BY_LABEL}={self.managed_by}")

    def watch_owned(self, resource_version: str, timeout_seconds: int, stall_seconds: float) -> WatchStream:
        """The changes to owned InferenceServices after `resource_version`, with bookmarks, as `(type, object)`
        pairs; the API server ends the stream after `timeout_seconds`. No byte for `stall_seconds` (bookmarks
        included) ends it with a TransientError, as does a dropped connection; 410 Gone is an ExpiredError."""
        return WatchStream(
            self._objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            label_selector=f"{MANAGED_BY_LABEL}={self.managed_by}",
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_seconds,
            _request_timeout=(self.timeout[0], stall_seconds),
        )

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call(
                f"get inferenceservice {self.namespace}/{name}",
                self._objects.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
            )
        except NotFoundError:
            return None

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with our field manager (creates when missing)."""
        name = manifest["metadata"]["name"]
        applied = self._call(
            f"apply inferenceservice {self.namespace}/{name}",
            self._objects.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            manifest,
            field_manager=self.field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
        if applied is None:  # the client drops the body of a 201 (an apply that created the object)
            applied = self.get(name)
        if applied is None:
            raise TransientError(f"Kubernetes apply inferenceservice {self.namespace}/{name}: gone right after apply")
        return dict(applied)

    def delete(self, name: str) -> bool:
        try:
            self._call(
                f"delete inferenceservice {self.namespace}/{name}",
                self._objects.delete_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
            )
            return True
        except NotFoundError:
            return False

    def event(self, isvc: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        """Record a Kubernetes Event on the InferenceService; best effort (never fails a reconcile)."""
        meta = isvc.get("metadata") or {}
        now = datetime.now(UTC)
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'isvc')}.", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "InferenceService",
                "name": meta.get("name"),
                "namespace": self.namespace,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1000],
            "type": "Warning" if warning else "Normal",
            "source": {"component": self.field_manager},
            "firstTimestamp": now.isoformat(),
            "lastTimestamp": now.isoformat(),
            "count": 1,
        }
        try:
            self._call("create event", self._core.create_namespaced_event, self.namespace, body)
        except (TransientError, PermanentError) as e:
            log.debug("event not recorded: %s", e.message)

    # ---- the leader-election Lease (coordination.k8s.io/v1), as dicts --------------------------------
    # Through the generic object API: the typed CoordinationV1Api round-trips MicroTime through datetime and
    # drops the fraction of a whole second, which the API server then refuses.
    def get_lease(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                self._call(
                    f"get lease {self.namespace}/{name}",
                    self._objects.get_namespaced_custom_object,
                    *LEASES[:2],
                    self.namespace,
                    LEASES[2],
                    name,
                )
            )
        except NotFoundError:
            return None

    def create_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the Lease; 409 (it exists already: another replica was first) is a TransientError."""
        name = body["metadata"]["name"]
        return dict(
            self._call(
                f"create lease {self.namespace}/{name}",
                self._objects.create_namespaced_custom_object,
                *LEASES[:2],
                self.namespace,
                LEASES[2],
                body,
            )
        )

    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]:
        """Replace the Lease, guarded by `metadata.resourceVersion`: 409 when someone wrote it since we read it."""
        name = body["metadata"]["name"]
        return dict(
            self._call(
                f"update lease {self.namespace}/{name}",
                self._objects.replace_namespaced_custom_object,
                *LEASES[:2],
                self.namespace,
                LEASES[2],
                name,
                body,
            )
        )
