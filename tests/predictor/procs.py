"""Real processes for the browser, schemathesis and benchmark code: the predictor and `mlflow models serve`.

Each process runs in its own session (process group) on 127.0.0.1 with its output in a log file, and is stopped
with its whole group. Used by tests/predictor/test_browser.py, test_schemathesis.py and tests/bench/predictor.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port, stop_group, wait_http

VENV_BIN = Path(sys.executable).parent


def base_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: ours, telemetry off, the venv's bin first on PATH."""
    env = dict(os.environ)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `argv` in a new session with stdout and stderr appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop the process group of `proc`: SIGTERM, then SIGKILL after `timeout` seconds."""
    stop_group(proc, timeout)


def log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@dataclass
class Predictor:
    """A running `python -m custom_predictor`: `url` is the server root, `api` the Swagger page's base."""

    proc: subprocess.Popen
    url: str
    path: str
    log: Path

    @property
    def api(self) -> str:
        return f"{self.url}/{self.path}/api"


PREDICTOR_ARGV = [sys.executable, "-m", "custom_predictor"]


def predictor_env(model_uri: str, tracking_uri: str | None, port: int, **extra: str) -> dict[str, str]:
    """Environment for `python -m custom_predictor`; without a tracking URI the model is a local folder."""
    env = base_env(MODEL_URI=model_uri, PORT=str(port), HOST="127.0.0.1", **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    return env


@contextlib.contextmanager
def running_predictor(
    model_uri: str,
    tracking_uri: str | None,
    path: str,
    log_dir: Path,
    *,
    timeout: float = 120.0,
    argv: list[str] | None = None,
    **extra: str,
) -> Iterator[Predictor]:
    """Start the predictor for `model_uri`, wait until `/v2/health/ready` answers 200, stop it on exit.

    `path` is the service path the predictor derives from the model name (or is given as SERVICE_PATH in
    `extra`); `extra` is added to the environment; `argv` replaces `python -m custom_predictor`.
    """
    port = free_port()
    log = log_dir / f"predictor-{port}.log"
    proc = spawn(argv or PREDICTOR_ARGV, predictor_env(model_uri, tracking_uri, port, **extra), log)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/v2/health/ready", timeout=timeout, proc=proc)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"predictor did not get ready: {e}\n{log_tail(log)}") from e
        yield Predictor(proc=proc, url=url, path=path, log=log)
    finally:
        stop(proc)
