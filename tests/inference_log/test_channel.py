"""A sink's channel: the queue bound, batching by rows and by seconds, retries with backoff on a fake clock,
refusals, the stop deadline and the flush on stop (a real writer thread)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from custom_predictor.inference_log.channel import BACKOFF, Channel, size_of
from custom_predictor.inference_log.metrics import LogMetrics
from custom_predictor.inference_log.sinks.base import Batch, SinkError
from tests.inference_log.fakes import FakeClock, FakeSink, down, record


def make(sink: FakeSink | None = None, **kw):
    registry = CollectorRegistry()
    options = {"max_records": 100, "max_bytes": 10**9, "batch_rows": 10, "batch_seconds": 5.0, **kw}
    clock = options.pop("clock", FakeClock())
    sink = sink or FakeSink()
    channel = Channel(sink, LogMetrics(registry), clock=clock, **options)

    def metric(name: str) -> float:
        return registry.get_sample_value(f"predictor_inference_log_{name}", {"sink": sink.name}) or 0.0

    return channel, sink, clock, metric


def test_a_full_queue_drops_and_counts_never_waits():
    channel, _, _, metric = make(max_records=3)
    taken = [channel.offer(record(i), 500) for i in range(5)]
    assert taken == [True, True, True, False, False]
    assert metric("dropped_total") == 2
    assert metric("queued") == 3


def test_the_byte_bound_counts_bodies():
    channel, _, _, metric = make(max_bytes=3000)
    big = record(1, request="x" * 1500)
    assert channel.offer(big, size_of(big))  # 1900 bytes
    assert not channel.offer(big, size_of(big))  # 3800 > 3000
    small = record(2)
    assert channel.offer(small, size_of(small))  # 2300
    assert metric("dropped_total") == 1


def test_a_batch_is_due_when_full():
    channel, _, _, _ = make(batch_rows=3)
    for i in range(7):
        channel.offer(record(i), 400)
    first, second = channel.take_due(), channel.take_due()
    assert [r.request_id for r in first.records] == ["req-0", "req-1", "req-2"]
    assert [r.request_id for r in second.records] == ["req-3", "req-4", "req-5"]
    assert channel.take_due() is None  # one record, not old enough yet


def test_a_batch_is_due_when_its_oldest_record_waited_batch_seconds():
    channel, _, clock, _ = make(batch_rows=100, batch_seconds=5.0)
    channel.offer(record(0), 400)
    clock.advance(4.9)
    channel.offer(record(1), 400)
    assert channel.take_due() is None
    clock.advance(0.1)
    batch = channel.take_due()
    assert batch is not None and len(batch.records) == 2
    assert channel.take_due() is None


def test_a_down_sink_is_retried_with_backoff_and_the_batch_kept():
    channel, sink, clock, metric = make(FakeSink(failures=down(4)))
    batch = Batch([record(i) for i in range(3)])
    assert channel.deliver(batch)
    assert clock.sleeps == list(BACKOFF[:4])
    assert sink.attempts == 5
    assert [r.request_id for r in sink.records] == ["req-0", "req-1", "req-2"]
    assert metric("written_total") == 3 and metric("write_errors_total") == 4 and metric("failed_total") == 0
    assert metric("sink_seconds_count") == 5


def test_the_last_delay_repeats_while_the_sink_stays_down():
    channel, _, clock, _ = make(FakeSink(failures=down(len(BACKOFF) + 3)))
    assert channel.deliver(Batch([record()]))
    assert clock.sleeps == [*BACKOFF, BACKOFF[-1], BACKOFF[-1], BACKOFF[-1]]


def test_a_refusal_is_not_retried_and_counts_as_failed():
    channel, sink, clock, metric = make(FakeSink(failures=[SinkError("HTTP 400", retryable=False)]))
    assert not channel.deliver(Batch([record(i) for i in range(4)]))
    assert clock.sleeps == [] and sink.attempts == 1
    assert metric("failed_total") == 4 and metric("written_total") == 0


def test_records_delivered_before_a_refusal_count_as_written():
    class Partial(FakeSink):
        def write(self, batch: Batch) -> None:
            batch.delivered = 2
            raise SinkError("HTTP 413", retryable=False)

    channel, _, _, metric = make(Partial())
    channel.deliver(Batch([record(i) for i in range(5)]))
    assert metric("written_total") == 2 and metric("failed_total") == 3


def test_a_sink_that_raises_something_unexpected_fails_the_batch_once():
    channel, sink, clock, metric = make(FakeSink(failures=[RuntimeError("a bug")]))
    assert not channel.deliver(Batch([record()]))
    assert sink.attempts == 1 and clock.sleeps == [] and metric("failed_total") == 1


def test_after_stop_retries_end_at_the_deadline():
    channel, _, clock, metric = make(FakeSink(failures=down(100)))
    channel.request_stop(timeout=4.0)
    assert not channel.deliver(Batch([record(i) for i in range(2)]))
    assert sum(clock.sleeps) == pytest.approx(4.0)
    assert clock.sleeps == [0.2, 0.5, 1.0, 2.0, pytest.approx(0.3)]
    assert metric("failed_total") == 2


def test_stop_flushes_the_queue_and_the_open_batch():
    channel, sink, _, metric = make(batch_rows=4, batch_seconds=3600.0, clock=None)
    channel.start()
    for i in range(10):  # two full batches and an open one of two records
        channel.offer(record(i), 400)
    channel.request_stop(5.0)
    channel.join(10.0)
    assert [r.request_id for r in sink.records] == [f"req-{i}" for i in range(10)]
    assert sink.closed
    assert metric("written_total") == 10 and metric("failed_total") == 0
    assert not channel.offer(record(11), 400), "records after the stop are dropped"
    assert metric("dropped_total") == 1


def test_stop_gives_up_on_a_sink_still_down_at_the_deadline():
    sink = FakeSink(failures=down(1000))  # more than 0.3 s of 0.01 s retries can use
    channel, _, _, metric = make(sink, batch_rows=2, batch_seconds=3600.0, clock=None, backoff=(0.01,))
    channel.start()
    for i in range(5):
        channel.offer(record(i), 400)
    channel.request_stop(0.3)
    channel.join(5.0)
    assert sink.records == []
    assert metric("failed_total") == 5, "the batch being retried and the queued records all count as failed"
