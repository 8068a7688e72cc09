"""The Lease elector (adapter.leader) against the real kube-apiserver, with the adapter's ServiceAccount token
(deploy/base's Role) through the fault proxy, and a hand-driven clock: one `tick()` is one attempt, so expiry,
renew deadlines and races are stepped through without sleeping."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from kubernetes import client

from adapter import metrics
from adapter.errors import PermanentError
from adapter.kube import LEASES, KubeCluster, api_client
from adapter.leader import LeaderElector
from adapter.settings import AdapterSettings
from tests.controlplane.fixtures import DEPLOY, Namespace, service_account_token
from tests.controlplane.plane import ControlPlane
from tests.controlplane.proxy import FaultProxy

LEASE = "service-builder"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def api(proxy: FaultProxy, ns: Namespace) -> Any:
    return api_client(AdapterSettings(k8s_api=proxy.url, k8s_api_key=ns.token, k8s_name_space=ns.name))


def store(proxy: FaultProxy, ns: Namespace) -> KubeCluster:
    return KubeCluster(api(proxy, ns), ns.name, "service-builder", timeout=5)


def elector(s: KubeCluster, identity: str, clock: Clock, **kw: Any) -> LeaderElector:
    kw = {"lease_duration": 15.0, "renew_deadline": 10.0, "retry_period": 2.0, **kw}
    return LeaderElector(s, LEASE, identity, clock=clock, **kw)


def lease(admin_api: Any, ns: str) -> dict[str, Any]:
    return dict(client.CustomObjectsApi(admin_api).get_namespaced_custom_object(*LEASES[:2], ns, LEASES[2], LEASE))


def test_the_first_candidate_creates_the_lease_and_the_second_stands_by(
    k8s_namespace: Namespace, kube_proxy: FaultProxy, admin_api: Any
) -> None:
    clock = Clock()
    changes: list[bool] = []
    a = elector(store(kube_proxy, k8s_namespace), "a", clock, on_change=changes.append)
    b = elector(store(kube_proxy, k8s_namespace), "b", clock)
    assert not a.observed
    assert a.tick() is True and a.leading and a.observed and changes == [True]
    assert metrics.REGISTRY.get_sample_value("service_builder_leader") == 1
    assert b.tick() is False and b.holder == "a" and b.observed
    spec = lease(admin_api, k8s_namespace.name)["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15 and spec["leaseTransitions"] == 0
    # Renewals move renewTime and keep acquireTime; the standby keeps standing by while they come.
    acquired = spec["acquireTime"]
    for _ in range(5):
        clock.now += 2
        assert a.tick() and not b.tick()
    spec = lease(admin_api, k8s_namespace.name)["spec"]
    assert spec["acquireTime"] == acquired and spec["renewTime"] != acquired
    assert kube_proxy.count("POST", "/leases") == 1 and kube_proxy.count("PUT", f"/leases/{LEASE}") == 5


def test_an_expired_lease_is_taken_over_and_the_old_leader_learns_it(
    k8s_namespace: Namespace, kube_proxy: FaultProxy, admin_api: Any
) -> None:
    clock = Clock()
    a = elector(store(kube_proxy, k8s_namespace), "a", clock)
    b = elector(store(kube_proxy, k8s_namespace), "b", clock)
    assert a.tick()
    clock.now += 14.9  # a stopped renewing (killed, paused): not expired yet
    assert not b.tick()
    clock.now += 0.2
    assert b.tick() and b.leading
    spec = lease(admin_api, k8s_namespace.name)["spec"]
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    # a comes back: it finds b's fresh Lease and steps down at once (no deadline to wait out).
    assert a.leading and a.tick() is False and not a.leading and a.holder == "b"


def test_the_leader_steps_down_when_it_cannot_renew_for_the_renew_deadline(
    k8s_namespace: Namespace, kube_proxy: FaultProxy
) -> None:
    clock = Clock()
    changes: list[bool] = []
    a = elector(store(kube_proxy, k8s_namespace), "a", clock, on_change=changes.append)
    assert a.tick()
    kube_proxy.inject("*", "/leases", 503, times=None)  # the API server is unreachable for a while
    for _ in range(4):
        clock.now += 2
        assert a.tick() is True, "within the renew deadline it keeps leading"
    clock.now += 2  # 10 s since the last renewal: it stops before the Lease (15 s) can go to anyone else
    assert a.tick() is False and changes == [True, False]
    assert metrics.REGISTRY.get_sample_value("service_builder_leader") == 0
    kube_proxy.clear_faults()
    clock.now += 2
    assert a.tick() is True, "its own Lease, not yet expired: it leads again"
    assert changes == [True, False, True]


def test_of_two_candidates_racing_for_an_expired_lease_only_one_wins(
    k8s_namespace: Namespace, kube_proxy: FaultProxy, admin_api: Any
) -> None:
    clock = Clock()
    assert elector(store(kube_proxy, k8s_namespace), "old", clock).tick()
    clock.now += 30
    c = elector(store(kube_proxy, k8s_namespace), "c", clock)

    class Interleaved(KubeCluster):
        """b's store, for one read: c's whole attempt happens between b's read and b's write."""

        def get_lease(self, name: str) -> dict[str, Any] | None:
            seen = super().get_lease(name)
            assert c.tick(), "c reads the expired Lease and takes it"
            return copy.deepcopy(seen)

    racing = Interleaved(api(kube_proxy, k8s_namespace), k8s_namespace.name, "service-builder", timeout=5)
    b = elector(racing, "b", clock)
    assert b.tick() is False and not b.leading, "b's replace carries a stale resourceVersion: 409"
    assert lease(admin_api, k8s_namespace.name)["spec"]["holderIdentity"] == "c"
    assert any(m == "PUT" and s == 409 for m, _, s in kube_proxy.log)


def test_two_first_candidates_create_one_lease(k8s_namespace: Namespace, kube_proxy: FaultProxy) -> None:
    clock = Clock()
    a = elector(store(kube_proxy, k8s_namespace), "a", clock)

    class Late(KubeCluster):
        def get_lease(self, name: str) -> dict[str, Any] | None:
            super().get_lease(name)
            assert a.tick()
            return None  # b saw no Lease, a created it meanwhile

    b = elector(Late(api(kube_proxy, k8s_namespace), k8s_namespace.name, "service-builder", timeout=5), "b", clock)
    assert b.tick() is False and a.leading
    assert any(m == "POST" and s == 409 for m, _, s in kube_proxy.log)


def test_release_on_clean_shutdown_lets_the_standby_take_over_at_once(
    k8s_namespace: Namespace, kube_proxy: FaultProxy, admin_api: Any
) -> None:
    clock = Clock()
    a = elector(store(kube_proxy, k8s_namespace), "a", clock)
    b = elector(store(kube_proxy, k8s_namespace), "b", clock)
    assert a.tick() and not b.tick()
    a.release()
    assert not a.leading and metrics.REGISTRY.get_sample_value("service_builder_leader") == 0
    assert not lease(admin_api, k8s_namespace.name)["spec"].get("holderIdentity")
    assert b.tick(), "no waiting for expiry: the clock has not moved"
    assert lease(admin_api, k8s_namespace.name)["spec"]["leaseTransitions"] == 1
    a.release()  # not leading: nothing written
    assert lease(admin_api, k8s_namespace.name)["spec"]["holderIdentity"] == "b"


def test_a_release_never_clears_another_holders_lease(
    k8s_namespace: Namespace, kube_proxy: FaultProxy, admin_api: Any
) -> None:
    clock = Clock()
    a = elector(store(kube_proxy, k8s_namespace), "a", clock)
    b = elector(store(kube_proxy, k8s_namespace), "b", clock)
    assert a.tick()
    clock.now += 20
    assert b.tick()  # a was paused past expiry and still believes it leads
    assert a.leading
    a.release()
    assert lease(admin_api, k8s_namespace.name)["spec"]["holderIdentity"] == "b"


def test_without_lease_rights_the_error_says_what_to_grant(
    control_plane: ControlPlane, admin_api: Any, kube_proxy: FaultProxy
) -> None:
    ns = no_lease_namespace(control_plane, admin_api)
    e = elector(store(kube_proxy, ns), "a", Clock())
    with pytest.raises(PermanentError) as refused:
        e.tick()
    message = refused.value.message
    assert "403" in message and f"get lease {ns.name}/{LEASE}" in message
    assert "`leases` get and update" in message and "LEADER_ELECTION=false" in message
    assert refused.value.status == 403 and not e.leading


def test_the_role_grants_only_the_adapters_lease_by_name(
    k8s_namespace: Namespace, kube_proxy: FaultProxy, admin_api: Any
) -> None:
    clock = Clock()
    other = LeaderElector(store(kube_proxy, k8s_namespace), "someone-elses-lease", "a", clock=clock)
    client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
        *LEASES[:2],
        k8s_namespace.name,
        LEASES[2],
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "someone-elses-lease"}},
    )
    with pytest.raises(PermanentError, match="403"):
        other.tick()


def no_lease_namespace(plane: ControlPlane, admin_api: Any) -> Namespace:
    """A namespace whose adapter Role is deploy/base's without its Lease rules."""
    import uuid

    name = f"t-{uuid.uuid4().hex[:8]}"
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}]
    for f in ("serviceaccount.yaml", "role.yaml", "rolebinding.yaml"):
        doc = yaml.safe_load((DEPLOY / f).read_text())
        doc["metadata"]["namespace"] = name
        if doc["kind"] == "Role":
            doc["rules"] = [r for r in doc["rules"] if "coordination.k8s.io" not in r["apiGroups"]]
        docs.append(doc)
    plane.apply(docs)
    return Namespace(name, service_account_token(admin_api, name))


def test_election_settings_are_checked_and_the_identity_is_the_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import socket

    from pydantic import ValidationError

    defaults = AdapterSettings()
    assert (
        defaults.leader_election_lease_duration_seconds,
        defaults.leader_election_renew_deadline_seconds,
        defaults.leader_election_retry_period_seconds,
    ) == (15, 10, 2)
    with pytest.raises(ValidationError, match="LEASE_DURATION_SECONDS > LEADER_ELECTION_RENEW_DEADLINE_SECONDS"):
        AdapterSettings(leader_election_renew_deadline_seconds=20)
    with pytest.raises(ValidationError, match="RENEW_DEADLINE_SECONDS > LEADER_ELECTION_RETRY_PERIOD_SECONDS"):
        AdapterSettings(leader_election_retry_period_seconds=10)
    with pytest.raises(ValidationError, match="DNS-1123 subdomain"):
        AdapterSettings(leader_election_lease_name="Not A Name")
    monkeypatch.delenv("POD_NAME", raising=False)
    assert AdapterSettings().identity == f"{socket.gethostname()}_{os.getpid()}"
    monkeypatch.setenv("POD_NAME", "service-builder-5d8f-abcde")
    assert AdapterSettings().identity == "service-builder-5d8f-abcde"
