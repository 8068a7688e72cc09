"""The HTTP client of the auth package (httpx, async): what `oidc` and `kube` use to reach their upstream.

One `Upstream` per system (the OIDC issuer, the Kubernetes API server): an `httpx.AsyncClient` with its TLS
context, a timeout, no redirects, an answer size cap, and the upstream's health in /metrics
(`predictor_auth_upstream_up`, `predictor_auth_upstream_requests_total`). Every failure to get an answer
(connection, TLS, timeout, 5xx, 429, a body too large or not JSON) is `Unreachable`; any other 4xx is
`Rejected` with its status. A change between reachable and unreachable is logged once, naming the upstream,
never a credential.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger("custom_predictor.auth")
MAX_ANSWER = 1 << 20  # discovery documents, JWKS and reviews are a few KB


class Unreachable(Exception):
    """No usable answer from the upstream (the caller fails closed: 503)."""


class Rejected(Exception):
    """The upstream answered with a 4xx (other than 429)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status


class UpstreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.up = Gauge(
            "predictor_auth_upstream_up",
            "1 when the last call to the OIDC issuer or the Kubernetes API server got an answer, 0 when it failed.",
            ["upstream"],
            registry=registry,
        )
        self.requests = Counter(
            "predictor_auth_upstream_requests",
            "Calls to the OIDC issuer (discovery, jwks) and the Kubernetes API server (tokenreview,"
            " subjectaccessreview), by outcome (ok, rejected, unreachable).",
            ["upstream", "kind", "outcome"],
            registry=registry,
        )


class Upstream:
    def __init__(
        self,
        name: str,
        verify: ssl.SSLContext | bool,
        timeout: float,
        metrics: UpstreamMetrics,
        headers: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self.name = name
        self.metrics = metrics
        self.headers = headers or dict
        self.client = httpx.AsyncClient(verify=verify, timeout=timeout, follow_redirects=False, trust_env=False)
        self.healthy: bool | None = None  # unknown until the first call

    async def close(self) -> None:
        await self.client.aclose()

    async def get_json(self, kind: str, url: str) -> Any:
        return await self._call(kind, "GET", url, None)

    async def post_json(self, kind: str, url: str, body: dict[str, Any]) -> Any:
        return await self._call(kind, "POST", url, body)

    async def _call(self, kind: str, method: str, url: str, body: dict[str, Any] | None) -> Any:
        headers = {"Accept": "application/json, application/jwk-set+json", **self.headers()}
        try:
            async with self.client.stream(method, url, json=body, headers=headers) as answer:
                data = bytearray()
                async for chunk in answer.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_ANSWER:
                        raise Unreachable(f"{kind}: answer larger than {MAX_ANSWER} bytes")
                status = answer.status_code
        except Unreachable as e:
            self.failed(kind, str(e))
            raise
        except (httpx.HTTPError, ssl.SSLError, OSError) as e:
            self.failed(kind, f"{kind}: {type(e).__name__}: {str(e)[:200]}")
            raise Unreachable(f"{kind}: {type(e).__name__}") from None
        if status >= 500 or status == 429:
            self.failed(kind, f"{kind}: HTTP {status}")
            raise Unreachable(f"{kind}: HTTP {status}")
        if status >= 400:  # the caller decides what a refusal means (for both users here: a misconfiguration)
            self.metrics.requests.labels(self.name, kind, "rejected").inc()
            raise Rejected(status, bytes(data[:300]).decode("utf-8", "replace"))
        try:
            parsed = json.loads(data)
        except ValueError:
            self.failed(kind, f"{kind}: HTTP {status} with a body that is not JSON")
            raise Unreachable(f"{kind}: HTTP {status} with a body that is not JSON") from None
        self.reached()
        self.metrics.requests.labels(self.name, kind, "ok").inc()
        return parsed

    def failed(self, kind: str, why: str) -> None:
        self.metrics.requests.labels(self.name, kind, "unreachable").inc()
        self.down(why)

    def down(self, why: str) -> None:
        """Mark the upstream unusable (no answer, or one the predictor cannot use); logged once per change."""
        self.metrics.up.labels(self.name).set(0)
        if self.healthy is not False:
            log.warning("auth: %s unreachable (%s): calls that need it are refused with 503", self.name, why)
        self.healthy = False

    def reached(self) -> None:
        self.metrics.up.labels(self.name).set(1)
        if self.healthy is False:
            log.warning("auth: %s reachable again", self.name)
        self.healthy = True
