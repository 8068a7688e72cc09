"""Fixtures for adapter integration tests: the real MLflow server, the real control plane (kube-apiserver and the
KServe controller), a namespace per test with the adapter's ServiceAccount bound to deploy/base's Role, and
settings scoped to this test's own models (MODEL_NAME_LIKE), so tests sharing one MLflow never meet.

The adapter reaches the API server through the fault proxy (`world.kube`), with its ServiceAccount token:
never as admin. The test itself reads and writes objects as admin, and plays Knative (`world.play`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from mlflow import MlflowClient

from adapter.kube import KubeCluster, api_client
from adapter.reconcile import Reconciler
from adapter.registry import MlflowRegistry
from adapter.settings import AdapterSettings
from tests.controlplane.fixtures import Namespace
from tests.controlplane.knative import Knative
from tests.controlplane.plane import ControlPlane
from tests.controlplane.proxy import FaultProxy

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


@dataclass
class World:
    settings: AdapterSettings
    kube: FaultProxy
    plane: ControlPlane
    knative: Knative
    admin: Any
    mlflow: MlflowClient
    prefix: str

    @property
    def ns(self) -> str:
        return self.settings.k8s_name_space

    @property
    def isvc_path(self) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{self.ns}/{PLURAL}"

    def reconciler(self, **kw: Any) -> Reconciler:
        registry = MlflowRegistry(
            self.settings.mlflow_tracking_uri,
            tag_key=self.settings.tag_key,
            tag_value=self.settings.tag_value,
            name_like=self.settings.model_name_like,
        )
        s = self.settings
        cluster = KubeCluster(api_client(s), s.k8s_name_space, s.field_manager, s.k8s_request_timeout_seconds)
        kw.setdefault("retry_delays", (0.05, 0.1, 0.2))
        return Reconciler(self.settings, registry, cluster, **kw)

    def model(self, suffix: str, versions: int = 1, **tags: str) -> str:
        name = f"{self.prefix}{suffix}"
        self.mlflow.create_registered_model(name)
        for _ in range(versions):
            mv = self.mlflow.create_model_version(
                name, source="s3://models/none", tags=tags or None, await_creation_for=0
            )
        assert mv
        return name

    def tags(self, name: str, version: str | int) -> dict[str, str]:
        return dict(self.mlflow.get_model_version(name, str(version)).tags)

    # ---- the cluster, as admin ------------------------------------------------------------------
    def isvc(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                client.CustomObjectsApi(self.admin).get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def isvcs(self) -> list[dict[str, Any]]:
        res = client.CustomObjectsApi(self.admin).list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL)
        return list(res["items"])

    def create_isvc(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": self.ns}}
        return dict(
            client.CustomObjectsApi(self.admin).create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, obj)
        )

    def events(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in client.CoreV1Api(self.admin).list_namespaced_event(self.ns).items]

    def play(self, isvc_name: str, state: str = "ready", message: str = "", url: str = "") -> str:
        """Knative reports the InferenceService's predictor as `state`; returns when KServe has propagated it."""
        return self.knative.play(self.ns, isvc_name, state, message, url)


@pytest.fixture
def world(
    tracking_uri: str,
    control_plane: ControlPlane,
    admin_api: Any,
    knative: Knative,
    k8s_namespace: Namespace,
    kube_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> World:
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    settings = AdapterSettings(
        mlflow_tracking_uri=tracking_uri,
        k8s_api=kube_proxy.url,
        k8s_api_key=k8s_namespace.token,
        k8s_name_space=k8s_namespace.name,
        model_name_like=f"{prefix}%",
        predictor_image="kind.local/custom-predictor:dev",
        mlflow_http_request_max_retries=0,
        mlflow_http_request_timeout=5,
    )
    # What export_mlflow_client_env() would do, undone after the test.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return World(
        settings,
        kube_proxy,
        control_plane,
        knative,
        admin_api,
        MlflowClient(tracking_uri, registry_uri=tracking_uri),
        prefix,
    )
