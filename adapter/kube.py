"""The adapter's only door to Kubernetes: InferenceServices (get, list owned, apply, delete), Events, and the
coordination.k8s.io Lease of leader election (get, create, replace: `adapter.leader` decides what to write).

Uses the plain `kubernetes` client with dicts (the kserve SDK loses error codes and has no
server-side apply). Maps `ApiException` and urllib3 errors to the adapter's own exceptions:
404 -> NotFoundError; 409, 429, 5xx, timeouts and dropped connections -> TransientError; other
4xx -> PermanentError with the API server's message. Every call is counted in `adapter.metrics` by kind
(`get_inferenceservice`, `apply_inferenceservice`, `update_lease`, ...); failures other than 404 count as errors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from adapter import metrics
from adapter.errors import NotFoundError, PermanentError, TransientError
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
        kind = "_".join(what.split()[:2])  # `verb resource [name]` -> verb_resource: a small, fixed set
        metrics.CALLS.labels("kubernetes", kind).inc()
        try:
            return fn(*args, _request_timeout=self.timeout, **kwargs)
        except ApiException as e:
            status = int(e.status or 0)
            msg = f"Kubernetes {what}: {status} {_status_message(e)}"
            if status == 404:
                raise NotFoundError(msg, status=404) from None
            metrics.CALL_ERRORS.labels("kubernetes", kind).inc()
            if status in (408, 409, 429) or status >= 500 or status == 0:
                raise TransientError(msg, status=status) from None
            raise PermanentError(msg, status=status) from None
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
        res = self._call(
            "list inferenceservices",
            self._objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            **kw,
        )
        return list(res.get("items") or [])

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
