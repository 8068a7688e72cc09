"""The oidc mode with a real issuer: the kube-apiserver of the test control plane (`--service-account-issuer`),
whose discovery document and JWKS the predictor reads with its own ServiceAccount's credentials (Kubernetes
grants `system:service-account-issuer-discovery` to every ServiceAccount; unauthenticated callers are refused,
tested below). Tokens come from the TokenRequest API (`kubectl create token`). The hostile ones are made the way
an attacker (or a careless issuer) would: alg none, HS256 keyed with the issuer's public key, a payload edited
under a real signature, and tokens signed with the issuer's real key (read from the plane's PKI folder) but
expired, not yet valid, or naming another issuer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custom_predictor.auth import Caller, Refused
from tests.auth.conftest import HOSTILE_HEADERS, Cluster
from tests.controlplane.proxy import FaultProxy

AUDIENCE = "risk-model"
JWKS = "/openid/v1/jwks"
DISCOVERY = "/.well-known/openid-configuration"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    h, p, s = token.split(".")
    pad = lambda x: x + "=" * (-len(x) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(h))), json.loads(base64.urlsafe_b64decode(pad(p))), s


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def oidc(build: Any, cluster: Cluster, tmp_path: Path, server: str | None = None, **kw: Any) -> Any:
    """A gate trusting the plane's API server as issuer, reading it with the predictor's own token."""
    kw.setdefault("auth_oidc_kubernetes_credentials", True)
    kw.setdefault("auth_oidc_ca_file", str(cluster.plane.ca))
    kw.setdefault("auth_modes", "oidc")
    return build(
        auth_oidc_issuer=cluster.plane.url,
        auth_oidc_audience=AUDIENCE,
        kubeconfig=cluster.predictor_kubeconfig(tmp_path, server),
        **kw,
    )


@pytest.fixture
def issuer(cluster: Cluster) -> dict[str, Any]:
    """What a holder of the issuer's signing key can sign with: the key, its kid (as the API server names it),
    and claims a real token carries."""
    cluster.account("caller")
    real = cluster.token("caller", [AUDIENCE])
    header, claims, _ = parts(real)
    key = serialization.load_pem_private_key(cluster.plane.sa.key.read_bytes(), None)
    return {"token": real, "kid": header["kid"], "claims": claims, "key": key}


def sign(issuer: dict[str, Any], **changes: Any) -> str:
    claims = {**issuer["claims"], **changes}
    return jwt.encode(claims, issuer["key"], "RS256", headers={"kid": issuer["kid"]})


def test_a_token_of_the_issuer_is_the_caller(build: Any, cluster: Cluster, tmp_path: Path, issuer: Any) -> None:
    b = oidc(build, cluster, tmp_path)
    expected = Caller(f"system:serviceaccount:{cluster.ns}:caller", "oidc")
    assert b.check(bearer(issuer["token"])) == expected
    assert b.check(bearer(issuer["token"])) == expected  # kept: no second verification
    assert b.metric("predictor_auth_oidc_keys") >= 1
    assert b.metric("predictor_auth_upstream_up", upstream="oidc") == 1
    assert b.metric("predictor_auth_checks_total", method="oidc", outcome="allowed") == 2
    assert b.metric("predictor_auth_upstream_requests_total", upstream="oidc", kind="jwks", outcome="ok") == 1


def now() -> int:
    return int(time.time())


HOSTILE_TOKENS = {
    "alg none": lambda i: unsigned({"alg": "none", "typ": "JWT", "kid": i["kid"]}, i["claims"]),
    "alg None, signature kept": lambda i: unsigned(
        {"alg": "None", "kid": i["kid"]}, i["claims"], base64.urlsafe_b64decode(i["token"].split(".")[2] + "==")
    ),
    "HS256 keyed with the issuer's public key (PEM)": lambda i: hs256(i, "pem"),
    "HS256 keyed with the issuer's public key (DER)": lambda i: hs256(i, "der"),
    "payload edited under a real signature": lambda i: tampered(i),
    "expired": lambda i: sign(i, iat=now() - 7200, nbf=now() - 7200, exp=now() - 3600),
    "not yet valid": lambda i: sign(i, iat=now(), nbf=now() + 3600, exp=now() + 7200),
    "issued in the future": lambda i: sign(i, iat=now() + 3600, nbf=now() - 10, exp=now() + 7200),
    "without exp": lambda i: jwt.encode(
        {k: v for k, v in i["claims"].items() if k != "exp"}, i["key"], "RS256", headers={"kid": i["kid"]}
    ),
    "another issuer": lambda i: sign(i, iss="https://evil.example.org"),
    "another audience (signed)": lambda i: sign(i, aud=["other"]),
    "unknown kid": lambda i: jwt.encode(
        i["claims"], rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", headers={"kid": "x1"}
    ),
    "the issuer's kid, another key": lambda i: jwt.encode(
        i["claims"], rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", headers={"kid": i["kid"]}
    ),
    "ES256 under the issuer's RSA kid": lambda i: jwt.encode(
        i["claims"], ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": i["kid"]}
    ),
    "RS512 with the issuer's key": lambda i: jwt.encode(i["claims"], i["key"], "RS512", headers={"kid": i["kid"]}),
    "kid path traversal": lambda i: jwt.encode(i["claims"], i["key"], "RS256", headers={"kid": "../../../etc/passwd"}),
    "no kid": lambda i: jwt.encode(
        i["claims"], rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"
    ),
    "claims not an object": lambda i: unsigned({"alg": "RS256", "kid": i["kid"]}, [1, 2], b"x"),  # type: ignore[arg-type]
}


REASONS = {
    "alg none": "alg 'none' is not accepted",
    "alg None, signature kept": "alg 'None' is not accepted",
    "HS256 keyed with the issuer's public key (PEM)": "alg 'HS256' is not accepted",
    "HS256 keyed with the issuer's public key (DER)": "alg 'HS256' is not accepted",
    "payload edited under a real signature": "signature does not verify",
    "expired": "expired",
    "not yet valid": "not valid yet",
    "issued in the future": "not valid yet",
    "without exp": "MissingRequiredClaimError",
    "another issuer": "another issuer",
    "another audience (signed)": "another audience",
    "unknown kid": "a key the issuer does not list",
    "the issuer's kid, another key": "signature does not verify",
    "ES256 under the issuer's RSA kid": "alg ES256 does not match its key's RS256",
    "RS512 with the issuer's key": "alg 'RS512' is not accepted",
    "kid path traversal": "a key the issuer does not list",
    "no kid": "signature does not verify",
    "claims not an object": "signature does not verify",
}


def hs256(i: dict[str, Any], form: str) -> str:
    public = i["key"].public_key()
    secret = (
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        if form == "pem"
        else public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": i["kid"]}).encode())
    body = b64(json.dumps(i["claims"]).encode())
    return f"{head}.{body}.{b64(hmac.new(secret, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"


def tampered(i: dict[str, Any]) -> str:
    head, _, signature = i["token"].split(".")
    claims = {**i["claims"], "sub": "system:serviceaccount:kube-system:admin"}
    return f"{head}.{b64(json.dumps(claims).encode())}.{signature}"


def test_the_crafted_signatures_are_right(issuer: Any) -> None:
    """The hostile tokens fail for the reason named, not by accident: a token signed with the issuer's key and
    its kid verifies with PyJWT directly against that key (the control for the signed cases)."""
    control = sign(issuer)
    public = issuer["key"].public_key()
    assert jwt.decode(control, public, ["RS256"], audience=AUDIENCE)["sub"] == issuer["claims"]["sub"]
    assert parts(control)[0]["kid"] == issuer["kid"]


@pytest.mark.parametrize("case", list(HOSTILE_TOKENS))
def test_hostile_tokens_are_401(build: Any, cluster: Cluster, tmp_path: Path, issuer: Any, case: str) -> None:
    b = oidc(build, cluster, tmp_path)
    assert b.check(bearer(issuer["token"])).method == "oidc"  # the keys are read and the real token passes
    token = HOSTILE_TOKENS[case](issuer)
    refused = b.refused(bearer(token))
    assert refused.status == 401 and REASONS[case] in refused.reason, refused.reason  # refused for that reason
    assert all(part not in refused.reason for part in token.split(".") if part)  # no piece of the token


def test_a_token_for_another_audience_is_401(build: Any, cluster: Cluster, tmp_path: Path) -> None:
    cluster.account("elsewhere")
    b = oidc(build, cluster, tmp_path)
    refused = b.refused(bearer(cluster.token("elsewhere", ["another-model"])))
    assert refused.status == 401 and "audience" in refused.reason
    assert b.refused(bearer(cluster.token("elsewhere"))).status == 401  # the API server's own audience


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_hostile_headers_are_401(build: Any, cluster: Cluster, tmp_path: Path, case: str) -> None:
    b = oidc(build, cluster, tmp_path)
    assert b.refused(HOSTILE_HEADERS[case]).status == 401


def test_unknown_kids_refetch_the_keys_at_most_once_per_interval(
    build: Any, cluster: Cluster, tmp_path: Path, issuer: Any
) -> None:
    b = oidc(build, cluster, tmp_path, auth_oidc_jwks_min_interval_seconds=10)
    assert b.check(bearer(issuer["token"])).method == "oidc"
    fetches = lambda: b.metric("predictor_auth_upstream_requests_total", upstream="oidc", kind="jwks", outcome="ok")  # noqa: E731
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = [jwt.encode(issuer["claims"], stranger, "RS256", headers={"kid": f"k{n}"}) for n in range(5)]
    b.clock.advance(10)
    for token in forged:
        assert b.refused(bearer(token)).status == 401
    assert fetches() == 2  # the first read, and one for the five unknown kids
    b.clock.advance(10)
    assert b.refused(bearer(forged[0])).status == 401
    assert fetches() == 3


def test_the_allow_list_applies_to_oidc_callers(build: Any, cluster: Cluster, tmp_path: Path, issuer: Any) -> None:
    cluster.account("batch")
    b = oidc(build, cluster, tmp_path, auth_allow=f"serviceaccount:{cluster.ns}/caller")
    assert b.check(bearer(issuer["token"])).subject.endswith(":caller")
    refused = b.refused(bearer(cluster.token("batch", [AUDIENCE])))
    assert refused.status == 403 and "allow-list" in refused.reason


def test_discovery_needs_credentials_the_predictor_has(
    build: Any, cluster: Cluster, tmp_path: Path, issuer: Any
) -> None:
    """The API server refuses discovery to unauthenticated callers (system:service-account-issuer-discovery is
    bound to system:serviceaccounts): without its own credentials the predictor fails closed with 503."""
    b = build(
        auth_modes="oidc",
        auth_oidc_issuer=cluster.plane.url,
        auth_oidc_audience=AUDIENCE,
        auth_oidc_ca_file=str(cluster.plane.ca),
    )
    refused = b.refused(bearer(issuer["token"]))
    assert refused.status == 503 and "keys not read" in refused.reason
    assert b.metric("predictor_auth_upstream_up", upstream="oidc") == 0


def test_an_unreachable_issuer_fails_closed_and_known_keys_keep_verifying(
    build: Any, cluster: Cluster, kube_proxy: FaultProxy, tmp_path: Path, issuer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    b = oidc(build, cluster, tmp_path, server=kube_proxy.url, auth_oidc_ca_file="", auth_timeout_seconds=1)
    assert b.check(bearer(issuer["token"])).method == "oidc"
    kube_proxy.drop("*", JWKS, times=None)
    kube_proxy.drop("*", DISCOVERY, times=None)
    fresh = cluster.token("caller", [AUDIENCE])
    assert b.check(bearer(fresh)).subject.endswith(":caller")  # the keys read before still verify
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unknown = jwt.encode(issuer["claims"], stranger, "RS256", headers={"kid": "rotated-in"})
    b.clock.advance(10)
    refused = b.refused(bearer(unknown))
    assert refused.status == 503 and "unreachable" in refused.reason
    assert b.metric("predictor_auth_upstream_up", upstream="oidc") == 0
    assert "oidc unreachable" in caplog.text
    for secret in (issuer["token"], fresh, unknown):
        assert secret not in caplog.text


@pytest.mark.parametrize("where", ["connection refused", "no answer"])
def test_an_issuer_never_reached_fails_closed(build: Any, tmp_path: Path, where: str) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        if where == "no answer":
            silent.listen(8)  # accepts the connection in the kernel, never answers the TLS handshake
        port = silent.getsockname()[1]
        b = build(
            auth_modes="oidc",
            auth_oidc_issuer=f"https://127.0.0.1:{port}",
            auth_oidc_audience=AUDIENCE,
            auth_timeout_seconds=0.5,
        )
        token = jwt.encode(
            {"iss": f"https://127.0.0.1:{port}", "aud": AUDIENCE, "sub": "x", "exp": now() + 60},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "RS256",
            headers={"kid": "k"},
        )
        assert b.refused(bearer(token)).status == 503
        assert b.metric("predictor_auth_upstream_up", upstream="oidc") == 0
        assert b.metric("predictor_auth_checks_total", method="oidc", outcome="unavailable") == 1


def test_oidc_and_kubernetes_together_route_by_issuer(
    build: Any, cluster: Cluster, kube_proxy: FaultProxy, tmp_path: Path, issuer: Any
) -> None:
    """A JWT naming the OIDC issuer is verified locally (and only there); any other bearer token goes to a
    TokenReview. (Here the issuer is the API server itself, so its tokens all take the OIDC path.)"""
    b = oidc(
        build,
        cluster,
        tmp_path,
        server=kube_proxy.url,
        auth_oidc_ca_file="",
        auth_modes="oidc,kubernetes",
        inferenceservice_namespace=cluster.ns,
        inferenceservice_name=cluster.isvc,
    )
    assert b.gate.mode == "kubernetes+oidc"
    kube_proxy.reset_log()
    assert b.check(bearer(issuer["token"])).method == "oidc"
    assert b.refused(bearer(cluster.token("caller"))).status == 401  # the issuer's, for the API server's audience
    assert kube_proxy.count("POST", "/tokenreviews") == 0
    refused = b.refused(bearer("opaque-token-of-another-authenticator"))
    assert refused.status == 401 and "TokenReview" in refused.reason
    assert kube_proxy.count("POST", "/tokenreviews") == 1


def test_es256_issuers_and_keys_without_kid_are_understood() -> None:
    """Entra ID, Okta and Keycloak sign RS256; Keycloak can sign ES256, older IdPs omit the kid. The JWKS parser
    keeps exactly the RS256 and P-256 signing keys and nothing else."""
    from custom_predictor.auth.oidc import parse_jwks

    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec1", "use": "sig"},
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))},
            {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "enc", "use": "enc"},
            {"kty": "oct", "k": b64(b"secret"), "kid": "hmac"},
            {
                **json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key())),
                "kid": "p384",
            },
        ]
    }
    keys = parse_jwks(jwks)
    assert {k: v.algorithm_name for k, v in keys.items()} == {"ec1": "ES256", "#1": "RS256"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def test_fuzzed_tokens_under_the_issuers_kid_are_refused_by_a_check_never_by_accident(
    build: Any, cluster: Cluster, tmp_path: Path, issuer: Any
) -> None:
    """Random JOSE headers and claims (any JSON, mixed with the real ones) and random signatures: every one ends
    in a 401 with a named reason; none reaches the gate's last-resort handler for unexpected errors."""
    b = oidc(build, cluster, tmp_path)
    assert b.check(bearer(issuer["token"])).method == "oidc"
    headers = st.fixed_dictionaries(
        {"alg": st.sampled_from(["RS256", "ES256", "none", "HS256"]) | json_values, "kid": st.just(issuer["kid"])},
        optional={"typ": json_values, "crit": json_values, "b64": json_values, "jku": json_values},
    )
    claims = (
        st.fixed_dictionaries(
            {},
            optional={k: json_values | st.just(v) for k, v in issuer["claims"].items()},
        )
        | json_values
    )

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(header=headers | json_values, body=claims, signature=st.binary(max_size=300))
    def check(header: Any, body: Any, signature: bytes) -> None:
        token = unsigned(header, body, signature)
        try:
            caller = b.check(bearer(token))
        except Refused as r:
            assert r.status == 401 and not r.reason.startswith("unexpected"), r.reason
        else:
            raise AssertionError(f"accepted a forged token as {caller}")

    check()


def test_an_unusable_ca_file_stops_the_predictor_before_serving(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from custom_predictor.auth import AuthConfigError, Gate
    from tests.auth.conftest import settings as predictor_settings

    (tmp_path / "ca.crt").write_text("not a certificate")
    for path in (tmp_path / "ca.crt", tmp_path / "missing.crt"):
        s = predictor_settings(
            auth_modes="oidc",
            auth_oidc_issuer="https://idp.example.org",
            auth_oidc_audience=AUDIENCE,
            auth_oidc_ca_file=str(path),
        )
        with pytest.raises(AuthConfigError, match="AUTH_OIDC_CA_FILE"):
            Gate.from_settings(s, CollectorRegistry())
