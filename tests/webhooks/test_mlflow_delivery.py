"""A real `mlflow server` sends real signed webhooks to the receiver on 127.0.0.1.

The server runs with MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https, MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true,
MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY (tests/servers.py) and MLFLOW_WEBHOOK_CACHE_TTL=0 (conftest).
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import mlflow
import pytest

from adapter.errors import PermanentError
from adapter.registry_webhooks import ensure_webhook
from adapter.webhooks import EVENTS, PATH, WebhookReceiver
from adapter.workqueue import BURST, COOLDOWN_SECONDS, WorkQueue
from tests.servers import MlflowServer
from tests.webhooks.conftest import SECRET, Delivery, post


class TimedTrigger(WorkQueue):
    """A WorkQueue that also notes when each request arrived (to split latency into its parts)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, str]] = []

    def request(self, name: str, after: float = 0.0, reason: str = "request") -> None:
        self.arrivals.append((time.perf_counter(), name))
        super().request(name, after, reason)


@pytest.fixture(scope="module")
def client(webhook_mlflow: MlflowServer) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=webhook_mlflow.url, registry_uri=webhook_mlflow.url)


@pytest.fixture(scope="module")
def live(client: mlflow.MlflowClient) -> Iterator[tuple[WebhookReceiver, TimedTrigger]]:
    trigger = TimedTrigger()
    receiver = WebhookReceiver("127.0.0.1", 0, SECRET, trigger)
    port = receiver.start()
    assert ensure_webhook(client, f"http://127.0.0.1:{port}{PATH}", SECRET) == "created"
    yield receiver, trigger
    receiver.stop()
    trigger.close()


