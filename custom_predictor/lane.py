"""The direct lane of a JSON prediction route: a well-formed body goes from bytes to the endpoint without
FastAPI's per-request dependency solving (a third of a 1-row request); every other request takes FastAPI's path.

`direct(route, fallback)` gives a handler for routes of one shape only, else None: an async endpoint whose one
parameter is a JSON body and which returns a `Response`, and route dependencies (each once) that are async
functions of `str` path parameters or of nothing (readiness, the model name). `route` is what FastAPI builds
the handler from (`effective(route)`: for a route of an included router, with the include's dependencies). The
lane serves a request when its content type is JSON as FastAPI reads it, no dependency override is set, orjson
reads the body, the body has no integer orjson would turn into a float (19 digits or more), and the route's own
body field (FastAPI's validation: the same model and mode) accepts it: then it runs the dependencies and calls
the endpoint with that value. Anything else goes to `fallback`, FastAPI's own handler, which reads the cached
body again. So every refusal is FastAPI's, and an accepted request gets the value FastAPI would have given the
endpoint.
Neighbours: `errors.route_class` builds each protocol's routes with it; the routes declare the bodies as usual,
so the Swagger page documents them.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import params, routing
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]

_LONG_INTEGER = re.compile(rb"[0-9]{19}")
"""orjson reads an integer beyond 64 bits as a float, where FastAPI's json keeps it exact: such bodies fall back."""


def effective(route: Any) -> Any:
    """What FastAPI builds `route`'s handler from while it builds it: for a route of an included router (built
    when first requested), the context the include made, with the include's dependencies; else the route."""
    var = getattr(routing, "_effective_route_context_var", None)
    context = var.get() if var is not None else None
    return context if context is not None and getattr(context, "original_route", None) is route else route


def direct(route: Any, fallback: Handler) -> Handler | None:
    """The direct lane for `route` (an APIRoute, or its `effective` context), or None when the route is not of
    the shape it takes."""
    dependant, field = route.dependant, route.body_field
    if field is None or not _plain(dependant, body=1) or not inspect.iscoroutinefunction(dependant.call):
        return None
    own = dependant.body_params[0]
    if isinstance(field.field_info, params.Form) or field.field_info.annotation is not own.field_info.annotation:
        return None  # a form, or a body embedded under its name (FastAPI validates a model made around it)
    if _return_type(route.endpoint) is not Response:
        return None
    deps: list[tuple[Callable[..., Awaitable[Any]], list[tuple[str, str]]]] = []
    for sub in dependant.dependencies:
        if sub.name is not None or not _plain(sub, body=0) or not inspect.iscoroutinefunction(sub.call):
            return None
        if any(p.field_info.annotation is not str for p in sub.path_params):
            return None
        deps.append((sub.call, [(p.alias, p.name) for p in sub.path_params]))
    if len({call for call, _ in deps}) != len(deps):
        return None  # FastAPI runs a repeated dependency once per request
    endpoint, name = dependant.call, field.name
    overrides = getattr(route, "dependency_overrides_provider", None)

    async def handle(request: Request) -> Response:
        if not _is_json(request.headers.get("content-type")) or getattr(overrides, "dependency_overrides", None):
            return await fallback(request)
        raw = await request.body()
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return await fallback(request)
        if _LONG_INTEGER.search(raw):
            return await fallback(request)
        value, errors = field.validate(decoded, {}, loc=("body",))
        if errors:
            return await fallback(request)
        for call, names in deps:
            await call(**{param: request.path_params[alias] for alias, param in names})
        response: Response = await endpoint(**{name: value})
        return response

    return handle


def _plain(dependant: Any, *, body: int) -> bool:
    """No parameters but `body` body fields and path parameters; no special ones (Request, Response, ...)."""
    specials = (
        "request_param_name",
        "websocket_param_name",
        "http_connection_param_name",
        "response_param_name",
        "background_tasks_param_name",
        "security_scopes_param_name",
    )
    return (
        len(dependant.body_params) == body
        and not (dependant.query_params or dependant.header_params or dependant.cookie_params)
        and (body == 0 or not dependant.path_params)
        and not (body == 0 and dependant.dependencies)
        and all(getattr(dependant, s, None) is None for s in specials)
    )


def _return_type(endpoint: Callable[..., Any]) -> Any:
    """The endpoint's return annotation; a string (postponed annotations) is looked up in its module."""
    annotation = getattr(endpoint, "__annotations__", {}).get("return")
    return getattr(endpoint, "__globals__", {}).get(annotation) if isinstance(annotation, str) else annotation


def _is_json(content_type: str | None) -> bool:
    """application/json or application/<anything>+json, as FastAPI reads JSON bodies (`email.message`'s
    content type: a media type without exactly one slash is text/plain)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    if media.count("/") != 1:
        return False
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))
