"""`InferenceLog`: the request path's one handle on the inference log (policy, `put`, start and stop).

Built once from the settings (`from_settings`). `put` applies the body cap and hands the record to every sink's
channel (`channel.py`): a lock and an append each, never I/O, never an exception. `start` starts one writer thread
per sink; `stop(timeout)` flushes them all within the timeout (SIGTERM: scale to zero, a rollout). Mode `off`
builds no channel and starts nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from custom_predictor.inference_log.channel import Channel, Clock, size_of
from custom_predictor.inference_log.metrics import LogMetrics
from custom_predictor.inference_log.policy import Mode, Policy
from custom_predictor.inference_log.record import Record
from custom_predictor.inference_log.sinks.base import Sink
from custom_predictor.settings import Settings

log = logging.getLogger("custom_predictor.inference_log")


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks INFERENCE_LOG_SINKS names, configured (no I/O yet)."""
    out: list[Sink] = []
    for name in settings.inference_log_sink_list:
        if name == "stdout":
            from custom_predictor.inference_log.sinks.stdout import StdoutSink

            out.append(StdoutSink())
        elif name == "cloudevents":
            from custom_predictor.inference_log.sinks.cloudevents import CloudEventsSink

            out.append(
                CloudEventsSink(
                    settings.inference_log_cloudevents_url,
                    settings.inference_log_timeout_seconds,
                    settings.inference_log_cloudevents_concurrency,
                )
            )
        elif name == "table":
            from custom_predictor.inference_log.sinks.table import LocalStore, S3Store, TableSink

            uri = settings.inference_log_table_uri
            if uri.startswith("s3://"):
                key_id, secret = settings.inference_log_s3_access_key_id, settings.inference_log_s3_secret_access_key
                store: LocalStore | S3Store = S3Store(
                    uri,
                    endpoint_url=settings.inference_log_s3_endpoint_url,
                    region=settings.inference_log_s3_region,
                    access_key=key_id.get_secret_value() if key_id else None,
                    secret_key=secret.get_secret_value() if secret else None,
                    timeout=settings.inference_log_timeout_seconds,
                )
            else:
                store = LocalStore(Path(uri.removeprefix("file://")))
            out.append(TableSink(store))
    return out


class InferenceLog:
    """The predictor's inference log: `put` a `Record` per call; the sinks get it off the request path."""

    def __init__(
        self,
        policy: Policy,
        sinks: Sequence[Sink],
        registry: CollectorRegistry,
        *,
        queue_records: int = 10_000,
        queue_bytes: int = 64 * 2**20,
        batch_rows: int = 1000,
        batch_seconds: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.policy = policy
        self.mode: Mode = policy.mode
        metrics = LogMetrics(registry)
        self.channels = (
            []
            if self.mode == "off"
            else [
                Channel(
                    sink,
                    metrics,
                    max_records=queue_records,
                    max_bytes=queue_bytes,
                    batch_rows=batch_rows,
                    batch_seconds=batch_seconds,
                    clock=clock,
                )
                for sink in sinks
            ]
        )
        metrics.info.info(
            {
                "mode": self.mode,
                "sample": str(policy.sample),
                "sinks": ",".join(c.sink.name for c in self.channels),
            }
        )

    @classmethod
    def from_settings(cls, settings: Settings, registry: CollectorRegistry) -> InferenceLog:
        key = settings.inference_log_hash_key
        policy = Policy(
            settings.inference_log_mode,
            settings.inference_log_sample,
            key.get_secret_value().encode() if key else b"",
            settings.inference_log_max_body_chars,
        )
        sinks = build_sinks(settings) if settings.inference_log_mode != "off" else []
        return cls(
            policy,
            sinks,
            registry,
            queue_records=settings.inference_log_queue_records,
            queue_bytes=settings.inference_log_queue_bytes,
            batch_rows=settings.inference_log_batch_rows,
            batch_seconds=settings.inference_log_batch_seconds,
        )

    @property
    def on(self) -> bool:
        """Whether records go anywhere (mode off, or no sink: nothing to build)."""
        return bool(self.channels)

    @property
    def sampling_fraction(self) -> float:
        """The share of calls whose bodies are kept, for `Record.sampling_fraction`."""
        return self.policy.sampling_fraction

    @property
    def where(self) -> str:
        """Where records go, for the startup log line (never a credential)."""
        return ", ".join(f"{c.sink.name} {c.sink.where}".strip() for c in self.channels) or "nowhere (off)"

    def keep_bodies(self, request_id: str) -> bool:
        """Mode `full` and this call sampled (deterministic by request id)."""
        return self.policy.keep_bodies(request_id)

    def redact(self, columns: Mapping[str, Sequence[Any]], sensitive: set[str]) -> dict[str, list[Any]]:
        """The columns as lists, sensitive ones replaced by keyed hashes (HMAC-SHA256)."""
        return self.policy.redact(columns, sensitive)

    def put(self, record: Record) -> None:
        """Hand a record to every sink: never blocks, never raises; a full queue drops it (counted)."""
        if not self.channels:
            return
        try:
            request, cut_in = self.policy.cap(record.request)
            response, cut_out = self.policy.cap(record.response)
            if cut_in or cut_out:
                record = replace(record, request=request, response=response, truncated=True)
            size = size_of(record)
            for channel in self.channels:
                channel.offer(record, size)
        except Exception:  # never the caller's problem; a bug here shows in the log, not in a 500
            log.exception("Inference log: a record could not be queued")

    async def start(self) -> None:
        """Start one writer thread per sink."""
        for channel in self.channels:
            channel.start()
        log.info("Inference log %s to %s", self.mode, self.where)

    async def stop(self, timeout: float) -> None:
        """Write what is queued and the open batches within `timeout` seconds; what is left then is counted as
        failed. Later records are dropped."""
        await asyncio.to_thread(self.close, timeout)

    def close(self, timeout: float) -> None:
        """`stop` for callers without an event loop."""
        for channel in self.channels:
            channel.request_stop(timeout)
        for channel in self.channels:
            channel.join(timeout + 1.0)
