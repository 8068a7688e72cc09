"""The inference log's `/metrics` series, registered in the predictor's CollectorRegistry, labelled by sink."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class LogMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "predictor_inference_log_written",
            "Inference records the sink accepted.",
            ["sink"],
            registry=registry,
        )
        self.dropped = Counter(
            "predictor_inference_log_dropped",
            "Inference records dropped because the sink's queue was full (never waited for).",
            ["sink"],
            registry=registry,
        )
        self.failed = Counter(
            "predictor_inference_log_failed",
            "Inference records given up: refused by the sink, or still not delivered when the stop's time ran out.",
            ["sink"],
            registry=registry,
        )
        self.errors = Counter(
            "predictor_inference_log_write_errors",
            "Failed batch writes (a sink down, slow or refusing); retryable ones are retried with backoff.",
            ["sink"],
            registry=registry,
        )
        self.latency = Histogram(
            "predictor_inference_log_sink_seconds",
            "Time of one batch write to the sink, success or not.",
            ["sink"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.queued = Gauge(
            "predictor_inference_log_queued",
            "Inference records waiting for the sink (the open batch and, while it is down, the backlog).",
            ["sink"],
            registry=registry,
        )
        self.info = Info(
            "predictor_inference_log",
            "The inference log's policy (mode: off, metadata or full; sample: share of calls whose bodies are"
            " kept) and sinks.",
            registry=registry,
        )
