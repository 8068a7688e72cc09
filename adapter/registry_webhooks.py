"""Registers the adapter's webhook in MLflow (`service-builder webhook register --url URL`).

`ensure_webhook` is create-or-update by name and says `created | updated | unchanged`. MLflow never
returns a webhook's secret, so the description carries a salted PBKDF2 fingerprint of it: enough
to tell whether the stored secret is the one configured, useless for recovering a random secret.
The receiver side lives in `adapter.webhooks`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from adapter.errors import PermanentError, TransientError
from adapter.webhooks import EVENTS

if TYPE_CHECKING:
    import mlflow

log = logging.getLogger(__name__)

_FINGERPRINT_PREFIX = "secret fingerprint "
_ITERATIONS = 200_000


def secret_fingerprint(secret: str, salt: bytes | None = None, iterations: int = _ITERATIONS) -> str:
    """`pbkdf2-sha256$<iterations>$<salt>$<digest>` of `secret`; a fresh random salt unless given."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations, dklen=16)
    return f"pbkdf2-sha256${iterations}${base64.b64encode(salt).decode()}${digest.hex()}"


def _matches(description: str | None, secret: str) -> bool:
    """True if `description` carries a fingerprint of `secret`."""
    _, found, fingerprint = (description or "").partition(_FINGERPRINT_PREFIX)
    try:
        scheme, iterations, salt, digest = fingerprint.strip().split("$")
        if scheme != "pbkdf2-sha256" or not 1 <= int(iterations) <= 10_000_000:
            return False
        expected = secret_fingerprint(secret, base64.b64decode(salt, validate=True), int(iterations))
    except ValueError:
        return False
    return bool(found) and hmac.compare_digest(expected.rsplit("$", 1)[1], digest)


def _description(secret: str) -> str:
    return f"Managed by service-builder; {_FINGERPRINT_PREFIX}{secret_fingerprint(secret)}"


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"webhook URL {url!r} must be http(s)://host[:port]/path")


def ensure_webhook(client: mlflow.MlflowClient, url: str, secret: str, name: str = "service-builder") -> str:
    """Make MLflow send `EVENTS` to `url`, signed with `secret`, as the webhook called `name`.

    Returns "created", "updated" or "unchanged". Extra webhooks with the same name (from a race
    of two registrations) are deleted, so events are not delivered twice.
    """
    from mlflow.exceptions import MlflowException

    _check_url(url)
    if not secret:
        raise PermanentError("MLFLOW_WEBHOOK_SECRET is empty: the receiver rejects unsigned deliveries")
    try:
        mine = sorted(
            (w for w in _all_webhooks(client) if w.name == name),
            key=lambda w: (w.creation_timestamp, w.webhook_id),
        )
        if not mine:
            created = client.create_webhook(
                name, url, events=_events(), description=_description(secret), secret=secret
            )
            log.info("Created MLflow webhook name=%s id=%s url=%s", name, created.webhook_id, url)
            return "created"
        keep, extra = mine[0], mine[1:]
        for w in extra:
            client.delete_webhook(w.webhook_id)
            log.info("Deleted duplicate MLflow webhook name=%s id=%s", name, w.webhook_id)
        same = (
            keep.url == url
            and {str(e) for e in keep.events} == set(EVENTS)
            and keep.status.is_active()
            and _matches(keep.description, secret)
        )
        if same and not extra:
            log.info("MLflow webhook unchanged name=%s id=%s url=%s", name, keep.webhook_id, url)
            return "unchanged"
        if not same:
            client.update_webhook(
                keep.webhook_id,
                url=url,
                events=_events(),
                description=_description(secret),
                secret=secret,
                status="ACTIVE",
            )
        log.info("Updated MLflow webhook name=%s id=%s url=%s", name, keep.webhook_id, url)
        return "updated"
    except MlflowException as e:
        raise _registry_error(e, url) from None


def _events() -> list[Any]:
    """`EVENTS` as the client takes them (its parameter is typed with a Literal of event names)."""
    return list(EVENTS)


def _all_webhooks(client: mlflow.MlflowClient) -> list:
    found: list = []
    token: str | None = None
    while True:
        page = client.list_webhooks(max_results=100, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _registry_error(e: Exception, url: str) -> Exception:
    """The adapter's error for an MLflow failure, with a hint for the usual misconfigurations."""
    status = getattr(e, "get_http_status_code", lambda: 500)()
    message = getattr(e, "message", str(e))
    if any(word in message.lower() for word in ("scheme", "non-public", "resolve")):
        message += (
            " (the MLflow server must allow this URL: MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https for"
            " plain http, MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true for in-cluster addresses)"
        )
    kind = TransientError if status >= 500 or status in (409, 429) else PermanentError
    return kind(f"registering webhook for {url}: {message}", status=status)
