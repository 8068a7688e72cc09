"""The sink interface: `write(batch)` delivers a batch or raises `SinkError`, retryable or not.

A `Batch` keeps its id across retries (a table sink names its files by it, so a retry replaces, never repeats)
and `sent`, the pieces a sink that delivers piece by piece already delivered (a retry sends only the others).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from custom_predictor.inference_log.record import Record


class SinkError(Exception):
    """A batch not delivered. `retryable`: the sink is down or slow (retried with backoff); else it refused the
    records for good (counted as failed). The message never holds a credential or a record's content."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class Batch:
    records: list[Record]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    sent: set[int] = field(default_factory=set)  # pieces a sink that delivers piece by piece delivered already
    delivered: int = 0  # records delivered before a refusal (they count as written, the rest as failed)


class Sink(Protocol):
    name: str  # "stdout", "cloudevents", "table": the `sink` label of the metrics
    where: str  # where the records go, for people (never a credential)

    def write(self, batch: Batch) -> None: ...

    def close(self) -> None: ...
