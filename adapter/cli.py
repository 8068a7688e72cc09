"""`service-builder`: the adapter's command line (`sync`, `run`, `render`, `status`, `webhook`).

Parses the arguments, builds the settings once, wires the MLflow and Kubernetes wrappers into the reconciler
(`build`), and calls: one pass (`sync`), the run loop (`run`: `adapter.manager`), a rendering, a table. Every
expected failure becomes one clear line and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from adapter.errors import AdapterError
from adapter.log import configure
from adapter.settings import AdapterSettings


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


def cmd_run(settings: AdapterSettings, _: argparse.Namespace) -> int:
    """Until SIGTERM/SIGINT: the run loop of `adapter.manager` (leader election, webhooks, the watch, the resync)."""
    from adapter.manager import Manager

    return Manager.from_settings(settings, build(settings)).run_until_signal()


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
