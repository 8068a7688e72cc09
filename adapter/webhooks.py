"""MLflow webhook receiver: verified registry events wake the reconcile loop for one model.

`WebhookReceiver` is the HTTP server of `run`, a stdlib server in a background thread: `POST /webhooks/mlflow`,
and the probes and metrics `GET /healthz`, `/readyz` (`adapter.health.Probes`) and `/metrics` (Prometheus text,
`adapter.metrics`). It runs without a webhook secret too; deliveries are then refused. A delivery is checked
(`verify_signature`, `ReplayGuard`), parsed, answered at once, and turned into `WorkQueue.request(model_name)`;
the run loop (adapter.manager) takes the names from that queue and reconciles them. A replica
that is not the leader answers 202 `not-leader` and wakes nothing. Polling stays the safety net: MLflow
sends nothing for stages, deletions or registered-model tags, and never redelivers after a 2xx.
Every delivery is counted in `service_builder_webhook_deliveries` by its answer's `status`.

Bounded like any server facing a network: a delivery's body over MAX_BODY_BYTES is refused (413) before it is
read, one without Content-Length (chunked) gets 411; a request whose line, headers and body have not all arrived
within REQUEST_TIMEOUT_SECONDS is cut (a slow client, a byte a second, cannot hold a thread), as is a connection
idle that long; at most MAX_CONNECTIONS connections are served at once, others get 503 at once. None of these
changes anything: nothing is queued until a whole, verified delivery is in.

Imports neither mlflow nor kubernetes; `adapter.registry_webhooks` registers the webhook in MLflow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from adapter import metrics
from adapter.health import Probes
from adapter.log import kv
from adapter.types import OWN_TAG_KEYS
from adapter.workqueue import WorkQueue

log = logging.getLogger(__name__)

PATH = "/webhooks/mlflow"
HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
METRICS_PATH = "/metrics"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"
SIGNATURE_VERSION = "v1"
MAX_AGE_SECONDS = 300.0
MAX_BODY_BYTES = 1 << 20  # MLflow's deliveries are a few hundred bytes
REQUEST_TIMEOUT_SECONDS = 10.0  # a kubelet probe or an MLflow delivery sends its request in milliseconds
MAX_CONNECTIONS = 64

# The registry events that can change which version of a model should be served.
EVENTS: tuple[str, ...] = (
    "model_version.created",
    "model_version_tag.set",
    "model_version_tag.deleted",
    "model_version_alias.created",
    "model_version_alias.deleted",
)
_TAG_EVENTS = frozenset({"model_version_tag.set", "model_version_tag.deleted"})


class WebhookRejected(Exception):
    """A delivery that is not provably from MLflow, or not fresh; `reason` is safe to log and return."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sign(secret: bytes, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The `X-MLflow-Signature` value MLflow sends: `v1,` + base64(HMAC-SHA256(id.timestamp.body))."""
    mac = hmac.new(secret, f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode()}"


