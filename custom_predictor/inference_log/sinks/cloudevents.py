"""The CloudEvents sink: each record as KServe's logger sends a call, two binary-mode events over HTTP.

Per record: an `org.kubeflow.serving.inference.request` event and an `org.kubeflow.serving.inference.response`
event sharing one `ce-id` (the request id), with KServe's extensions `inferenceservicename`, `namespace`,
`component` (`predictor`), `endpoint` (`default`) and `metadata` (`{}`), so a consumer built for KServe's logger
(a Knative Eventing broker, TrustyAI) takes them unchanged. The body of each is the request or response JSON
when the policy keeps bodies, else empty. Our fields are extensions as well (CloudEvents names: lowercase
letters and digits): `modelname`, `modelversion`, `protocol`, `route`, `status`, `latencyms`, `rowsin`,
`rowsout`, `caller` (the record's `subject`: `subject` is a CloudEvents attribute of its own), `entityid`,
`samplingfraction`, `truncated`, `error`. `time` is when the request arrived (request event) and when the
answer left (response event).

Binary mode is the CloudEvents HTTP binding's (spec 1.0, section 3.1): each attribute a `ce-<name>` header, its
value percent-encoded where it holds a space, `"`, `%` or a character outside printable ASCII; `datacontenttype`
is `Content-Type`. The headers are built here (a few microseconds; the SDK's objects cost a hundred times
more per event on the writer thread); the tests parse them with the CloudEvents SDK.

Events go out `concurrency` at a time on kept-alive connections; `Batch.sent` holds the events delivered, so a
retry sends only the others. The first failure stops further sends of the batch. 2xx is delivered; 408, 425,
429, 5xx and network errors are retried; any other answer is a refusal (the records count as failed).
"""

from __future__ import annotations

import base64
import http.client
import queue
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from custom_predictor.inference_log.record import Record
from custom_predictor.inference_log.sinks.base import Batch, SinkError

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
_RETRYABLE = {408, 425, 429}
# Printable ASCII but space, '"' and '%' stay as they are in a header value (HTTP binding 3.1.3.2).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')

Event = tuple[dict[str, str], bytes]
_SKIPPED = SinkError("not sent: an earlier event of the batch failed")


_PLAIN = re.compile(r"[!#-$&-~]*")  # what needs no encoding: printable ASCII but '"' and '%' (and space)


def _value(value: Any) -> str:
    text = "true" if value is True else "false" if value is False else str(value)
    return text if _PLAIN.fullmatch(text) else quote(text, safe=_SAFE)


def _time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def events(record: Record) -> list[Event]:
    """The request and the response event of one record: (headers, body)."""
    if record.namespace and record.inferenceservice:
        source = f"/{quote(record.namespace, safe='')}/{quote(record.inferenceservice, safe='')}"
    else:
        source = f"/local/{quote(record.model_name, safe='')}"
    arrived = record.time if record.time.tzinfo else record.time.replace(tzinfo=UTC)
    ours = {
        "inferenceservicename": record.inferenceservice,
        "namespace": record.namespace,
        "component": "predictor",
        "endpoint": "default",
        "metadata": "{}",
        "modelname": record.model_name,
        "modelversion": record.model_version,
        "protocol": record.protocol,
        "route": record.route,
        "status": record.status,
        "latencyms": f"{record.latency_ms:.3f}",
        "rowsin": record.rows_in,
        "rowsout": record.rows_out,
        "caller": record.subject,
        "entityid": record.entity_id,
        "samplingfraction": record.sampling_fraction,
        "truncated": record.truncated,
        "error": record.error,
    }
    common = {"ce-specversion": "1.0", "ce-id": _value(record.request_id), "ce-source": _value(source)}
    common.update({f"ce-{k}": _value(v) for k, v in ours.items() if v is not None})
    out = []
    for kind, when, body in (
        (REQUEST_TYPE, arrived, record.request),
        (RESPONSE_TYPE, arrived + timedelta(milliseconds=record.latency_ms), record.response),
    ):
        headers = {**common, "ce-type": kind, "ce-time": _time(when)}
        if body is not None:
            headers["content-type"] = "application/json"
        out.append((headers, body.encode("utf-8", "surrogatepass") if body is not None else b""))
    return out


class _Connections:
    """Kept-alive HTTP(S) connections to one URL (http.client: half the CPU of a general client per post), at
    most one per sending thread; a kept connection the server has closed meanwhile is replaced once, at once."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port, self.timeout = parts.hostname or "", parts.port, timeout
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.auth: dict[str, str] = {}
        if parts.username is not None:
            user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.auth = {"authorization": "Basic " + base64.b64encode(user_pass).decode()}
        self._idle: queue.LifoQueue[http.client.HTTPConnection] = queue.LifoQueue()

    def _new(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def post(self, headers: dict[str, str], body: bytes) -> int:
        """The answer's status; OSError or http.client.HTTPException when there is none."""
        try:
            conn, reused = self._idle.get_nowait(), True
        except queue.Empty:
            conn, reused = self._new(), False
        try:
            conn.request("POST", self.path, body=body, headers={**headers, **self.auth})
            answer = conn.getresponse()
            answer.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            if not reused:
                raise
            return self.post(headers, body)  # the server closed the idle connection: once more on a new one
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        if answer.will_close:
            conn.close()
        else:
            self._idle.put(conn)
        return answer.status

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class CloudEventsSink:
    name = "cloudevents"

    def __init__(self, url: str, timeout: float = 5.0, concurrency: int = 8) -> None:
        self.url = url
        parts = urlsplit(url)
        self.where = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))  # no userinfo
        self._connections = _Connections(url, timeout)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="inference-log-cloudevents")

    def _send(self, event: Event, stop: threading.Event) -> SinkError | None:
        """Post one event; the error, or None when delivered (or `_SKIPPED` after another send failed)."""
        if stop.is_set():
            return _SKIPPED
        try:
            status = self._connections.post(*event)
        except (OSError, http.client.HTTPException) as e:
            stop.set()
            return SinkError(f"cloudevents {self.where}: {e.__class__.__name__}")
        if status >= 300:
            stop.set()
            retryable = status >= 500 or status in _RETRYABLE
            return SinkError(f"cloudevents {self.where}: HTTP {status}", retryable=retryable)
        return None

    def write(self, batch: Batch) -> None:
        pending = [(i, e) for i, e in enumerate(ev for r in batch.records for ev in events(r)) if i not in batch.sent]
        stop = threading.Event()
        errors = []
        for (i, _), error in zip(pending, self._pool.map(lambda p: self._send(p[1], stop), pending), strict=True):
            if error is None:
                batch.sent.add(i)
            elif error is not _SKIPPED:
                errors.append(error)
        batch.delivered = sum(1 for n in range(len(batch.records)) if {2 * n, 2 * n + 1} <= batch.sent)
        if errors:
            raise next((e for e in errors if not e.retryable), errors[0])
        if len(batch.sent) < 2 * len(batch.records):  # skipped after a failure the pool already reported
            raise SinkError(f"cloudevents {self.where}: not every event was sent")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._connections.close()
