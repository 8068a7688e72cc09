"""One error model for every route, and the handlers that produce it.

Bodies look like `{"error": "invalid_input", "message": "...", "details": [{"loc": "records[0].age", ...}]}`.
Request data is never echoed back: validation details carry the path and the reason only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response


class ErrorDetail(BaseModel):
    """Where a request is wrong and why."""

    loc: str = Field(description="Path of the offending field, e.g. records[0].radius.", examples=["records[0].radius"])
    msg: str = Field(description="What is wrong with it.", examples=["Input should be a valid number"])
    type: str = Field(description="Machine-readable kind of problem.", examples=["float_type"])


class ErrorBody(BaseModel):
    """Every error the predictor returns."""

    error: str = Field(
        description="Error code: invalid_input, invalid_json, not_found, not_ready, model_error, method_not_allowed.",
        examples=["invalid_input"],
    )
    message: str = Field(description="Human-readable summary.")
    details: list[ErrorDetail] = Field(default_factory=list, description="Per-field problems, if any.")


class PredictorError(Exception):
    """An error with an HTTP status and code, turned into `ErrorBody` by the handler."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    body = {"error": code, "message": message, "details": details or []}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


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


def _documented(
    description: str, code: str, message: str, details: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    example = {"error": code, "message": message, "details": details or []}
    return {"model": ErrorBody, "description": description, "content": {"application/json": {"example": example}}}


RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented("The body is not JSON.", "invalid_json", "the request body is not valid JSON"),
    422: _documented(
        "The input does not match the model's contract, or the model rejected it (ValueError/TypeError).",
        "invalid_input",
        "the request does not match the model's contract",
        [{"loc": "records[0].radius", "msg": "Input should be a valid number", "type": "float_type"}],
    ),
    500: _documented("The model failed (the input is not echoed).", "model_error", "the model raised RuntimeError"),
    503: _documented(
        "The model is not loaded yet, or its self-test failed.", "not_ready", "the model is still loading"
    ),
}


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into `ErrorBody`."""

    async def on_predictor_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, PredictorError)
        return error_response(exc.status, exc.code, exc.message, exc.details)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "invalid_json", "the request body is not valid JSON")
        details = validation_details([{**e, "loc": _drop_body(e.get("loc", ()))} for e in errors])
        return error_response(422, "invalid_input", "the request does not match the model's contract", details)

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message)

    async def on_unexpected(_: Request, exc: Exception) -> Response:
        return error_response(500, "internal_error", f"unexpected {exc.__class__.__name__}")

    app.add_exception_handler(PredictorError, on_predictor_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _drop_body(loc: Any) -> tuple[Any, ...]:
    loc = tuple(loc)
    return loc[1:] if loc and loc[0] == "body" else loc
