"""`service-builder`: the adapter's command line (`sync`, `run`, `render`, `status`).

Builds the settings once, wires the MLflow and Kubernetes wrappers into the reconciler, and turns
every expected failure into one clear line and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from adapter.errors import AdapterError
from adapter.log import configure, kv
from adapter.settings import AdapterSettings

log = logging.getLogger("adapter")


def invalid_configuration(e: ValidationError) -> str:
    """The settings' validation errors in one line, each named by its environment variable."""
    problems = "; ".join(
        f"{'.'.join(str(x) for x in err['loc']).upper()}: {err['msg']}" if err["loc"] else err["msg"]
        for err in e.errors()
    )
    return f"invalid configuration: {problems}"


def _settings() -> AdapterSettings:
    try:
        return AdapterSettings()
    except ValidationError as e:
        raise SystemExit(f"service-builder: {invalid_configuration(e)}") from None


def build(settings: AdapterSettings, *, manage: bool = True) -> Any:
    """The reconciler for the configured target."""
    from adapter.reconcile import Reconciler
    from adapter.registry import MlflowRegistry

    settings.export_mlflow_client_env()
    registry = MlflowRegistry(
        settings.mlflow_tracking_uri,
        tag_key=settings.tag_key,
        tag_value=settings.tag_value,
        name_like=settings.model_name_like,
    )
    if settings.deploy_target == "local":
        from adapter.local import LocalCluster

        cluster: Any = LocalCluster(settings, manage=manage)
    else:
        from adapter.kube import KubeCluster, api_client

        cluster = KubeCluster(
            api_client(settings),
            settings.k8s_name_space,
            settings.field_manager,
            settings.k8s_request_timeout_seconds,
        )
    return Reconciler(settings, registry, cluster)


def cmd_sync(settings: AdapterSettings, _: argparse.Namespace) -> int:
    reconciler = build(settings)
    tick = getattr(reconciler.cluster, "tick", None)
    if tick is not None:  # the local target: start what should run before the pass looks
        tick()
    result = reconciler.run_pass()
    if not result.ok:
        print(f"service-builder: pass failed: {result.error}", file=sys.stderr)
        return 1
    return 2 if result.failed else 0


def pass_result(result: Any) -> str:
    """`skipped` (MLflow or Kubernetes not reached), `error` (some model in error) or `ok`."""
    if not result.ok:
        return "skipped"
    return "error" if any(o.action == "error" for o in result.outcomes) else "ok"


def observed_pass(reconciler: Any, only: set[str] | None = None) -> str:
    """A pass that cannot end `run`, measured: duration, result, time of the last pass that reached both
    systems. A surprise is logged (result `error`) and the next pass tries again."""
    from adapter import metrics

    started = time.perf_counter()
    try:
        outcome = pass_result(reconciler.run_pass(only=only))
    except Exception:
        log.exception("Pass crashed; next pass retries")
        outcome = "error"
        reached = False
    else:
        reached = outcome != "skipped"
    metrics.PASS_SECONDS.observe(time.perf_counter() - started)
    metrics.PASSES.labels(outcome).inc()
    if reached:
        metrics.LAST_SUCCESS.set(time.time())
    return outcome


def _elector(settings: AdapterSettings, on_change: Any) -> Any:
    """The Lease campaign of the kserve target; None where there is nothing to elect (local target: its lock
    file keeps a second adapter out; LEADER_ELECTION=false: one replica)."""
    if settings.deploy_target != "kserve" or not settings.leader_election:
        return None
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


# Longest wait between two rounds of the run loop: the liveness beat, the local supervisor's tick, and how soon
# a replica that became leader starts its first pass.
ROUND_SECONDS = 1.0


