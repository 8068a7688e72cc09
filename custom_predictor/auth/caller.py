"""Who is calling: `Caller`, `ANONYMOUS`, the refusal `Refused`, and reading the credential off the headers.

Pure. A credential comes as `Authorization: Bearer <credential>` or `X-API-Key: <key>`; `credential()` returns
it only when it has the shape of a bearer token (RFC 6750 b64token, ASCII, at most `MAX_CREDENTIAL` characters),
so a 100 KB header, non-ASCII text or binary junk is refused here, before any parsing or network call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_CREDENTIAL = 16_384  # an Entra ID token with many groups is a few KB; Kubernetes tokens about 1 KB
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True)
class Caller:
    subject: str  # "alice@example.org", "system:serviceaccount:ns:sa", "apikey:<key id>", "anonymous"
    method: str  # "oidc" | "kubernetes" | "apikey" | "none"
    groups: tuple[str, ...] = ()


ANONYMOUS = Caller("anonymous", "none")


class Refused(Exception):
    """401 (no or bad credential), 403 (valid, not allowed), 503 (issuer/API server unreachable: fail closed).

    `reason` is for the log only: it never holds the credential, and the HTTP answer never says which check
    failed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason

    def copy(self) -> Refused:
        """A fresh exception with the same answer (a cached refusal is raised anew each time)."""
        return Refused(self.status, self.reason)


class AuthConfigError(ValueError):
    """The auth settings cannot work here (a credential file, a CA bundle, a kubeconfig); says which and why.
    Raised by `Gate.from_settings`, before serving: the predictor cannot authenticate anyone and must not start."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)  # Starlette's Headers are case-insensitive; another mapping is searched
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def credential(headers: Mapping[str, str]) -> tuple[str, str]:
    """(where, credential): where is "bearer" or "x-api-key". Refused 401 when there is none or it is malformed;
    `Authorization` wins over `X-API-Key` when both are sent."""
    where = "bearer"
    raw = _header(headers, "authorization")
    if raw is not None:
        if len(raw) > MAX_CREDENTIAL + 16:
            raise Refused(401, f"Authorization header of {len(raw)} characters")
        scheme, _, value = raw.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Refused(401, "Authorization scheme is not Bearer")
    else:
        raw = _header(headers, "x-api-key")
        if raw is None:
            raise Refused(401, "no credential")
        where, value = "x-api-key", raw
    value = value.strip()
    if len(value) > MAX_CREDENTIAL:
        raise Refused(401, f"credential of {len(value)} characters")
    if not value or not value.isascii() or not _B64TOKEN.fullmatch(value):
        raise Refused(401, "malformed credential")
    return where, value
