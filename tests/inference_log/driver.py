"""A small process that uses the inference log as the predictor will: `python -m tests.inference_log.driver`.

It builds `InferenceLog.from_settings` from its environment (INFERENCE_LOG_*), then puts one record every
DRIVER_INTERVAL seconds, printing `put <n>` after each (flushed), until SIGTERM: then it stops putting, flushes
with `stop(INFERENCE_LOG_FLUSH_SECONDS)` as the predictor's shutdown does, prints `stopped <n>` and exits 0.
The tests compare what the sink holds with the count printed, after a SIGTERM and after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from custom_predictor.inference_log import InferenceLog, Record
from custom_predictor.settings import Settings


async def main() -> int:
    settings = Settings()
    log = InferenceLog.from_settings(settings, CollectorRegistry())
    interval = float(os.environ.get("DRIVER_INTERVAL", "0.002"))
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await log.start()
    n = 0
    while not stopping.is_set():
        request_id = f"req-{n}"
        log.put(
            Record(
                request_id=request_id,
                time=datetime.now(UTC),
                model_name=settings.model_name or "driver",
                model_version="1",
                namespace="",
                inferenceservice="",
                protocol="typed",
                route="/driver/api/v1/predict",
                status=200,
                latency_ms=0.5,
                rows_in=1,
                rows_out=1,
                subject=None,
                entity_id=None,
                sampling_fraction=log.sampling_fraction,
                request='{"inputs": {"x": [1]}}' if log.keep_bodies(request_id) else None,
                response="[0]" if log.keep_bodies(request_id) else None,
                truncated=False,
                error=None,
            )
        )
        n += 1
        print(f"put {n}", flush=True)
        await asyncio.sleep(interval)
    await log.stop(settings.inference_log_flush_seconds)
    print(f"stopped {n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
