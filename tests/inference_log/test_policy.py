"""The privacy policy: deterministic keyed sampling of bodies, keyed-hash redaction, the body cap."""

from __future__ import annotations

import hashlib
import hmac
import logging

import numpy as np
import pytest

from custom_predictor.inference_log.policy import HASH_PREFIX, Policy


def policy(mode="full", sample=1.0, key=b"platform-key", cap=1000) -> Policy:
    return Policy(mode, sample, key, cap)


def test_bodies_only_under_full():
    ids = [f"r{i}" for i in range(200)]
    assert not any(policy("metadata").keep_bodies(i) for i in ids)
    assert not any(policy("off").keep_bodies(i) for i in ids)
    assert all(policy("full", 1.0).keep_bodies(i) for i in ids)
    assert not any(policy("full", 0.0).keep_bodies(i) for i in ids)


def test_sampling_is_deterministic_per_request_id_and_close_to_the_fraction():
    p = policy(sample=0.25)
    ids = [f"request-{i}" for i in range(20_000)]
    first = [p.keep_bodies(i) for i in ids]
    assert first == [policy(sample=0.25).keep_bodies(i) for i in ids], "same key, same id: same answer"
    assert 0.23 < sum(first) / len(ids) < 0.27


def test_a_larger_sample_keeps_a_superset():
    ids = [f"id{i}" for i in range(5000)]
    small = {i for i in ids if policy(sample=0.1).keep_bodies(i)}
    large = {i for i in ids if policy(sample=0.5).keep_bodies(i)}
    assert small and small < large


def test_sampling_depends_on_the_key_so_clients_cannot_choose_their_ids_into_or_out_of_it():
    ids = [f"id{i}" for i in range(2000)]
    a = [policy(sample=0.5, key=b"one").keep_bodies(i) for i in ids]
    b = [policy(sample=0.5, key=b"two").keep_bodies(i) for i in ids]
    assert a != b


def test_sampling_fraction_is_the_share_of_bodies_kept():
    assert policy("full", 0.3).sampling_fraction == 0.3
    assert policy("metadata", 0.3).sampling_fraction == 0.0


def test_sensitive_columns_become_keyed_hashes_equal_values_equal_hashes():
    p = policy(key=b"k")
    out = p.redact({"mrn": ["A1", "B2", "A1", None], "age": np.array([50, 61, 50, 70])}, {"mrn"})
    expected = HASH_PREFIX + hmac.new(b"k", b'"A1"', hashlib.sha256).hexdigest()
    assert out["mrn"][0] == out["mrn"][2] == expected
    assert out["mrn"][1] != expected
    assert out["mrn"][3] is None, "a missing value stays missing"
    assert out["age"] == [50, 61, 50, 70] and all(type(v) is int for v in out["age"]), "numpy becomes Python"
    assert "A1" not in repr(out) and "B2" not in repr(out)


def test_hashes_depend_on_the_key_and_on_the_type():
    assert policy(key=b"a").hash_value("x") != policy(key=b"b").hash_value("x")
    p = policy()
    assert p.hash_value(1) != p.hash_value("1")
    assert p.hash_value(np.int64(7)) == p.hash_value(7)
    assert p.hash_value(2**80).startswith(HASH_PREFIX), "values JSON cannot hold are hashed by their text"


def test_without_a_key_values_are_still_hidden_with_a_warning(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, "custom_predictor.inference_log"):
        p = Policy("full", 1.0, b"", 100)
    assert "INFERENCE_LOG_HASH_KEY is not set" in caplog.text
    assert p.redact({"mrn": ["secret"]}, {"mrn"})["mrn"][0].startswith(HASH_PREFIX)
    assert Policy("full", 1.0, b"", 100).hash_value("secret") != p.hash_value("secret")
    ids = [f"id{i}" for i in range(500)]
    without = [Policy("full", 0.5, b"", 100).keep_bodies(i) for i in ids]
    assert without == [Policy("full", 0.5, b"", 100).keep_bodies(i) for i in ids], "sampling stays deterministic"


def test_no_warning_when_no_body_is_logged(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, "custom_predictor.inference_log"):
        Policy("metadata", 1.0, b"", 100)
    assert caplog.text == ""


def test_bodies_over_the_cap_are_cut_and_flagged():
    p = policy(cap=10)
    assert p.cap('{"a": 1}') == ('{"a": 1}', False)
    assert p.cap("x" * 10) == ("x" * 10, False)
    assert p.cap("é" * 11) == ("é" * 10, True)
    assert p.cap(None) == (None, False)


@pytest.mark.parametrize(("mode", "sample"), [("verbose", 1.0), ("full", 1.5), ("full", -0.1)])
def test_bad_policies_are_refused(mode, sample):
    with pytest.raises(ValueError):
        Policy(mode, sample, b"k", 100)
