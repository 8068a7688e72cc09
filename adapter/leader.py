"""Leader election among `service-builder run` replicas: one coordination.k8s.io/v1 Lease, one holder.

Only the holder reconciles; the others keep their webhook receiver and probes up and stand by. The rules
are client-go's (`tools/leaderelection`), on plain Lease dicts read and written through `kube.KubeCluster`
(our own configured client, not the kubernetes package's global one):

- acquire: create the Lease, or take it over when it is free (no holder) or expired (`renewTime` +
  `leaseDurationSeconds` is past), with a replace guarded by `resourceVersion`, so of two candidates
  only one wins (the other gets a 409 and stays a follower);
- renew: the holder rewrites `renewTime` every `retry_period`; when it could not renew for
  `renew_deadline` (shorter than the lease duration) it steps down before anyone else may take over;
- release: a clean shutdown clears `holderIdentity`, so a follower takes over at its next retry.

The holder also publishes where its webhook receiver listens (`advertise`, the annotation
`service-builder.io/webhook-url` on the Lease), so a standby that receives a delivery forwards it there
(`holder_url`) instead of leaving it to the next poll.

Expiry compares the holder's `renewTime` with this replica's clock: replicas' clocks are assumed to agree
to well within `lease_duration - renew_deadline` (NTP on cluster nodes). The clock is injectable, and
`tick()` is one step, so tests drive the elector without sleeping. Imports no client.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from adapter import metrics
from adapter.errors import PermanentError, TransientError
from adapter.log import kv

log = logging.getLogger("adapter.leader")
ANN_WEBHOOK_URL = "service-builder.io/webhook-url"


class LeaseStore(Protocol):
    namespace: str

    def get_lease(self, name: str) -> dict[str, Any] | None: ...
    def create_lease(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def replace_lease(self, body: dict[str, Any]) -> dict[str, Any]: ...


def micro_time(t: float) -> str:
    """A Kubernetes MicroTime (RFC 3339, microseconds, UTC)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class LeaderElector:
    """Campaigns for the Lease `name`; `leading` says whether this replica may reconcile now."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.store, self.name, self.identity = store, name, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self.clock = clock
        self.on_change = on_change
        self.leading = False
        self.holder = ""  # who holds the Lease, as last seen ("" unknown or free)
        self.holder_url = ""  # where the holder's webhook receiver listens, as it publishes it ("" unknown)
        self.advertise = ""  # where this replica's receiver listens, published while it holds the Lease
        self.observed = False  # the Lease was read (or created) at least once: the role is known
        self._renewed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        metrics.LEADER.set(0)

    @property
    def where(self) -> str:
        return f"{self.store.namespace}/{self.name}"

    # ---- one step ---------------------------------------------------------------------------------
    def tick(self) -> bool:
        """One attempt to acquire or renew; returns `leading`. A PermanentError (e.g. a 403: the Role does not
        grant the Lease) propagates, worded for the operator."""
        now = self.clock()
        try:
            held: bool | None = self._try(now)
        except TransientError as e:
            log.warning("Lease not renewed %s", kv(lease=self.where, identity=self.identity, error=e.message))
            held = None
        except PermanentError as e:
            self._missed(now)
            hint = ""
            if e.status in (401, 403):
                hint = (
                    f". The adapter's Role must grant `leases` get and update on {self.name} and create "
                    "(deploy/base/role.yaml); a single replica may run with LEADER_ELECTION=false"
                )
            raise PermanentError(f"leader election: {e.message}{hint}", status=e.status) from None
        if held:
            self._renewed_at = now
            self._set(True)
        elif held is False:
            self._set(False)
        else:
            self._missed(now)
        return self.leading

    def _missed(self, now: float) -> None:
        """An attempt that reached no verdict: the leader steps down once it has not renewed for renew_deadline."""
        if self.leading and now - self._renewed_at >= self.renew_deadline:
            self._set(False)

    def _try(self, now: float) -> bool:
        lease = self.store.get_lease(self.name)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.store.namespace, **self._annotations()},
                "spec": self._spec(now, acquired=now, transitions=0),
            }
            try:
                self.store.create_lease(body)
            except TransientError as e:
                if e.status == 409:  # another replica created it first: it holds it
                    return False
                raise
            self.observed, self.holder, self.holder_url = True, self.identity, self.advertise
            return True
        self.observed = True
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        self.holder = holder
        meta = lease.get("metadata") or {}
        self.holder_url = str((meta.get("annotations") or {}).get(ANN_WEBHOOK_URL) or "") if holder else ""
        if holder and holder != self.identity and not self._expired(spec, now):
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        mine = holder == self.identity
        acquired = (_seconds(spec.get("acquireTime")) or now) if mine else now
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.store.namespace,
                "resourceVersion": meta.get("resourceVersion"),
                **self._annotations(),
            },
            "spec": self._spec(now, acquired=acquired, transitions=transitions if mine else transitions + 1),
        }
        try:
            self.store.replace_lease(body)
        except TransientError as e:
            if e.status == 409:  # someone wrote the Lease since we read it: they won this round
                return False
            raise
        if not mine:
            log.info("Lease taken over %s", kv(lease=self.where, identity=self.identity, previous=holder or "-"))
        self.holder, self.holder_url = self.identity, self.advertise
        return True

    def _annotations(self) -> dict[str, Any]:
        return {"annotations": {ANN_WEBHOOK_URL: self.advertise}} if self.advertise else {}

    def _spec(self, now: float, *, acquired: float, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": micro_time(acquired),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    @staticmethod
    def _expired(spec: dict[str, Any], now: float) -> bool:
        renewed = _seconds(spec.get("renewTime")) or _seconds(spec.get("acquireTime"))
        duration = float(spec.get("leaseDurationSeconds") or 0)
        return renewed is None or renewed + duration < now

    def _set(self, leading: bool) -> None:
        if leading == self.leading:
            return
        self.leading = leading
        metrics.LEADER.set(1 if leading else 0)
        if leading:
            log.info("Became leader %s", kv(lease=self.where, identity=self.identity))
        else:
            log.warning("Leadership lost %s", kv(lease=self.where, identity=self.identity, holder=self.holder or "-"))
        if self.on_change is not None:
            self.on_change(leading)

    # ---- the campaign in a thread ----------------------------------------------------------------
    def start(self) -> None:
        """Tick every `retry_period` in a daemon thread until `stop()`."""
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.retry_period):
            try:
                self.tick()
            except PermanentError as e:  # e.g. the Role lost its Lease rules: say so each retry
                log.error("Leader election refused %s", kv(lease=self.where, error=e.message))
            except Exception:  # a surprise must not end the campaign (nor skip the deadline)
                log.exception("Leader election attempt crashed %s", kv(lease=self.where))
                self._missed(self.clock())

    @property
    def alive(self) -> bool:
        return self._thread is None or self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_period + 35)

    def release(self) -> None:
        """Give the Lease up (clean shutdown), so a follower takes over at its next retry, not after expiry."""
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        try:
            lease = self.store.get_lease(self.name)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.identity:
                return
            now = self.clock()
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": self.store.namespace,
                    "resourceVersion": (lease.get("metadata") or {}).get("resourceVersion"),
                },
                "spec": {
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "acquireTime": micro_time(now),
                    "renewTime": micro_time(now),
                    "leaseTransitions": int(spec.get("leaseTransitions") or 0),
                },
            }
            self.store.replace_lease(body)
            log.info("Lease released %s", kv(lease=self.where, identity=self.identity))
        except (TransientError, PermanentError) as e:
            log.warning("Lease not released (it expires instead) %s", kv(lease=self.where, error=e.message))
