"""Fixtures for adapter integration tests: the real MLflow server, the Kubernetes API stand-in, and
settings scoped to this test's own models (MODEL_NAME_LIKE), so tests sharing one MLflow never meet."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mlflow import MlflowClient

from adapter.kube import KubeCluster, api_client
from adapter.reconcile import Reconciler
from adapter.registry import MlflowRegistry
from adapter.settings import AdapterSettings
from tests.adapter.kserve import status_for
from tests.kubeapi import KubeApiServer, kserve_webhook

NS = "models"


@pytest.fixture
def kube() -> Iterator[KubeApiServer]:
    with KubeApiServer(admission=[kserve_webhook]) as api:
        yield api
        assert api.errors == [], "the stand-in itself failed on a request"


@dataclass
class World:
    settings: AdapterSettings
    kube: KubeApiServer
    mlflow: MlflowClient
    prefix: str

    def reconciler(self, **kw: Any) -> Reconciler:
        registry = MlflowRegistry(
            self.settings.mlflow_tracking_uri,
            tag_key=self.settings.tag_key,
            tag_value=self.settings.tag_value,
            name_like=self.settings.model_name_like,
        )
        cluster = KubeCluster(api_client(self.settings), self.settings.k8s_name_space, self.settings.field_manager)
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

    def isvc(self, name: str) -> dict[str, Any] | None:
        return self.kube.get_object("inferenceservices", NS, name)

    def play(self, isvc_name: str, state: str = "ready", message: str = "", canary: int | None = None) -> None:
        obj = self.isvc(isvc_name)
        assert obj is not None
        status = status_for(isvc_name, NS, obj["metadata"]["generation"], obj.get("status"), state, message, canary)
        self.kube.set_status("inferenceservices", NS, isvc_name, status)


@pytest.fixture
def world(tracking_uri: str, kube: KubeApiServer, monkeypatch: pytest.MonkeyPatch) -> World:
    prefix = f"t{uuid.uuid4().hex[:6]}-"
    settings = AdapterSettings(
        mlflow_tracking_uri=tracking_uri,
        k8s_api=kube.url,
        k8s_name_space=NS,
        model_name_like=f"{prefix}%",
        predictor_image="kind.local/custom-predictor:dev",
        mlflow_http_request_max_retries=0,
        mlflow_http_request_timeout=5,
    )
    # What export_mlflow_client_env() would do, undone after the test.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    return World(settings, kube, MlflowClient(tracking_uri, registry_uri=tracking_uri), prefix)
