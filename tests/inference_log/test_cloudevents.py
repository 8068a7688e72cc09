"""The CloudEvents sink against a receiver built on the CloudEvents SDK: KServe's logger format (two binary-mode
events per call sharing ce-id, KServe's extensions), ours as extensions, the HTTP binding's header encoding (the
SDK's own encoder as the reference), retries that resume, concurrency, refusals."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from prometheus_client import CollectorRegistry

from custom_predictor.inference_log import InferenceLog
from custom_predictor.inference_log.channel import Channel
from custom_predictor.inference_log.metrics import LogMetrics
from custom_predictor.inference_log.policy import Policy
from custom_predictor.inference_log.sinks.base import Batch, SinkError
from custom_predictor.inference_log.sinks.cloudevents import REQUEST_TYPE, RESPONSE_TYPE, CloudEventsSink, events
from tests.inference_log.fakes import FakeClock, record
from tests.inference_log.receiver import cloudevents_receiver


def pair(receiver) -> tuple[CloudEvent, CloudEvent]:
    """The request and the response event (sent concurrently: in either order)."""
    (request,) = [e for e in receiver.events if e["type"] == REQUEST_TYPE]
    (response,) = [e for e in receiver.events if e["type"] == RESPONSE_TYPE]
    return request, response


@pytest.fixture
def receiver():
    with cloudevents_receiver() as r:
        yield r


def test_each_call_is_two_events_in_kserves_logger_format(receiver):
    rec = record(
        1,
        request_id="7f0c-req",
        namespace="clinical",
        inferenceservice="breast-cancer",
        protocol="v2",
        route="/v2/models/{name}/infer",
        status=200,
        latency_ms=12.5,
        rows_in=2,
        rows_out=2,
        subject="alice@example.org",
        sampling_fraction=1.0,
        request='{"inputs": {"radius": [17.9, 11.2]}}',
        response='{"outputs": [0, 1]}',
    )
    sink = CloudEventsSink(receiver.url)
    sink.write(Batch([rec]))
    request, response = pair(receiver)
    assert request["type"] == REQUEST_TYPE == "org.kubeflow.serving.inference.request"
    assert response["type"] == RESPONSE_TYPE == "org.kubeflow.serving.inference.response"
    assert request["id"] == response["id"] == "7f0c-req", "one ce-id joins the pair, as KServe's logger does"
    assert request["specversion"] == "1.0" and request["source"] == "/clinical/breast-cancer"
    for event in (request, response):
        assert event["inferenceservicename"] == "breast-cancer" and event["namespace"] == "clinical"
        assert event["component"] == "predictor" and event["endpoint"] == "default"
        assert event["modelname"] == "breast-cancer" and event["modelversion"] == "3"
        assert event["status"] == "200" and event["latencyms"] == "12.500" and event["caller"] == "alice@example.org"
        assert event["rowsin"] == "2" and event["protocol"] == "v2" and event["truncated"] == "false"
        assert "entityid" not in event.get_attributes() and "error" not in event.get_attributes()
    assert request.data == b'{"inputs": {"radius": [17.9, 11.2]}}' and response.data == b'{"outputs": [0, 1]}'
    assert request["datacontenttype"] == "application/json"
    arrived = datetime.fromisoformat(request["time"])
    answered = datetime.fromisoformat(response["time"])
    assert arrived == rec.time and (answered - arrived).total_seconds() == pytest.approx(0.0125)
    assert sorted(receiver.bodies) == [b'{"inputs": {"radius": [17.9, 11.2]}}', b'{"outputs": [0, 1]}'], "binary mode"


def test_metadata_records_send_events_without_a_body(receiver):
    CloudEventsSink(receiver.url).write(Batch([record(2, status=422, error="invalid_input")]))
    request, response = pair(receiver)
    assert request.data in (None, b"") and receiver.bodies == [b"", b""]
    assert "datacontenttype" not in request.get_attributes()
    assert response["status"] == "422" and response["error"] == "invalid_input"
    assert request["source"] == "/local/breast-cancer", "locally: no namespace, the model names the source"


def channel_for(sink: CloudEventsSink, registry: CollectorRegistry, clock: FakeClock) -> Channel:
    options = {"max_records": 10, "max_bytes": 10**6, "batch_rows": 10, "batch_seconds": 1}
    return Channel(sink, LogMetrics(registry), clock=clock, **options)


def test_a_retry_resumes_after_the_last_accepted_event(receiver):
    receiver.answers = [202, 202, 202, 503, 503]  # the broker fails on the 2nd record's response event
    registry, clock = CollectorRegistry(), FakeClock()
    channel = channel_for(CloudEventsSink(receiver.url, concurrency=1), registry, clock)
    assert channel.deliver(Batch([record(i) for i in range(3)]))
    assert clock.sleeps == [0.2, 0.5] and receiver.refused == 2
    sent = [(e["id"], e["type"].rsplit(".", 1)[1]) for e in receiver.events]
    assert sent == [(f"req-{i}", kind) for i in range(3) for kind in ("request", "response")], "none twice"
    assert registry.get_sample_value("predictor_inference_log_written_total", {"sink": "cloudevents"}) == 3


def test_concurrent_sends_deliver_every_event_once_through_failures(receiver):
    receiver.answers = [202] * 7 + [503, 202, 202, 503] + [202] * 5 + [500]
    registry, clock = CollectorRegistry(), FakeClock()
    channel = channel_for(CloudEventsSink(receiver.url, concurrency=4), registry, clock)
    assert channel.deliver(Batch([record(i) for i in range(10)]))
    sent = sorted((e["id"], e["type"]) for e in receiver.events)
    assert sent == sorted((f"req-{i}", t) for i in range(10) for t in (REQUEST_TYPE, RESPONSE_TYPE))
    assert receiver.refused == 3 and len(clock.sleeps) >= 1


def test_headers_are_the_ones_the_sdk_writes_for_the_same_event():
    rec = record(5, subject="bob", request='{"a": 1}', response="[2]", error="none")
    for headers, body in events(rec):
        parsed = from_http(headers, body, data_unmarshaller=lambda b: b)
        reference = CloudEvent(parsed.get_attributes(), parsed.data)
        sdk_headers, sdk_body = to_binary(reference, data_marshaller=lambda d: d)
        assert {k.lower(): v for k, v in sdk_headers.items()} == headers and sdk_body == body


def test_non_ascii_values_are_percent_encoded_utf8():
    headers, _ = events(record(1, model_name="risk modèl", subject='"ann"%'))[0]
    assert headers["ce-modelname"] == "risk%20mod%C3%A8l" and unquote(headers["ce-modelname"]) == "risk modèl"
    assert headers["ce-caller"] == "%22ann%22%25"
    assert all(v.isascii() for v in headers.values())
    assert events(record(1, request_id="id 5"))[0][0]["ce-id"] == "id%205", "a space too (HTTP binding 3.1.3.2)"


def test_credentials_in_the_url_become_basic_auth_and_stay_out_of_where(receiver):
    url = receiver.url.replace("http://", "http://logger:p%40ss@")
    sink = CloudEventsSink(url)
    sink.write(Batch([record()]))
    assert receiver.authorization == ["Basic bG9nZ2VyOnBAc3M="] * 2  # logger:p@ss
    assert "p%40ss" not in sink.where and "logger" not in sink.where
    sink.close()


def test_a_refusal_is_not_retried(receiver):
    receiver.answers = [400]
    with pytest.raises(SinkError) as e:
        CloudEventsSink(receiver.url).write(Batch([record()]))
    assert not e.value.retryable and "HTTP 400" in str(e.value)


def test_an_unreachable_receiver_is_retryable_and_the_url_keeps_no_credentials():
    from tests.servers import free_port

    sink = CloudEventsSink(f"http://user:pw@127.0.0.1:{free_port()}/events?token=x", timeout=1)
    with pytest.raises(SinkError) as e:
        sink.write(Batch([record()]))
    assert e.value.retryable
    assert "pw" not in str(e.value) and "token" not in str(e.value) and "pw" not in sink.where


def test_through_the_inference_log(receiver):
    log = InferenceLog(
        Policy("full", 1.0, b"k", 1000),
        [CloudEventsSink(receiver.url)],
        CollectorRegistry(),
        batch_rows=5,
        batch_seconds=0.05,
    )
    log.channels[0].start()
    for i in range(12):
        log.put(record(i, time=datetime.now(UTC)))
    log.close(10.0)
    assert sorted({e["id"] for e in receiver.events}) == sorted(f"req-{i}" for i in range(12))
    assert len(receiver.events) == 24
