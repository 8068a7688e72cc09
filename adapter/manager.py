"""The run loop of `service-builder run`: who may reconcile, when, and which models.

`Manager` owns the long-running parts and one loop that is the only caller of `Reconciler.run_pass`:
- leader election (`adapter.leader`): with several replicas only the Lease holder acts. A replica that becomes
  leader starts its change source from a fresh list; one that loses the Lease stops it and forgets what was
  queued, and a loss in the middle of a pass ends the process before any later write of that pass;
- the change source: on the kserve target the watch on owned InferenceServices (`adapter.watch`), on the local
  target the predictor supervisor's readiness and exit events (`adapter.local`). Each change queues that
  model; the source's first list asks for a full pass;
- the HTTP server (`adapter.webhooks`): MLflow webhooks queue the model they name; probes and metrics;
- the resync: a full pass every POLL_INTERVAL_SECONDS, the safety net for whatever sent no event;
- requeues: a model still deploying is looked at again when its ROLLOUT_DEADLINE_SECONDS runs out, one that
  failed transiently when its backoff ends (`Outcome.requeue_after`);
- supervision rounds of the local target (`LocalCluster.tick`) and the liveness beat, every ROUND_SECONDS.

Every model reaches the same level-triggered reconcile through one `WorkQueue` (deduplicated, rate-limited per
model), whatever woke it. `from_settings` wires the parts for a deployment; tests build a `Manager` from fakes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from adapter import metrics
from adapter.health import Probes
from adapter.log import kv
from adapter.settings import AdapterSettings
from adapter.workqueue import Work, WorkQueue

log = logging.getLogger("adapter.manager")

# Longest wait between two rounds of the loop: the liveness beat, the local supervisor's tick, and how soon a
# replica that became leader starts.
ROUND_SECONDS = 1.0
# A new leader's first full pass waits this long for its change source's first list (which asks for it), so
# that the pass reads the cluster after the watch began and no change falls between the two.
FIRST_LIST_GRACE_SECONDS = 2.0
# A full pass that reached neither MLflow nor Kubernetes is tried again after these delays (capped by the poll).
PASS_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


class ChangeSource(Protocol):
    """Calls `changed(model)` for each change it sees and `resync()` after its first list, from start to stop."""

    def start(self, changed: Callable[[str], None], resync: Callable[[], None]) -> None: ...
    def stop(self) -> None: ...


def pass_result(result: Any) -> str:
    """`skipped` (MLflow or Kubernetes not reached), `error` (some model in error) or `ok`."""
    if not result.ok:
        return "skipped"
    return "error" if any(o.action == "error" for o in result.outcomes) else "ok"


def observed_pass(reconciler: Any, only: set[str] | None = None) -> tuple[str, Any]:
    """A pass that cannot end `run`, measured: duration, result, time of the last pass that reached both
    systems. A surprise is logged (result `error`, no PassResult) and the next pass tries again."""
    started = time.perf_counter()
    result = None
    try:
        result = reconciler.run_pass(only=only)
        outcome = pass_result(result)
    except Exception:
        log.exception("Pass crashed; next pass retries")
        outcome = "error"
    metrics.PASS_SECONDS.observe(time.perf_counter() - started)
    metrics.PASSES.labels(outcome).inc()
    if result is not None and outcome != "skipped":
        metrics.LAST_SUCCESS.set(time.time())
    return outcome, result


def _exit_now() -> None:
    log.error("Leadership lost during a pass; exiting so that no write of it follows")
    logging.shutdown()
    os._exit(1)


class Manager:
    """Runs `reconciler` until `shutdown()` (or SIGTERM/SIGINT with `run_until_signal`)."""

    def __init__(
        self,
        settings: AdapterSettings,
        reconciler: Any,
        *,
        queue: WorkQueue | None = None,
        elector: Any = None,
        source: ChangeSource | None = None,
        tick: Callable[[], None] | None = None,
        webhooks: bool = True,
        round_seconds: float = ROUND_SECONDS,
        first_list_grace: float = FIRST_LIST_GRACE_SECONDS,
        on_lost_in_pass: Callable[[], None] = _exit_now,
    ) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self.queue = queue or WorkQueue()
        self.elector = elector
        self.source = source
        self.tick = tick
        self.webhooks = webhooks and bool(settings.webhook_port)
        self.round_seconds = round_seconds
        self.first_list_grace = first_list_grace
        self.on_lost_in_pass = on_lost_in_pass
        self.receiver: Any = None
        self.port = 0  # the HTTP server's bound port, once started
        self.stop = threading.Event()
        self.in_pass = threading.Event()
        self.probes = Probes(
            settings.health_stall_seconds,
            leading=self.leading,
            role_known=lambda: self.elector is None or self.elector.observed,
            elector_alive=lambda: self.elector is None or self.elector.alive,
        )
        self._pass_failures = 0

    # ---- wiring ---------------------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: AdapterSettings, reconciler: Any) -> Manager:
        """The manager of a deployment: Lease election and the watch on the kserve target, the supervisor's
        events and rounds on the local one."""
        cluster = reconciler.cluster
        manager = cls(settings, reconciler, tick=getattr(cluster, "tick", None))
        if settings.deploy_target == "local":
            manager.source = cluster.events
            return manager
        from adapter.kube import KubeCluster, api_client
        from adapter.watch import Watcher

        # Its own client: the long-lived watch connection never takes one from the reconciler's pool.
        watched = KubeCluster(
            api_client(settings), settings.k8s_name_space, settings.field_manager, settings.k8s_request_timeout_seconds
        )
        manager.source = Watcher(watched, stall_seconds=settings.watch_stall_seconds, wanted=settings.in_scope)
        if settings.leader_election:
            manager.elector = _elector(settings, manager.leadership_changed)
        return manager

    # ---- leadership -----------------------------------------------------------------------------------
    def leading(self) -> bool:
        return self.elector is None or bool(self.elector.leading)

    def leadership_changed(self, leading: bool) -> None:
        """The elector's callback (its own thread). A loss during a pass ends the process: the Lease may go to
        another replica before this pass ends, and no write of this one may follow."""
        if not leading and self.in_pass.is_set():
            self.on_lost_in_pass()

    # ---- the loop -------------------------------------------------------------------------------------
    def run_until_signal(self) -> int:
        def _stop(signum: int, _frame: Any) -> None:
            log.info("Stopping %s", kv(signal=signal.Signals(signum).name))
            self.shutdown()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        self.run()
        return 0

    def shutdown(self) -> None:
        self.probes.stopping()
        self.stop.set()
        self.queue.close()

    def run(self) -> None:
        """Until `shutdown()`. A Role without the Lease (403) raises PermanentError before anything starts; a
        port that is taken, OSError."""
        if self.elector is not None:
            self.elector.tick()  # a Role without the Lease (403) ends here, with what to grant
            self.elector.start()
        else:
            metrics.LEADER.set(1)
        try:
            self._start_receiver()
            log.info(
                "Started %s",
                kv(
                    target=self.settings.deploy_target,
                    namespace=self.settings.k8s_name_space,
                    interval=f"{self.settings.poll_interval_seconds:g}s",
                    watch="on" if self.source is not None else "off",
                    identity=self.settings.identity if self.elector is not None else None,
                    role=None if self.elector is None else ("leader" if self.elector.leading else "standby"),
                ),
            )
            self.probes.started()
            self._loop()
        finally:
            if self.source is not None:
                self.source.stop()
            if self.elector is not None:
                self.elector.stop()
                self.elector.release()
            if self.receiver is not None:
                self.receiver.stop()
            close = getattr(self.reconciler.cluster, "close", None)
            if close is not None:
                close()
        log.info("Stopped")

    def _start_receiver(self) -> None:
        if not self.webhooks:
            return
        from adapter.webhooks import WebhookReceiver

        s = self.settings
        secret: str | None = s.mlflow_webhook_secret.get_secret_value() or None
        if secret is None:
            log.warning("MLFLOW_WEBHOOK_SECRET is not set: webhook deliveries are refused, polling only")

        def leader_url() -> str:
            e = self.elector
            return e.holder_url if e is not None and e.holder != e.identity else ""

        self.receiver = WebhookReceiver(
            s.webhook_host,
            s.webhook_port,
            secret,
            self.queue,
            probes=self.probes,
            leading=self.leading,
            leader_url=leader_url,
        )
        self.port = self.receiver.start()
        if self.elector is not None:
            self.elector.advertise = s.webhook_url(self.port)  # published with the next renewal
        log.info(
            "Webhook receiver listening %s",
            kv(address=f"{s.webhook_host}:{self.port}", path="/webhooks/mlflow", probes="/healthz,/readyz,/metrics"),
        )

    def _loop(self) -> None:
        next_poll = float("inf")
        was_leading = False
        while not self.stop.is_set():
            self.probes.beat()
            if self.tick is not None:
                try:
                    self.tick()
                except Exception:  # e.g. a predictor that cannot be started: the next round tries again
                    log.exception("Supervision round crashed; next round retries")
            now_leading = self.leading()
            if now_leading and not was_leading:
                next_poll = self._gained()
            elif was_leading and not now_leading:
                self._lost()
            was_leading = now_leading
            if now_leading and time.monotonic() >= next_poll:
                next_poll = self._full_pass("resync")
            wait = self.round_seconds
            if now_leading:
                wait = min(wait, max(0.0, next_poll - time.monotonic()))
            work = self.queue.wait(wait)
            if not work or self.stop.is_set() or not self.leading():
                continue
            if work.resync:
                next_poll = self._full_pass("list")
            elif work.names:
                self._reconcile(work)

    def _gained(self) -> float:
        """Became leader (or started without an election): start the change source; the first full pass comes
        with its first list, or after a grace period if that list is late."""
        if self.source is None:
            return 0.0
        self.queue.clear()
        self.source.start(self._changed, self.queue.resync)
        return time.monotonic() + self.first_list_grace

    def _lost(self) -> None:
        log.warning("Not leading: watch stopped, queued reconciles dropped")
        if self.source is not None:
            self.source.stop()
        self.queue.clear()

    def _changed(self, model: str) -> None:
        self.queue.request(model, reason="change")

    def _full_pass(self, why: str) -> float:
        """A pass over every model; returns when the next resync is due."""
        if why == "list":
            log.info("Full pass after the change source's list")
        outcome, result = self._guarded(None)
        interval = self.settings.poll_interval_seconds
        if outcome == "skipped":
            delay = min(interval, PASS_BACKOFF[min(self._pass_failures, len(PASS_BACKOFF) - 1)])
            self._pass_failures += 1
            return time.monotonic() + delay
        self._pass_failures = 0
        self._requeue(result)
        return time.monotonic() + interval

    def _reconcile(self, work: Work) -> None:
        names = set(work.names)
        log.info("Reconcile %s", kv(models=",".join(sorted(names)), cause=",".join(sorted(work.reasons))))
        outcome, result = self._guarded(names)
        if outcome == "skipped":  # MLflow or Kubernetes not reached: the same models again after a backoff
            delay = PASS_BACKOFF[min(self._pass_failures, len(PASS_BACKOFF) - 1)]
            self._pass_failures += 1
            for name in names:
                self.queue.request(name, after=delay, reason="retry")
            return
        self._requeue(result)

    def _requeue(self, result: Any) -> None:
        for o in getattr(result, "outcomes", ()) or ():
            if o.requeue_after is not None:
                self.queue.request(o.model, after=o.requeue_after, reason="requeue")

    def _guarded(self, only: set[str] | None) -> tuple[str, Any]:
        self.in_pass.set()
        try:
            if not self.leading():  # checked with the flag up: a loss from now on ends the process
                return "not-leader", None
            return observed_pass(self.reconciler, only)
        finally:
            self.in_pass.clear()


def _elector(settings: AdapterSettings, on_change: Callable[[bool], None]) -> Any:
    """The Lease campaign of the kserve target (LEADER_ELECTION=true)."""
    from adapter.kube import KubeCluster, api_client
    from adapter.leader import LeaderElector

    # Its own client: a slow InferenceService call never holds up a renewal.
    store = KubeCluster(
        api_client(settings),
        settings.k8s_name_space,
        settings.field_manager,
        # An attempt (a read and a write) ends well within the renew deadline.
        min(settings.k8s_request_timeout_seconds, settings.leader_election_renew_deadline_seconds / 2),
    )
    return LeaderElector(
        store,
        settings.leader_election_lease_name,
        settings.identity,
        lease_duration=settings.leader_election_lease_duration_seconds,
        renew_deadline=settings.leader_election_renew_deadline_seconds,
        retry_period=settings.leader_election_retry_period_seconds,
        on_change=on_change,
    )
