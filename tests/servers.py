"""Real servers for tests: an `mlflow server` (sqlite, proxied artifacts) started as a subprocess.

Shared by the adapter and predictor test suites; each test session gets its own server on a free
port on 127.0.0.1, stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, however it dies (Linux PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except Exception as e:
            last = e
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def stop_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop the process group `proc` leads (started with start_new_session): SIGTERM, SIGKILL after `timeout`."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@dataclass
class MlflowServer:
    url: str
    port: int
    root: Path
    proc: subprocess.Popen | None = None
    extra_env: dict[str, str] | None = None
    workers: int = 1  # tests: one process; `mlflow server` itself defaults to 4
    host: str = "127.0.0.1"  # the cluster tier serves pods from its own bridge's address

    def start(self) -> None:
        env = dict(os.environ)
        env.update(
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="true",
            MLFLOW_WEBHOOK_ALLOWED_SCHEMES="http,https",
            MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS="true",
            MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY="0" * 43 + "=",
            MLFLOW_WEBHOOK_CACHE_TTL="0",
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        env.update(self.extra_env or {})
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--serve-artifacts",
                "--workers",
                str(self.workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # a killed test session leaves no server behind
        )
        wait_http(f"{self.url}/health", timeout=90, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
        self.proc = None


@contextlib.contextmanager
def mlflow_server(
    root: Path, port: int | None = None, workers: int = 1, host: str = "127.0.0.1"
) -> Iterator[MlflowServer]:
    port = port or free_port()
    root.mkdir(parents=True, exist_ok=True)
    server = MlflowServer(url=f"http://{host}:{port}", port=port, root=root, workers=workers, host=host)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A Prometheus `/metrics` page as {(sample name, sorted labels): value}, parsed by prometheus-client."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers.get("Content-Type")
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """One sample of `scrape()`'s result; 0 when the series does not exist (yet)."""
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)
