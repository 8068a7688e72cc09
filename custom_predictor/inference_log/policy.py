"""The inference log's privacy policy: which calls keep bodies, sensitive values as keyed hashes, the size cap.

Pure and cheap, for the request path. `Policy.keep_bodies(request_id)` is deterministic per request id (the same
id is sampled the same way by every predictor sharing the key), `redact` replaces the values of sensitive columns
by `hmac-sha256:<hex>` (HMAC-SHA256 with the platform's key: equal values give equal hashes, so joins and counts
still work, and nobody without the key can test a guess), `cap` cuts a body at the size cap.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

log = logging.getLogger("custom_predictor.inference_log")
Mode = Literal["off", "metadata", "full"]
MODES: tuple[Mode, ...] = ("off", "metadata", "full")
HASH_PREFIX = "hmac-sha256:"
_SCALE = float(2**64)


class Policy:
    """Mode (`off`, `metadata`, `full`), body sampling, redaction key and body cap of one predictor."""

    def __init__(self, mode: Mode, sample: float, key: bytes, max_body_chars: int) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not 0.0 <= sample <= 1.0:
            raise ValueError(f"sample must be between 0 and 1, not {sample}")
        if not key and mode == "full":
            # Without the platform's key the values are still hidden, but hashes differ between processes.
            log.warning(
                "INFERENCE_LOG_HASH_KEY is not set: sensitive values are hashed with a key of this process only,"
                " so their hashes cannot be joined across predictors or restarts"
            )
        self.mode: Mode = mode
        self.sample = sample
        self.max_body_chars = max_body_chars
        self._key = key or secrets.token_bytes(32)
        # From the configured key only: without one, sampling is still the same in every process.
        self._sample_key = hashlib.sha256(b"inference-log sampling\x00" + key).digest()
        # Sampling below this 64-bit threshold keeps bodies; sample 1.0 keeps every call.
        self._threshold = int(sample * _SCALE)

    @property
    def sampling_fraction(self) -> float:
        """The share of calls whose bodies are kept: the sample under `full`, else 0."""
        return self.sample if self.mode == "full" else 0.0

    def keep_bodies(self, request_id: str) -> bool:
        """Whether this call's bodies are logged: `full`, and the request id falls in the sample.

        Keyed, so a client choosing its own X-Request-Id cannot choose to be left out of (or put into) the sample."""
        if self.mode != "full" or self._threshold == 0:
            return False
        if self.sample >= 1.0:
            return True
        digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8, key=self._sample_key)
        return int.from_bytes(digest.digest(), "big") < self._threshold

    def hash_value(self, value: Any) -> str | None:
        """`hmac-sha256:<hex>` of a value's JSON form (None stays None: absence is not a value)."""
        if value is None:
            return None
        try:
            text = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        except TypeError:  # what JSON cannot hold (an integer beyond 64 bits, an object): its text
            text = str(value).encode("utf-8", "surrogatepass")
        return HASH_PREFIX + hmac.new(self._key, text, hashlib.sha256).hexdigest()

    def redact(self, columns: Mapping[str, Sequence[Any]], sensitive: set[str]) -> dict[str, list[Any]]:
        """The columns as lists (numpy arrays as Python values), sensitive ones replaced by their keyed hashes."""
        out: dict[str, list[Any]] = {}
        for name, values in columns.items():
            as_list = values.tolist() if hasattr(values, "tolist") else list(values)
            out[name] = [self.hash_value(v) for v in as_list] if name in sensitive else as_list
        return out

    def cap(self, body: str | None) -> tuple[str | None, bool]:
        """The body cut at the cap (characters), and whether it was cut."""
        if body is None or len(body) <= self.max_body_chars:
            return body, False
        return body[: self.max_body_chars], True
