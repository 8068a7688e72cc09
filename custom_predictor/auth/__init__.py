"""Who may call the predictor's data routes: `Gate.check(headers) -> Caller`, or `Refused` (401, 403, 503).

The request path puts one FastAPI dependency on every data router that awaits `gate.check(request.headers)` and
turns `Refused` into the protocol's error shape (docs/security.md). Modules:
- `caller`: `Caller`, `ANONYMOUS`, `Refused`, reading the credential off the headers (pure);
- `gate`: `Gate`, the modes combined, the allow-list applied, metrics, the OpenAPI security schemes;
- `apikeys`: API keys, hashed in a (mounted Secret) file, rotation by editing it; `keygen` (`__main__`);
- `oidc`: OpenID Connect issuers (discovery, JWKS, JWT verification);
- `kube`: the Kubernetes API server (TokenReview, SubjectAccessReview) and the predictor's own credentials;
- `allow`: the allow-list grammar; `cache`: verified credentials, kept briefly; `http`: the async HTTP client.
Settings: the `AUTH_*` fields of `custom_predictor.settings.Settings`.
"""

from custom_predictor.auth.caller import ANONYMOUS, AuthConfigError, Caller, Refused
from custom_predictor.auth.gate import Gate

__all__ = ["ANONYMOUS", "AuthConfigError", "Caller", "Gate", "Refused"]
