"""Who is calling: the one FastAPI dependency that every data route carries, before any body is read.

`caller(gate)` makes the dependency: it asks the gate (`auth.Gate`: API keys, OpenID Connect tokens, Kubernetes
RBAC, as the settings say) who the request's credentials name, puts the subject on the call's record, and turns a
refusal into a `PredictorError` that the route renders in its protocol's shape: 401 with `WWW-Authenticate`, 403,
or 503 when the issuer cannot be reached. The answer never says which check failed; the log does, without the
credential. With no gate (auth off), every caller is anonymous and the dependency does nothing.
Neighbours: `app` builds it once and gives it to every protocol's router; `calls.Call` carries the subject to the
access log and the inference log; `guarded` tells whether a route carries it.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, Request

from custom_predictor.auth import Gate, Refused
from custom_predictor.errors import PredictorError

log = logging.getLogger("custom_predictor.access")

MESSAGES = {
    401: ("unauthenticated", "a valid credential is required"),
    403: ("forbidden", "this caller may not use this model"),
    503: ("auth_unavailable", "the credential cannot be checked right now"),
}


def caller(gate: Gate | None) -> Any:
    """The dependency (a `Depends`) every data route lists first."""

    async def who(request: Request) -> None:
        call = request.state.call
        call.data = True
        if gate is None:
            return
        try:
            found = await gate.check(request.headers)
        except Refused as e:  # its reason says which check failed, never the credential
            log.info("refused request_id=%s status=%d reason=%s", call.request_id, e.status, e.reason)
            status = e.status if e.status in MESSAGES else 401
            code, message = MESSAGES[status]
            headers = {"WWW-Authenticate": gate.challenge} if status == 401 else None
            if status == 503:
                headers = {"Retry-After": "5"}
            raise PredictorError(status, code, message, headers=headers) from None
        call.subject = found.subject

    who.guards = True  # type: ignore[attr-defined]
    return Depends(who)


def guarded(route: Any) -> bool:
    """Whether a route carries the caller dependency (for the OpenAPI document and the tests that walk the app)."""
    return any(getattr(d.dependency, "guards", False) for d in getattr(route, "dependencies", []))
