"""The stdout sink: one JSON object per line per record, what cluster log pipelines already collect.

Each line starts with `"log":"inference"` so a pipeline can route it apart from other output; the rest are the
schema's names (`record.COLUMNS`). A batch is one write and one flush.
"""

from __future__ import annotations

import sys
from typing import BinaryIO

from custom_predictor.inference_log.record import to_json
from custom_predictor.inference_log.sinks.base import Batch, SinkError

MARK = b'{"log":"inference",'


class StdoutSink:
    name = "stdout"
    where = "stdout"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream

    def write(self, batch: Batch) -> None:
        out = self._stream or sys.stdout.buffer
        lines = b"".join(MARK + to_json(r)[1:] + b"\n" for r in batch.records)
        try:
            out.write(lines)
            out.flush()
        except (OSError, ValueError) as e:  # a closed pipe or stream: nothing to retry into
            raise SinkError(f"stdout: {e.__class__.__name__}", retryable=False) from None

    def close(self) -> None:
        pass
