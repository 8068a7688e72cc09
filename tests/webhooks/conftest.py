"""Fixtures of the webhook tests: signed test deliveries, a running receiver, and an MLflow server
whose webhook cache is off (MLFLOW_WEBHOOK_CACHE_TTL=0), so a new webhook works at once."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from adapter.webhooks import PATH, WebhookReceiver, sign
from adapter.workqueue import WorkQueue
from tests.servers import MlflowServer, free_port

SECRET = "whsec-test-0123456789abcdef"


@dataclass
class Delivery:
    """One webhook request as MLflow sends it."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def delivery(
    payload: dict | bytes,
    secret: str = SECRET,
    timestamp: float | None = None,
    delivery_id: str | None = None,
) -> Delivery:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(time.time() if timestamp is None else timestamp))
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": sign(secret.encode(), delivery_id, ts, body),
    }
    return Delivery(body, headers)


def tag_event(name: str, key: str = "stage", value: str = "production", version: str = "1") -> dict:
    return {
        "entity": "model_version_tag",
        "action": "set",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "data": {"name": name, "version": version, "key": key, "value": value},
    }


def post(port: int, d: Delivery, path: str = PATH, method: str = "POST") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=d.body, headers=d.headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


@pytest.fixture
def trigger() -> Iterator[WorkQueue]:
    t = WorkQueue(settle=0.05, cooldown=0.05)
    yield t
    t.close()


@pytest.fixture
def receiver(trigger: WorkQueue) -> Iterator[WebhookReceiver]:
    r = WebhookReceiver("127.0.0.1", 0, SECRET, trigger)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def webhook_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """Its own MLflow server: the shared one caches each event's webhook list for 60 s, so a webhook
    registered after the first event of a kind would only see events a minute later."""
    port = free_port()
    server = MlflowServer(
        url=f"http://127.0.0.1:{port}",
        port=port,
        root=tmp_path_factory.mktemp("mlflow-webhooks"),
        # No job runner: it forks 8 worker processes the registry does not need.
        extra_env={"MLFLOW_WEBHOOK_CACHE_TTL": "0", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
