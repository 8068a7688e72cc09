"""The receiver over real HTTP (stdlib server on 127.0.0.1), fed deliveries signed like MLflow's."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
import uuid

import pytest

from adapter.health import Probes
from adapter.webhooks import PATH, WebhookReceiver
from adapter.workqueue import WorkQueue
from tests.webhooks.conftest import SECRET, Delivery, delivery, post, tag_event


def test_healthz(receiver: WebhookReceiver) -> None:
    status, body = post(receiver.port, Delivery(b""), path="/healthz", method="GET")
    assert status == 200
    assert body == {
        "status": "ok",
        "deliveries": {"queued": 0, "ignored": 0, "not-leader": 0, "forwarded": 0, "rejected": 0, "malformed": 0},
    }


@pytest.mark.parametrize(
    "payload",
    [
        tag_event("churn"),
        {"entity": "model_version_tag", "action": "deleted", "data": {"name": "churn", "version": "1", "key": "x"}},
        {"entity": "model_version_alias", "action": "created", "data": {"name": "churn", "alias": "p", "version": "2"}},
        {"entity": "model_version_alias", "action": "deleted", "data": {"name": "churn", "alias": "p"}},
        {"entity": "model_version", "action": "created", "data": {"name": "churn", "version": "3", "tags": {}}},
    ],
    ids=lambda p: f"{p['entity']}.{p['action']}",
)
def test_handled_events_queue_the_model(receiver: WebhookReceiver, trigger: WorkQueue, payload: dict) -> None:
    assert post(receiver.port, delivery(payload)) == (202, {"status": "queued", "model": "churn"})
    assert trigger.wait(2).names == {"churn"}


@pytest.mark.parametrize("key", ["deployment.status", "deployment.url", "deployed", "model_endpoint", "deployment.x"])
def test_the_adapters_own_tags_are_ignored(receiver: WebhookReceiver, trigger: WorkQueue, key: str) -> None:
    status, body = post(receiver.port, delivery(tag_event("churn", key=key)))
    assert (status, body["status"]) == (202, "ignored")
    assert key in body["reason"]
    assert trigger.wait(0.2).names == frozenset()


def test_a_user_tag_that_merely_looks_alike_is_not_ignored(receiver: WebhookReceiver, trigger: WorkQueue) -> None:
    assert post(receiver.port, delivery(tag_event("churn", key="deployed_by")))[0] == 202
    assert trigger.wait(2).names == {"churn"}


def test_events_that_do_not_affect_deployments_are_ignored(receiver: WebhookReceiver, trigger: WorkQueue) -> None:
    payload = {"entity": "registered_model", "action": "created", "data": {"name": "churn", "tags": {}}}
    status, body = post(receiver.port, delivery(payload))
    assert (status, body["status"]) == (202, "ignored")
    assert trigger.wait(0.2).names == frozenset()


def test_bad_signatures_get_401_and_no_effect(receiver: WebhookReceiver, trigger: WorkQueue) -> None:
    good = delivery(tag_event("churn"))
    unsigned = Delivery(good.body, {k: v for k, v in good.headers.items() if k != "X-MLflow-Signature"})
    forged = delivery(tag_event("churn"), secret="guessed")
    tampered = Delivery(good.body.replace(b"churn", b"other"), good.headers)
    stale = delivery(tag_event("churn"), timestamp=time.time() - 301)
    future = delivery(tag_event("churn"), timestamp=time.time() + 301)
    reasons = {}
    for label, d in [("unsigned", unsigned), ("forged", forged), ("tampered", tampered), ("stale", stale),
                     ("future", future)]:  # fmt: skip
        status, body = post(receiver.port, d)
        assert (status, body["status"]) == (401, "rejected"), label
        reasons[label] = body["reason"]
    assert reasons == {
        "unsigned": "missing X-MLflow-Signature header",
        "forged": "signature does not match",
        "tampered": "signature does not match",
        "stale": "timestamp is more than 300s old",
        "future": "timestamp is more than 300s in the future",
    }
    assert trigger.wait(0.2).names == frozenset()
    assert receiver.stats["rejected"] == 5


def test_a_replayed_delivery_is_rejected(receiver: WebhookReceiver, trigger: WorkQueue) -> None:
    d = delivery(tag_event("churn"))
    assert post(receiver.port, d)[0] == 202
    assert trigger.wait(2).names == {"churn"}
    status, body = post(receiver.port, d)
    assert (status, body) == (401, {"status": "rejected", "reason": "delivery id already seen (replay)"})
    assert trigger.wait(0.2).names == frozenset()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"\xff\xfe", "body is not UTF-8"),
        (b"[1, 2]", "body must be a JSON object"),
        (b'{"entity": "model_version_tag", "data": {"name": "m"}}', "body.entity and body.action must be"),
        (b'{"entity": "model_version_tag", "action": "set", "data": []}', "body.data must be a JSON object"),
        (b'{"entity": "model_version_tag", "action": "set", "data": {"name": ""}}', "body.data.name must be"),
    ],
)
def test_malformed_signed_bodies_get_400(
    receiver: WebhookReceiver, trigger: WorkQueue, body: bytes, reason: str
) -> None:
    status, answer = post(receiver.port, delivery(body))
    assert status == 400
    assert answer["status"] == "malformed"
    assert answer["reason"].startswith(reason)
    assert trigger.wait(0.1).names == frozenset()


def test_body_size_limit(trigger: WorkQueue) -> None:
    r = WebhookReceiver("127.0.0.1", 0, SECRET, trigger, max_body=1000)
    r.start()
    try:
        d = delivery(tag_event("churn", value="x" * 2000))
        assert post(r.port, d) == (413, {"status": "error", "reason": "body over 1000 bytes"})
        assert post(r.port, delivery(tag_event("churn")))[0] == 202
    finally:
        r.stop()


def test_missing_content_length_gets_411(receiver: WebhookReceiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as s:
        s.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 411")


def test_unknown_paths_and_methods(receiver: WebhookReceiver) -> None:
    assert post(receiver.port, delivery(tag_event("m")), path="/nope")[0] == 404
    assert post(receiver.port, Delivery(b""), path="/nope", method="GET")[0] == 404
    assert post(receiver.port, Delivery(b""), path=PATH, method="GET")[0] == 405
    assert post(receiver.port, Delivery(b""), path=PATH, method="DELETE")[0] == 405


def test_keep_alive_connection_serves_several_deliveries(receiver: WebhookReceiver, trigger: WorkQueue) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    try:
        for name in ("a", "b", "c"):
            d = delivery(tag_event(name))
            conn.request("POST", PATH, body=d.body, headers=d.headers)
            resp = conn.getresponse()
            assert (resp.status, json.loads(resp.read())["model"]) == (202, name)
    finally:
        conn.close()
    got = trigger.wait(2).names
    while got != {"a", "b", "c"}:  # each name is due `settle` after its own first request
        more = trigger.wait(2).names
        assert more, f"only {got} were triggered"
        got |= more


def test_one_log_line_per_delivery_without_secret_or_body(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="adapter.webhooks")
    delivery_id = str(uuid.uuid4())
    post(receiver.port, delivery(tag_event("churn", value="VALUE-MARKER"), delivery_id=delivery_id))
    post(receiver.port, delivery(tag_event("churn"), secret="forged\nfake=line"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Webhook delivery")]
    assert len(lines) == 2
    assert lines[0] == (
        f"Webhook delivery delivery={delivery_id} event=model_version_tag.set model=churn version=1 key=stage"
        f" outcome=queued http=202 ms={lines[0].split('ms=')[1]}"
    )
    assert "outcome=rejected http=401" in lines[1] and "reason=signature?does?not?match" in lines[1]
    assert all(SECRET not in line and "VALUE-MARKER" not in line and "\n" not in line for line in lines)


def test_empty_secret_is_refused(trigger: WorkQueue) -> None:
    with pytest.raises(ValueError, match="MLFLOW_WEBHOOK_SECRET is empty"):
        WebhookReceiver("127.0.0.1", 0, "", trigger)


def test_port_in_use_is_a_clear_error(receiver: WebhookReceiver, trigger: WorkQueue) -> None:
    other = WebhookReceiver("127.0.0.1", receiver.port, SECRET, trigger)
    with pytest.raises(OSError, match=f"webhook receiver cannot listen on 127.0.0.1:{receiver.port}"):
        other.start()


def test_stop_frees_the_port(trigger: WorkQueue) -> None:
    r = WebhookReceiver("127.0.0.1", 0, SECRET, trigger)
    port = r.start()
    r.stop()
    r.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        post(port, delivery(tag_event("m")))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()


def test_probes_report_the_run_loop(trigger: WorkQueue) -> None:
    clock, role = Clock(), {"known": False, "leader": False}
    probes = Probes(60, leading=lambda: role["leader"], role_known=lambda: role["known"], clock=clock)
    r = WebhookReceiver("127.0.0.1", 0, SECRET, trigger, probes=probes)
    r.start()
    try:

        def probe(path: str) -> tuple[int, dict]:
            status, kind, body = get(r.port, path)
            assert kind == "application/json"
            return status, json.loads(body)

        assert probe("/readyz") == (503, {"status": "starting", "leader": False})
        probes.started()
        assert probe("/readyz")[0] == 503, "the role (leader or standby) is not known yet"
        role["known"] = True
        assert probe("/readyz") == (200, {"status": "ready", "leader": False}), "a standby is ready too"
        role["leader"] = True
        assert probe("/readyz") == (200, {"status": "ready", "leader": True})
        clock.now = 59
        assert probe("/healthz")[0] == 200
        clock.now = 61
        status, body = probe("/healthz")
        assert status == 503 and body["reason"] == "the run loop has not come round for 61s"
        probes.beat()
        assert probe("/healthz")[0] == 200
        probes.stopping()
        assert probe("/readyz") == (503, {"status": "stopping", "leader": True})
    finally:
        r.stop()


def test_metrics_are_served_in_prometheus_text_format(receiver: WebhookReceiver) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    before = _deliveries("queued")
    assert post(receiver.port, delivery(tag_event("churn")))[0] == 202
    status, kind, body = get(receiver.port, "/metrics")
    assert status == 200 and kind.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {
        "service_builder_pass_duration_seconds",
        "service_builder_passes",
        "service_builder_api_calls",
        "service_builder_webhook_deliveries",
        "service_builder_last_successful_pass_timestamp_seconds",
        "service_builder_leader",
    } <= set(families)
    queued = [s for s in families["service_builder_webhook_deliveries"].samples if s.labels == {"result": "queued"}]
    assert [s.value for s in queued if s.name.endswith("_total")] == [before + 1]


def _deliveries(result: str) -> float:
    from adapter import metrics

    return metrics.REGISTRY.get_sample_value("service_builder_webhook_deliveries_total", {"result": result}) or 0.0


def test_a_standby_answers_and_wakes_nothing(trigger: WorkQueue) -> None:
    r = WebhookReceiver("127.0.0.1", 0, SECRET, trigger, leading=lambda: False)
    r.start()
    try:
        before = _deliveries("not-leader")
        status, body = post(r.port, delivery(tag_event("churn")))
        assert status == 202 and body["status"] == "not-leader"
        assert trigger.wait(0.3).names == frozenset() and trigger.pending == set()
        assert r.stats["not-leader"] == 1 and _deliveries("not-leader") == before + 1
        # Forgeries are still refused first.
        assert post(r.port, delivery(tag_event("churn"), secret="wrong"))[0] == 401
    finally:
        r.stop()


def test_a_standby_forwards_a_verified_delivery_to_the_leader_once() -> None:
    leader_trigger, standby_trigger = WorkQueue(settle=0.0), WorkQueue(settle=0.0)
    leader = WebhookReceiver("127.0.0.1", 0, SECRET, leader_trigger)
    leader.start()
    url = f"http://127.0.0.1:{leader.port}{PATH}"
    standby = WebhookReceiver("127.0.0.1", 0, SECRET, standby_trigger, leading=lambda: False, leader_url=lambda: url)
    standby.start()
    try:
        assert post(standby.port, delivery(tag_event("churn"))) == (
            202,
            {"status": "forwarded", "model": "churn", "to": url},
        )
        assert leader_trigger.wait(2).names == {"churn"} and standby_trigger.pending == set()
        assert leader.stats["queued"] == 1 and standby.stats["forwarded"] == 1
        # The leader verifies what it is sent: a forgery is refused at the standby and never reaches it.
        assert post(standby.port, delivery(tag_event("churn"), secret="wrong"))[0] == 401
        assert leader.stats["rejected"] == 0
        # One hop at most: what a standby was forwarded, it does not send on again.
        hop = delivery(tag_event("churn"))
        status, body = post(standby.port, Delivery(hop.body, {**hop.headers, "X-Service-Builder-Forwarded": "1"}))
        assert (status, body["status"]) == (202, "not-leader")
    finally:
        standby.stop()
        leader.stop()
    # A leader that does not answer: the standby says so, and the leader's poll converges.
    lost = WebhookReceiver("127.0.0.1", 0, SECRET, standby_trigger, leading=lambda: False, leader_url=lambda: url)
    lost.start()
    try:
        assert post(lost.port, delivery(tag_event("churn")))[1]["status"] == "not-leader"
    finally:
        lost.stop()


def test_without_a_secret_deliveries_are_refused_and_probes_answer(trigger: WorkQueue) -> None:
    r = WebhookReceiver("127.0.0.1", 0, None, trigger)
    r.start()
    try:
        status, body = post(r.port, delivery(tag_event("churn")))
        assert (status, body["status"]) == (403, "rejected")
        assert body["reason"] == "webhooks are off: MLFLOW_WEBHOOK_SECRET is not set"
        assert trigger.wait(0.2).names == frozenset()
        assert get(r.port, "/healthz")[0] == 200 and get(r.port, "/readyz")[0] == 200
        assert get(r.port, "/metrics")[0] == 200
    finally:
        r.stop()


def closed(s: socket.socket, within: float) -> bool:
    """Whether the server closes `s` within `within` seconds (whatever it answered first)."""
    s.settimeout(within)
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        return False
    except OSError:  # reset
        return True
    return True


def test_an_oversized_delivery_is_refused_before_its_body_is_read(trigger: WorkQueue) -> None:
    r = WebhookReceiver("127.0.0.1", 0, SECRET, trigger, max_body=1000)
    r.start()
    try:
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
            s.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 30}\r\n\r\n".encode())
            assert s.recv(4096).startswith(b"HTTP/1.1 413")  # no byte of the 1 GiB sent
            assert closed(s, 5)
        assert trigger.wait(0.2).names == frozenset() and r.stats["malformed"] == 1
    finally:
        r.stop()


def test_slow_requests_are_cut_and_change_nothing(trigger: WorkQueue) -> None:
    """Slowloris: a request line, headers or a delivery's body sent a byte at a time is cut after the request
    timeout (each byte arrives well within the socket's own timeout, so only the whole-request deadline stops it);
    an idle connection is closed too; nothing is queued, and a probe is answered meanwhile."""
    r = WebhookReceiver("127.0.0.1", 0, SECRET, trigger, request_timeout=1.0)
    r.start()
    d = delivery(tag_event("churn"))
    head = "".join(f"{k}: {v}\r\n" for k, v in d.headers.items())
    whole = f"POST {PATH} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(d.body)}\r\n\r\n".encode() + d.body
    slow_body_from = whole.index(b"\r\n\r\n") + 4
    try:
        for start in (0, 20, slow_body_from):  # in the request line, in the headers, in the body
            with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
                s.sendall(whole[:start])
                started = time.monotonic()
                cut = False
                for byte in whole[start : start + 40]:
                    try:
                        s.sendall(bytes([byte]))
                    except OSError:
                        cut = True
                        break
                    if closed(s, 0.2):
                        cut = True
                        break
                    assert get(r.port, "/healthz")[0] == 200  # probes answer while it trickles
                assert cut, f"a request trickled from byte {start} was not cut"
                assert time.monotonic() - started < 5
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as idle:
            assert closed(idle, 5)
        assert trigger.wait(0.2).names == frozenset()
        assert r.stats["queued"] == 0
        assert post(r.port, d)[0] == 202  # the same delivery, sent at once, is taken
        assert trigger.wait(2).names == {"churn"}
    finally:
        r.stop()


def test_connections_beyond_the_limit_get_503_without_a_thread(trigger: WorkQueue) -> None:
    r = WebhookReceiver("127.0.0.1", 0, SECRET, trigger, max_connections=2, request_timeout=30)
    r.start()
    try:
        held = [socket.create_connection(("127.0.0.1", r.port), timeout=5) for _ in range(2)]
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\n")  # and nothing more
        time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", r.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
        for s in held:
            s.close()
        deadline = time.monotonic() + 5
        while get(r.port, "/healthz")[0] != 200:  # slots come back as the held connections end
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        r.stop()


def test_a_body_on_a_probe_is_not_taken_for_the_next_request(receiver: WebhookReceiver) -> None:
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as s:
        smuggled = b"POST /webhooks/mlflow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled)
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1  # answered once, then closed
    assert receiver.stats["rejected"] == receiver.stats["malformed"] == 0
