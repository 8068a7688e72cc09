"""Every HTTP call, from its first byte to its last: a request id, a timer, the body cap, and the call's record.

`Calls` is a pure ASGI middleware (no `BaseHTTPMiddleware`, which would buffer bodies). For each HTTP request it
takes the client's `X-Request-Id` (or `Ce-Id`) or makes one, returns it as `X-Request-Id`, and puts a `Call` on
the request's state, which the routes fill in (the caller's subject, rows in and out, the entity id, and the
bodies when the inference log keeps them). At the response's end it counts and times the request for
Prometheus and hands the finished call to `on_done` (the access log line, the inference log).
The body cap: a request whose `Content-Length` is over `max_body` is answered 413 before a byte of its body is
read, in the matched route's protocol; a body without a length is counted as it streams and refused once it
crosses the cap (`BodyTooLarge`, raised from `receive` into the route, which renders it). A body must arrive
within `body_timeout` seconds of the first read (a byte-a-second sender is cut off with 408). The memory budget
a route reserved for its body (`limits.Budget`, through `DataPlane.body`) is returned when the call ends.
Neighbours: `app` installs it; `errors.route_class` renders `BodyTooLarge`; `metrics` holds the series.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from custom_predictor.access import guarded
from custom_predictor.errors import PredictorError, render_default
from custom_predictor.inference_log import Record
from custom_predictor.limits import Budget
from custom_predictor.metrics import Metrics

_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
"""A client's request id is kept when it is this short and plain (it goes into logs and headers)."""


@dataclass
class Call:
    """One HTTP call as the routes fill it in; `route` and `status` are known at its end."""

    request_id: str
    time: datetime
    started: float
    method: str
    path: str
    route: str = ""
    protocol: str = ""
    status: int = 0
    latency_ms: float = 0.0
    subject: str | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    entity_id: str | None = None
    error: str | None = None
    data: bool = False
    """The call reached a data route (one guarded by the caller dependency): the inference log records it."""
    reserved: int = 0
    """Bytes of the memory budget this call holds (`limits.Budget`), returned when it ends."""
    request_body: str | None = None
    response_body: str | None = None
    """Set by a route when the inference log keeps this call's bodies: JSON text (the request as the model saw
    it, sensitive inputs hashed; the response)."""
    extra: dict[str, Any] = field(default_factory=dict)


def record_of(call: Call, model: str, version: str | None, namespace: str, isvc: str, sampling: float) -> Record:
    """The inference log's record of a finished call to a data route."""
    return Record(
        request_id=call.request_id,
        time=call.time,
        model_name=model,
        model_version=version,
        namespace=namespace,
        inferenceservice=isvc,
        protocol=call.protocol,
        route=call.route,
        status=call.status or 500,
        latency_ms=round(call.latency_ms, 3),
        rows_in=call.rows_in,
        rows_out=call.rows_out,
        subject=call.subject,
        entity_id=call.entity_id,
        sampling_fraction=sampling,
        request=call.request_body,
        response=call.response_body,
        truncated=False,
        error=call.error,
    )


def body_too_large(limit: int) -> PredictorError:
    return PredictorError(413, "too_large", f"the request body is larger than this predictor's limit of {limit} bytes")


class BodyTooLarge(PredictorError):
    """A streamed body crossed the cap while being read."""

    def __init__(self, limit: int) -> None:
        e = body_too_large(limit)
        super().__init__(e.status, e.code, e.message)


class Calls:
    """The middleware (see the module docstring). `routes` are the app's, for the 413 of a route's protocol."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body: int,
        body_timeout: float,
        budget: Budget,
        routes: list[BaseRoute],
        on_done: Callable[[Call], None] | None = None,
    ) -> None:
        self.app, self.metrics, self.max_body, self.routes, self.on_done = app, metrics, max_body, routes, on_done
        self.body_timeout, self.budget = body_timeout, budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = (headers.get(b"x-request-id") or headers.get(b"ce-id") or b"").decode("latin-1")
        call = Call(
            request_id=given if _ID.fullmatch(given) else secrets.token_hex(16),
            time=datetime.now(UTC),
            started=time.perf_counter(),
            method=scope.get("method", ""),
            path=scope.get("path", ""),
        )
        scope.setdefault("state", {})["call"] = call
        rid = call.request_id.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is not None and _over(length, self.max_body):
                await self._refuse(scope, receive, send_with_id)
            else:
                await self.app(scope, self._counted(receive), send_with_id)
        finally:
            await self.budget.release(call.reserved)
            route: Any = scope.get("route")
            call.route = getattr(route, "path", None) or "unmatched"
            call.protocol = call.protocol or getattr(route, "speaks", "")
            call.latency_ms = (time.perf_counter() - call.started) * 1000
            self.metrics.requests.labels(call.route, call.method, str(call.status or 500)).inc()
            self.metrics.latency.labels(call.route, call.method).observe(call.latency_ms / 1000)
            if self.on_done is not None:
                self.on_done(call)

    def _counted(self, receive: Receive) -> Receive:
        """`receive`, counting the body against the cap and holding it to the body timeout (from the first read)
        until its last part has arrived; what comes after it (a disconnect) is passed through."""
        limit, seen, timeout = self.max_body, 0, self.body_timeout
        deadline: float | None = None
        complete = False

        async def counted() -> Message:
            nonlocal seen, deadline, complete
            if complete:
                return await receive()
            loop = asyncio.get_running_loop()
            if deadline is None:
                deadline = loop.time() + timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise PredictorError(408, "timeout", f"the request body did not arrive within {timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
                complete = not message.get("more_body", False)
            return message

        return counted

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """413 in the protocol of the route the request matches (the default shape if none), body unread."""
        render: Any = render_default
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                render = getattr(type(route), "renderer", render_default)
                scope["state"]["call"].data = guarded(route)
                scope["state"]["call"].error = "too_large"
                break
        await render(body_too_large(self.max_body))(scope, receive, send)


def _over(length: bytes, limit: int) -> bool:
    try:
        return int(length) > limit
    except ValueError:
        return False  # not a number: the server refuses it before us, or the count catches it
