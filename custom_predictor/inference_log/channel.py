"""One sink's channel: a bounded queue filled by `offer` (never waits) and a writer thread that batches and retries.

`offer` runs on the request path: a lock, a length check, an append. When the queue holds `max_records` records
or `max_bytes` of bodies, the record is dropped and counted. The writer takes a batch when `batch_rows` records
are queued or the oldest has waited `batch_seconds`, and writes it to the sink. A retryable failure keeps the
batch and tries again after the next delay of `BACKOFF` (records keep queueing behind it, up to the bound); a
refusal counts the batch as failed. `stop(timeout)` writes everything queued (batch by batch, without waiting for
`batch_seconds`) until the timeout, then counts what is left as failed.

What a SIGKILL loses: the records not yet written, i.e. the open batch (at most `batch_rows` records, at most
`batch_seconds` old) and the batch being written; more only while a sink is down (the backlog, up to the bound).

The clock is injectable (`Clock`): tests of batching and backoff run on a fake one, instantly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Protocol

from custom_predictor.inference_log.metrics import LogMetrics
from custom_predictor.inference_log.record import Record
from custom_predictor.inference_log.sinks.base import Batch, Sink, SinkError

log = logging.getLogger("custom_predictor.inference_log")
BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds before each retry of a batch; the last repeats while the sink stays down."""
RECORD_OVERHEAD = 400
"""Bytes a record takes besides its bodies, for the queue's byte bound."""


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        """Wait `seconds`, or less if `wake` is set."""


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        wake.wait(seconds)


def size_of(record: Record) -> int:
    return RECORD_OVERHEAD + len(record.request or "") + len(record.response or "")


class Channel:
    def __init__(
        self,
        sink: Sink,
        metrics: LogMetrics,
        *,
        max_records: int,
        max_bytes: int,
        batch_rows: int,
        batch_seconds: float,
        clock: Clock | None = None,
        backoff: tuple[float, ...] = BACKOFF,
    ) -> None:
        self.sink = sink
        self.max_records, self.max_bytes = max_records, max_bytes
        self.batch_rows, self.batch_seconds = batch_rows, batch_seconds
        self.clock: Clock = clock or MonotonicClock()
        self.backoff = backoff
        self._items: deque[tuple[Record, int]] = deque()
        self._bytes = 0
        self._first_at = 0.0  # when the oldest queued record arrived (clock time)
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._closed = False  # after stop: nothing more is taken
        self._deadline = float("inf")
        self._wake = threading.Event()  # set by stop: a backoff sleep ends early
        self._never = threading.Event()
        self._thread: threading.Thread | None = None
        name = sink.name
        self._written = metrics.written.labels(name)
        self._dropped = metrics.dropped.labels(name)
        self._failed = metrics.failed.labels(name)
        self._errors = metrics.errors.labels(name)
        self._latency = metrics.latency.labels(name)
        metrics.queued.labels(name).set_function(lambda: len(self._items))

    # ---- the request path ------------------------------------------------------------------------
    def offer(self, record: Record, size: int) -> bool:
        """Queue a record; False (and counted as dropped) when the queue is full or the channel stopped."""
        with self._cond:
            if self._closed or len(self._items) >= self.max_records or self._bytes + size > self.max_bytes:
                self._dropped.inc()
                return False
            self._items.append((record, size))
            self._bytes += size
            n = len(self._items)
            if n == 1:
                self._first_at = self.clock.now()
                self._cond.notify()  # the writer starts timing the open batch
            elif n == self.batch_rows:
                self._cond.notify()  # a full batch
        return True

    # ---- the writer ------------------------------------------------------------------------------
    def take_due(self) -> Batch | None:
        """The next batch if one is due (full, old enough, or stopping); the caller holds no lock."""
        with self._cond:
            return self._take_due_locked()

    def _take_due_locked(self) -> Batch | None:
        n = len(self._items)
        if not n or self._closed:
            return None
        if n < self.batch_rows and not self._stopping and self.clock.now() - self._first_at < self.batch_seconds:
            return None
        records = []
        for _ in range(min(n, self.batch_rows)):
            record, size = self._items.popleft()
            self._bytes -= size
            records.append(record)
        self._first_at = self.clock.now()  # what is left starts a new open batch
        return Batch(records)

    def deliver(self, batch: Batch) -> bool:
        """Write a batch, retrying with backoff while the sink fails retryably; False if given up (counted)."""
        attempt = 0
        while True:
            started = self.clock.now()
            try:
                self.sink.write(batch)
            except SinkError as e:
                self._latency.observe(self.clock.now() - started)
                self._errors.inc()
                if not e.retryable:
                    log.error("Inference log sink refused %d records: %s", len(batch.records) - batch.delivered, e)
                    return self._give_up(batch)
                delay = self.backoff[min(attempt, len(self.backoff) - 1)]
                left = self._deadline - self.clock.now()
                if left <= 0:
                    log.error(
                        "Inference log: %d records not delivered before the stop deadline: %s",
                        len(batch.records) - batch.delivered,
                        e,
                    )
                    return self._give_up(batch)
                log.warning(
                    "Inference log sink failed (attempt %d, %d records kept, retry in %.1fs): %s",
                    attempt + 1,
                    len(batch.records),
                    min(delay, left),
                    e,
                )
                attempt += 1
                # Stop wakes one sleep (a last try at once); after that the delays hold until the deadline.
                self.clock.sleep(min(delay, left), self._never if self._stopping else self._wake)
                continue
            except Exception:  # a bug in a sink: never retried forever, never fatal to the writer
                self._latency.observe(self.clock.now() - started)
                self._errors.inc()
                log.exception("Inference log sink %s failed unexpectedly", self.sink.name)
                return self._give_up(batch)
            self._latency.observe(self.clock.now() - started)
            self._written.inc(len(batch.records))
            if attempt:
                log.info("Inference log sink %s recovered after %d failed attempts", self.sink.name, attempt)
            return True

    def _give_up(self, batch: Batch) -> bool:
        self._written.inc(batch.delivered)
        self._failed.inc(len(batch.records) - batch.delivered)
        return False

    def run(self) -> None:
        """The writer thread: wait for a due batch, deliver it; after stop, flush then end."""
        while True:
            with self._cond:
                while True:
                    batch = self._take_due_locked()
                    if batch is not None:
                        break
                    if self._stopping and not self._items:
                        return
                    if self._stopping and self.clock.now() >= self._deadline:
                        return
                    timeout = None if not self._items else self._first_at + self.batch_seconds - self.clock.now()
                    self._cond.wait(None if timeout is None else max(timeout, 0.001))
            self.deliver(batch)
            if self._stopping and self.clock.now() >= self._deadline:
                self._abandon()
                return

    def _abandon(self) -> None:
        with self._cond:
            left = len(self._items)
            self._items.clear()
            self._bytes = 0
            self._closed = True
        if left:
            log.error("Inference log: %d queued records not written before the stop deadline", left)
            self._failed.inc(left)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name=f"inference-log-{self.sink.name}", daemon=True)
            self._thread.start()

    def request_stop(self, timeout: float) -> None:
        """Flush from now on, and give up what is left `timeout` seconds from now."""
        with self._cond:
            self._stopping = True
            self._deadline = self.clock.now() + timeout
            self._cond.notify()
        self._wake.set()

    def join(self, timeout: float) -> None:
        """Wait for the writer to end; then close the channel (later records are dropped) and the sink."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("Inference log sink %s still writing at the stop deadline", self.sink.name)
                return
        self._abandon()
        self.sink.close()
