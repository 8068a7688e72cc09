"""Prometheus metrics: requests by route and status, latency by route, model load time, readiness, runtime kind,
requirement drift.

A pure ASGI middleware (no BaseHTTPMiddleware overhead) labels each request with its route template, so
unknown paths collapse into one label instead of growing the series count.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class Metrics:
    """The predictor's metrics, in their own registry (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "predictor_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "predictor_request_seconds",
            "HTTP request latency by route.",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.predictions = Counter("predictor_predicted_rows", "Rows predicted.", registry=self.registry)
        self.load_seconds = Gauge(
            "predictor_model_load_seconds", "Time to load the model and run the self-test.", registry=self.registry
        )
        self.runtime = Info(
            "predictor_runtime",
            "How the model runs (kind: kernel, sklearn-fast, xgboost, lightgbm, pytorch or pyfunc) and the numpy"
            " kernel's check against scikit-learn (pending, passed, mismatch, unavailable; none without a kernel).",
            registry=self.registry,
        )
        self.drift = Gauge(
            "predictor_requirement_drift",
            "1 for each requirement of the model (requirements.txt) this environment does not meet: the version"
            " the model names and the one installed.",
            ["library", "required", "installed"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "predictor_model_ready", "1 when the model is loaded and passed its self-test.", registry=self.registry
        )

    def record_environment(self, findings: Any) -> None:
        """The requirements check's findings (`requirements.Finding`), one series each."""
        for f in findings:
            self.drift.labels(f.library, f.required, f.installed or "none").set(1)


class MetricsMiddleware:
    """Count and time every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(label, method, str(status[0])).inc()
            self.metrics.latency.labels(label, method).observe(time.perf_counter() - start)
