"""The kubernetes mode against the real API server of the test control plane: real ServiceAccount tokens
(TokenRequest), a real TokenReview and SubjectAccessReview made with the predictor's own ServiceAccount holding
deploy/base's ClusterRole, and real Roles and RoleBindings deciding. The predictor reaches the API server through
the fault proxy, which counts the reviews and plays an unreachable server; nothing answers in its place."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from custom_predictor.auth import Caller, Refused
from tests.auth.conftest import HOSTILE_HEADERS, PREDICTOR_ACCOUNT, Cluster
from tests.controlplane.proxy import FaultProxy

TOKENREVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"
SARS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def rbac(build: Any, cluster: Cluster, kubeconfig: str, **kw: Any) -> Any:
    kw.setdefault("auth_cache_seconds", 60)
    return build(
        auth_modes="kubernetes",
        kubeconfig=kubeconfig,
        inferenceservice_namespace=cluster.ns,
        inferenceservice_name=cluster.isvc,
        **kw,
    )


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def reviews(proxy: FaultProxy) -> tuple[int, int]:
    return proxy.count("POST", TOKENREVIEWS), proxy.count("POST", SARS)


def test_rbac_allows_the_bound_caller_refuses_others_and_asks_once_per_token(
    build: Any, cluster: Cluster, kube_proxy: FaultProxy, tmp_path: Path
) -> None:
    for account in ("reader", "stranger"):
        cluster.account(account)
    cluster.grant_get("reader", "reader-may-call")
    b = rbac(build, cluster, cluster.predictor_kubeconfig(tmp_path, kube_proxy.url))
    reader, stranger = cluster.token("reader"), cluster.token("stranger")
    kube_proxy.reset_log()

    async def twenty() -> list[Caller]:
        return await asyncio.gather(*(b.gate.check(bearer(reader)) for _ in range(20)))

    callers = b.run(twenty())
    expected = f"system:serviceaccount:{cluster.ns}:reader"
    assert {c.subject for c in callers} == {expected} and {c.method for c in callers} == {"kubernetes"}
    assert f"system:serviceaccounts:{cluster.ns}" in callers[0].groups
    assert reviews(kube_proxy) == (1, 1)  # twenty concurrent requests, one review of each kind
    for _ in range(5):
        b.check(bearer(reader))
    assert reviews(kube_proxy) == (1, 1)

    refused = b.refused(bearer(stranger))
    assert refused.status == 403 and f"system:serviceaccount:{cluster.ns}:stranger may not get" in refused.reason
    assert b.refused(bearer(stranger)).status == 403
    assert reviews(kube_proxy) == (2, 2)  # the refusal is kept too
    assert stranger not in refused.reason

    forged = reader[:-6] + ("AAAAAA" if not reader.endswith("AAAAAA") else "BBBBBB")
    assert b.refused(bearer(forged)).status == 401  # the API server does not authenticate it: no access review
    assert reviews(kube_proxy) == (3, 2)
    assert b.metric("predictor_auth_checks_total", method="kubernetes", outcome="allowed") == 25
    assert b.metric("predictor_auth_checks_total", method="kubernetes", outcome="forbidden") == 2
    assert b.metric("predictor_auth_upstream_up", upstream="kubernetes") == 1


def test_a_removed_binding_is_refused_again_within_the_ttl(
    build: Any, cluster: Cluster, kube_proxy: FaultProxy, tmp_path: Path
) -> None:
    cluster.account("analyst")
    cluster.grant_get("analyst", "analyst-may-call")
    b = rbac(build, cluster, cluster.predictor_kubeconfig(tmp_path, kube_proxy.url), auth_cache_seconds=30)
    token = cluster.token("analyst")
    assert b.check(bearer(token)).subject == f"system:serviceaccount:{cluster.ns}:analyst"
    cluster.plane.kubectl("delete", "rolebinding", "analyst-may-call", "-n", cluster.ns)
    kube_proxy.reset_log()
    assert b.check(bearer(token)).method == "kubernetes"  # within the TTL the kept answer stands, unasked
    assert reviews(kube_proxy) == (0, 0)
    b.clock.advance(30)
    # Past the TTL the API server is asked again; its RBAC cache follows the deletion within moments.
    status = 200
    for _ in range(50):
        try:
            b.check(bearer(token))
        except Refused as e:
            status = e.status
            break
        b.clock.advance(30)
        time.sleep(0.1)
    assert status == 403


def test_audiences_keep_api_server_tokens_out(
    build: Any, cluster: Cluster, kube_proxy: FaultProxy, tmp_path: Path
) -> None:
    cluster.account("scorer")
    cluster.grant_get("scorer", "scorer-may-call")
    b = rbac(
        build, cluster, cluster.predictor_kubeconfig(tmp_path, kube_proxy.url), auth_kubernetes_audiences="risk-model"
    )
    assert b.check(bearer(cluster.token("scorer", ["risk-model"]))).subject.endswith(":scorer")
    refused = b.refused(bearer(cluster.token("scorer")))  # minted for the API server itself
    assert refused.status == 401 and "TokenReview" in refused.reason


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_hostile_headers_are_401(build: Any, cluster: Cluster, tmp_path: Path, case: str) -> None:
    b = rbac(build, cluster, cluster.predictor_kubeconfig(tmp_path))
    assert b.refused(HOSTILE_HEADERS[case]).status == 401


def test_an_unreachable_api_server_fails_closed_and_says_so(
    build: Any, cluster: Cluster, kube_proxy: FaultProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.account("nurse")
    cluster.grant_get("nurse", "nurse-may-call")
    b = rbac(build, cluster, cluster.predictor_kubeconfig(tmp_path, kube_proxy.url), auth_timeout_seconds=1)
    known, fresh = cluster.token("nurse"), cluster.token("nurse")
    assert b.check(bearer(known)).subject.endswith(":nurse")
    kube_proxy.drop("POST", TOKENREVIEWS, times=None)
    assert b.check(bearer(known)).subject.endswith(":nurse")  # kept answers keep serving
    refused = b.refused(bearer(fresh))
    assert refused.status == 503 and "unreachable" in refused.reason
    kube_proxy.clear_faults()
    kube_proxy.slow("POST", TOKENREVIEWS, 5, times=None)
    assert b.refused(bearer(fresh)).status == 503  # a timeout, not a hang
    assert b.metric("predictor_auth_upstream_up", upstream="kubernetes") == 0
    assert b.metric("predictor_auth_checks_total", method="kubernetes", outcome="unavailable") == 2
    kube_proxy.clear_faults()
    kube_proxy.inject("POST", TOKENREVIEWS, 500)
    assert b.refused(bearer(fresh)).status == 503
    assert b.check(bearer(fresh)).subject.endswith(":nurse")  # a 503 is never kept: the next call asks again
    assert b.metric("predictor_auth_upstream_up", upstream="kubernetes") == 1
    assert "kubernetes unreachable" in caplog.text and "kubernetes reachable again" in caplog.text
    assert known not in caplog.text and fresh not in caplog.text


def test_a_predictor_without_the_cluster_role_fails_closed_with_a_hint(
    build: Any, cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.account("nobody-granted")
    cluster.account("reader")
    cluster.grant_get("reader", "reader-may-call")
    from tests.auth.conftest import kubeconfig

    own = kubeconfig(tmp_path / "k", cluster.plane.url, cluster.token("nobody-granted"), cluster.plane.ca)
    b = rbac(build, cluster, own)
    refused = b.refused(bearer(cluster.token("reader")))
    assert refused.status == 503 and "create on tokenreviews and subjectaccessreviews" in refused.reason
    assert "create on tokenreviews and subjectaccessreviews" in caplog.text


def test_in_a_pod_the_mounted_service_account_is_the_predictors_identity(
    build: Any, cluster: Cluster, tmp_path: Path
) -> None:
    """The in-cluster path: KUBERNETES_SERVICE_HOST/PORT and the token and CA where kubelet mounts them."""
    cluster.account("reader")
    cluster.grant_get("reader", "reader-may-call")
    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    (mounted / "token").write_text(cluster.token(PREDICTOR_ACCOUNT))
    (mounted / "ca.crt").write_bytes(cluster.plane.ca.read_bytes())
    host, port = cluster.plane.url.removeprefix("https://").split(":")
    b = rbac(
        build,
        cluster,
        "",
        kubernetes_service_host=host,
        kubernetes_service_port=int(port),
        auth_service_account_dir=str(mounted),
    )
    assert b.check(bearer(cluster.token("reader"))) == Caller(
        f"system:serviceaccount:{cluster.ns}:reader",
        "kubernetes",
        ("system:serviceaccounts", f"system:serviceaccounts:{cluster.ns}", "system:authenticated"),
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({}, r"no Kubernetes credentials: run it in a pod .* or set KUBECONFIG"),
        ({"kubeconfig": "/nonexistent/kubeconfig"}, r"/nonexistent/kubeconfig: not a usable kubeconfig"),
        ({"kubernetes_service_host": "10.0.0.1", "auth_service_account_dir": "/nonexistent"}, "no ServiceAccount"),
    ],
)
def test_without_credentials_of_its_own_the_predictor_does_not_start(fields: dict[str, str], says: str) -> None:
    from prometheus_client import CollectorRegistry

    from custom_predictor.auth import AuthConfigError, Gate
    from tests.auth.conftest import settings

    s = settings(auth_modes="kubernetes", inferenceservice_namespace="ns", inferenceservice_name="m", **fields)
    with pytest.raises(AuthConfigError, match=says):
        Gate.from_settings(s, CollectorRegistry())


def test_an_unusable_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    from custom_predictor.auth.kube import KubeAccess, KubeConfigError

    cases = {
        "exec": {"exec": {"command": "aws"}},
        "plain http elsewhere": None,
    }
    for name, user in cases.items():
        doc = {
            "current-context": "x",
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "clusters": [{"name": "c", "cluster": {"server": "http://10.0.0.1:6443" if user is None else "https://k"}}],
            "users": [{"name": "u", "user": user or {"token": "t"}}],
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(KubeConfigError, match="exec and auth-provider" if user else "must be an https:// URL"):
            KubeAccess.from_kubeconfig(str(path))