def verify_signature(
    secret: bytes,
    delivery_id: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    now: float,
    max_age: float = MAX_AGE_SECONDS,
) -> None:
    """Accept a delivery signed with `secret` whose timestamp is within `max_age` of `now`, else raise.

    The header may hold several space-separated `v1,<base64>` signatures (Standard Webhooks); one
    match is enough. Digests are compared in constant time.
    """
    if not delivery_id:
        raise WebhookRejected(f"missing {DELIVERY_ID_HEADER} header")
    if not timestamp:
        raise WebhookRejected(f"missing {TIMESTAMP_HEADER} header")
    if not signature_header:
        raise WebhookRejected(f"missing {SIGNATURE_HEADER} header")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookRejected(f"{TIMESTAMP_HEADER} is not unix seconds") from None
    candidates: list[bytes] = []
    for part in signature_header.split():
        version, sep, value = part.partition(",")
        if not sep or version != SIGNATURE_VERSION:
            continue
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not candidates:
        raise WebhookRejected(f"{SIGNATURE_HEADER} holds no well-formed {SIGNATURE_VERSION} signature")
    expected = hmac.new(secret, f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise WebhookRejected("signature does not match")
    if sent_at < now - max_age:
        raise WebhookRejected(f"timestamp is more than {max_age:g}s old")
    if sent_at > now + max_age:
        raise WebhookRejected(f"timestamp is more than {max_age:g}s in the future")


class ReplayGuard:
    """Delivery ids seen in the freshness window, so a captured delivery cannot be played again.

    An id is kept until its own timestamp leaves the window (after that `verify_signature` rejects
    it as stale). At most `max_entries` ids are kept; past that the oldest are dropped first.
    """

    def __init__(self, max_age: float = MAX_AGE_SECONDS, max_entries: int = 100_000) -> None:
        self._max_age = max_age
        self._max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def first_time(self, delivery_id: str, sent_at: float, now: float) -> bool:
        """Remember `delivery_id`; False if it was already seen (a replay or a duplicate)."""
        with self._lock:
            self._purge(now)
            if delivery_id in self._expiry:
                return False
            expires = sent_at + self._max_age
            self._expiry[delivery_id] = expires
            heapq.heappush(self._heap, (expires, delivery_id))
            while len(self._expiry) > self._max_entries:
                _, oldest = heapq.heappop(self._heap)
                self._expiry.pop(oldest, None)
            return True

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            _, delivery_id = heapq.heappop(self._heap)
            self._expiry.pop(delivery_id, None)

    def __len__(self) -> int:
        return len(self._expiry)


def _safe(value: object, limit: int = 80) -> str:
    """A value fit for one log line: printable, bounded, no spaces to split on."""
    text = "".join(c if c.isprintable() and not c.isspace() else "?" for c in str(value))
    return text[:limit] or "-"


class WebhookReceiver:
    """Receives MLflow webhooks on `host:port` and requests a reconcile of the model they name."""

    def __init__(
        self,
        host: str,
        port: int,
        secret: str | bytes | None,
        trigger: WorkQueue,
        ignored_tag_keys: Collection[str] = OWN_TAG_KEYS,
        ignored_tag_prefixes: tuple[str, ...] = ("deployment.",),
        clock: Callable[[], float] = time.time,
        max_age: float = MAX_AGE_SECONDS,
        max_body: int = MAX_BODY_BYTES,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        probes: Probes | None = None,
        leading: Callable[[], bool] = lambda: True,
        leader_url: Callable[[], str] = lambda: "",
    ) -> None:
        """`secret=None`: webhooks are off (every delivery refused), the probes and metrics still answer."""
        secret_bytes = secret.encode() if isinstance(secret, str) else secret
        if secret_bytes is not None and not secret_bytes:
            raise ValueError("MLFLOW_WEBHOOK_SECRET is empty: the receiver only accepts signed deliveries")
        self.host, self.port = host, port
        self.trigger = trigger
        if probes is None:  # a receiver on its own: always live and ready
            probes = Probes(float("inf"))
            probes.started()
        self.probes = probes
        self.leading = leading
        self.leader_url = leader_url  # the leader's receiver, as it publishes it on the Lease ("" unknown)
        self._secret = secret_bytes
        self._ignored_keys = frozenset(ignored_tag_keys)
        self._ignored_prefixes = ignored_tag_prefixes
        self._clock = clock
        self._max_age = max_age
        self._max_body = max_body
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._replays = ReplayGuard(max_age)
        self._stats_lock = threading.Lock()
        self.stats = {"queued": 0, "ignored": 0, "not-leader": 0, "forwarded": 0, "rejected": 0, "malformed": 0}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # Lifecycle -------------------------------------------------------------------------------

    def start(self) -> int:
        """Listen and serve in a background thread; returns the bound port (useful with port 0)."""
        try:
            server = _Server((self.host, self.port), _handler_for(self), self._max_connections)
        except OSError as e:
            raise OSError(f"webhook receiver cannot listen on {self.host}:{self.port}: {e.strerror}") from e
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="webhook-receiver", daemon=True
        )
        self._thread.start()
        log.info("Webhook receiver listening on %s:%d%s", self.host, self.port, PATH)
        return self.port

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        log.info("Webhook receiver stopped")

    # One delivery ----------------------------------------------------------------------------

    def count(self, result: str) -> None:
        """One more delivery with this result, in `stats` (shown by /healthz) and the metrics."""
        with self._stats_lock:
            self.stats[result] += 1
        metrics.WEBHOOKS.labels(result).inc()

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """Check, parse and route one delivery; returns (HTTP status, JSON answer). Never raises."""
        started = time.perf_counter()
        delivery_id = headers.get(DELIVERY_ID_HEADER.lower(), "")
        fields: dict[str, object] = {"delivery": delivery_id}
        status, answer = self._route(headers, body, fields)
        self.count(str(answer["status"]))
        fields.update(outcome=answer["status"], http=status, ms=f"{(time.perf_counter() - started) * 1e3:.1f}")
        if "reason" in answer:
            fields["reason"] = answer["reason"]
        line = " ".join(f"{k}={_safe(v, 200 if k == 'reason' else 80)}" for k, v in fields.items())
        log.log(logging.WARNING if status == 401 else logging.INFO, "Webhook delivery %s", line)
        return status, answer

    def _route(self, headers: dict[str, str], body: bytes, fields: dict[str, object]) -> tuple[int, dict]:
        now = self._clock()
        timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
        if self._secret is None:
            return 403, {"status": "rejected", "reason": "webhooks are off: MLFLOW_WEBHOOK_SECRET is not set"}
        try:
            verify_signature(
                self._secret,
                str(fields["delivery"]),
                timestamp,
                body,
                headers.get(SIGNATURE_HEADER.lower(), ""),
                now,
                self._max_age,
            )
            if not self._replays.first_time(str(fields["delivery"]), int(timestamp), now):
                raise WebhookRejected("delivery id already seen (replay)")
        except WebhookRejected as e:
            return 401, {"status": "rejected", "reason": e.reason}
        try:
            event, name, data = _parse(body)
        except ValueError as e:
            return 400, {"status": "malformed", "reason": str(e)}
        fields.update(event=event, model=name, version=data.get("version", "-"))
        if event not in EVENTS:
            return 202, {"status": "ignored", "reason": f"event {event} does not affect deployments"}
        if event in _TAG_EVENTS:
            key = str(data.get("key", ""))
            fields["key"] = key
            if key in self._ignored_keys or key.startswith(self._ignored_prefixes):
                return 202, {"status": "ignored", "reason": f"tag {key} is written by the adapter"}
        if not self.leading():
            target = "" if headers.get(FORWARDED_HEADER.lower()) else self.leader_url()
            if target and _forward(target, headers, body):
                return 202, {"status": "forwarded", "model": name, "to": target}
            return 202, {"status": "not-leader", "reason": "this replica is on standby; the leader's poll converges"}
        self.trigger.request(name, reason="webhook")
        return 202, {"status": "queued", "model": name}


