"""The Kubernetes API server as authenticator and authorizer (kube-rbac-proxy's model), and the predictor's own
credentials for it.

`Reviewer.review(token)`: a TokenReview (`authentication.k8s.io/v1`) says who the token belongs to, then a
SubjectAccessReview (`authorization.k8s.io/v1`) whether that user may `get` this model's InferenceService
(`serving.kserve.io` `inferenceservices` `<name>` in `<namespace>`). So an ordinary Role and RoleBinding grant one
person or workload one model. Answers (allowed, 401, 403) are kept for AUTH_CACHE_SECONDS in a bounded cache
keyed by the token's hash, and concurrent requests with one token share one review: the API server sees at most
one TokenReview and one SubjectAccessReview per token per TTL. An API server that cannot be asked, or that
refuses the predictor's own reviews (missing RBAC), is a 503 (never cached) and says why in the log.

`KubeAccess`: where the API server is and who the predictor is: a kubeconfig (KUBECONFIG; token, token file or
client certificate; no exec plugins) or, in a pod, the mounted ServiceAccount token (re-read every minute: the
kubelet rotates it) and CA. The predictor's ServiceAccount needs `create` on `tokenreviews` and
`subjectaccessreviews` (deploy/base/predictor-clusterrole.yaml), nothing more.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from custom_predictor.auth.cache import Outcome, TtlCache, key_of
from custom_predictor.auth.caller import AuthConfigError, Caller, Refused
from custom_predictor.auth.http import Rejected, Unreachable, Upstream, UpstreamMetrics

TOKEN_REREAD = 60.0
MAX_GROUPS = 256


class KubeConfigError(AuthConfigError):
    """The predictor's Kubernetes credentials cannot be used; says which file and why."""


