"""Session-wide fixtures: a real MLflow server (sqlite) and process hygiene for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.servers import MlflowServer, mlflow_server

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


@pytest.fixture(scope="session")
def mlflow_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real `mlflow server` with a sqlite backend and proxied artifacts, shared by the session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture
def tracking_uri(mlflow_srv: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the mlflow client library at the session server for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_srv.url)
    import mlflow

    mlflow.set_tracking_uri(mlflow_srv.url)
    mlflow.set_registry_uri(mlflow_srv.url)
    return mlflow_srv.url


# The real control plane (etcd, kube-apiserver, KServe manager) and its helpers: tests/controlplane/fixtures.py.
# The predictor's ServiceAccount and RBAC (deploy/base) in a test namespace: tests/auth/conftest.py.
from tests.auth.conftest import cluster  # noqa: E402
from tests.controlplane.fixtures import (  # noqa: E402
    admin_api,
    control_plane,
    k8s_namespace,
    knative,
    kube_proxy,
)
from tests.images.fixtures import images  # noqa: E402

__all__ = ["admin_api", "cluster", "control_plane", "images", "k8s_namespace", "knative", "kube_proxy"]
