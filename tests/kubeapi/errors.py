"""Kubernetes API errors as `Status` objects, with the reasons and messages kube-apiserver uses."""

from __future__ import annotations

from typing import Any

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def status_body(
    code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, ""),
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


class ApiError(Exception):
    """An error answer of the API; `status` is the Status body sent to the client."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.status = status_body(code, message, reason, details)

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, message, "BadRequest")

    @classmethod
    def not_found(cls, resource: str, group: str, name: str) -> ApiError:
        qualified = f"{resource}.{group}" if group else resource
        details = {"name": name, "group": group, "kind": resource} if group else {"name": name, "kind": resource}
        return cls(404, f'{qualified} "{name}" not found', "NotFound", details)

    @classmethod
    def no_route(cls) -> ApiError:
        return cls(404, "the server could not find the requested resource", "NotFound", {})
