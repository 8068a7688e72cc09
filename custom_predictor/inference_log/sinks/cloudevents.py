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

Events go one by one on a kept-alive connection; `Batch.done` counts the events delivered, so a retry resumes
after the last one the receiver accepted instead of sending it again. 2xx is delivered; 408, 429, 5xx and network
errors are retried; any other answer is a refusal (the records count as failed).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import urllib3
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from custom_predictor.inference_log.record import Record
from custom_predictor.inference_log.sinks.base import Batch, SinkError

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
_RETRYABLE = {408, 425, 429}


def _text(value: Any) -> str:
    return "true" if value is True else "false" if value is False else str(value)


def events(record: Record) -> list[CloudEvent]:
    """The request and the response event of one record."""
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
    extensions = {k: _text(v) for k, v in ours.items() if v is not None}
    out = []
    for kind, when, body in (
        (REQUEST_TYPE, arrived, record.request),
        (RESPONSE_TYPE, arrived + timedelta(milliseconds=record.latency_ms), record.response),
    ):
        attributes = {
            "id": record.request_id,
            "source": source,
            "type": kind,
            "time": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            **extensions,
        }
        if body is not None:
            attributes["datacontenttype"] = "application/json"
        out.append(CloudEvent(attributes, body.encode("utf-8", "surrogatepass") if body is not None else None))
    return out


class CloudEventsSink:
    name = "cloudevents"

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        parts = urlsplit(url)
        self.where = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))  # no userinfo
        self._http = urllib3.PoolManager(timeout=urllib3.Timeout(total=timeout), retries=False, maxsize=1)

    def write(self, batch: Batch) -> None:
        pending = [e for r in batch.records for e in events(r)]
        for event in pending[batch.done :]:
            headers, body = to_binary(event, data_marshaller=lambda data: data)
            try:
                answer = self._http.request("POST", self.url, body=body, headers=headers)
            except urllib3.exceptions.HTTPError as e:
                raise SinkError(f"cloudevents {self.where}: {e.__class__.__name__}") from None
            if answer.status >= 300:
                retryable = answer.status >= 500 or answer.status in _RETRYABLE
                raise SinkError(f"cloudevents {self.where}: HTTP {answer.status}", retryable=retryable)
            batch.done += 1
            batch.delivered = batch.done // 2

    def close(self) -> None:
        self._http.clear()
