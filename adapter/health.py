"""Liveness and readiness of `service-builder run`, as the HTTP server of `adapter.webhooks` reports them.

- `/healthz` (liveness): the run loop came round within `stall_after` seconds, and the leader-election thread,
  if any, is running. A pass that hangs beyond that gets the container restarted.
- `/readyz` (readiness): the loop has started, this replica knows its role (leader or standby), and it is not
  stopping. A standby is ready too: it answers webhooks (202, wakes nothing) and must not block a rolling update
  or a PodDisruptionBudget; only the leader reconciles.

The `run` loop (adapter.cli) calls `beat()` every round and `ready()`/`stopping()` at the edges. The clock is
injectable. Imports no client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Probes:
    def __init__(
        self,
        stall_after: float,
        *,
        leading: Callable[[], bool] = lambda: True,
        role_known: Callable[[], bool] = lambda: True,
        elector_alive: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stall_after = stall_after
        self.leading, self.role_known, self.elector_alive = leading, role_known, elector_alive
        self.clock = clock
        self._lock = threading.Lock()
        self._beat = clock()
        self._started = False
        self._stopping = False

    def beat(self) -> None:
        with self._lock:
            self._beat = self.clock()

    def started(self) -> None:
        with self._lock:
            self._started = True
            self._beat = self.clock()

    def stopping(self) -> None:
        with self._lock:
            self._stopping = True

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            idle = self.clock() - self._beat
        if idle > self.stall_after:
            return False, {"status": "stalled", "reason": f"the run loop has not come round for {idle:.0f}s"}
        if not self.elector_alive():
            return False, {"status": "stalled", "reason": "the leader-election thread has stopped"}
        return True, {"status": "ok"}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            started, stopping = self._started, self._stopping
        leader = bool(self.leading())
        if stopping:
            return False, {"status": "stopping", "leader": leader}
        if not started:
            return False, {"status": "starting", "leader": leader}
        if not self.role_known():
            return False, {"status": "starting", "leader": leader, "reason": "the Lease was not read yet"}
        return True, {"status": "ready", "leader": leader}
