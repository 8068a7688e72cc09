"""`InferenceLog`, the request path's handle: put (cap, fan-out, never raises), off, from_settings, the schema."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from custom_predictor.inference_log import COLUMNS, InferenceLog, Record
from custom_predictor.inference_log.policy import Policy
from custom_predictor.inference_log.record import to_json
from custom_predictor.settings import Settings
from tests.inference_log.fakes import FakeSink, record

DOC = Path(__file__).resolve().parents[2] / "docs" / "inference-log.md"


def make(mode="full", sinks=None, **kw):
    registry = CollectorRegistry()
    sinks = sinks if sinks is not None else [FakeSink()]
    return InferenceLog(Policy(mode, 1.0, b"k", 20), sinks, registry, **kw), sinks, registry


def test_put_caps_bodies_and_hands_the_record_to_every_sink():
    a, b = FakeSink("a"), FakeSink("b")
    log, _, _ = make(sinks=[a, b], batch_rows=100, batch_seconds=3600)

    async def run():
        await log.start()
        log.put(record(1, request='{"inputs": {"x": [1, 2, 3, 4, 5]}}', response="[0]"))
        log.put(record(2, request="{}", response="[1]"))
        await log.stop(5.0)

    asyncio.run(run())
    for sink in (a, b):
        first, second = sink.records
        assert first.request == '{"inputs": {"x": [1,' and first.truncated and first.response == "[0]"
        assert second.request == "{}" and not second.truncated


def test_put_never_raises(caplog: pytest.LogCaptureFixture):
    log, (sink,), _ = make(batch_rows=100, batch_seconds=3600)
    asyncio.run(log.start())
    with caplog.at_level("ERROR", "custom_predictor.inference_log"):
        log.put(record(1, request=12345))  # not text: a bug upstream, logged, never the caller's problem
        log.put("not a record")  # type: ignore[arg-type]
    assert caplog.text.count("a record could not be queued") == 2
    log.put(record(2))
    log.close(5.0)
    assert [r.request_id for r in sink.records] == ["req-2"]


def test_off_starts_nothing_and_keeps_nothing():
    log, (sink,), registry = make("off")
    assert log.channels == [] and log.mode == "off"

    async def run():
        await log.start()
        log.put(record(1))
        await log.stop(1.0)

    asyncio.run(run())
    assert sink.attempts == 0
    assert registry.get_sample_value("predictor_inference_log_info", {"mode": "off", "sample": "1.0", "sinks": ""})


def test_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MODEL_URI", "models:/m/1")
    monkeypatch.setenv("INFERENCE_LOG_MODE", "full")
    monkeypatch.setenv("INFERENCE_LOG_SAMPLE", "0.5")
    monkeypatch.setenv("INFERENCE_LOG_SINKS", "stdout, table")
    monkeypatch.setenv("INFERENCE_LOG_TABLE_URI", str(tmp_path))
    monkeypatch.setenv("INFERENCE_LOG_HASH_KEY", "s3cr3t")
    log = InferenceLog.from_settings(Settings(), CollectorRegistry())
    assert log.mode == "full" and log.sampling_fraction == 0.5
    assert [c.sink.name for c in log.channels] == ["stdout", "table"]
    assert log.where == f"stdout stdout, table {tmp_path}"
    assert "s3cr3t" not in repr(vars(log))
    assert log.redact({"a": ["x"]}, {"a"}) == Policy("full", 0.5, b"s3cr3t", 10).redact({"a": ["x"]}, {"a"})


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"INFERENCE_LOG_SINKS": "kafka"}, "INFERENCE_LOG_SINKS"),
        ({"INFERENCE_LOG_SINKS": "cloudevents"}, "INFERENCE_LOG_CLOUDEVENTS_URL"),
        ({"INFERENCE_LOG_SINKS": "table"}, "INFERENCE_LOG_TABLE_URI"),
        ({"INFERENCE_LOG_SINKS": "table", "INFERENCE_LOG_TABLE_URI": "relative/dir"}, "INFERENCE_LOG_TABLE_URI"),
        ({"INFERENCE_LOG_SINKS": "table", "INFERENCE_LOG_TABLE_URI": "s3://A_B/x"}, "INFERENCE_LOG_TABLE_URI"),
        ({"INFERENCE_LOG_S3_ENDPOINT_URL": "minio:9000"}, "INFERENCE_LOG_S3_ENDPOINT_URL"),
        ({"INFERENCE_LOG_MODE": "everything"}, "inference_log_mode"),
        ({"INFERENCE_LOG_SAMPLE": "2"}, "inference_log_sample"),
    ],
)
def test_bad_settings_say_which(monkeypatch: pytest.MonkeyPatch, env, problem):
    monkeypatch.setenv("MODEL_URI", "models:/m/1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=problem):
        Settings()


def test_the_schema_is_records_fields_and_the_documented_table():
    assert tuple(c[0] for c in COLUMNS) == tuple(f.name for f in dataclasses.fields(Record))
    section = DOC.read_text().split("## The record", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", section, re.M)
    assert documented == [(name, kind) for name, kind, _, _ in COLUMNS], "docs/inference-log.md: the schema table"


def test_json_form_uses_the_schema_names_and_utc_times():
    out = orjson.loads(to_json(record(3, subject="alice@example.org")))
    assert list(out) == [c[0] for c in COLUMNS]
    assert out["time"] == "2026-12-07T10:00:00.000003Z" and out["subject"] == "alice@example.org"
