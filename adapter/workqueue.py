"""The reconcile queue of `service-builder run`: model names to reconcile, from every source, and full passes.

Who requests: the MLflow webhook receiver (`adapter.webhooks`), the watch on owned InferenceServices
(`adapter.watch`), the local target's predictor supervisor (`adapter.local`), and the run loop itself
(`adapter.manager`: a rollout's deadline, a transient failure's backoff). Who takes: the run loop, which
reconciles what `wait()` returns with the one level-triggered reconcile (`Reconciler.run_pass`).

Many requests, few reconciles (controller-runtime's workqueue, in small):
- deduplicated: a model already pending is not queued twice; the reconcile it gets reads the latest state;
- settled: a model requested for the first time is due `settle` seconds later, so events that come together
  (an alias and a tag set by one script, the several status updates of one rollout) make one reconcile;
- rate-limited per model, by a token bucket: up to `burst` reconciles at once (a rollout's apply and KServe's
  first status writes each get theirs at once), then one per `cooldown` seconds; requests in between are held
  (never dropped) and answered by one more reconcile when a token is back. Other models are not held back by
  one model's rate;
- delayed: `request(name, after=s)` makes it due no sooner than `s` seconds from now (a deadline, a backoff);
  an earlier request wins, since every reconcile asks again for what it still waits for;
- `resync()` asks for a full pass (after a watch's relist, a new leader's first list).

Thread-safe; the clock is injectable. Imports no client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SETTLE_SECONDS = 0.1
COOLDOWN_SECONDS = 1.0
BURST = 3
BATCH_SECONDS = 0.01


@dataclass(frozen=True)
class Work:
    """What `wait()` hands out: model names now due, whether a full pass was asked for, and why (for the log)."""

    names: frozenset[str] = field(default_factory=frozenset)
    resync: bool = False
    reasons: frozenset[str] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return self.resync or bool(self.names)


class WorkQueue:
    def __init__(
        self,
        settle: float = SETTLE_SECONDS,
        cooldown: float = COOLDOWN_SECONDS,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settle = settle
        self._cooldown = cooldown
        self._burst = burst
        self._clock = clock
        self._cond = threading.Condition()
        self._due: dict[str, float] = {}  # pending name -> clock time it may be returned
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, when counted); absent: full
        self._why: dict[str, set[str]] = {}  # pending name -> who asked
        self._resync = False
        self._closed = False

    def _tokens(self, name: str, now: float) -> float:
        tokens, at = self._buckets.get(name, (float(self._burst), now))
        if self._cooldown <= 0:
            return float(self._burst)
        return min(float(self._burst), tokens + (now - at) / self._cooldown)

    def request(self, name: str, after: float = 0.0, reason: str = "request") -> None:
        """Queue a reconcile of `name`, due in `settle` seconds (or `after`, if later), once it has a token.
        `reason` (webhook, change, requeue...) is only reported."""
        with self._cond:
            now = self._clock()
            token_back = now + max(0.0, 1.0 - self._tokens(name, now)) * self._cooldown
            due = max(now + max(self._settle, after), token_back)
            if name in self._due and self._due[name] <= due:
                return  # already pending, as soon or sooner
            self._due[name] = due
            self._why.setdefault(name, set()).add(reason)
            self._cond.notify_all()

    def resync(self) -> None:
        """Ask for a full pass over every model."""
        with self._cond:
            self._resync = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> Work:
        """The work now due (some names, or a full pass); empty after `timeout` seconds or on close."""
        with self._cond:
            deadline = self._clock() + timeout
            while not self._closed:
                now = self._clock()
                # Names due within BATCH_SECONDS come along: requests made together are reconciled together.
                ready = frozenset(name for name, due in self._due.items() if due <= now + BATCH_SECONDS)
                if ready or self._resync:
                    reasons: set[str] = set()
                    for name in ready:
                        del self._due[name]
                        reasons |= self._why.pop(name, set())
                        self._buckets[name] = (self._tokens(name, now) - 1.0, now)
                    full = [n for n in self._buckets if self._tokens(n, now) >= self._burst]
                    for name in full:  # a full bucket is the default: keep only those that are not
                        del self._buckets[name]
                    work = Work(ready, self._resync, frozenset(reasons))
                    self._resync = False
                    return work
                if now >= deadline:
                    break
                self._cond.wait(min([deadline, *self._due.values()]) - now)
            return Work()

    def clear(self) -> None:
        """Forget everything pending (leadership lost: the next leader starts from a fresh list)."""
        with self._cond:
            self._due.clear()
            self._buckets.clear()
            self._why.clear()
            self._resync = False

    @property
    def pending(self) -> set[str]:
        with self._cond:
            return set(self._due)

    def due_in(self, name: str) -> float | None:
        """Seconds until `name` is due (None: not pending)."""
        with self._cond:
            due = self._due.get(name)
            return None if due is None else due - self._clock()

    def close(self) -> None:
        """Wake every waiter; later waits return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
