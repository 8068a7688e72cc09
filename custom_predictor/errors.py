"""Errors: one exception for every refusal, rendered in the body shape of the protocol that was spoken.

Routes raise `PredictorError(status, code, message, details)`. The typed API answers `ErrorBody`
(`{"error": "invalid_input", "message": "...", "details": [{"loc": "records[0].age", ...}]}`); the KServe V1/V2
routes answer KServe's shape, whose `error` is the human message its clients print (`KServeErrorBody`); the
MLflow scoring routes answer MLflow's (`error_code`, `message`), built by `mlflow_protocol`. Each router picks
its shape with `route_class(render)`, which also turns body validation errors and anything unexpected into
that shape. Request data is never echoed back: details carry the path and the reason only. A refusal may carry
headers (`WWW-Authenticate` on a 401, `Retry-After` on a 503).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

INVALID = "the request does not match the model's contract"
log = logging.getLogger("custom_predictor.errors")


class ErrorDetail(BaseModel):
    """Where a request is wrong and why."""

    loc: str = Field(description="Path of the offending field, e.g. records[0].radius.", examples=["records[0].radius"])
    msg: str = Field(description="What is wrong with it.", examples=["Input should be a valid number"])
    type: str = Field(description="Machine-readable kind of problem.", examples=["float_type"])


class ErrorBody(BaseModel):
    """Every error of the typed API."""

    error: str = Field(
        description="Error code: invalid_input, invalid_json, not_found, not_ready, model_error, model_rejected_input,"
        " method_not_allowed.",
        examples=["invalid_input"],
    )
    message: str = Field(description="Human-readable summary.")
    details: list[ErrorDetail] = Field(default_factory=list, description="Per-field problems, if any.")


class KServeErrorBody(BaseModel):
    """Every error of the KServe V1 and V2 routes: `error` is the message (what KServe's and Triton's clients
    show), `code` and `details` say the same for programs."""

    error: str = Field(description="What is wrong, with the first field's path.")
    code: str = Field(description="Error code, as in the typed API's `error`.", examples=["invalid_input"])
    details: list[ErrorDetail] = Field(default_factory=list, description="Per-field problems, if any.")


class PredictorError(Exception):
    """A refusal with an HTTP status, a code and a message (never the input), rendered by the route's protocol."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []
        self.headers = headers


def invalid(loc: str, msg: str, kind: str = "value_error", status: int = 422) -> PredictorError:
    """The request breaks one rule at `loc`."""
    return PredictorError(status, "invalid_input", INVALID, [{"loc": loc, "msg": msg, "type": kind}])


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def render_default(e: PredictorError) -> Response:
    return json_response({"error": e.code, "message": e.message, "details": e.details}, e.status, e.headers)


def kserve_message(e: PredictorError) -> str:
    first = e.details[0] if e.details else None
    return f"{e.message}: {first['loc']}: {first['msg']}" if first else e.message


def render_kserve(e: PredictorError) -> Response:
    return json_response({"error": kserve_message(e), "code": e.code, "details": e.details}, e.status, e.headers)