def cmd_run(settings: AdapterSettings, _: argparse.Namespace) -> int:
    """Poll every POLL_INTERVAL_SECONDS; between polls, MLflow webhooks wake a reconcile of one model.
    With several replicas only the holder of the Lease reconciles (adapter.leader)."""
    from adapter import metrics
    from adapter.health import Probes
    from adapter.webhooks import Trigger, WebhookReceiver

    reconciler = build(settings)
    stop = threading.Event()
    trigger = Trigger()
    in_pass = threading.Event()

    def _leadership(leading: bool) -> None:
        if not leading and in_pass.is_set():
            # The Lease may go to another replica before this pass ends: no write of this one may follow.
            log.error("Leadership lost during a pass; exiting so that no write of it follows")
            logging.shutdown()
            os._exit(1)

    elector = _elector(settings, _leadership)
    if elector is not None:
        elector.tick()  # a Role without the Lease (403) ends here, with what to grant
        elector.start()
    else:
        metrics.LEADER.set(1)

    def leading() -> bool:
        return elector is None or bool(elector.leading)

    probes = Probes(
        settings.health_stall_seconds,
        leading=leading,
        role_known=lambda: elector is None or elector.observed,
        elector_alive=lambda: elector is None or elector.alive,
    )

    def _stop(signum: int, _frame: Any) -> None:
        log.info("Stopping %s", kv(signal=signal.Signals(signum).name))
        probes.stopping()
        stop.set()
        trigger.close()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    receiver = None
    tick = getattr(reconciler.cluster, "tick", None)
    try:
        if settings.webhook_port:
            secret: str | None = settings.mlflow_webhook_secret.get_secret_value() or None
            if secret is None:
                log.warning("MLFLOW_WEBHOOK_SECRET is not set: webhook deliveries are refused, polling only")

            def leader_url() -> str:
                return elector.holder_url if elector is not None and elector.holder != elector.identity else ""

            receiver = WebhookReceiver(
                settings.webhook_host,
                settings.webhook_port,
                secret,
                trigger,
                probes=probes,
                leading=leading,
                leader_url=leader_url,
            )
            port = receiver.start()
            if elector is not None:
                elector.advertise = settings.webhook_url(port)  # published with the next renewal
            log.info(
                "Webhook receiver listening %s",
                kv(
                    address=f"{settings.webhook_host}:{port}",
                    path="/webhooks/mlflow",
                    probes="/healthz,/readyz,/metrics",
                ),
            )
        log.info(
            "Started %s",
            kv(
                target=settings.deploy_target,
                namespace=settings.k8s_name_space,
                interval=f"{settings.poll_interval_seconds:g}s",
                identity=settings.identity if elector is not None else None,
                role=None if elector is None else ("leader" if elector.leading else "standby"),
            ),
        )
        probes.started()
        next_poll = 0.0
        was_leading = False
        while not stop.is_set():
            probes.beat()
            if tick is not None:
                try:
                    tick()
                except Exception:  # e.g. a predictor that cannot be started: the next round tries again
                    log.exception("Supervision round crashed; next round retries")
            now_leading = leading()
            if now_leading and not was_leading:
                next_poll = 0.0  # a new leader converges at once
            was_leading = now_leading
            if now_leading and time.monotonic() >= next_poll:
                _guarded_pass(reconciler, in_pass, leading)
                next_poll = time.monotonic() + settings.poll_interval_seconds
            wait = min(ROUND_SECONDS, max(0.0, next_poll - time.monotonic())) if now_leading else ROUND_SECONDS
            names = trigger.wait(wait)
            if names and not stop.is_set() and leading():
                log.info("Webhook reconcile %s", kv(models=",".join(sorted(names))))
                _guarded_pass(reconciler, in_pass, leading, names)
    finally:
        if elector is not None:
            elector.stop()
            elector.release()
        if receiver is not None:
            receiver.stop()
        close = getattr(reconciler.cluster, "close", None)
        if close is not None:
            close()
    log.info("Stopped")
    return 0


def _guarded_pass(reconciler: Any, in_pass: threading.Event, leading: Any, only: set[str] | None = None) -> None:
    in_pass.set()
    try:
        if leading():  # checked with the flag up: a loss from now on ends the process
            observed_pass(reconciler, only)
    finally:
        in_pass.clear()


def cmd_webhook(settings: AdapterSettings, args: argparse.Namespace) -> int:
    """Create or update the MLflow webhook that calls this adapter (idempotent)."""
    from mlflow import MlflowClient

    from adapter.registry_webhooks import ensure_webhook

    secret = settings.mlflow_webhook_secret.get_secret_value()
    if not secret:
        raise SystemExit("service-builder: set MLFLOW_WEBHOOK_SECRET (the same value the adapter verifies with)")
    settings.export_mlflow_client_env()
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    result = ensure_webhook(client, args.url, secret)
    print(f"webhook {result}: {args.url}")
    return 0


def _explain(rows: list[tuple[str, str, str]], indent: str) -> list[str]:
    # json.dumps escapes newlines and quotes: tag values can never become YAML or break a line.
    return [f"{indent}{key}: {json.dumps(value)}  ({source})" for key, value, source in rows]


