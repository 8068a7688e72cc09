"""A bounded cache of verified credentials with a time to live, that asks once per key however many ask at once.

Used by `oidc` (verified tokens) and `kube` (TokenReview + SubjectAccessReview answers), keyed by the SHA-256 of
the credential (the credential itself is never kept). `load(key, fetch)` runs `fetch` once for concurrent callers
of the same key (as a task of its own, so a caller that goes away does not cancel it for the others) and keeps
its outcome, a `Caller` or a `Refused` 401/403, until it expires; a 503 (the upstream could not be asked) is never
kept. The least recently used entry goes first when full. The clock is injectable.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from custom_predictor.auth.caller import Caller, Refused

Outcome = Caller | Refused
Fetch = Callable[[], Awaitable[tuple[Outcome, float]]]  # the outcome and how long it may be kept, seconds


def key_of(credential: str) -> bytes:
    return hashlib.sha256(credential.encode("ascii")).digest()


class TtlCache:
    def __init__(self, size: int, ttl: float, clock: Callable[[], float]) -> None:
        self.size, self.ttl, self.clock = size, ttl, clock
        self._entries: OrderedDict[bytes, tuple[float, Outcome]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Task[tuple[Outcome, float]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, key: bytes) -> Outcome | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: bytes, outcome: Outcome, keep: float) -> None:
        keep = min(keep, self.ttl)
        if keep <= 0:
            return
        self._entries[key] = (self.clock() + keep, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def load(self, key: bytes, fetch: Fetch) -> Caller:
        """The cached outcome of `key`, else `fetch`'s (once for all concurrent callers); raises a Refused."""
        outcome = self.get(key)
        if outcome is None:
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.ensure_future(fetch())
                self._inflight[key] = task
                task.add_done_callback(lambda t: self._settle(key, t))
            outcome, _ = await asyncio.shield(task)
        if isinstance(outcome, Refused):
            raise outcome.copy()
        assert outcome is not None
        return outcome

    def _settle(self, key: bytes, task: asyncio.Task[tuple[Outcome, float]]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        outcome, keep = task.result()
        if not (isinstance(outcome, Refused) and outcome.status >= 500):
            self.put(key, outcome, keep)
