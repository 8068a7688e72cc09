"""The inference table: Parquet files on S3-compatible object storage or in a local directory (pyarrow).

Layout (Hive-style partitions, read by pandas, pyarrow, DuckDB and Spark as columns `model`, `version`, `date`):

    <root>/model=<name>/version=<version>/date=<YYYY-MM-DD>/<UTC time>-<batch id>-<n>.parquet

Partition values are percent-encoded (`urllib.parse.quote`, as pyarrow's Hive partitioning decodes them), so a
model name never becomes a path of its own; a record without a registry version (a model served from a run or a
path) goes to `version=none` (not Hive's null partition, which pandas cannot read back). One file per batch and
partition, its columns `record.COLUMNS`.

Every file appears whole or not at all: on S3 an object is only visible once its upload completed; locally the
file is written under a hidden name (`.<name>.tmp`, which every reader skips), synced, then renamed. A retried
batch writes the same names again, so a retry replaces files, never duplicates rows.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from urllib.parse import quote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from custom_predictor.inference_log.record import COLUMNS, Record
from custom_predictor.inference_log.sinks.base import Batch, SinkError

log = logging.getLogger("custom_predictor.inference_log")
NO_VERSION = "none"


def _arrow_type(name: str) -> pa.DataType:
    if name.startswith("timestamp"):
        return pa.timestamp("us", tz="UTC")
    return {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "double": pa.float64()}.get(
        name, pa.bool_()
    )


SCHEMA = pa.schema([pa.field(n, _arrow_type(t), nullable=null) for n, t, null, _ in COLUMNS])


def _segment(value: str | None) -> str:
    return quote(value, safe="") if value else NO_VERSION


def partition(record: Record) -> str:
    """`model=<name>/version=<version>/date=<YYYY-MM-DD>` of a record (UTC date of its arrival)."""
    return (
        f"model={_segment(record.model_name)}/version={_segment(record.model_version)}"
        f"/date={record.time.date().isoformat()}"
    )


def to_parquet(records: Iterable[Record]) -> bytes:
    """The records as one Parquet file (zstd), columns `record.COLUMNS`."""
    rows = list(records)
    table = pa.Table.from_pydict({n: [getattr(r, n) for r in rows] for n in SCHEMA.names}, schema=SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


class LocalStore:
    """Files in a directory: written hidden, synced, renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power loss
        finally:
            os.close(fd)


class S3Store:
    """Objects in an S3 bucket, through pyarrow's S3 filesystem (one upload per file)."""

    def __init__(
        self,
        uri: str,
        *,
        endpoint_url: str = "",
        region: str = "",
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        from pyarrow import fs

        parts = urlsplit(uri)
        self.bucket, self.prefix = parts.netloc, parts.path.strip("/")
        self.where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        options: dict[str, object] = {
            "connect_timeout": timeout,
            "request_timeout": timeout,
            # Our own retries hold the batch and back off; the SDK's would block the writer in between.
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=2),
        }
        if region:
            options["region"] = region
        if endpoint_url:
            endpoint = urlsplit(endpoint_url)
            options["endpoint_override"] = endpoint.netloc or endpoint.path
            options["scheme"] = endpoint.scheme or "https"
        if access_key and secret_key:
            options["access_key"], options["secret_key"] = access_key, secret_key
        # Otherwise the AWS SDK's own chain: AWS_* variables, a web identity token (IRSA), the instance profile.
        self._fs = fs.S3FileSystem(**options)

    def put(self, key: str, data: bytes) -> None:
        path = f"{self.bucket}/{self.prefix}/{key}" if self.prefix else f"{self.bucket}/{key}"
        with self._fs.open_output_stream(path) as out:
            out.write(data)


class TableSink:
    name = "table"

    def __init__(self, store: LocalStore | S3Store) -> None:
        self.store = store
        self.where = store.where

    def write(self, batch: Batch) -> None:
        groups: dict[str, list[Record]] = {}
        for r in batch.records:
            groups.setdefault(partition(r), []).append(r)
        stamp = _utc_stamp(batch)
        for n, (part, rows) in enumerate(sorted(groups.items())):
            key = f"{part}/{stamp}-{batch.id}-{n}.parquet"
            try:
                data = to_parquet(rows)
            except (pa.ArrowException, ValueError, TypeError) as e:  # a record the schema cannot hold
                raise SinkError(f"table: records not representable: {e}", retryable=False) from None
            try:
                self.store.put(key, data)
            except OSError as e:  # unreachable, slow, refused: kept and retried
                raise SinkError(f"table {self.where}: {_short(e)}") from None

    def close(self) -> None:
        pass


def _utc_stamp(batch: Batch) -> str:
    """When the batch's first call arrived, UTC (file names sort by time; stable across retries)."""
    first = min(r.time if r.time.tzinfo else r.time.replace(tzinfo=UTC) for r in batch.records)
    return first.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or e.__class__.__name__
