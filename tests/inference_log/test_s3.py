"""The inference table on a real S3-compatible server (SeaweedFS): written, read back with pandas and pyarrow,
never a partial object, a server that is down and comes back, bad credentials, and the settings' wiring."""

from __future__ import annotations

import threading
import time
import uuid

import pandas
import pyarrow.dataset
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry
from pyarrow import fs

from custom_predictor.inference_log import InferenceLog
from custom_predictor.inference_log.channel import Channel
from custom_predictor.inference_log.metrics import LogMetrics
from custom_predictor.inference_log.sinks.base import Batch, SinkError
from custom_predictor.inference_log.sinks.table import SCHEMA, S3Store, TableSink
from custom_predictor.settings import Settings
from tests.inference_log.fakes import record
from tests.objectstore.server import ACCESS_KEY, SECRET_KEY, S3Server


def sink_for(s3: S3Server, prefix: str, secret: str = SECRET_KEY) -> TableSink:
    store = S3Store(
        f"s3://{s3.bucket}/{prefix}",
        endpoint_url=s3.endpoint,
        region="us-east-1",
        access_key=ACCESS_KEY,
        secret_key=secret,
        timeout=5,
    )
    return TableSink(store)


def objects(s3: S3Server, prefix: str) -> list[str]:
    selector = fs.FileSelector(f"{s3.bucket}/{prefix}", recursive=True, allow_not_found=True)
    infos = s3.filesystem().get_file_info(selector)
    return sorted(i.path for i in infos if i.type == fs.FileType.File)


def test_written_and_read_back_with_pandas_and_pyarrow(s3: S3Server):
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    sink = sink_for(s3, prefix)
    assert sink.where == f"s3://{s3.bucket}/{prefix}"
    sink.write(Batch([record(i, model_name="risk model", model_version=str(1 + i % 2)) for i in range(6)]))
    keys = objects(s3, prefix)
    assert len(keys) == 2 and all("/model=risk%20model/version=" in k and k.endswith(".parquet") for k in keys)
    df = pandas.read_parquet(f"{s3.bucket}/{prefix}", filesystem=s3.filesystem())
    assert sorted(df["request_id"]) == [f"req-{i}" for i in range(6)]
    assert set(df["model"].astype(str)) == {"risk model"}
    table = pyarrow.dataset.dataset(f"{s3.bucket}/{prefix}", filesystem=s3.filesystem(), partitioning="hive")
    assert table.to_table().num_rows == 6
    assert pq.read_schema(keys[0], filesystem=s3.filesystem()).equals(SCHEMA)


def test_no_partial_object_is_ever_visible(s3: S3Server):
    prefix = f"atomic-{uuid.uuid4().hex[:8]}"
    sink = sink_for(s3, prefix)
    done = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def reader() -> None:
        client = s3.filesystem()
        while not done.is_set():
            for key in objects(s3, prefix):
                try:
                    pq.read_metadata(key, filesystem=client)
                    seen.add(key)
                except OSError as e:
                    problems.append(f"{key}: {e}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        big = "y" * 300_000  # a few megabytes per object: uploads take a while
        for b in range(8):
            sink.write(Batch([record(b * 10 + i, request=big + str(i)) for i in range(10)]))
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert len(objects(s3, prefix)) == 8 and seen


def test_a_server_that_is_down_is_retried_until_it_is_back(s3: S3Server):
    prefix = f"down-{uuid.uuid4().hex[:8]}"
    registry = CollectorRegistry()
    channel = Channel(
        sink_for(s3, prefix),
        LogMetrics(registry),
        max_records=1000,
        max_bytes=10**7,
        batch_rows=5,
        batch_seconds=0.1,
        backoff=(0.2,),
    )

    def metric(name: str) -> float:
        return registry.get_sample_value(f"predictor_inference_log_{name}", {"sink": "table"}) or 0.0

    channel.start()
    s3.stop()
    try:
        for i in range(12):
            channel.offer(record(i), 400)
        deadline = time.monotonic() + 60
        while metric("write_errors_total") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert metric("write_errors_total") >= 2 and metric("written_total") == 0
    finally:
        s3.start()
    deadline = time.monotonic() + 60
    while metric("written_total") < 12 and time.monotonic() < deadline:
        time.sleep(0.1)
    channel.request_stop(10)
    channel.join(15)
    assert metric("written_total") == 12 and metric("failed_total") == 0 and metric("dropped_total") == 0
    df = pandas.read_parquet(f"{s3.bucket}/{prefix}", filesystem=s3.filesystem())
    assert sorted(df["request_id"], key=lambda r: int(r.split("-")[1])) == [f"req-{i}" for i in range(12)]


def test_wrong_credentials_fail_without_saying_them(s3: S3Server):
    with pytest.raises(SinkError) as e:
        sink_for(s3, "nope", secret="not-the-secret-key").write(Batch([record()]))
    assert "not-the-secret-key" not in str(e.value) and SECRET_KEY not in str(e.value)


def test_from_settings_writes_to_s3(s3: S3Server, monkeypatch: pytest.MonkeyPatch):
    prefix = f"settings-{uuid.uuid4().hex[:8]}"
    env = {
        "MODEL_URI": "models:/m/1",
        "INFERENCE_LOG_SINKS": "table",
        "INFERENCE_LOG_TABLE_URI": f"s3://{s3.bucket}/{prefix}",
        "INFERENCE_LOG_S3_ENDPOINT_URL": s3.endpoint,
        "INFERENCE_LOG_S3_REGION": "us-east-1",
        "INFERENCE_LOG_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "INFERENCE_LOG_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "INFERENCE_LOG_BATCH_SECONDS": "3600",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    log = InferenceLog.from_settings(Settings(), CollectorRegistry())
    log.channels[0].start()
    for i in range(3):
        log.put(record(i))
    log.close(10)
    assert len(pandas.read_parquet(f"{s3.bucket}/{prefix}", filesystem=s3.filesystem())) == 3
    assert SECRET_KEY not in log.where
