"""Unit tests of the pure parts of the receiver: signature check, replay guard."""

from __future__ import annotations

import base64

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from adapter.webhooks import ReplayGuard, WebhookRejected, sign, verify_signature

SECRET = b"whsec-unit"
DID = "5f1c0d7e-1111-4222-8333-944455556666"
NOW = 1_800_000_000.0
TS = str(int(NOW))
BODY = b'{"entity": "model_version_tag", "action": "set", "data": {"name": "m"}}'


def check(header: str, *, secret: bytes = SECRET, ts: str = TS, body: bytes = BODY, now: float = NOW) -> None:
    verify_signature(secret, DID, ts, body, header, now=now)


def reason(header: str, **kw) -> str:
    with pytest.raises(WebhookRejected) as e:
        check(header, **kw)
    return e.value.reason


def test_sign_matches_mlflows_own_recipe() -> None:
    # The sender's function, from the pinned mlflow, against ours: same bytes, same header.
    mlflow_header = _generate_hmac_signature(SECRET.decode(), DID, TS, BODY.decode())
    assert sign(SECRET, DID, TS, BODY) == mlflow_header
    check(mlflow_header)


def test_known_vector() -> None:
    # HMAC-SHA256(b"k", b"id.1.{}") computed independently (openssl dgst -sha256 -hmac k -binary | base64).
    assert sign(b"k", "id", "1", b"{}") == "v1,g7RitEqJvu8yMbDC6clEYxfin7F9RZIMzpsXDw051Xc="


def test_good_signature_within_window_passes() -> None:
    header = sign(SECRET, DID, TS, BODY)
    check(header)
    check(header, now=NOW + 300)  # exactly max_age old is still fresh
    check(header, now=NOW - 300)  # and so is a sender clock 5 minutes ahead


def test_one_matching_signature_among_several_is_enough() -> None:
    good = sign(SECRET, DID, TS, BODY)
    other = sign(b"old-secret", DID, TS, BODY)
    check(f"{other} {good}")
    check(f"v2,abc {good}")


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"secret": b"wrong-secret"}, "signature does not match"),
        ({"body": BODY.replace(b'"m"', b'"other"')}, "signature does not match"),
        ({"ts": str(int(NOW) + 1)}, "signature does not match"),
    ],
    ids=["wrong-secret", "tampered-body", "tampered-timestamp"],
)
def test_forged_deliveries_are_rejected(kw: dict, expected: str) -> None:
    assert reason(sign(SECRET, DID, TS, BODY), **kw) == expected


def test_flipped_signature_bit_is_rejected() -> None:
    raw = bytearray(base64.b64decode(sign(SECRET, DID, TS, BODY)[3:]))
    raw[0] ^= 1
    assert reason("v1," + base64.b64encode(bytes(raw)).decode()) == "signature does not match"


def test_stale_and_future_timestamps_are_rejected() -> None:
    header = sign(SECRET, DID, TS, BODY)
    assert reason(header, now=NOW + 301) == "timestamp is more than 300s old"
    assert reason(header, now=NOW - 301) == "timestamp is more than 300s in the future"


@pytest.mark.parametrize(
    ("header", "ts", "expected"),
    [
        ("", TS, "missing X-MLflow-Signature header"),
        ("v1,abc", "", "missing X-MLflow-Timestamp header"),
        ("v1,abc", "yesterday", "X-MLflow-Timestamp is not unix seconds"),
        ("v1", TS, "X-MLflow-Signature holds no well-formed v1 signature"),
        ("v1,not base64!", TS, "X-MLflow-Signature holds no well-formed v1 signature"),
        ("v2," + base64.b64encode(b"x" * 32).decode(), TS, "X-MLflow-Signature holds no well-formed v1 signature"),
        ("v1,", TS, "signature does not match"),
    ],
)
def test_malformed_headers_are_rejected(header: str, ts: str, expected: str) -> None:
    assert reason(header, ts=ts) == expected


def test_missing_delivery_id_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="missing X-MLflow-Delivery-Id header"):
        verify_signature(SECRET, "", TS, BODY, sign(SECRET, "", TS, BODY), now=NOW)


def test_replay_guard_remembers_ids_for_the_window() -> None:
    guard = ReplayGuard(max_age=300)
    assert guard.first_time("a", NOW, now=NOW)
    assert not guard.first_time("a", NOW, now=NOW + 1)
    assert guard.first_time("b", NOW, now=NOW + 1)
    assert not guard.first_time("a", NOW, now=NOW + 300)  # still inside a's window
    assert guard.first_time("c", NOW + 400, now=NOW + 400)
    assert len(guard) == 1  # a and b expired with their timestamps and were purged


def test_replay_guard_memory_is_bounded() -> None:
    guard = ReplayGuard(max_age=300, max_entries=100)
    for i in range(1000):
        assert guard.first_time(f"id-{i}", NOW + i / 1000, now=NOW)
    assert len(guard) == 100
    assert not guard.first_time("id-999", NOW, now=NOW)  # the newest are the ones kept
