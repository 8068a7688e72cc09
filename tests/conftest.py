"""Session-wide fixtures (a real MLflow server, the real control plane) and the test tiers: every test is marked
with what it needs (mlflow, controlplane, objectstore, predictor, browser, torch) or `fast`, from what it uses
(tests/tiers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import tiers
from tests.servers import MlflowServer, mlflow_server

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def pytest_configure(config: pytest.Config) -> None:
    tiers.guard()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Before `-m` selects: each test's markers say what it needs."""
    tiers.mark(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    """After `-m` selected: a selected test whose optional part is missing is skipped, saying what to install; in
    CI the run stops instead."""
    tiers.skip_or_fail_missing(session.items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    tiers.running(item)
    try:
        return (yield)
    finally:
        tiers.running(None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """The guard watches a test's setup and call only: its teardown also ends the fixtures of wider scope that the
    next test does not share (the last test of a run ends the session's: a `fast` test ending the images'
    fixture is not starting anything)."""
    tiers.running(None)


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
