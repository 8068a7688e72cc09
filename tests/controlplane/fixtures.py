"""pytest fixtures of the real control plane (imported by tests/conftest.py).

- `control_plane` (session): etcd + kube-apiserver + KServe manager, built if missing, stopped at the end.
- `knative` (session): the Knative status writer (`knative.Knative`).
- `k8s_namespace`: a fresh namespace holding the adapter's ServiceAccount, Role and RoleBinding exactly as
  `deploy/base` declares them, and a token for that ServiceAccount from the TokenRequest API.
- `kube_proxy`: the fault-injecting proxy (`proxy.FaultProxy`) in front of the API server.
Namespaces are never deleted: nothing here runs the namespace controller, so tests isolate by unique names.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.knative import Knative
from tests.controlplane.plane import ControlPlane, running
from tests.controlplane.proxy import FaultProxy

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "base"
ADAPTER_RBAC = ("serviceaccount.yaml", "role.yaml", "rolebinding.yaml")
SERVICE_ACCOUNT = "service-builder"


@dataclass(frozen=True)
class Namespace:
    name: str
    token: str  # the adapter's ServiceAccount token (bound to deploy/base's Role in this namespace)


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with running(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def admin_api(control_plane: ControlPlane) -> Iterator[Any]:
    api = control_plane.api_client()
    yield api
    api.close()


@pytest.fixture(scope="session")
def knative(admin_api: Any) -> Knative:
    return Knative(admin_api)


def adapter_rbac(namespace: str) -> list[dict[str, Any]]:
    """deploy/base's ServiceAccount, Role and RoleBinding, placed in `namespace`."""
    docs = []
    for name in ADAPTER_RBAC:
        doc = yaml.safe_load((DEPLOY / name).read_text())
        doc["metadata"]["namespace"] = namespace
        docs.append(doc)
    return docs


def service_account_token(admin_api: Any, namespace: str, name: str = SERVICE_ACCOUNT) -> str:
    from kubernetes import client

    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200))
    answer = client.CoreV1Api(admin_api).create_namespaced_service_account_token(name, namespace, request)
    return str(answer.status.token)


def new_namespace(plane: ControlPlane, admin_api: Any, prefix: str = "t") -> Namespace:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    plane.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, *adapter_rbac(name)])
    return Namespace(name, service_account_token(admin_api, name))


@pytest.fixture
def k8s_namespace(control_plane: ControlPlane, admin_api: Any) -> Namespace:
    return new_namespace(control_plane, admin_api)


@pytest.fixture
def kube_proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    with FaultProxy(control_plane.url, control_plane.ca) as proxy:
        yield proxy