def wait_for(trigger: WorkQueue, name: str, timeout: float = 10) -> list[frozenset[str]]:
    """Wake-ups until one names `name`; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    wake_ups = []
    while time.monotonic() < deadline:
        names = trigger.wait(deadline - time.monotonic()).names
        wake_ups.append(names)
        if name in names:
            return wake_ups
    raise AssertionError(f"no trigger for {name} within {timeout}s (got {wake_ups})")


def wait_until(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def new_model(client: mlflow.MlflowClient, trigger: WorkQueue) -> str:
    name = f"wh-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    client.create_model_version(name, source="s3://bucket/model")
    wait_for(trigger, name)  # model_version.created
    return name


def test_tag_and_alias_changes_reach_the_trigger(client: mlflow.MlflowClient, live) -> None:
    receiver, trigger = live
    name = new_model(client, trigger)
    actions = [
        lambda: client.set_model_version_tag(name, "1", "stage", "production"),
        lambda: client.delete_model_version_tag(name, "1", "stage"),
        lambda: client.set_registered_model_alias(name, "production", "1"),
        lambda: client.delete_registered_model_alias(name, "production"),
    ]
    for act in actions:
        queued = receiver.stats["queued"]
        act()
        wait_for(trigger, name)
        assert receiver.stats["queued"] == queued + 1


def test_the_adapters_own_tag_writes_are_ignored(client: mlflow.MlflowClient, live) -> None:
    receiver, trigger = live
    name = new_model(client, trigger)
    ignored = receiver.stats["ignored"]
    client.set_model_version_tag(name, "1", "deployment.status", "ready")
    client.set_model_version_tag(name, "1", "model_endpoint", "http://x")
    wait_until(lambda: receiver.stats["ignored"] == ignored + 2)
    assert name not in trigger.wait(0.3).names


def test_mlflows_test_delivery_is_accepted(client: mlflow.MlflowClient, live) -> None:
    _, trigger = live
    (webhook,) = [w for w in client.list_webhooks() if w.name == "service-builder"]
    result = client.test_webhook(webhook.webhook_id, event="model_version_tag.set")
    assert (result.success, result.response_status) == (True, 202), result.error_message
    wait_for(trigger, "example_model")


def test_captured_real_deliveries_cannot_be_forged_replayed_or_reused_late(client: mlflow.MlflowClient, live) -> None:
    receiver, trigger = live
    captured: list[Delivery] = []

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            captured.append(Delivery(body, {k: v for k, v in self.headers.items() if k.startswith("X-MLflow")}))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    spy = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=spy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    spy_hook = client.create_webhook(
        "spy", f"http://127.0.0.1:{spy.server_address[1]}/", events=["model_version_tag.set"], secret=SECRET
    )
    try:
        name = new_model(client, trigger)
        client.set_model_version_tag(name, "1", "stage", "production")
        wait_for(trigger, name)
        wait_until(lambda: len(captured) == 1)
    finally:
        client.delete_webhook(spy_hook.webhook_id)
        spy.shutdown()
        spy.server_close()
    real = captured[0]
    assert real.headers["X-MLflow-Signature"].startswith("v1,")

    # A genuine delivery relayed once is fresh and unseen: accepted. The same again is a replay.
    assert post(receiver.port, real) == (202, {"status": "queued", "model": name})
    assert trigger.wait(2).names == {name}
    assert post(receiver.port, real) == (401, {"status": "rejected", "reason": "delivery id already seen (replay)"})

    forged = Delivery(real.body.replace(name.encode(), b"victim"), real.headers)
    assert post(receiver.port, forged)[0] == 401
    unsigned = Delivery(real.body, {k: v for k, v in real.headers.items() if k != "X-MLflow-Signature"})
    assert post(receiver.port, unsigned)[0] == 401

    late = WebhookReceiver("127.0.0.1", 0, SECRET, trigger, clock=lambda: time.time() + 301)
    wrong_secret = WebhookReceiver("127.0.0.1", 0, "another-secret", trigger)
    try:
        late.start()
        wrong_secret.start()
        assert post(late.port, real) == (401, {"status": "rejected", "reason": "timestamp is more than 300s old"})
        assert post(wrong_secret.port, real)[1]["reason"] == "signature does not match"
    finally:
        late.stop()
        wrong_secret.stop()
    assert trigger.wait(0.3).names == frozenset()


def test_a_burst_of_50_events_wakes_the_loop_once_or_a_few_times(client: mlflow.MlflowClient, live) -> None:
    receiver, trigger = live
    name = new_model(client, trigger)
    queued = receiver.stats["queued"]
    sent: list[float] = []

    def burst() -> None:
        for i in range(50):
            client.set_model_version_tag(name, "1", "note", str(i))
        sent.append(time.perf_counter())

    sender = threading.Thread(target=burst)
    started = time.perf_counter()
    sender.start()
    wake_ups: list[tuple[float, frozenset[str]]] = []
    while sender.is_alive() or receiver.stats["queued"] < queued + 50 or trigger.pending:
        names = trigger.wait(1).names  # the loop waits while the burst arrives, as `run` does
        if names:
            wake_ups.append((time.perf_counter(), names))
        assert time.perf_counter() - started < 60, "the 50 deliveries did not all arrive"
    sender.join()
    sent_in = sent[0] - started
    print(f"\nburst: 50 tag sets in {sent_in:.2f}s -> {len(wake_ups)} wake-up(s) of the loop")
    assert all(names == {name} for _, names in wake_ups)
    assert 1 <= len(wake_ups) <= BURST + 1 + sent_in / COOLDOWN_SECONDS  # a burst, then one per cooldown
    assert wake_ups[-1][0] >= sent[0] - 0.5  # the end state of the burst was reconciled too


def test_delivery_latency_over_20_trials(client: mlflow.MlflowClient, live) -> None:
    _, trigger = live
    names = [new_model(client, trigger) for _ in range(20)]  # one model per trial: no cooldown
    time.sleep(2.0)
    assert trigger.wait(0.1).names == frozenset()
    to_arrival, to_wake = [], []
    for name in names:
        trigger.arrivals.clear()
        started = time.perf_counter()
        client.set_model_version_tag(name, "1", "stage", "production")
        woken = trigger.wait(10).names
        woke = time.perf_counter()
        assert woken == {name}
        to_wake.append(woke - started)
        to_arrival.append(trigger.arrivals[0][0] - started)

    def p(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000

    print(
        f"\nlatency tag set -> receiver: p50 {p(to_arrival, 50):.0f} ms, p95 {p(to_arrival, 95):.0f} ms;"
        f" tag set -> trigger wake-up: p50 {p(to_wake, 50):.0f} ms, p95 {p(to_wake, 95):.0f} ms"
    )
    assert p(to_wake, 50) < 1000


def test_ensure_webhook_is_idempotent(client: mlflow.MlflowClient, live) -> None:
    receiver, _ = live
    url = f"http://127.0.0.1:{receiver.port}{PATH}"
    name = f"idem-{uuid.uuid4().hex[:8]}"

    def mine() -> list:
        return [w for w in client.list_webhooks() if w.name == name]

    try:
        assert ensure_webhook(client, url, SECRET, name=name) == "created"
        assert ensure_webhook(client, url, SECRET, name=name) == "unchanged"
        (hook,) = mine()
        assert {str(e) for e in hook.events} == set(EVENTS)
        assert SECRET not in (hook.description or "")
        assert ensure_webhook(client, url + "?v=2", SECRET, name=name) == "updated"
        assert ensure_webhook(client, url + "?v=2", SECRET, name=name) == "unchanged"
        assert ensure_webhook(client, url, "rotated-secret", name=name) == "updated"
        assert ensure_webhook(client, url, "rotated-secret", name=name) == "unchanged"
        client.update_webhook(hook.webhook_id, status="DISABLED")
        assert ensure_webhook(client, url, "rotated-secret", name=name) == "updated"
        client.update_webhook(hook.webhook_id, events=["model_version.created"])
        assert ensure_webhook(client, url, "rotated-secret", name=name) == "updated"
        client.create_webhook(name, url, events=["model_version.created"], secret="x")  # a racing twin
        assert ensure_webhook(client, url, "rotated-secret", name=name) == "updated"
        (kept,) = mine()
        assert kept.webhook_id == hook.webhook_id
        assert kept.status.is_active() and kept.url == url
        assert ensure_webhook(client, url, "rotated-secret", name=name) == "unchanged"
    finally:
        for w in mine():
            client.delete_webhook(w.webhook_id)


def test_ensure_webhook_rejects_bad_input(client: mlflow.MlflowClient) -> None:
    with pytest.raises(PermanentError, match="must be http"):
        ensure_webhook(client, "ftp://127.0.0.1/hook", SECRET)
    with pytest.raises(PermanentError, match="MLFLOW_WEBHOOK_SECRET is empty"):
        ensure_webhook(client, "http://127.0.0.1/hook", "")
