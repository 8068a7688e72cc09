"""OpenID Connect bearer tokens: the issuer's discovery document and keys (JWKS), and verifying a token.

The one module that talks to an OIDC issuer (Keycloak, Entra ID, Okta, or the Kubernetes API server for
ServiceAccount tokens). JWTs are verified with PyJWT against keys of the issuer's JWKS only, with the algorithm
pinned to the key: RS256 for RSA keys, ES256 for P-256 keys; `alg: none`, HS* (the classic "HMAC keyed with the
public key" confusion) and every other algorithm are refused before a key is looked at. Claims: `iss` exactly
AUTH_OIDC_ISSUER, `aud` one of AUTH_OIDC_AUDIENCE, `exp` required, `nbf` and `iat` when present, all with
AUTH_OIDC_LEEWAY_SECONDS; the subject is AUTH_OIDC_SUBJECT_CLAIM, groups AUTH_OIDC_GROUPS_CLAIM.

Keys: the first fetch starts with the gate (in the background: no network call before the predictor is ready),
a request arriving before it waits for it. They are re-read every AUTH_OIDC_JWKS_REFRESH_SECONDS in the background,
and at once (at most every AUTH_OIDC_JWKS_MIN_INTERVAL_SECONDS) for a token whose `kid` is unknown. While the
issuer cannot be reached the keys already read keep verifying; a token that needs keys not read yet is refused
with 503 (fail closed). Verified tokens are kept (by hash, until `exp` or AUTH_CACHE_SECONDS, whichever is first)
so a warm check costs no signature verification; a change of the keys empties that cache.

With AUTH_OIDC_KUBERNETES_CREDENTIALS the issuer is the Kubernetes API server the predictor has credentials for
(`kube.KubeAccess`): discovery (`/.well-known/openid-configuration`, its `issuer` must match) and keys
(`/openid/v1/jwks`) are read from that server with those credentials, which go nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import jwt

from custom_predictor.auth.cache import Outcome, TtlCache, key_of
from custom_predictor.auth.caller import Caller, Refused
from custom_predictor.auth.http import Rejected, Unreachable, Upstream

log = logging.getLogger("custom_predictor.auth")
ALGORITHMS = ("RS256", "ES256")
MAX_GROUPS = 256
MAX_SUBJECT = 512


class Issuer:
    def __init__(
        self,
        issuer: str,
        audiences: tuple[str, ...],
        upstream: Upstream,
        cache: TtlCache,
        *,
        leeway: int,
        subject_claim: str,
        groups_claim: str,
        refresh_seconds: float,
        min_interval: float,
        clock: Callable[[], float],
        on_keys: Callable[[int], None],
        kubernetes_server: str = "",
    ) -> None:
        self.issuer, self.audiences = issuer, list(audiences)
        self.upstream, self.cache = upstream, cache
        self.leeway, self.subject_claim, self.groups_claim = leeway, subject_claim, groups_claim
        self.refresh_seconds, self.min_interval, self.clock = refresh_seconds, min_interval, clock
        self.on_keys = on_keys
        self.kubernetes_server = kubernetes_server
        self._keys: dict[str, jwt.PyJWK] | None = None  # None: never read
        self._jwks: Any = None
        self._jwks_uri = ""
        self._attempted = -float("inf")
        self._loaded = -float("inf")
        self._fetching: asyncio.Task[bool] | None = None

    async def start(self) -> None:
        self._fetch_in_background()

    async def close(self) -> None:
        if self._fetching is not None and not self._fetching.done():
            self._fetching.cancel()
        await self.upstream.close()

    def issued_by_me(self, token: str) -> bool:
        """Whether the token's (unverified) `iss` is this issuer: routes a JWT here rather than to a TokenReview."""
        parts = token.split(".")
        if len(parts) != 3:
            return False
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return False
        return isinstance(claims, dict) and claims.get("iss") == self.issuer

    async def verify(self, token: str) -> Caller:
        return await self.cache.load(key_of(token), lambda: self._verify(token))

    # ---- verifying -----------------------------------------------------------------------------
    async def _verify(self, token: str) -> tuple[Outcome, float]:
        try:
            return await self._verified(token)
        except Refused as r:
            return r, 0  # refusals are not kept: a token not valid yet may become valid

    async def _verified(self, token: str) -> tuple[Outcome, float]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise Refused(401, "not a JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise Refused(401, f"JWT alg {str(alg)[:20]!r} is not accepted (only {', '.join(ALGORITHMS)})")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None, alg)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self.audiences,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise Refused(401, "JWT expired") from None
        except jwt.ImmatureSignatureError:
            raise Refused(401, "JWT not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Refused(401, "JWT for another audience") from None
        except jwt.InvalidIssuerError:
            raise Refused(401, "JWT of another issuer") from None
        except jwt.InvalidSignatureError:
            raise Refused(401, "JWT signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            raise Refused(401, f"JWT invalid ({type(e).__name__})") from None
        subject = claims.get(self.subject_claim)
        if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT:
            raise Refused(401, f"JWT without a usable {self.subject_claim!r} claim")
        groups = claims.get(self.groups_claim) or ()
        if isinstance(groups, str):
            groups = (groups,)
        groups = tuple(g for g in groups if isinstance(g, str))[:MAX_GROUPS] if isinstance(groups, list | tuple) else ()
        left = float(claims["exp"]) - time.time() + self.leeway
        return Caller(subject, "oidc", groups), left

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        if self._keys is None:
            if not await self._fetch_shared():
                raise Refused(503, f"OIDC issuer {self.issuer}: keys not read yet")
        elif self._refresh_due():
            self._fetch_in_background()
        key = self._lookup(kid, alg)
        if key is None and self.clock() - self._attempted >= self.min_interval:
            if not await self._fetch_shared():
                raise Refused(503, f"OIDC issuer {self.issuer} unreachable to look up an unknown key id")
            key = self._lookup(kid, alg)
        if key is None:
            raise Refused(401, "JWT signed with a key the issuer does not list")
        if key.algorithm_name != alg:
            raise Refused(401, f"JWT alg {alg} does not match its key's {key.algorithm_name}")
        return key

    def _refresh_due(self) -> bool:
        now = self.clock()
        return now - self._loaded >= self.refresh_seconds and now - self._attempted >= self.min_interval

    def _lookup(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        keys = self._keys or {}
        if kid is not None:
            return keys.get(kid)
        fitting = [k for k in keys.values() if k.algorithm_name == alg]
        return fitting[0] if len(fitting) == 1 else None  # no kid: only when one key can be meant

    # ---- fetching ------------------------------------------------------------------------------
    def _fetch_in_background(self) -> None:
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.ensure_future(self._fetch())

    async def _fetch_shared(self) -> bool:
        self._fetch_in_background()
        assert self._fetching is not None
        return await asyncio.shield(self._fetching)

    async def _fetch(self) -> bool:
        """Read discovery (once) and the JWKS; False (logged) when the issuer cannot be asked or answers nonsense."""
        self._attempted = self.clock()
        try:
            if not self._jwks_uri:
                self._jwks_uri = await self._discover()
            doc = await self.upstream.get_json("jwks", self._jwks_uri)
            keys = parse_jwks(doc)
        except (Unreachable, Rejected, ValueError) as e:
            if not isinstance(e, Unreachable):
                self.upstream.down(f"OIDC issuer {self.issuer}: {e}")
            return False
        self._loaded = self.clock()
        if doc != self._jwks:
            if self._keys is not None:
                log.info("auth: OIDC issuer %s changed its keys: verified tokens are checked again", self.issuer)
            self.cache.clear()
            self._jwks, self._keys = doc, keys
            self.on_keys(len(keys))
        return True

    async def _discover(self) -> str:
        base = self.kubernetes_server or self.issuer.rstrip("/")
        doc = await self.upstream.get_json("discovery", f"{base}/.well-known/openid-configuration")
        if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
            raise ValueError(f"discovery at {base} names issuer {str((doc or {}).get('issuer'))[:100]!r}")
        if self.kubernetes_server:
            return f"{self.kubernetes_server}/openid/v1/jwks"
        uri = doc.get("jwks_uri")
        if not isinstance(uri, str) or not _usable_url(uri, self.issuer):
            raise ValueError("discovery names no https:// jwks_uri")
        return uri


def _usable_url(uri: str, issuer: str) -> bool:
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.netloc:
        return True
    return parts.scheme == "http" and urlsplit(issuer).scheme == "http" and parts.hostname in ("127.0.0.1", "localhost")


def parse_jwks(doc: Any) -> dict[str, jwt.PyJWK]:
    """{kid: key} of the RS256 and ES256 signing keys of a JWKS (keys without a kid under `#<n>`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('the JWKS is not {"keys": [...]}')
    keys: dict[str, jwt.PyJWK] = {}
    for n, jwk in enumerate(doc["keys"]):
        if not isinstance(jwk, dict) or jwk.get("use") not in (None, "sig"):
            continue
        kty, alg = jwk.get("kty"), jwk.get("alg")
        if alg is None:
            alg = "RS256" if kty == "RSA" else "ES256" if kty == "EC" and jwk.get("crv") == "P-256" else None
        if alg not in ALGORITHMS:
            continue
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) and kid else f"#{n}"] = key
    if not keys:
        raise ValueError("the JWKS holds no RS256 or ES256 signing key")
    return keys