FORWARDED_HEADER = "X-Service-Builder-Forwarded"
_FORWARD_TIMEOUT = 3.0


def _forward(url: str, headers: dict[str, str], body: bytes) -> bool:
    """A verified delivery, sent on unchanged to the leader's receiver (which verifies it again); at most once
    (the header stops a second hop). True when the leader accepted it."""
    if not url.startswith(("http://", "https://")):
        return False
    keep = {k: v for k, v in headers.items() if k.lower().startswith("x-mlflow-") or k.lower() == "content-type"}
    forwarded = {**keep, FORWARDED_HEADER: "1"}
    request = urllib.request.Request(url, data=body, method="POST", headers=forwarded)  # noqa: S310 - http(s) only
    try:
        with urllib.request.urlopen(request, timeout=_FORWARD_TIMEOUT) as answer:  # noqa: S310 - http(s) only
            return bool(200 <= answer.status < 300)
    except (urllib.error.URLError, OSError, ValueError) as e:
        log.warning("Webhook not forwarded to the leader %s", kv(url=url, error=type(e).__name__))
        return False


def _parse(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(event, model name, data) from an MLflow webhook body; ValueError says what is wrong."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"body is not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    entity, action, data = payload.get("entity"), payload.get("action"), payload.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not entity or not action:
        raise ValueError("body.entity and body.action must be non-empty strings")
    if not isinstance(data, dict):
        raise ValueError("body.data must be a JSON object")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("body.data.name must be a non-empty string")
    return f"{entity}.{action}", name, data


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most `limit` at once: one more is answered 503 and closed without a thread."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            metrics.WEBHOOKS.labels("busy").inc()
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _handler_for(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "service-builder-webhooks"
        sys_version = ""
        timeout = receiver._request_timeout  # an idle connection, or a read that brings nothing, ends after this

        def handle_one_request(self) -> None:
            """One request, which must have arrived whole (line, headers, body) within the request timeout: a
            timer shuts the socket if it has not; `_arrived` stops it once the request is read."""
            self._lock = threading.Lock()
            self._done = self._was_cut = False
            timer = threading.Timer(receiver._request_timeout, self._cut)
            timer.daemon = True
            timer.start()
            try:
                super().handle_one_request()
            finally:
                timer.cancel()

        def _cut(self) -> None:
            with self._lock:
                if self._done:
                    return
                self._was_cut = True
            log.debug("webhook http: a request not in after %ss: connection cut", receiver._request_timeout)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _arrived(self) -> bool:
            """The request is read (or will not be): no cut from now on. False if it was cut already."""
            with self._lock:
                self._done = True
                return not self._was_cut

        def do_GET(self) -> None:
            if not self._arrived():
                return
            if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
                self.close_connection = True  # a body nobody reads: never taken for the next request
            if self.path == HEALTH_PATH:
                live, answer = receiver.probes.liveness()
                with receiver._stats_lock:
                    answer["deliveries"] = dict(receiver.stats)
                self._send(200 if live else 503, answer)
            elif self.path == READY_PATH:
                ready, answer = receiver.probes.readiness()
                self._send(200 if ready else 503, answer)
            elif self.path == METRICS_PATH:
                self._send_bytes(200, generate_latest(metrics.REGISTRY), CONTENT_TYPE_LATEST)
            elif self.path == PATH:
                self._send(405, {"status": "error", "reason": f"use POST on {PATH}"}, allow="POST")
            else:
                self._send(404, {"status": "error", "reason": "not found"})

        def do_POST(self) -> None:
            if self.path != PATH:
                if self._arrived():
                    self._send(404, {"status": "error", "reason": "not found"}, close=True)
                return
            length_header = self.headers.get("Content-Length")
            if length_header is None or not length_header.isdigit():
                if not self._arrived():
                    return
                receiver.count("malformed")
                self._send(411, {"status": "error", "reason": "Content-Length header is required"}, close=True)
                return
            length = int(length_header)
            if length > receiver._max_body:
                if not self._arrived():
                    return
                receiver.count("malformed")
                reason = f"body over {receiver._max_body} bytes"
                self._send(413, {"status": "error", "reason": reason}, close=True)
                return
            try:
                body = self.rfile.read(length)
            except OSError:  # the socket's timeout: nothing came for that long
                body = b""
            if not self._arrived() or len(body) < length:
                receiver.count("malformed")  # cut, or the client gave up: nothing happens
                self.close_connection = True
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = receiver.handle(headers, body)
            self._send(status, answer)

        def _other(self) -> None:
            if self._arrived():
                self._send(405, {"status": "error", "reason": "method not allowed"}, allow="GET, POST", close=True)

        do_PUT = do_DELETE = do_PATCH = _other

        def _send(self, status: int, answer: dict, *, allow: str = "", close: bool = False) -> None:
            self._send_bytes(status, json.dumps(answer).encode(), "application/json", allow=allow, close=close)

        def _send_bytes(
            self, status: int, data: bytes, content_type: str, *, allow: str = "", close: bool = False
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if allow:
                self.send_header("Allow", allow)
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("webhook http: " + format, *args)

    return Handler