def loc_string(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_details(errors: list[Any], locate: Callable[[list[Any]], str] = loc_string) -> list[dict[str, str]]:
    """pydantic errors -> details with a readable path (`locate` maps pydantic's loc to a path in the request
    body); the offending input itself is dropped."""
    details = []
    for e in errors[:50]:
        loc = [p for p in e.get("loc", ()) if not (isinstance(p, str) and p.startswith("function-"))]
        details.append(
            {"loc": locate(loc) or "body", "msg": str(e.get("msg", "invalid")), "type": str(e.get("type", ""))}
        )
    return details


def from_validation(errors: list[Any], prefix: tuple[Any, ...] = ()) -> PredictorError:
    """pydantic/FastAPI validation errors of a body -> 400 invalid_json, or 422 invalid_input with paths."""
    if any(e.get("type") == "json_invalid" for e in errors):
        return PredictorError(400, "invalid_json", "the request body is not valid JSON")
    cut = [{**e, "loc": (*prefix, *_drop_body(e.get("loc", ())))} for e in errors]
    return PredictorError(422, "invalid_input", INVALID, validation_details(cut))


Render = Callable[[PredictorError], Response]


def route_class(render: Render, protocol: str = "") -> type[APIRoute]:
    """An APIRoute of `protocol` whose refusals (raised by the route or its dependencies, from parameter
    validation, or unexpected) are rendered by `render`."""

    class ProtocolRoute(APIRoute):
        renderer = staticmethod(render)
        speaks = protocol

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def run(request: Request) -> Response:
                try:
                    return await handler(request)
                except PredictorError as e:
                    refusal = e
                except RequestValidationError as e:
                    refusal = from_validation(list(e.errors()))
                except StarletteHTTPException:
                    raise
                except Exception as e:
                    log.exception("unexpected %s on %s", e.__class__.__name__, self.path)
                    refusal = PredictorError(500, "internal_error", f"unexpected {e.__class__.__name__}")
                call = getattr(request.state, "call", None)
                if call is not None:
                    call.error = refusal.code
                return render(refusal)

            return run

    return ProtocolRoute


def documented(model: type[BaseModel], body: dict[str, Any], description: str) -> dict[str, Any]:
    return {"model": model, "description": description, "content": {"application/json": {"example": body}}}


_DETAIL = [{"loc": "records[0].radius", "msg": "Input should be a valid number", "type": "float_type"}]
_CASES: list[tuple[int, str, str, str, list[dict[str, str]]]] = [
    (400, "The body is not JSON.", "invalid_json", "the request body is not valid JSON", []),
    (
        422,
        "The input does not match the model's contract, or the model rejected it (ValueError/TypeError).",
        "invalid_input",
        INVALID,
        _DETAIL,
    ),
    (
        401,
        "No valid credential (docs/security.md): WWW-Authenticate says how.",
        "unauthenticated",
        "a valid credential is required",
        [],
    ),
    (403, "The caller may not use this model.", "forbidden", "this caller may not use this model", []),
    (
        413,
        "The body is larger than this predictor takes (the limit is in the message).",
        "too_large",
        "the request body is larger than this predictor's limit of 16777216 bytes",
        [],
    ),
    (500, "The model failed (the input is not echoed).", "model_error", "the model raised RuntimeError", []),
    (503, "The model is not loaded yet, or its self-test failed.", "not_ready", "the model is still loading", []),
]

RESPONSES: dict[int | str, dict[str, Any]] = {
    status: documented(ErrorBody, {"error": code, "message": message, "details": details}, doc)
    for status, doc, code, message, details in _CASES
}
"""The typed API's error responses, each with its own example body."""

KSERVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: documented(
        KServeErrorBody,
        {"error": kserve_message(PredictorError(status, code, message, details)), "code": code, "details": details},
        doc,
    )
    for status, doc, code, message, details in [
        *_CASES,
        (404, "No model of this name here.", "not_found", "this predictor serves the model 'm' only", []),
    ]
}
"""The KServe routes' error responses."""


def install(app: FastAPI) -> None:
    """Handlers for what no route catches (unknown paths, wrong methods, failures outside routes): `ErrorBody`."""

    async def on_predictor_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, PredictorError)
        return render_default(exc)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render_default(from_validation(list(exc.errors())))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return render_default(PredictorError(exc.status_code, codes.get(exc.status_code, "http_error"), message))

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        return render_default(PredictorError(500, "internal_error", f"unexpected {exc.__class__.__name__}"))

    app.add_exception_handler(PredictorError, on_predictor_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _drop_body(loc: Any) -> tuple[Any, ...]:
    loc = tuple(loc)
    return loc[1:] if loc and loc[0] == "body" else loc
