"""Helpers of the auth tests: predictor settings, a gate built from them with a fresh registry and a clock the
test moves, reading a metric, the hostile headers every mode must refuse with a 401, and (`cluster`) a namespace
of the real control plane where the predictor's ServiceAccount holds deploy/base's ClusterRole and callers get
real tokens from the TokenRequest API."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from prometheus_client import CollectorRegistry

from custom_predictor.auth import Caller, Gate, Refused
from custom_predictor.settings import Settings
from tests.controlplane.plane import ControlPlane

T = TypeVar("T")

HOSTILE_HEADERS: dict[str, dict[str, str]] = {
    "no header": {},
    "empty bearer": {"authorization": "Bearer "},
    "basic scheme": {"authorization": "Basic YWxpY2U6c2VjcmV0"},
    "100 KB header": {"authorization": "Bearer " + "A" * 100_000},
    "100 KB api key": {"x-api-key": "sbk_demo_" + "A" * 100_000},
    "non-ASCII": {"authorization": "Bearer Ünïcødé-模型"},
    "binary junk (latin-1 decoded, as Starlette does)": {
        "authorization": "Bearer " + bytes(range(256)).decode("latin-1")
    },
    "NUL and newline": {"authorization": "Bearer abc\x00def\nghi"},
    "junk API key": {"x-api-key": "sbk_" + "\x7f" * 40},
    "two dots, not base64": {"authorization": "Bearer a.b.c"},
    "JWT-shaped junk": {"authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjF9.c2ln"},
}


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Built:
    gate: Gate
    registry: CollectorRegistry
    clock: Clock
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def check(self, headers: Mapping[str, str]) -> Caller:
        return self.run(self.gate.check(headers))

    def refused(self, headers: Mapping[str, str]) -> Refused:
        try:
            caller = self.check(headers)
        except Refused as r:
            return r
        raise AssertionError(f"expected a refusal, got {caller}")

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def close(self) -> None:
        self.run(self.gate.close())
        self.loop.close()


def settings(**auth: Any) -> Settings:
    """Predictor settings with these auth fields; the machine's KUBECONFIG or pod environment never leaks in."""
    auth.setdefault("kubeconfig", "")
    auth.setdefault("kubernetes_service_host", "")
    return Settings(model_uri="models:/m/1", **auth)


@pytest.fixture
def build() -> Any:
    made: list[Built] = []

    def make(**auth: Any) -> Built:
        clock = Clock()
        registry = CollectorRegistry()
        built = Built(Gate.from_settings(settings(**auth), registry, clock=clock), registry, clock)
        built.run(built.gate.start())
        made.append(built)
        return built

    yield make
    for b in made:
        b.close()


# ---- the real control plane: the predictor's identity and callers with real tokens ---------------------------
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "base"


def kubeconfig(path: Path, server: str, token: str, ca: Path | None = None) -> str:
    """A kubeconfig as a user would write it: one cluster, one user with a bearer token."""
    cluster: dict[str, Any] = {"server": server, **({"certificate-authority": str(ca)} if ca else {})}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def token_for(admin_api: Any, namespace: str, account: str, audiences: list[str] | None = None) -> str:
    """A token of the TokenRequest API (what `kubectl create token` calls)."""
    from kubernetes import client

    spec = client.V1TokenRequestSpec(audiences=audiences or [], expiration_seconds=3600)
    answer = client.CoreV1Api(admin_api).create_namespaced_service_account_token(
        account, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    return str(answer.status.token)


@dataclass
class Cluster:
    """A namespace of the real control plane with the predictor's ServiceAccount granted deploy/base's
    ClusterRole (create tokenreviews and subjectaccessreviews), and ServiceAccounts to call as."""

    plane: ControlPlane
    admin: Any
    ns: str
    isvc: str = "risk-model"

    def account(self, name: str) -> None:
        self.plane.apply(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": self.ns}}
        )

    def token(self, account: str, audiences: list[str] | None = None) -> str:
        return token_for(self.admin, self.ns, account, audiences)

    def grant_get(self, account: str, binding: str) -> None:
        """A Role allowing `get` on this model's InferenceService, and a RoleBinding of `account` to it."""
        self.plane.apply(
            [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": "call-risk-model", "namespace": self.ns},
                    "rules": [
                        {
                            "apiGroups": ["serving.kserve.io"],
                            "resources": ["inferenceservices"],
                            "resourceNames": [self.isvc],
                            "verbs": ["get"],
                        }
                    ],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": binding, "namespace": self.ns},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "call-risk-model"},
                    "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": self.ns}],
                },
            ]
        )

    def predictor_kubeconfig(self, folder: Path, server: str | None = None) -> str:
        """The predictor's credentials: its ServiceAccount's token, for the API server (or a proxy in front)."""
        via_proxy = server is not None
        return kubeconfig(
            folder / "predictor.kubeconfig",
            server or self.plane.url,
            self.token(PREDICTOR_ACCOUNT),
            None if via_proxy else self.plane.ca,
        )


PREDICTOR_ACCOUNT = "service-builder-predictor"


@pytest.fixture
def cluster(control_plane: ControlPlane, admin_api: Any, k8s_namespace: Any) -> Cluster:
    """deploy/base's predictor ServiceAccount and ClusterRole, applied for real; the ClusterRoleBinding copied
    with this namespace (and a name of its own: the test plane is shared)."""
    ns = k8s_namespace.name
    account = yaml.safe_load((DEPLOY / "predictor-serviceaccount.yaml").read_text())
    account["metadata"]["namespace"] = ns
    role = yaml.safe_load((DEPLOY / "predictor-clusterrole.yaml").read_text())
    binding = yaml.safe_load((DEPLOY / "predictor-clusterrolebinding.yaml").read_text())
    binding["metadata"]["name"] = f"{binding['metadata']['name']}-{ns}"
    binding["subjects"][0]["namespace"] = ns
    control_plane.apply([account, role, binding])
    return Cluster(control_plane, admin_api, ns)
