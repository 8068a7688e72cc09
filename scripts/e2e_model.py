"""Registry side of `make e2e`: register the demo model, move the production alias, read the adapter's tags.

Run from the host against the in-cluster MLflow through `kubectl port-forward` (scripts/e2e.sh does
this). The demo model is a scikit-learn classifier trained on the iris data that ships with
scikit-learn: nothing is downloaded. Subcommands:

    register --name M --variant 1|2          log and register a new version, print its number
    promote  --name M --version N            point the alias (default `production`) at version N
    retire   --name M                        delete the alias: the adapter retires the endpoint
    wait     --name M --version N --status S wait until the version's deployment.status is S
    tag      --name M --version N --key K    print one tag of a version (fails if it is missing)
    show     --name M                        print the deployment tags of every version

Exit codes: 0 done, 1 the condition was not met (timeout, `failed`, missing tag), 2 bad input or
MLflow unreachable. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

STATUS_TAG = "deployment.status"
MESSAGE_TAG = "deployment.message"
SHOWN_TAGS = (
    STATUS_TAG,
    "model_endpoint",
    "deployment.url",
    "deployment.inferenceservice",
    MESSAGE_TAG,
)
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
EXPERIMENT = "service-builder-e2e"


class Failure(Exception):
    """The condition the caller asked for was not met (exit code 1)."""


def _client(tracking_uri: str) -> MlflowClient:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def train(variant: int) -> tuple[Any, Any]:
    """The demo model: a logistic regression; variant 2 is regularised harder (other coefficients).

    Both load with MLflow's default (skops) sklearn format; tree models would need
    `skops_trusted_types`, which a generic predictor should not have to grant."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    frame = load_iris(as_frame=True).frame
    x = frame.iloc[:, :4].set_axis(list(FEATURES), axis=1)
    y = frame["target"]
    model = LogisticRegression(C=1.0 if variant == 1 else 0.05, max_iter=1000)
    model.fit(x, y)
    return model, x


def register(tracking_uri: str, name: str, variant: int) -> str:
    _client(tracking_uri)
    model, x = train(variant)
    # MLflow prints "View run ..." links on stdout: keep stdout for the version number alone.
    with contextlib.redirect_stdout(sys.stderr):
        info = _log_and_register(model, x, name, variant)
    version = info.registered_model_version
    if version is None:
        raise Failure(f"model {name!r} was logged but no registry version came back")
    return str(version)


def _log_and_register(model: Any, x: Any, name: str, variant: int) -> Any:
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=f"{name}-variant-{variant}"):
        mlflow.log_param("variant", variant)
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            input_example=x.head(3),
            registered_model_name=name,
            # What serving needs, not every library this environment imports on the side (torch, with it,
            # would send the model to the PyTorch image, which the e2e does not build).
            pip_requirements=list(mlflow.sklearn.get_default_pip_requirements(include_skops=True)),
        )
    return info


def promote(tracking_uri: str, name: str, version: str, alias: str) -> None:
    _client(tracking_uri).set_registered_model_alias(name, alias, version)


def retire(tracking_uri: str, name: str, alias: str) -> None:
    client = _client(tracking_uri)
    if alias not in client.get_registered_model(name).aliases:
        raise Failure(f"model {name!r} has no alias {alias!r} to remove")
    client.delete_registered_model_alias(name, alias)


def version_tags(tracking_uri: str, name: str, version: str) -> dict[str, str]:
    return dict(_client(tracking_uri).get_model_version(name, version).tags)


def wait_status(
    read_tags: Callable[[], dict[str, str]],
    want: str,
    timeout: float,
    interval: float,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """Poll `deployment.status` until it equals `want`; `failed` (when not wanted) ends the wait at once."""
    deadline = clock() + timeout
    seen: str | None = None
    while True:
        tags = read_tags()
        status = tags.get(STATUS_TAG, "")
        if status != seen:
            say(f"deployment.status={status or '(not set yet)'}")
            seen = status
        if status == want:
            return tags
        if status == "failed":
            raise Failure(f"deployment failed: {tags.get(MESSAGE_TAG, '(no deployment.message)')}")
        if clock() >= deadline:
            raise Failure(f"deployment.status is {status or 'not set'!r}, not {want!r}, after {timeout:.0f}s")
        sleep(interval)


def show(tracking_uri: str, name: str) -> list[str]:
    client = _client(tracking_uri)
    lines = []
    for mv in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
        tags = " ".join(f"{k}={mv.tags[k]!r}" for k in SHOWN_TAGS if k in mv.tags)
        lines.append(f"{name} v{mv.version}: {tags or '(no deployment tags)'}")
    return lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="e2e_model.py", description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", required=True, help="MLflow as the host sees it, e.g. http://127.0.0.1:15000")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("register", help="log and register a new version; prints its number")
    r.add_argument("--name", required=True)
    r.add_argument("--variant", type=int, choices=(1, 2), default=1)
    pr = sub.add_parser("promote", help="point the alias at a version")
    pr.add_argument("--name", required=True)
    pr.add_argument("--version", required=True)
    pr.add_argument("--alias", default="production")
    rt = sub.add_parser("retire", help="delete the alias")
    rt.add_argument("--name", required=True)
    rt.add_argument("--alias", default="production")
    w = sub.add_parser("wait", help="wait for a deployment.status")
    w.add_argument("--name", required=True)
    w.add_argument("--version", required=True)
    w.add_argument("--status", required=True, choices=("deploying", "ready", "failed", "superseded", "retired"))
    w.add_argument("--timeout", type=float, default=900.0)
    w.add_argument("--interval", type=float, default=3.0)
    t = sub.add_parser("tag", help="print one tag of a version")
    t.add_argument("--name", required=True)
    t.add_argument("--version", required=True)
    t.add_argument("--key", required=True)
    s = sub.add_parser("show", help="print the deployment tags of every version")
    s.add_argument("--name", required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    uri = args.tracking_uri

    def say(msg: str) -> None:
        print(f"[mlflow] {args.name}: {msg}", file=sys.stderr, flush=True)

    from mlflow.exceptions import MlflowException

    try:
        if args.command == "register":
            print(register(uri, args.name, args.variant))
        elif args.command == "promote":
            promote(uri, args.name, args.version, args.alias)
            say(f"alias {args.alias!r} -> version {args.version}")
        elif args.command == "retire":
            retire(uri, args.name, args.alias)
            say(f"alias {args.alias!r} removed")
        elif args.command == "wait":
            say(f"waiting up to {args.timeout:.0f}s for version {args.version} to be {args.status!r}")
            wait_status(
                lambda: version_tags(uri, args.name, args.version), args.status, args.timeout, args.interval, say
            )
        elif args.command == "tag":
            tags = version_tags(uri, args.name, args.version)
            if args.key not in tags:
                raise Failure(f"version {args.version} has no tag {args.key!r}")
            print(tags[args.key])
        elif args.command == "show":
            print("\n".join(show(uri, args.name)))
    except Failure as e:
        print(f"e2e_model.py {args.command}: {e}", file=sys.stderr)
        return 1
    except MlflowException as e:
        print(f"e2e_model.py {args.command}: MLflow at {uri} said: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"e2e_model.py {args.command}: cannot reach MLflow at {uri}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
