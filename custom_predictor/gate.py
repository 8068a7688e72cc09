"""Turn prediction calls away with 503 before the model is ready, without reading or parsing their bodies.

While the model loads, callers (Knative's activator, load balancers, impatient clients) may poll; answering
them before any body is read leaves the CPU (and the GIL) to the loading thread. The routes gated are those
that depend on `PredictionService.require_ready`, answered in their own protocol's error shape; a call for
another model name or version goes on to its route's 404.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from custom_predictor.errors import PredictorError, render_default
from custom_predictor.service import PredictionService


class NotReadyGate:
    def __init__(self, app: ASGIApp, service: PredictionService, routes: list[BaseRoute]) -> None:
        self.app, self.service = app, service
        ready = service.require_ready
        self.gated: list[tuple[APIRoute, Any]] = [
            (r, getattr(type(r), "renderer", render_default))
            for r in routes
            if isinstance(r, APIRoute) and any(d.dependency == ready for d in r.dependencies)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.service.runtime.ready or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for route, render in self.gated:
            match, child = route.matches(scope)
            if match is not Match.FULL:
                continue
            params = child.get("path_params", {})
            if params.get("name", self.service.path) != self.service.path:
                break
            if params.get("version", self.service.version or "1") != (self.service.version or "1"):
                break
            reason = self.service.runtime.reason or "the model is still loading"
            scope["route"] = route
            await render(PredictorError(503, "not_ready", reason))(scope, receive, send)
            return
        await self.app(scope, receive, send)
