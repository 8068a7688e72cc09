"""Who may call a model's predictor: the platform's auth defaults and limits, the owners' `serving.auth` and
`serving.auth.allow` tags, and what that renders on the InferenceService.

Pure. The platform (adapter settings) chooses the modes every model gets (PREDICTOR_AUTH; by default kubernetes on
a cluster, apikey with DEPLOY_TARGET=local), which modes a tag may choose (PREDICTOR_AUTH_MODES_ALLOWED), and
whether a model may serve anonymously at all (PREDICTOR_AUTH_ALLOW_ANONYMOUS, off). Owners refine per model:
`serving.auth` (a comma list of oidc, kubernetes, apikey; `none` only where anonymous models are allowed) and
`serving.auth.allow` (groups, subjects, ServiceAccounts, API key ids: the predictor's AUTH_ALLOW grammar,
custom_predictor/auth/allow.py, checked here again because the two deployables share no code).

`apply()` sets the predictor's AUTH_* env, mounts the model's API-key Secret (PREDICTOR_AUTH_API_KEYS_SECRET,
`{name}` the InferenceService's name; optional, so the model starts before the Secret exists and picks it up
when it is created) read-only, and runs the predictor as PREDICTOR_SERVICE_ACCOUNT when a mode needs the
Kubernetes API. Secrets are only referenced by name: the adapter never reads them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapter.settings import AdapterSettings

MODES = ("apikey", "kubernetes", "oidc")
KEYS_VOLUME = "api-keys"
KEYS_MOUNT = "/var/run/secrets/service-builder/api-keys"
KEYS_FILE = "keys"  # the key of the Secret holding the keys file
_ALLOW_KINDS = ("group", "user", "serviceaccount", "apikey")
_ALLOW_VALUE = re.compile(r"[^\s,\x00-\x1f\x7f]{1,253}")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_KEY_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
MAX_ALLOW = 256


def parse_modes(text: str, allowed: set[str], anonymous: bool) -> str:
    """`text` as the predictor's AUTH_MODES ("none" or sorted modes); ValueError says the rule."""
    words = {w.strip().lower() for w in text.split(",") if w.strip()}
    if words == {"none"}:
        if not anonymous:
            raise ValueError("none is not allowed: PREDICTOR_AUTH_ALLOW_ANONYMOUS is off on this platform")
        return "none"
    if not words or not words <= set(MODES):
        raise ValueError(f"must be a comma list of {', '.join(MODES)}, or none alone")
    refused = sorted(words - allowed)
    if refused:
        raise ValueError(f"{', '.join(refused)} is not offered here (allowed: {', '.join(sorted(allowed)) or 'none'})")
    return ",".join(sorted(words))


def parse_allow(text: str) -> str:
    """The allow-list, normalized (entries joined by ','); ValueError names the entry and the rule."""
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if len(entries) > MAX_ALLOW:
        raise ValueError(f"at most {MAX_ALLOW} entries")
    for entry in entries:
        kind, sep, value = entry.partition(":")
        shown = repr(entry[:80])
        if not sep or kind not in _ALLOW_KINDS or not _ALLOW_VALUE.fullmatch(value):
            raise ValueError(
                f"{shown}: each entry is group:<name>, user:<subject>, serviceaccount:<namespace>/<name or *>"
                " or apikey:<id>"
            )
        if kind == "apikey" and not _KEY_ID.fullmatch(value):
            raise ValueError(f"{shown}: an API key id is lowercase letters, digits and '-'")
        if kind == "serviceaccount":
            namespace, slash, name = value.partition("/")
            if not slash or not _DNS_LABEL.fullmatch(namespace) or not (name == "*" or _DNS_SUBDOMAIN.fullmatch(name)):
                raise ValueError(f"{shown}: serviceaccount:<namespace>/<name>, <name> may be *")
    return ",".join(entries)


