"""The adapter's own exceptions: what the MLflow and Kubernetes wrappers raise instead of SDK errors.

Two kinds of failure drive the reconciler (kopf's split): `TransientError` is retried with backoff,
`PermanentError` is reported (deployment.status=failed) and not retried until the input changes.
"""

from __future__ import annotations


class AdapterError(Exception):
    """Base of every error the adapter raises on purpose."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class TransientError(AdapterError):
    """Worth retrying: 5xx, 429, 409 conflicts, timeouts, dropped connections, a server that is down."""


class ExpiredError(TransientError):
    """A watch's resource version is too old (410 Gone): list again, then watch from the list's version."""


class PermanentError(AdapterError):
    """Not worth retrying until the input changes: 4xx other than 404/409/429, invalid registry data."""


class NotFoundError(PermanentError):
    """The object does not exist."""
