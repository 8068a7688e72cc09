"""Health and metrics: `/v2/health/live` (the process runs), `/v2/health/ready` and `/healthz` (model loaded
and self-tested; the pod's readiness probe), `/metrics` (Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import PlainTextResponse, Response

from custom_predictor.dataplane import DataPlane
from custom_predictor.errors import ErrorBody, json_response


def router(plane: DataPlane, guard: list[Any]) -> APIRouter:
    """The probes (never guarded: they say nothing beyond the model's name and state) and /metrics (behind
    `guard` when the settings protect it)."""
    api = APIRouter(tags=["health"])
    runtime, metrics = plane.runtime, plane.metrics

    @api.get("/v2/health/live", operation_id="live", summary="Liveness: the server runs")
    async def live() -> Response:
        return json_response({"live": True})

    @api.get(
        "/v2/health/ready",
        operation_id="ready",
        summary="Readiness: model loaded and self-test passed",
        responses={503: {"model": ErrorBody}},
    )
    async def ready() -> Response:
        if runtime.ready:
            return json_response({"ready": True})
        return json_response({"ready": False, "state": runtime.state, "reason": runtime.reason}, 503)

    @api.get("/healthz", operation_id="healthz", summary="Plain health check (same as readiness)")
    async def healthz() -> Response:
        return await ready()

    @api.get(
        "/metrics",
        operation_id="metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        dependencies=guard,
    )
    async def metrics_route() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.runtime.info({"kind": runtime.kind or "none", "kernel_check": runtime.kernel_check or "none"})
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return api
