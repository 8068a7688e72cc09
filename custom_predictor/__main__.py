"""`python -m custom_predictor`: read settings, resolve the model and contract, serve with uvicorn.

A model that cannot be served ends the process with a non-zero exit code after one clear line, the last the
process writes (on stderr, and in TERMINATION_MESSAGE_PATH when set), never a traceback: with the
template's `terminationMessagePolicy: FallbackToLogsOnError`, Kubernetes keeps it as the container's
termination message, Knative marks the revision failed with it in seconds, and the adapter writes it to
`deployment.message`. Exit code 2: a permanent failure (invalid settings or contract, no writable directory for
the model's files, model not found or unreadable, a missing library, a failed self-test), whether found before
the server starts or while the model loads behind it. Exit code 75: MLflow stayed unreachable for
MLFLOW_RETRY_SECONDS (a transient failure; the restart tries again).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

PERMANENT, TRANSIENT = 2, 75
KUBERNETES_TERMINATION_LOG = "/dev/termination-log"
"""The default TERMINATION_MESSAGE_PATH: the kubelet creates it; elsewhere it is not made."""


def report(line: str, path: str | None) -> None:
    """Write the reason as the process's last line, and where Kubernetes reads the termination message.

    The caller then leaves with `os._exit`: an interpreter shutting down can still print (native extensions
    report leaks at exit), and the reason must stay the last line."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    print(line, file=sys.stderr, flush=True)
    if path and (Path(path).exists() or (path != KUBERNETES_TERMINATION_LOG and Path(path).parent.is_dir())):
        try:
            Path(path).write_text(line + "\n", encoding="utf-8")
        except OSError:
            pass  # not writable here: the log line is the fallback Kubernetes reads


def main() -> int:
    started = time.perf_counter()
    from pydantic import ValidationError

    from custom_predictor.auth import AuthConfigError
    from custom_predictor.contract import ContractError
    from custom_predictor.settings import Settings
    from custom_predictor.source import SourceError, TransientSourceError

    try:
        settings = Settings()
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).upper() or "settings"
        report(f"custom_predictor: invalid settings: {field}: {first['msg']}", None)
        return PERMANENT
    level = settings.log_level.upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    from custom_predictor.source import fetch

    where = settings.termination_message_path
    problem = _no_writable_directory(settings.download_dir)
    if problem:
        report(f"custom_predictor: {problem}", where)
        return PERMANENT
    try:
        source = fetch(settings)
        fetched = time.perf_counter()
        from custom_predictor.app import create_app

        app = create_app(settings, source)
    except ContractError as e:
        report(f"custom_predictor: invalid contract: {e}", where)
        return PERMANENT
    except AuthConfigError as e:
        report(f"custom_predictor: invalid settings: {e}", where)
        return PERMANENT
    except TransientSourceError as e:
        report(f"custom_predictor: MLflow unreachable: {e}", where)
        return TRANSIENT
    except SourceError as e:
        report(f"custom_predictor: cannot load the model: {e}", where)
        return PERMANENT
    import uvicorn

    logging.getLogger("custom_predictor").info(
        "serving model=%s version=%s path=/%s/api/ port=%d (model resolved at %.2fs, app built at %.2fs)",
        app.state.source.name,
        app.state.source.version,
        app.state.service_path,
        settings.port,
        fetched - started,
        time.perf_counter() - started,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    runtime: Any = app.state.runtime
    threading.Thread(target=_stop_on_failure, args=(runtime, server), name="failure-watch", daemon=True).start()
    server.run()
    if runtime.state == "failed":
        name, version = app.state.source.name, app.state.source.version or "-"
        report(f"custom_predictor: model {name} version {version} cannot be served: {runtime.reason}", where)
        return PERMANENT
    return 0


def _no_writable_directory(download_dir: str | None) -> str | None:
    """Why the model's files cannot be downloaded (no writable directory), or None. With a read-only root
    (`readOnlyRootFilesystem`), the template mounts an emptyDir at /tmp."""
    import tempfile

    try:
        base = download_dir or tempfile.gettempdir()
        Path(tempfile.mkdtemp(prefix="probe-", dir=base)).rmdir()
    except OSError as e:
        where = f"DOWNLOAD_DIR={download_dir}" if download_dir else "the temporary directory (TMPDIR, /tmp)"
        return (
            f"no writable directory for the model's files: {where} is not writable ({e.__class__.__name__}); "
            "set DOWNLOAD_DIR or TMPDIR to a writable directory (in Kubernetes, an emptyDir volume)"
        )
    return None


def _stop_on_failure(runtime: Any, server: Any) -> None:
    """A model that failed for good (at load, or when a kernel lost its check) stops the server: it will not
    get better, and a process that stays up keeps Kubernetes waiting for a readiness that never comes."""
    runtime.wait_failed()
    server.should_exit = True


def run() -> None:
    code = main()
    if code != 0:
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
