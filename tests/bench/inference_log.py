"""Inference log benchmarks: the cost of `put` on the request path, what each sink's writer sustains, the
Parquet write latency of a batch, and memory while the sink is down.

1. `put`: nanoseconds per call with the writer threads running (stdout sink to /dev/null; table sink in a local
   directory, with 1 KB bodies under `full`). Goal: median under 10 us.
2. Sustained writer throughput per sink (records/s from the first put to the end of the flush, 1000-row batches)
   and this process's CPU per record (puts included): stdout (to /dev/null), the table in a local directory, the
   table on S3 (SeaweedFS, tests/objectstore), and CloudEvents to the tests' receiver built on the CloudEvents SDK
   in a process of its own (two HTTP posts per record; the Python receiver is the slower side).
3. Parquet write latency of one 1000-row batch (metadata only, and with 1 KB bodies), local and S3: p50 and p99.
4. Sink down: the S3 server stopped while records are put at 2000/s for 60 s (BENCH_QUICK=1: 10 s); RSS when
   the queue is full and at the end, and records dropped against what the queue bound says. Goals: RSS growth
   after the queue filled under 5 %; dropped == put - queue bound - records written before the stop; after the
   server is back, the queue drains with nothing failed.

Loopback only; bounded in count and time.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry

from custom_predictor.inference_log import InferenceLog, Record
from custom_predictor.inference_log.policy import Policy
from custom_predictor.inference_log.sinks.base import Batch, Sink
from custom_predictor.inference_log.sinks.cloudevents import CloudEventsSink
from custom_predictor.inference_log.sinks.stdout import StdoutSink
from custom_predictor.inference_log.sinks.table import LocalStore, S3Store, TableSink
from tests.objectstore.server import ACCESS_KEY, SECRET_KEY, S3Server, seaweedfs

QUICK = os.environ.get("BENCH_QUICK") == "1"
BODY = '{"inputs": {"x": [' + ", ".join(["0.123456"] * 110) + "]}}"  # about 1 KB


def record(i: int, body: bool = False) -> Record:
    return Record(
        request_id=f"bench-{i:08d}-0000-4000-8000-000000000000",
        time=datetime.now(UTC),
        model_name="bench-model",
        model_version="7",
        namespace="models",
        inferenceservice="bench-model",
        protocol="v2",
        route="/v2/models/{name}/infer",
        status=200,
        latency_ms=1.234,
        rows_in=1,
        rows_out=1,
        subject="system:serviceaccount:apps:client",
        entity_id=None,
        sampling_fraction=1.0 if body else 0.0,
        request=BODY if body else None,
        response='{"outputs": [1]}' if body else None,
        truncated=False,
        error=None,
    )


def s3_sink(s3: S3Server, prefix: str) -> TableSink:
    return TableSink(
        S3Store(
            f"s3://{s3.bucket}/{prefix}",
            endpoint_url=s3.endpoint,
            region="us-east-1",
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            timeout=5,
        )
    )


def make(sink: Sink, mode: str = "metadata", **kw: object) -> tuple[InferenceLog, CollectorRegistry]:
    registry = CollectorRegistry()
    options = {"queue_records": 10**6, "queue_bytes": 2**31, "batch_rows": 1000, "batch_seconds": 1.0, **kw}
    return InferenceLog(Policy(mode, 1.0, b"k", 65536), [sink], registry, **options), registry  # type: ignore[arg-type]


def bench_put(devnull, tmp: Path) -> list[str]:
    lines = ["| `put` with the writer running | median ns | p99 ns | goal |", "|---|---|---|---|"]
    n = 50_000 if QUICK else 200_000
    for label, sink, body in (
        ("metadata, stdout sink", StdoutSink(devnull), False),
        ("full (1 KB bodies), table sink (local)", TableSink(LocalStore(tmp / "put")), True),
    ):
        log, _ = make(sink, "full" if body else "metadata")
        log.channels[0].start()
        records = [record(i, body) for i in range(n)]
        chunk, times = 1000, []
        for start in range(0, n, chunk):
            t = time.perf_counter_ns()
            for r in records[start : start + chunk]:
                log.put(r)
            times.append((time.perf_counter_ns() - t) / chunk)
        log.close(60)
        median, p99 = statistics.median(times), sorted(times)[int(len(times) * 0.99) - 1]
        lines.append(f"| {label} | {median:.0f} | {p99:.0f} | {'PASS' if median < 10_000 else 'FAIL'} (< 10 us) |")
    return lines


def bench_throughput(devnull, tmp: Path, s3: S3Server, ce_url: str) -> list[str]:
    lines = ["", "| sink | records | seconds | records/s | writer CPU us/record |", "|---|---|---|---|---|"]
    n = 20_000 if QUICK else 100_000
    sinks: list[tuple[str, Callable[[], Sink], int]] = [
        ("stdout (/dev/null)", lambda: StdoutSink(devnull), n),
        ("table, local directory", lambda: TableSink(LocalStore(tmp / "throughput")), n),
        ("table, S3 (SeaweedFS)", lambda: s3_sink(s3, "throughput"), n),
        ("cloudevents (2 posts per record)", lambda: CloudEventsSink(ce_url), n // 20),
    ]
    for label, factory, count in sinks:
        log, registry = make(factory())
        log.channels[0].start()
        records = [record(i) for i in range(count)]
        t, cpu = time.perf_counter(), time.process_time()
        for r in records:
            log.put(r)
        log.close(600)
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        sink = log.channels[0].sink.name
        written = registry.get_sample_value("predictor_inference_log_written_total", {"sink": sink})
        assert written == count, f"{label}: {written} of {count} written"
        lines.append(f"| {label} | {count} | {seconds:.2f} | {count / seconds:,.0f} | {cpu / count * 1e6:.0f} |")
    return lines


def bench_parquet_latency(tmp: Path, s3: S3Server) -> list[str]:
    lines = ["", "| one 1000-row batch | p50 ms | p99 ms |", "|---|---|---|"]
    rounds = 10 if QUICK else 40
    for where, sink in (("local", TableSink(LocalStore(tmp / "latency"))), ("S3", s3_sink(s3, "latency"))):
        for body in (False, True):
            times = []
            for _ in range(rounds):
                batch = Batch([record(i, body) for i in range(1000)])
                t = time.perf_counter()
                sink.write(batch)
                times.append((time.perf_counter() - t) * 1000)
            times.sort()
            label = f"{where}, {'1 KB bodies' if body else 'metadata'}"
            lines.append(f"| {label} | {times[len(times) // 2]:.1f} | {times[int(len(times) * 0.99) - 1]:.1f} |")
    return lines


def bench_sink_down(s3: S3Server) -> list[str]:
    seconds, rate, bound = (10, 2000, 10_000) if QUICK else (60, 2000, 10_000)
    proc = psutil.Process()
    log, registry = make(s3_sink(s3, "down"), queue_records=bound, batch_seconds=0.5)

    def metric(name: str) -> float:
        return registry.get_sample_value(f"predictor_inference_log_{name}_total", {"sink": "table"}) or 0.0

    log.channels[0].start()
    for i in range(2000):  # warm: the sink works
        log.put(record(i))
    time.sleep(1.5)
    before = metric("written")
    s3.stop()
    put, rss_full, t0 = 2000, 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        for _ in range(rate // 10):
            log.put(record(put))
            put += 1
        if not rss_full and put - 2000 >= bound + rate:
            rss_full = proc.memory_info().rss
        time.sleep(max(0.0, t0 + (put - 2000) / rate - time.monotonic()))
    rss_end = proc.memory_info().rss
    dropped = metric("dropped")
    expected = put - before - bound - 1000  # the batch being retried (batch_rows) is out of the queue
    s3.start()
    log.close(120)
    growth = (rss_end - rss_full) / rss_full * 100
    ok_rss, ok_drop = growth < 5, abs(dropped - expected) <= 1000
    ok_drain = metric("failed") == 0 and metric("written") + dropped == put
    return [
        "",
        f"Sink down for {seconds} s at {rate} records/s (queue bound {bound}):",
        "",
        "| RSS when the queue is full | RSS at the end | growth | goal |",
        "|---|---|---|---|",
        f"| {rss_full / 2**20:.1f} MiB | {rss_end / 2**20:.1f} MiB | {growth:+.2f} % |"
        f" {'PASS' if ok_rss else 'FAIL'} (< 5 %) |",
        "",
        "| put | written before | dropped | expected by the bound | written after recovery | failed | goal |",
        "|---|---|---|---|---|---|---|",
        f"| {put} | {before:.0f} | {dropped:.0f} | {expected:.0f} | {metric('written') - before:.0f} |"
        f" {metric('failed'):.0f} | {'PASS' if ok_drop and ok_drain else 'FAIL'} |",
    ]


@contextlib.contextmanager
def receiver_process() -> Iterator[str]:
    """The tests' CloudEvents SDK receiver in a process of its own (not competing for this one's GIL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.inference_log.receiver"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.communicate("", timeout=30)


def main() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp_name, open(os.devnull, "wb") as devnull:
        tmp = Path(tmp_name)
        with seaweedfs(tmp / "seaweedfs") as s3, receiver_process() as url:
            lines = ["## Inference log", ""]
            lines += bench_put(devnull, tmp)
            lines += bench_throughput(devnull, tmp, s3, url)
            lines += bench_parquet_latency(tmp, s3)
            lines += bench_sink_down(s3)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