def offered(settings: AdapterSettings) -> set[str]:
    """The modes a tag may choose: PREDICTOR_AUTH_MODES_ALLOWED, oidc only with an issuer."""
    allowed = {w.strip().lower() for w in settings.predictor_auth_modes_allowed.split(",") if w.strip()}
    if not settings.predictor_auth_oidc_issuer:
        allowed.discard("oidc")
    return allowed & set(MODES)


def default_modes(settings: AdapterSettings) -> str:
    """PREDICTOR_AUTH, or the target's default: kubernetes on a cluster, apikey for local predictors."""
    if settings.predictor_auth:
        return settings.predictor_auth
    return "apikey" if settings.deploy_target == "local" else "kubernetes"


def secret_name(settings: AdapterSettings, isvc: str) -> str:
    return settings.predictor_auth_api_keys_secret.replace("{name}", isvc)


def _set_env(env: list[dict[str, Any]], name: str, value: str) -> None:
    env[:] = [e for e in env if e.get("name") != name] + [{"name": name, "value": value}]


def apply(doc: dict[str, Any], settings: AdapterSettings, modes: str, allow: str, container_name: str) -> None:
    """Set the predictor's auth on a rendered InferenceService (values only, Secrets by name)."""
    s = settings
    predictor = doc["spec"]["predictor"]
    container = next(c for c in predictor["containers"] if c.get("name") == container_name)
    env = container.setdefault("env", [])
    on = set() if modes == "none" else set(modes.split(","))
    _set_env(env, "AUTH_MODES", modes)
    if allow:
        _set_env(env, "AUTH_ALLOW", allow)
    if not on:
        return
    _set_env(env, "AUTH_CACHE_SECONDS", f"{s.predictor_auth_cache_seconds:g}")
    _set_env(env, "AUTH_GUARD_DOCS", str(s.predictor_auth_guard_docs).lower())
    _set_env(env, "AUTH_GUARD_METRICS", str(s.predictor_auth_guard_metrics).lower())
    if "oidc" in on:
        _set_env(env, "AUTH_OIDC_ISSUER", s.predictor_auth_oidc_issuer)
        _set_env(env, "AUTH_OIDC_AUDIENCE", s.predictor_auth_oidc_audience)
        _set_env(env, "AUTH_OIDC_SUBJECT_CLAIM", s.predictor_auth_oidc_subject_claim)
        _set_env(env, "AUTH_OIDC_GROUPS_CLAIM", s.predictor_auth_oidc_groups_claim)
        if s.predictor_auth_oidc_ca_file:
            _set_env(env, "AUTH_OIDC_CA_FILE", s.predictor_auth_oidc_ca_file)
        if s.predictor_auth_oidc_kubernetes_credentials:
            _set_env(env, "AUTH_OIDC_KUBERNETES_CREDENTIALS", "true")
    if "kubernetes" in on and s.predictor_auth_kubernetes_audiences:
        _set_env(env, "AUTH_KUBERNETES_AUDIENCES", s.predictor_auth_kubernetes_audiences)
    if "kubernetes" in on or ("oidc" in on and s.predictor_auth_oidc_kubernetes_credentials):
        if s.predictor_service_account:
            predictor["serviceAccountName"] = s.predictor_service_account
    if "apikey" in on:
        local = s.predictor_auth_api_keys_file or (s.local_api_keys_file if s.deploy_target == "local" else "")
        if local:  # local predictors: a file of the platform's, no Secret
            _set_env(env, "AUTH_API_KEYS_FILE", local)
            return
        _set_env(env, "AUTH_API_KEYS_FILE", f"{KEYS_MOUNT}/{KEYS_FILE}")
        secret = {"secretName": secret_name(s, doc["metadata"]["name"]), "optional": True}
        volumes = predictor.setdefault("volumes", [])
        volumes[:] = [v for v in volumes if v.get("name") != KEYS_VOLUME] + [{"name": KEYS_VOLUME, "secret": secret}]
        mounts = container.setdefault("volumeMounts", [])
        mounts[:] = [m for m in mounts if m.get("name") != KEYS_VOLUME] + [
            {"name": KEYS_VOLUME, "mountPath": KEYS_MOUNT, "readOnly": True}
        ]
