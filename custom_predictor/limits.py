"""Bounded work in flight: the bodies being decoded and predicted at once never need more memory than a budget.

Each data route reads its body through `Budget.admit`, which reserves the memory the body will cost before a byte
of it is read: its size (Content-Length, or the body cap when the length is not given) times its protocol's
`AMPLIFICATION` (the measured peak of a decode, a body shaped to hurt included). A reservation that does not fit
waits up to `wait_seconds` for others to end, then is refused 503 with `Retry-After`, in the route's protocol; one
larger than the whole budget is refused 413 with the largest body the budget takes. Probes read no body and are
never held. The reservation is returned when the call ends (`calls.Calls`).
The budget is a share of the container's memory limit (its cgroup), what the pod is killed at.
Neighbours: `dataplane` reads bodies through it; `calls` releases it; `settings` sizes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from custom_predictor.errors import PredictorError

AMPLIFICATION = {"json": 24, "csv": 48, "binary": 3}
"""Peak memory of decoding a body of each kind, per byte of body, at worst (docs/predictor.md has the
measurements): JSON through orjson and pydantic (empty arrays and objects cost the most), CSV through Python's csv
reader (a short string per cell), the V2 binary tensor extension (the bytes, one array, one column copy)."""


def container_memory() -> int | None:
    """The memory limit of this process's cgroup (v2, or v1's memory controller), or None when there is none."""
    candidates = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, where = line.split(":", 2)
            if controllers == "":
                candidates.append(Path("/sys/fs/cgroup", where.lstrip("/"), "memory.max"))
            elif "memory" in controllers.split(","):
                candidates.append(Path("/sys/fs/cgroup/memory", where.lstrip("/"), "memory.limit_in_bytes"))
    for path in candidates:
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip()
            if text != "max" and int(text) < 2**60:
                return int(text)
    return None


def physical_memory() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


class Budget:
    """Bytes of memory the bodies in flight may cost together."""

    def __init__(self, total: int, wait_seconds: float) -> None:
        self.total, self.wait_seconds = total, wait_seconds
        self.used = 0
        self._waiting = 0  # requests waiting for room
        self._freed: asyncio.Condition | None = None

    def largest_body(self, kind: str) -> int:
        return self.total // AMPLIFICATION[kind]

    async def reserve(self, size: int, kind: str) -> int:
        """Reserve what a body of `size` bytes of `kind` costs; the bytes reserved (give them to `release`)."""
        cost = size * AMPLIFICATION[kind]
        if cost > self.total:
            raise PredictorError(
                413,
                "too_large",
                f"the request body is larger than this predictor's memory allows ({self.largest_body(kind)} bytes"
                f" for a {kind} body)",
            )
        if not self._waiting and self.used + cost <= self.total:
            self.used += cost  # it fits and nobody waits: no lock, no timer (the loop runs one task at a time)
            return cost
        if self._freed is None:
            self._freed = asyncio.Condition()
        self._waiting += 1
        try:
            async with self._freed:
                try:
                    async with asyncio.timeout(self.wait_seconds):
                        await self._freed.wait_for(lambda: self.used + cost <= self.total)
                except TimeoutError:
                    raise PredictorError(
                        503,
                        "busy",
                        "the predictor is busy with other large requests: retry",
                        headers={"Retry-After": "1"},
                    ) from None
                self.used += cost
        finally:
            self._waiting -= 1
        return cost

    async def release(self, cost: int) -> None:
        if not cost:
            return
        self.used -= cost
        if self._waiting and self._freed is not None:
            async with self._freed:
                self._freed.notify_all()
