"""The inference table in a local directory: partitions, the schema, atomic files, idempotent retries, and the
documented one-line reads with pandas, pyarrow and DuckDB."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from custom_predictor.inference_log.sinks.base import Batch, SinkError
from custom_predictor.inference_log.sinks.table import SCHEMA, LocalStore, TableSink
from tests.inference_log.fakes import record
from tests.inference_log.tables import documented_lines, read

DAY1 = datetime(2026, 12, 6, 23, 59, 59, tzinfo=UTC)
DAY2 = datetime(2026, 12, 7, 0, 0, 1, tzinfo=UTC)


def mixed_batch() -> Batch:
    return Batch(
        [
            record(0, time=DAY1, model_name="risk model/v2", model_version="3", request='{"inputs": {}}'),
            record(1, time=DAY2, model_name="risk model/v2", model_version="3", status=422, error="invalid_input"),
            record(2, time=DAY2, model_name="iris", model_version=None, rows_in=None, subject="alice@example.org"),
            record(3, time=DAY2, model_name="iris", model_version="12", latency_ms=0.5),
        ]
    )


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


def test_partitions_by_model_version_and_utc_date(tmp_path: Path):
    TableSink(LocalStore(tmp_path)).write(mixed_batch())
    parts = [f.rsplit("/", 1)[0] for f in files(tmp_path)]
    assert parts == [
        "model=iris/version=12/date=2026-12-07",
        "model=iris/version=none/date=2026-12-07",
        "model=risk%20model%2Fv2/version=3/date=2026-12-06",
        "model=risk%20model%2Fv2/version=3/date=2026-12-07",
    ], "a model name is one path segment, never a path of its own"
    for f in files(tmp_path):
        assert pq.read_schema(tmp_path / f).equals(SCHEMA)


@pytest.mark.parametrize("reader", ["pandas", "pyarrow", "duckdb"])
def test_the_documented_line_reads_the_table(tmp_path: Path, reader: str):
    TableSink(LocalStore(tmp_path)).write(mixed_batch())
    (tmp_path / "model=iris" / ".leftover-of-a-crash.parquet.tmp").write_bytes(b"PAR1 partial")
    result = read(reader, str(tmp_path))
    df = result.to_pandas() if isinstance(result, pa.Table) else result
    df = df.sort_values("request_id").reset_index(drop=True)
    assert list(df["request_id"]) == ["req-0", "req-1", "req-2", "req-3"]
    assert [str(m) for m in df["model"]] == ["risk model/v2", "risk model/v2", "iris", "iris"], "decoded"
    assert df["model_name"].tolist() == [str(m) for m in df["model"]]
    assert df["model_version"].tolist()[:2] == ["3", "3"] and df["model_version"].isna().tolist()[2]
    assert [str(v) for v in df["version"]] == ["3", "3", "none", "12"]
    assert [str(d)[:10] for d in df["date"]] == ["2026-12-06", "2026-12-07", "2026-12-07", "2026-12-07"]
    assert df["time"].tolist()[0] == DAY1 and df["status"].tolist() == [200, 422, 200, 200]
    assert df["subject"].tolist()[2] == "alice@example.org" and df["error"].tolist()[1] == "invalid_input"
    for column in SCHEMA.names:
        assert column in df.columns


def test_the_doc_has_one_line_per_reader():
    assert set(documented_lines()) == {"pandas", "pyarrow", "duckdb"}


def test_a_retried_batch_replaces_its_files_never_duplicates_rows(tmp_path: Path):
    sink, batch = TableSink(LocalStore(tmp_path)), mixed_batch()
    sink.write(batch)
    first = files(tmp_path)
    sink.write(batch)
    assert files(tmp_path) == first
    assert len(read("pandas", str(tmp_path))) == 4


def test_no_partial_file_is_ever_visible(tmp_path: Path):
    """A reader listing the table while batches are written only ever finds whole Parquet files."""
    sink = TableSink(LocalStore(tmp_path))
    big = "x" * 200_000  # files of a few hundred kilobytes take a while to write
    done = threading.Event()
    seen: set[str] = set()
    problems: list[str] = []

    def reader() -> None:
        while not done.is_set():
            for f in files(tmp_path):
                try:
                    pq.read_metadata(tmp_path / f)
                    seen.add(f)
                except (OSError, pa.ArrowInvalid) as e:
                    problems.append(f"{f}: {e}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for b in range(30):
            sink.write(Batch([record(b * 10 + i, request=big + str(i)) for i in range(10)]))
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert len(files(tmp_path)) == 30 and seen, "the reader ran while files appeared"
    assert not list(tmp_path.rglob(".*.tmp")), "no hidden leftover after clean writes"


def test_an_unwritable_directory_is_retryable(tmp_path: Path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(SinkError) as e:
        TableSink(LocalStore(blocker)).write(mixed_batch())
    assert e.value.retryable


def test_a_record_the_schema_cannot_hold_is_refused(tmp_path: Path):
    with pytest.raises(SinkError) as e:
        TableSink(LocalStore(tmp_path)).write(Batch([record(0, status="teapot")]))
    assert not e.value.retryable
    assert files(tmp_path) == []