def cmd_render(settings: AdapterSettings, args: argparse.Namespace) -> int:
    from adapter.overrides import effective, resolve
    from adapter.render import CONTAINER, render, to_yaml
    from adapter.types import VersionInfo

    if not str(args.version).isdigit():
        raise SystemExit(f"service-builder: --version must be a version number, got {args.version!r}")
    tags = dict(_pair(t) for t in args.tag or [])
    overrides = resolve(settings, {}, tags)
    version = VersionInfo(name=args.model, version=str(args.version), run_id=args.run_id or "", tags=tags)
    doc = render(settings, version, uri=args.model_uri, overrides=overrides)
    print("# effective settings (source):")
    print("\n".join(_explain(effective(doc, overrides, CONTAINER), "#   ")))
    sys.stdout.write(to_yaml(doc))
    return 0


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"service-builder: --tag takes KEY=VALUE, got {text!r}")
    return key, value


def _age(created: str) -> str:
    try:
        seconds = (datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def cmd_status(settings: AdapterSettings, args: argparse.Namespace) -> int:
    from adapter.overrides import OverrideError, effective, resolve
    from adapter.render import CONTAINER, render
    from adapter.types import ANN_MODEL_NAME, ANN_MODEL_VERSION, TAG_STATUS, VersionInfo

    reconciler = build(settings, manage=False)
    snap = reconciler.registry.snapshot()
    rows = [("MODEL", "VERSION", "INFERENCESERVICE", "STATUS", "URL", "AGE")]
    details: list[str] = []
    for obj in sorted(reconciler.cluster.list_owned(), key=lambda o: o["metadata"]["name"]):
        meta = obj.get("metadata") or {}
        ann = meta.get("annotations") or {}
        model, version = ann.get(ANN_MODEL_NAME, "?"), ann.get(ANN_MODEL_VERSION, "?")
        vinfo = next((v for v in snap.managed.get(model, []) if v.version == version), VersionInfo(model, version))
        rows.append(
            (
                model,
                version,
                f"{reconciler.cluster.namespace}/{meta.get('name')}",
                vinfo.tags.get(TAG_STATUS, "unknown"),
                str((obj.get("status") or {}).get("url") or "-"),
                _age(str(meta.get("creationTimestamp") or "")),
            )
        )
        if args.explain:
            minfo = snap.models.get(model)
            details.append(f"{model} v{version}:")
            try:
                overrides = resolve(settings, minfo.tags if minfo else {}, vinfo.tags)
                doc = render(settings, vinfo, overrides=overrides)
                details += _explain(effective(doc, overrides, CONTAINER), "  ")
            except OverrideError as e:
                details.append(f"  invalid: {e}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if details:
        print("\n" + "\n".join(details))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="service-builder",
        description="Deploys MLflow production models as KServe InferenceServices and writes the outcome back.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("sync", help="one reconcile pass over every registered model, then exit")
    sub.add_parser("run", help="reconcile every POLL_INTERVAL_SECONDS until SIGTERM/SIGINT")
    r = sub.add_parser("render", help="print the InferenceService YAML for a model version (no cluster, no MLflow)")
    r.add_argument("--model", required=True, help="MLflow registered model name")
    r.add_argument("--version", required=True, help="model version number")
    r.add_argument("--model-uri", help="model URI for the predictor (default models:/<model>/<version>)")
    r.add_argument("--run-id", help="run id, for the annotations")
    r.add_argument("--tag", action="append", metavar="KEY=VALUE", help="a version tag, e.g. serving.min_replicas=1")
    st = sub.add_parser("status", help="table of managed models: version, InferenceService, status, URL, age")
    st.add_argument("--explain", action="store_true", help="also show effective serving settings and their source")
    w = sub.add_parser("webhook", help="manage the MLflow webhook that triggers reconciles")
    wsub = w.add_subparsers(dest="webhook_command", required=True)
    reg = wsub.add_parser("register", help="create or update the MLflow webhook (idempotent)")
    reg.add_argument("--url", required=True, help="URL MLflow calls, e.g. http://service-builder:8090/webhooks/mlflow")
    return p


COMMANDS = {"sync": cmd_sync, "run": cmd_run, "render": cmd_render, "status": cmd_status, "webhook": cmd_webhook}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = _settings()
    configure(settings.log_level)
    try:
        return COMMANDS[args.command](settings, args)
    except AdapterError as e:
        print(f"service-builder: {e.message}", file=sys.stderr)
        return 1
    except ValueError as e:  # template problems and similar bad input, already worded for people
        print(f"service-builder: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the webhook port is taken
        print(f"service-builder: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
