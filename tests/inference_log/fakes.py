"""Fakes at the inference log's own boundaries (a `Clock`, a `Sink`) and a record factory, for unit tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from custom_predictor.inference_log.record import Record
from custom_predictor.inference_log.sinks.base import Batch, SinkError


class FakeClock:
    """Time moves only when someone sleeps (or a test advances it)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        self.sleeps.append(seconds)
        self.t += seconds

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class FakeSink:
    """Keeps what it is given; `failures` are raised, in order, by the next writes."""

    name: str = "fake"
    where: str = "memory"
    failures: list[BaseException] = field(default_factory=list)
    batches: list[list[Record]] = field(default_factory=list)
    attempts: int = 0
    closed: bool = False

    def write(self, batch: Batch) -> None:
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(batch.records))

    def close(self) -> None:
        self.closed = True

    @property
    def records(self) -> list[Record]:
        return [r for b in self.batches for r in b]


def down(n: int) -> list[BaseException]:
    return [SinkError("connection refused") for _ in range(n)]


def record(i: int = 0, **changes: Any) -> Record:
    values: dict[str, Any] = {
        "request_id": f"req-{i}",
        "time": datetime(2026, 12, 7, 10, 0, 0, i % 1_000_000, tzinfo=UTC),
        "model_name": "breast-cancer",
        "model_version": "3",
        "namespace": "",
        "inferenceservice": "",
        "protocol": "typed",
        "route": "/breast-cancer/api/v1/predict",
        "status": 200,
        "latency_ms": 1.25,
        "rows_in": 1,
        "rows_out": 1,
        "subject": None,
        "entity_id": None,
        "sampling_fraction": 0.0,
        "request": None,
        "response": None,
        "truncated": False,
        "error": None,
    }
    values.update(changes)
    return Record(**values)
