"""Who is calling: the one FastAPI dependency that every data route carries, before any body is read.

`caller(gate)` makes the dependency: it asks the gate (`auth.Gate`: API keys, OpenID Connect tokens, Kubernetes
RBAC, as the settings say) who the request's credentials name, puts the subject on the call's record, and turns a
refusal into a `PredictorError` that the route renders in its protocol's shape: 401 with `WWW-Authenticate`, 403,
or 503 when the issuer cannot be reached. The answer never says which check failed; the log does, without the
credential. With no gate (auth off), every caller is anonymous.
Neighbours: `app` builds it once and gives it to every protocol's router; `calls.Call` carries the subject to the
access log and the inference log.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from fastapi import Depends, Request

from custom_predictor.errors import PredictorError

log = logging.getLogger("custom_predictor.access")

MESSAGES = {
    401: ("unauthenticated", "a valid credential is required"),
    403: ("forbidden", "this caller may not use this model"),
    503: ("auth_unavailable", "the credential cannot be checked right now"),
}


class Gate(Protocol):
    """What `auth.Gate` offers the request path."""

    @property
    def challenge(self) -> str: ...

    async def check(self, headers: Mapping[str, str]) -> Any: ...


def caller(gate: Gate | None) -> Any:
    """The dependency (a `Depends`) every data route lists first."""

    async def who(request: Request) -> None:
        call = request.state.call
        if gate is None:
            return
        try:
            found = await gate.check(request.headers)
        except Exception as e:  # the gate's Refused: status and reason (never the credential)
            status = getattr(e, "status", None)
            if status not in MESSAGES:
                raise
            log.info("refused request_id=%s status=%s reason=%s", call.request_id, status, getattr(e, "reason", ""))
            code, message = MESSAGES[status]
            headers = {"WWW-Authenticate": gate.challenge} if status == 401 else None
            if status == 503:
                headers = {"Retry-After": "5"}
            raise PredictorError(status, code, message, headers=headers) from None
        call.subject = found.subject

    return Depends(who)


Dependency = Callable[..., Awaitable[None]]
