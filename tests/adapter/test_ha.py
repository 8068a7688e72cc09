"""Two `service-builder run` replicas (real processes) in one namespace with the adapter's ServiceAccount token:
one leader reconciles, the other stands by; a killed leader is replaced within the lease duration, a stopped one
at once; nothing is applied or written twice. Writes are counted at the fault proxy in front of the real
kube-apiserver, tags read from the real MLflow server, the Lease read as admin."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from adapter import naming
from adapter.kube import LEASES
from tests.adapter.conftest import World
from tests.adapter.test_cli import env_for
from tests.adapter.test_leader import no_lease_namespace
from tests.controlplane.plane import ControlPlane
from tests.controlplane.proxy import FaultProxy
from tests.servers import free_port, sample, scrape, wait_http
from tests.webhooks.conftest import SECRET, delivery, post, tag_event

LEASE = "service-builder"


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[str]
    log: Path

    def get(self, path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(f"http://127.0.0.1:{self.port}/metrics")

    def passes(self) -> float:
        m = self.metrics()
        return sum(sample(m, "service_builder_passes_total", result=r) for r in ("ok", "skipped", "error"))

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def replicas(world: World, tmp_path: Path) -> Iterator[Callable[..., Replica]]:
    started: list[Replica] = []

    def start(name: str, **settings: str) -> Replica:
        port = free_port()
        env = env_for(
            world,
            POD_NAME=name,
            WEBHOOK_HOST="127.0.0.1",
            WEBHOOK_PORT=str(port),
            MLFLOW_WEBHOOK_SECRET=SECRET,
            POLL_INTERVAL_SECONDS="1",
            POD_IP="127.0.0.1",
            **settings,
        )
        log = tmp_path / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "adapter", "run"], env=env, stderr=out, text=True)
        replica = Replica(name, port, proc, log)
        started.append(replica)
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=90, proc=proc)
        until(lambda: replica.get("/readyz")[0] == 200, 30, f"{name} ready")
        return replica

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait(timeout=10)
        assert "Traceback" not in r.text(), r.text()


def holder(world: World) -> str:
    try:
        lease = client.CustomObjectsApi(world.admin).get_namespaced_custom_object(
            *LEASES[:2], world.ns, LEASES[2], LEASE
        )
    except client.exceptions.ApiException as e:
        if e.status == 404:
            return ""
        raise
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def lease_annotation(world: World) -> str:
    lease = client.CustomObjectsApi(world.admin).get_namespaced_custom_object(*LEASES[:2], world.ns, LEASES[2], LEASE)
    return str(((lease.get("metadata") or {}).get("annotations") or {}).get("service-builder.io/webhook-url") or "")


def applies(world: World, isvc: str) -> int:
    return world.kube.count("PATCH", f"{world.isvc_path}/{isvc}")


def _version_of(isvc: dict[str, Any] | None) -> str:
    return str(((isvc or {}).get("metadata") or {}).get("annotations", {}).get("mlflow.org/model-version", ""))


FAST = {
    "LEADER_ELECTION_LEASE_DURATION_SECONDS": "6",
    "LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "4",
    "LEADER_ELECTION_RETRY_PERIOD_SECONDS": "0.5",
}


def test_one_leader_reconciles_and_a_killed_one_is_replaced_within_the_lease_duration(
    world: World, replicas: Callable[..., Replica]
) -> None:
    name = world.model("ha", stage="production")
    isvc = naming.isvc_name(name)
    a = replicas("adapter-a", **FAST)
    until(lambda: holder(world) == "adapter-a", 10, "a to hold the Lease")
    b = replicas("adapter-b", **FAST)
    assert b.get("/readyz") == (200, {"status": "ready", "leader": False}), "a standby is ready (PDB, rollouts)"
    assert a.get("/readyz") == (200, {"status": "ready", "leader": True})

    until(lambda: world.isvc(isvc) is not None, 60, "the apply")
    world.play(isvc, "ready")
    until(lambda: world.tags(name, 1).get("deployment.status") == "ready", 60, "the write-back")
    passes_of_a = a.passes()
    until(lambda: a.passes() >= passes_of_a + 2, 30, "two more passes of the leader")
    assert applies(world, isvc) == 1, "two replicas, one apply"
    assert b.passes() == 0 and sample(b.metrics(), "service_builder_leader") == 0
    assert sample(a.metrics(), "service_builder_leader") == 1
    assert "Watch listed" in a.text() and "Watch listed" not in b.text(), "only the leader watches"

    # A webhook that reaches the standby is forwarded to the leader, which reconciles it; the standby does not.
    leader_url = f"http://127.0.0.1:{a.port}/webhooks/mlflow"
    until(lambda: lease_annotation(world) == leader_url, 10, "the leader to publish its receiver")
    assert post(b.port, delivery(tag_event(name))) == (202, {"status": "forwarded", "model": name, "to": leader_url})
    assert sample(b.metrics(), "service_builder_webhook_deliveries_total", result="forwarded") == 1
    until(lambda: f"Reconcile models={name} cause=webhook" in a.text(), 10, "the leader's webhook reconcile")
    assert sample(a.metrics(), "service_builder_webhook_deliveries_total", result="queued") == 1
    assert b.passes() == 0 and "Reconcile models=" not in b.text()

    version_tags, model_tags = world.tags(name, 1), dict(world.mlflow.get_registered_model(name).tags)
    killed = time.monotonic()
    a.proc.send_signal(signal.SIGKILL)
    until(lambda: holder(world) == "adapter-b", 15, "b to take the Lease", step=0.02)
    took = time.monotonic() - killed
    # The Lease was renewed at most one retry period before the kill; b looks once per retry period.
    assert took <= 6 + 0.5 + 1.0, f"takeover after {took:.1f}s"
    until(lambda: b.get("/readyz")[1].get("leader") is True, 5, "b to report itself leader")
    until(lambda: "Watch listed" in b.text(), 10, "the new leader's watch, from a fresh list")
    until(lambda: sample(b.metrics(), "service_builder_passes_total", result="ok") >= 2, 30, "b's passes")
    assert applies(world, isvc) == 1, "the new leader found nothing to apply"
    assert world.tags(name, 1) == version_tags, "the new leader rewrote no tag"
    assert dict(world.mlflow.get_registered_model(name).tags) == model_tags
    assert "Lease taken over" in b.text() and "previous=adapter-a" in b.text()

    # ... and it reconciles what changes next.
    world.mlflow.create_model_version(name, source="s3://models/none", tags={"stage": "production"})
    # The proxy logs a request on arrival: wait for the stored object, then count.
    until(lambda: _version_of(world.isvc(isvc)) == "2", 30, "b's apply of version 2")
    assert applies(world, isvc) == 2, "one apply of version 2"


def test_a_clean_shutdown_releases_the_lease_and_the_standby_takes_over_at_once(
    world: World, replicas: Callable[..., Replica]
) -> None:
    slow_expiry = {
        "LEADER_ELECTION_LEASE_DURATION_SECONDS": "30",
        "LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "20",
        "LEADER_ELECTION_RETRY_PERIOD_SECONDS": "0.5",
    }
    a = replicas("adapter-a", **slow_expiry)
    until(lambda: holder(world) == "adapter-a", 10, "a to hold the Lease")
    b = replicas("adapter-b", **slow_expiry)
    stopped = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=30) == 0
    until(lambda: holder(world) == "adapter-b", 10, "b to take the released Lease", step=0.02)
    took = time.monotonic() - stopped
    assert took < 5, f"takeover after {took:.1f}s: a release, not a 30 s expiry"
    assert "Lease released" in a.text() and "Stopped" in a.text()
    until(lambda: b.get("/readyz")[1].get("leader") is True, 5, "b to report itself leader")


def test_run_without_lease_rights_says_what_to_grant(
    world: World, control_plane: ControlPlane, admin_api: Any, kube_proxy: FaultProxy
) -> None:
    ns = no_lease_namespace(control_plane, admin_api)
    env = env_for(world, K8S_NAME_SPACE=ns.name, K8S_API_KEY=ns.token, WEBHOOK_PORT="0")
    p = subprocess.run([sys.executable, "-m", "adapter", "run"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    (line,) = [x for x in p.stderr.splitlines() if x.startswith("service-builder:")]
    assert line.startswith(f"service-builder: leader election: Kubernetes get lease {ns.name}/{LEASE}: 403 ")
    assert "must grant `leases` get and update on service-builder and create" in line
    assert "LEADER_ELECTION=false" in line
    assert kube_proxy.count("PATCH") == 0, "nothing reconciled without the Lease"


def test_a_single_replica_may_run_without_leader_election(world: World, replicas: Callable[..., Replica]) -> None:
    name = world.model("solo", stage="production")
    solo = replicas("solo", LEADER_ELECTION="false")
    until(lambda: world.isvc(naming.isvc_name(name)) is not None, 60, "the apply")
    assert solo.get("/readyz") == (200, {"status": "ready", "leader": True})
    assert world.kube.count(path="/leases") == 0 and holder(world) == ""
    solo.proc.send_signal(signal.SIGTERM)
    assert solo.proc.wait(timeout=30) == 0
