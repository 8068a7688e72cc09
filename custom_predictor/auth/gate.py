"""The gate: one `check(headers) -> Caller` in front of every data route, over the modes AUTH_MODES turns on.

Routing of a credential (`caller.credential`: `Authorization: Bearer ...`, else `X-API-Key`):
- an API key (`sbk_...`, or anything in `X-API-Key`) goes to `apikeys.KeyFile` (mode apikey);
- a JWT whose unverified `iss` is AUTH_OIDC_ISSUER goes to `oidc.Issuer` (mode oidc; with oidc alone, every
  bearer token does);
- any other bearer token goes to `kube.Reviewer` (mode kubernetes): TokenReview + SubjectAccessReview.
OIDC and API-key callers must then pass the allow-list (`allow.AllowList`, AUTH_ALLOW); RBAC alone decides for
Kubernetes callers. Every path ends in a `Caller` or a `Refused` (401, 403, 503); nothing else escapes: an
unexpected error is logged and refused with 401 (fail closed).

Metrics (in the registry given): `predictor_auth_checks_total{method, outcome}` (outcome: allowed,
unauthenticated, forbidden, unavailable), `predictor_auth_upstream_up{upstream}` and
`predictor_auth_upstream_requests_total` (`http.Upstream`), `predictor_auth_api_keys` and
`predictor_auth_api_keys_file_ok`, `predictor_auth_oidc_keys`, and `predictor_auth_info{mode, ...}`.
The heavy clients (httpx, PyJWT) are imported only when a mode needs them.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from custom_predictor.auth.allow import AllowList
from custom_predictor.auth.apikeys import KeyFile, looks_like_key
from custom_predictor.auth.cache import TtlCache
from custom_predictor.auth.caller import ANONYMOUS, AuthConfigError, Caller, Refused, credential

if TYPE_CHECKING:
    from custom_predictor.auth.kube import Reviewer
    from custom_predictor.auth.oidc import Issuer
    from custom_predictor.settings import Settings

log = logging.getLogger("custom_predictor.auth")
OUTCOMES = {401: "unauthenticated", 403: "forbidden", 503: "unavailable"}
MODES = ("apikey", "kubernetes", "oidc")


class GateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.checks = Counter(
            "predictor_auth_checks",
            "Credential checks by method (oidc, kubernetes, apikey, none; unknown when refused before one was chosen)"
            " and outcome (allowed, unauthenticated, forbidden, unavailable).",
            ["method", "outcome"],
            registry=registry,
        )
        self.api_keys = Gauge("predictor_auth_api_keys", "API keys in the keys file.", registry=registry)
        self.api_keys_ok = Gauge(
            "predictor_auth_api_keys_file_ok",
            "0 while the API keys file cannot be parsed (API keys are refused with 503), else 1.",
            registry=registry,
        )
        self.oidc_keys = Gauge("predictor_auth_oidc_keys", "Signing keys read from the OIDC issuer.", registry=registry)
        self.info = Info("predictor_auth", "What guards the data routes.", registry=registry)

    def keys_loaded(self, count: int, ok: bool) -> None:
        self.api_keys.set(count)
        self.api_keys_ok.set(1 if ok else 0)


class Gate:
    """Build with `from_settings`; `await start()` before serving, `await close()` after."""

    def __init__(
        self,
        modes: frozenset[str],
        metrics: GateMetrics,
        *,
        allow: AllowList | None = None,
        keys: KeyFile | None = None,
        issuer: Issuer | None = None,
        reviewer: Reviewer | None = None,
        guards_docs: bool = False,
        guards_metrics: bool = False,
        realm: str = "service-builder",
    ) -> None:
        self.modes = modes
        self.mode = "+".join(sorted(modes)) or "none"
        self.metrics = metrics
        self.allow = allow or AllowList()
        self.keys, self.issuer, self.reviewer = keys, issuer, reviewer
        self.guards_docs, self.guards_metrics = guards_docs, guards_metrics
        self.realm = realm
        self._counts = {
            (m, o): metrics.checks.labels(m, o)
            for m in ("oidc", "kubernetes", "apikey", "none", "unknown")
            for o in ("allowed", *OUTCOMES.values())
        }
        metrics.info.info(
            {
                "mode": self.mode,
                "allow_list": "no" if self.allow.empty else "yes",
                "guards_docs": str(guards_docs).lower(),
                "guards_metrics": str(guards_metrics).lower(),
            }
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: CollectorRegistry, *, clock: Callable[[], float] = time.monotonic
    ) -> Gate:
        """The gate the settings describe (validated by `Settings`). `AuthConfigError` when they cannot work here:
        the kubernetes mode (or AUTH_OIDC_KUBERNETES_CREDENTIALS) finds no credentials of the predictor's own, or
        AUTH_OIDC_CA_FILE is not a CA bundle; the predictor should then exit with that one line."""
        s = settings
        modes = s.auth_mode_set
        metrics = GateMetrics(registry)
        keys = issuer = reviewer = None
        if "apikey" in modes:
            keys = KeyFile(s.auth_api_keys_file, clock, metrics.keys_loaded)
        if modes & {"oidc", "kubernetes"}:
            from custom_predictor.auth import kube
            from custom_predictor.auth.http import Upstream, UpstreamMetrics

            upstream_metrics = UpstreamMetrics(registry)
            access = None
            if "kubernetes" in modes or s.auth_oidc_kubernetes_credentials:
                access = kube.access_from(
                    s.kubeconfig, s.kubernetes_service_host, s.kubernetes_service_port, s.auth_service_account_dir
                )
            if "kubernetes" in modes:
                assert access is not None
                reviewer = kube.Reviewer(
                    access,
                    s.inferenceservice_namespace,
                    s.inferenceservice_name,
                    s.kubernetes_audiences,
                    TtlCache(s.auth_cache_size, s.auth_cache_seconds, clock),
                    s.auth_timeout_seconds,
                    upstream_metrics,
                )
            if "oidc" in modes:
                from custom_predictor.auth.oidc import Issuer

                verify: ssl.SSLContext | bool = True
                if s.auth_oidc_ca_file:
                    try:
                        verify = ssl.create_default_context(cafile=s.auth_oidc_ca_file)
                    except (OSError, ssl.SSLError) as e:
                        raise AuthConfigError(
                            f"AUTH_OIDC_CA_FILE {s.auth_oidc_ca_file}: not a CA bundle ({e})"
                        ) from None
                elif access is not None and s.auth_oidc_kubernetes_credentials:
                    verify = access.verify
                own = access if s.auth_oidc_kubernetes_credentials else None
                headers = own.headers if own is not None else None
                issuer = Issuer(
                    s.auth_oidc_issuer,
                    s.oidc_audiences,
                    Upstream("oidc", verify, s.auth_timeout_seconds, upstream_metrics, headers),
                    TtlCache(s.auth_cache_size, s.auth_cache_seconds, clock),
                    leeway=s.auth_oidc_leeway_seconds,
                    subject_claim=s.auth_oidc_subject_claim,
                    groups_claim=s.auth_oidc_groups_claim,
                    refresh_seconds=s.auth_oidc_jwks_refresh_seconds,
                    min_interval=s.auth_oidc_jwks_min_interval_seconds,
                    clock=clock,
                    on_keys=metrics.oidc_keys.set,
                    kubernetes_server=own.server if own is not None else "",
                )
        realm = "/".join(p for p in (s.inferenceservice_namespace, s.inferenceservice_name) if p) or "service-builder"
        gate = cls(
            modes,
            metrics,
            allow=AllowList.parse(s.auth_allow),
            keys=keys,
            issuer=issuer,
            reviewer=reviewer,
            guards_docs=s.auth_guard_docs,
            guards_metrics=s.auth_guard_metrics,
            realm=realm,
        )
        if not modes:
            log.warning("auth: AUTH_MODES=none: every caller of the data routes is anonymous")
        else:
            log.info("auth: mode=%s allow_list=%s", gate.mode, "no" if gate.allow.empty else "yes")
        return gate

    async def start(self) -> None:
        if self.issuer is not None:
            await self.issuer.start()

    async def close(self) -> None:
        if self.issuer is not None:
            await self.issuer.close()
        if self.reviewer is not None:
            await self.reviewer.close()

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate value of a 401 (it says nothing about which check failed)."""
        return f'Bearer realm="{self.realm}"'

    def openapi(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(components.securitySchemes, the `security` of a gated operation): either scheme will do."""
        if not self.modes:
            return {}, []
        accepted = {
            "oidc": "a token of the OIDC issuer",
            "kubernetes": "a Kubernetes token (RBAC: get on this InferenceService)",
            "apikey": "an API key",
        }
        schemes: dict[str, Any] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Authorization: Bearer with " + ", or ".join(accepted[m] for m in sorted(self.modes)),
            }
        }
        if "apikey" in self.modes:
            schemes["apiKey"] = {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": "An API key (sbk_...), as an alternative to Authorization: Bearer.",
            }
        return schemes, [{name: []} for name in schemes]

    async def check(self, headers: Mapping[str, str]) -> Caller:
        """The caller, or Refused (401, 403, 503). Reads only headers; awaits network I/O only when a credential
        is not in a cache."""
        if not self.modes:
            self._counts["none", "allowed"].inc()
            return ANONYMOUS
        method = "unknown"
        try:
            where, value = credential(headers)
            if where == "x-api-key" or looks_like_key(value):
                method = "apikey"
                if self.keys is None:
                    raise Refused(401, "API keys are not accepted here")
                caller = self.keys.check(value)
            elif self.issuer is not None and (self.reviewer is None or self.issuer.issued_by_me(value)):
                method = "oidc"
                caller = await self.issuer.verify(value)
            elif self.reviewer is not None:
                method = "kubernetes"
                caller = await self.reviewer.review(value)
            else:
                raise Refused(401, "a bearer token, but only API keys are accepted here")
            if caller.method != "kubernetes" and not self.allow.admits(caller):
                raise Refused(403, f"{caller.subject} is not in the allow-list")
        except Refused as r:
            self._counts[method, OUTCOMES.get(r.status, "unauthenticated")].inc()
            raise
        except Exception:  # a defect must not become a 500 or an open door: refuse, and say so in the log
            log.exception("auth: unexpected error while checking a %s credential: refused", method)
            self._counts[method, "unauthenticated"].inc()
            raise Refused(401, "unexpected error while checking the credential") from None
        self._counts[method, "allowed"].inc()
        return caller