@dataclass
class KubeAccess:
    server: str  # https://host:port (http:// only through a test proxy)
    verify: ssl.SSLContext | bool
    token: str = field(default="", repr=False)
    token_file: str = ""
    _read: tuple[float, str] = field(default=(-TOKEN_REREAD, ""), repr=False)

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file:
            at, token = self._read
            if time.monotonic() - at >= TOKEN_REREAD:
                with contextlib.suppress(OSError):
                    token = Path(self.token_file).read_text(encoding="ascii").strip()
                self._read = (time.monotonic(), token)
        return {"Authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def in_cluster(cls, host: str, port: int, account_dir: str) -> KubeAccess:
        token, ca = Path(account_dir) / "token", Path(account_dir) / "ca.crt"
        if not token.is_file() or not ca.is_file():
            raise KubeConfigError(f"no ServiceAccount token and ca.crt in {account_dir}")
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        access = cls(server, ssl.create_default_context(cafile=str(ca)), token_file=str(token))
        access.headers()  # the first read, now
        return access

    @classmethod
    def from_kubeconfig(cls, path: str) -> KubeAccess:
        where = Path(path)
        try:
            doc = yaml.safe_load(where.read_text(encoding="utf-8"))
            name = doc["current-context"]
            context = next(c["context"] for c in doc["contexts"] if c["name"] == name)
            cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
            user = next(u["user"] for u in doc.get("users") or [] if u["name"] == context["user"]) or {}
        except (OSError, yaml.YAMLError, KeyError, TypeError, StopIteration) as e:
            raise KubeConfigError(f"{path}: not a usable kubeconfig ({type(e).__name__}: {e})") from None
        if "exec" in user or "auth-provider" in user:
            raise KubeConfigError(f"{path}: exec and auth-provider credentials are not supported")
        if cluster.get("insecure-skip-tls-verify"):
            raise KubeConfigError(f"{path}: insecure-skip-tls-verify is not supported")
        server = str(cluster.get("server") or "")
        verify: ssl.SSLContext | bool = False
        if server.startswith("https://"):
            try:
                verify = _tls(where.parent, cluster, user)
            except (OSError, ssl.SSLError, ValueError, KeyError) as e:
                raise KubeConfigError(f"{path}: cannot use its certificates ({type(e).__name__}: {e})") from None
        elif not server.startswith("http://127.0.0.1:"):
            raise KubeConfigError(f"{path}: the server must be an https:// URL")
        token_file = str(where.parent / user["tokenFile"]) if user.get("tokenFile") else ""
        access = cls(server.rstrip("/"), verify, token=str(user.get("token") or ""), token_file=token_file)
        access.headers()
        return access


def _tls(base: Path, cluster: dict[str, Any], user: dict[str, Any]) -> ssl.SSLContext:
    if cluster.get("certificate-authority-data"):
        ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    elif cluster.get("certificate-authority"):
        ctx = ssl.create_default_context(cafile=str(base / cluster["certificate-authority"]))
    else:
        ctx = ssl.create_default_context()
    if user.get("client-certificate"):
        ctx.load_cert_chain(str(base / user["client-certificate"]), str(base / user["client-key"]))
    elif user.get("client-certificate-data"):
        with tempfile.TemporaryDirectory() as tmp:  # ssl reads a certificate chain only from files
            pem = Path(tmp) / "client.pem"
            fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(base64.b64decode(user["client-certificate-data"]) + b"\n")
                f.write(base64.b64decode(user["client-key-data"]))
            ctx.load_cert_chain(str(pem))
    return ctx


def _expires_in(token: str) -> float | None:
    """Seconds until the unverified `exp` of a JWT-shaped token (only to keep a cached answer no longer)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except ValueError:
        return None
    return float(exp) - time.time() if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class Reviewer:
    def __init__(
        self,
        access: KubeAccess,
        namespace: str,
        name: str,
        audiences: tuple[str, ...],
        cache: TtlCache,
        timeout: float,
        metrics: UpstreamMetrics,
    ) -> None:
        self.access = access
        self.namespace, self.name, self.audiences = namespace, name, audiences
        self.cache = cache
        self.upstream = Upstream("kubernetes", access.verify, timeout, metrics, access.headers)

    async def close(self) -> None:
        await self.upstream.close()

    async def review(self, token: str) -> Caller:
        return await self.cache.load(key_of(token), lambda: self._review(token))

    async def _review(self, token: str) -> tuple[Outcome, float]:
        keep = self.cache.ttl
        left = _expires_in(token)
        if left is not None:
            keep = min(keep, left)
        try:
            return await self._ask(token), keep
        except Refused as r:
            return r, keep
        except Unreachable as e:
            return Refused(503, f"Kubernetes API server unreachable: {e}"), 0
        except Rejected as e:
            hint = (
                " (the predictor's ServiceAccount needs create on tokenreviews and subjectaccessreviews)"
                if e.status in (401, 403)
                else ""
            )
            why = f"the API server refused the predictor's review: HTTP {e.status}{hint}"
            self.upstream.down(why)
            return Refused(503, why), 0

    async def _ask(self, token: str) -> Caller:
        spec: dict[str, Any] = {"token": token}
        if self.audiences:
            spec["audiences"] = list(self.audiences)
        review = await self.upstream.post_json(
            "tokenreview",
            f"{self.access.server}/apis/authentication.k8s.io/v1/tokenreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
        )
        status = review.get("status") if isinstance(review, dict) else None
        if not isinstance(status, dict) or status.get("authenticated") is not True:
            why = str((status or {}).get("error") or "not authenticated")[:200] if isinstance(status, dict) else ""
            raise Refused(401, f"TokenReview: {why or 'no status'}")
        if self.audiences and not set(self.audiences) & set(status.get("audiences") or ()):
            raise Refused(401, "TokenReview: the token is not for this audience")
        user = status.get("user") or {}
        username = user.get("username")
        groups = user.get("groups") or []
        if not isinstance(username, str) or not username or not isinstance(groups, list):
            raise Refused(401, "TokenReview: no user name")
        groups = [g for g in groups if isinstance(g, str)][:MAX_GROUPS]
        extra = user.get("extra") if isinstance(user.get("extra"), dict) else None
        sar_spec: dict[str, Any] = {
            "user": username,
            "groups": groups,
            "resourceAttributes": {
                "namespace": self.namespace,
                "verb": "get",
                "group": "serving.kserve.io",
                "resource": "inferenceservices",
                "name": self.name,
            },
        }
        if isinstance(user.get("uid"), str):
            sar_spec["uid"] = user["uid"]
        if extra:
            sar_spec["extra"] = extra
        answer = await self.upstream.post_json(
            "subjectaccessreview",
            f"{self.access.server}/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": sar_spec},
        )
        decision = answer.get("status") if isinstance(answer, dict) else None
        if not isinstance(decision, dict) or decision.get("allowed") is not True:
            why = str(decision.get("reason") or "")[:200] if isinstance(decision, dict) else ""
            denied = f"{username} may not get inferenceservices/{self.name} in {self.namespace}"
            raise Refused(403, f"{denied}: {why}" if why else denied)
        return Caller(username, "kubernetes", tuple(groups))


def access_from(kubeconfig: str, host: str, port: int, account_dir: str) -> KubeAccess:
    """KUBECONFIG when set, else the pod's ServiceAccount; KubeConfigError when there is neither."""
    if kubeconfig:
        return KubeAccess.from_kubeconfig(kubeconfig)
    if host:
        return KubeAccess.in_cluster(host, port, account_dir)
    raise KubeConfigError(
        "the predictor has no Kubernetes credentials: run it in a pod (KUBERNETES_SERVICE_HOST and a ServiceAccount"
        " token) or set KUBECONFIG"
    )
