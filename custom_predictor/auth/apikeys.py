"""API keys for scripts and notebooks: made by `keygen`, kept hashed in a file, checked in constant time.

A key is `sbk_<id>_<43 random characters>` (32 random bytes, base64url); its id names the caller
(`Caller("apikey:<id>", "apikey")`) and is not secret. The keys file holds one line per key,
`<id> sha256:<hex of SHA-256 of the whole key>` (`#` comments and blank lines allowed; an id may have several
keys, for rotation with overlap). A fast hash is the right one here: the keys are 256-bit random, not passwords.

On a cluster the file is a key of a Kubernetes Secret mounted into the predictor (the InferenceService only
references it); kubelet swaps the mounted file when the Secret is edited, and `KeyFile` re-reads it when its
identity (inode, size, mtime) changes, checked at most once a second: rotation needs no redeploy. A file that is
missing holds no keys (a Secret not created yet); one that cannot be parsed fails closed (503 for API-key
callers) until it is fixed, and the log says which line and rule, never a line's content.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from custom_predictor.auth.caller import Caller, Refused

log = logging.getLogger("custom_predictor.auth")
PREFIX = "sbk_"
KEY_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_KEY = re.compile(r"sbk_(?P<id>[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)_[A-Za-z0-9_-]{43}")
_ENTRY = re.compile(r"(?P<id>\S+)\s+sha256:(?P<hex>[0-9a-f]{64})")
_DUMMY = hashlib.sha256(b"no key has this id").digest()
STAT_EVERY = 1.0  # seconds between looks at the file


class KeyFileError(ValueError):
    """The keys file does not follow the format; says which line and why (never the line's content)."""


def generate(key_id: str) -> tuple[str, str]:
    """(a new key, its line for the keys file)."""
    if not KEY_ID.fullmatch(key_id):
        raise ValueError("a key id is 1 to 63 lowercase letters, digits and '-', starting and ending alphanumeric")
    key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    return key, entry(key_id, key)


def entry(key_id: str, key: str) -> str:
    return f"{key_id} sha256:{hashlib.sha256(key.encode('ascii')).hexdigest()}"


def looks_like_key(credential: str) -> bool:
    return credential.startswith(PREFIX)


def parse(text: str) -> dict[str, list[bytes]]:
    """{key id: [SHA-256 digests]}; KeyFileError names the first bad line."""
    keys: dict[str, list[bytes]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = _ENTRY.fullmatch(line)
        if not m:
            raise KeyFileError(f"line {number}: expected `<id> sha256:<64 lowercase hex digits>`")
        if not KEY_ID.fullmatch(m["id"]):
            raise KeyFileError(f"line {number}: the id is lowercase letters, digits and '-'")
        keys.setdefault(m["id"], []).append(bytes.fromhex(m["hex"]))
    return keys


class KeyFile:
    def __init__(self, path: str, clock: Callable[[], float], on_load: Callable[[int, bool], None]) -> None:
        self.path = Path(path)
        self.clock = clock
        self.on_load = on_load  # (number of keys, file usable) for the metrics
        self._identity: tuple[int, int, int] | None = None
        self._keys: dict[str, list[bytes]] = {}
        self._error: str | None = None
        self._looked = -STAT_EVERY
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed since the last look."""
        self._looked = self.clock()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            identity = None
        except OSError as e:
            self._fail(f"cannot read it ({type(e).__name__})", (-1, -1, -1))
            return
        else:
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
        if identity == self._identity and self._identity is not None:
            return
        if identity is None:
            if self._identity is not None or self._error is None:
                log.warning("auth: no API keys file at %s (yet): every API key is refused", self.path)
            self._identity, self._keys, self._error = None, {}, "missing"
            self.on_load(0, True)
            return
        try:
            keys = parse(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, KeyFileError) as e:
            self._fail(str(e) if isinstance(e, KeyFileError) else f"cannot read it ({type(e).__name__})", identity)
            return
        self._identity, self._keys, self._error = identity, keys, None
        self.on_load(sum(map(len, keys.values())), True)
        log.info("auth: loaded %d API keys of %d ids from %s", sum(map(len, keys.values())), len(keys), self.path)

    def _fail(self, why: str, identity: tuple[int, int, int]) -> None:
        log.error(
            "auth: API keys file %s unusable, API keys are refused with 503 until it is fixed: %s", self.path, why
        )
        self._identity, self._keys, self._error = identity, {}, why
        self.on_load(0, False)

    def check(self, key: str) -> Caller:
        if self.clock() - self._looked >= STAT_EVERY:
            self.refresh()
        if self._error not in (None, "missing"):
            raise Refused(503, f"API keys file unusable: {self._error}")
        m = _KEY.fullmatch(key)
        if not m:
            raise Refused(401, "malformed API key")
        digest = hashlib.sha256(key.encode("ascii")).digest()
        ok = False
        for stored in self._keys.get(m["id"]) or (_DUMMY,):
            ok |= hmac.compare_digest(digest, stored)
        if not ok:
            raise Refused(401, f"unknown API key for id {m['id']}")
        return Caller(f"apikey:{m['id']}", "apikey")
