"""`make demo`: the whole flow on one machine, no cluster: MLflow, two example models, service-builder, predictors.

Starts a local MLflow server (sqlite and artifacts under the state dir), registers the two example models of
`demo_models` (once; a second run reuses them), runs `service-builder run` with DEPLOY_TARGET=local, shows
progress until both models are ready, then prints the MLflow UI URL, each Swagger URL and curl examples.
Ctrl-C (or SIGTERM) stops the adapter (which stops its predictors) and then MLflow, and exits 0.

Settings (environment): DEMO_MLFLOW_PORT (5000), DEMO_STATE_DIR (.state/demo in the repo), DEMO_TIMEOUT
(seconds to wait for ready, 300), DEMO_EXIT_WHEN_READY (1: stop everything and exit 0 once ready).
Exit codes: 0 stopped cleanly; 1 a model failed, timed out, or a process died; 2 bad settings or port taken;
130/143 interrupted before both models were ready.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_models

if TYPE_CHECKING:
    from mlflow import MlflowClient

REPO = Path(__file__).resolve().parent.parent
ALIAS = "production"
TAG_KEY, TAG_VALUE = "stage", "production"
STOP_SECONDS = 30.0


class DemoSettings(BaseSettings):
    """What `make demo` can be told, from the environment."""

    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore", case_sensitive=False)

    mlflow_port: int = Field(5000, ge=1, le=65535, description="Port of the local MLflow server (127.0.0.1).")
    state_dir: Path = Field(REPO / ".state" / "demo", description="MLflow database, artifacts, adapter state, logs.")
    timeout: float = Field(300.0, gt=0, description="Seconds to wait for both models to be ready.")
    exit_when_ready: bool = Field(False, description="Stop everything and exit 0 once both models are ready.")

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Failed(Exception):
    """The demo cannot go on; the message says why and where to look."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def say(line: str = "") -> None:
    print(line, flush=True)


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text[-lines:]) or "    (empty log)"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback URLs we print
            return bool(r.status == 200)
    except (OSError, ValueError):
        return False


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """No signal handler runs while a child is being started and recorded (so none is ever lost)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _unblock_in_child() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # the mask survives exec: children must get SIGTERM


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


class Stack:
    """The processes the demo runs, each leading its own session, stopped adapter first, MLflow last."""

    def __init__(self, settings: DemoSettings) -> None:
        self.settings = settings
        self.state = settings.state_dir.resolve()
        self.adapter_state = self.state / "service-builder"
        self.mlflow_log = self.state / "mlflow.log"
        self.adapter_log = self.state / "adapter.log"
        self.mlflow: subprocess.Popen[bytes] | None = None
        self.adapter: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    def lock(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.state / "demo.lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Failed(f"another demo is running with the state dir {self.state}", code=2) from None

    def _spawn(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with signals_blocked(), open(log, "ab") as out:
            return subprocess.Popen(
                args,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_unblock_in_child,
            )

    def start_mlflow(self) -> None:
        s = self.settings
        if not port_free(s.mlflow_port):
            raise Failed(
                f"port {s.mlflow_port} on 127.0.0.1 is already in use (another MLflow, or a demo still running?).\n"
                f"  Stop it, or pick another port: DEMO_MLFLOW_PORT={s.mlflow_port + 1} make demo",
                code=2,
            )
        env = dict(os.environ)
        env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
        args = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(s.mlflow_port)]
        args += ["--backend-store-uri", f"sqlite:///{self.state / 'mlflow.db'}"]
        args += ["--artifacts-destination", str(self.state / "artifacts"), "--serve-artifacts", "--workers", "1"]
        self.mlflow = self._spawn(args, env, self.mlflow_log)

    def wait_mlflow(self) -> None:
        assert self.mlflow is not None
        s = self.settings
        deadline = time.monotonic() + 120
        while not http_ok(f"{s.mlflow_url}/health"):
            if self.mlflow.poll() is not None:
                log = tail(self.mlflow_log)
                if "address already in use" in log.lower():
                    raise Failed(f"port {s.mlflow_port} on 127.0.0.1 was taken while MLflow started", code=2)
                raise Failed(f"MLflow server exited with code {self.mlflow.returncode}; {self.mlflow_log}:\n{log}")
            if time.monotonic() > deadline:
                raise Failed(f"MLflow server did not answer within 120s; see {self.mlflow_log}")
            time.sleep(0.3)

    def new_key(self) -> str:
        """A fresh API key for the local predictors (they require one, as on a cluster): its hashed entry replaces
        the keys file the local target points them at (they re-read it: no restart), the key itself is shown once."""
        from custom_predictor.auth.apikeys import generate

        key, line = generate("demo")
        self.adapter_state.mkdir(parents=True, exist_ok=True)
        keys = self.adapter_state / "api-keys"
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(line + "\n")
        return key

    def start_adapter(self) -> None:
        env = dict(os.environ)
        env.update(
            MLFLOW_TRACKING_URI=self.settings.mlflow_url,
            DEPLOY_TARGET="local",
            WEBHOOK_PORT="0",
            SERVICE_BUILDER_STATE_DIR=str(self.adapter_state),
            MODEL_NAME_LIKE=f"{demo_models.PREFIX}%",
            DEPLOY_ALIAS=ALIAS,
            DEPLOY_TAG=f"{TAG_KEY}={TAG_VALUE}",
            MLFLOW_DISABLE_TELEMETRY="true",
            DO_NOT_TRACK="true",
        )
        self.adapter = self._spawn([sys.executable, "-m", "adapter", "run"], env, self.adapter_log)

    def check_alive(self) -> None:
        if self.mlflow is not None and self.mlflow.poll() is not None:
            raise Failed(
                f"MLflow server exited with code {self.mlflow.returncode}; {self.mlflow_log}:\n" + tail(self.mlflow_log)
            )
        if self.adapter is not None and self.adapter.poll() is not None:
            raise Failed(
                f"service-builder exited with code {self.adapter.returncode}; {self.adapter_log}:\n"
                + tail(self.adapter_log)
            )

    def _stop(self, proc: subprocess.Popen[bytes] | None, what: str) -> None:
        if proc is None or proc.poll() is not None:
            return
        say(f"Stopping {what} ...")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            say(f"  {what} did not stop within {STOP_SECONDS:g}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def _stop_leftover_predictors(self) -> None:
        """Safety net if the adapter was killed: stop predictors its state files still name."""
        for path in sorted((self.adapter_state / "services").glob("*.json")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                pid = int(json.loads(path.read_text()).get("pid") or 0)
                if pid and _alive(pid) and b"custom_predictor" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    say(f"  stopping leftover predictor pid {pid}")
                    os.killpg(pid, signal.SIGTERM)

    def stop(self) -> None:
        self._stop(self.adapter, "service-builder and its predictors")
        self._stop_leftover_predictors()
        self._stop(self.mlflow, "MLflow")
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# ---- steps -------------------------------------------------------------------------------------------------------
def mlflow_client(settings: DemoSettings) -> MlflowClient:
    # The MLflow client reads these from the process environment: short retries keep a dead server from hanging us.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.mlflow_url)
    mlflow.set_registry_uri(settings.mlflow_url)
    return MlflowClient(settings.mlflow_url, registry_uri=settings.mlflow_url)


def failure(stack: Stack, tags: dict[str, str]) -> str:
    """A failed version's deployment.message, with the last run of its predictor's log when there is one."""
    message = tags.get("deployment.message", "(no deployment.message)")
    isvc = tags.get("deployment.inferenceservice", "").rpartition("/")[2]
    log = stack.adapter_state / "logs" / f"{isvc}.log"
    runs: list[list[str]] = [[]]
    with contextlib.suppress(OSError):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("--- "):  # the adapter marks each (re)start of the predictor
                runs.append([])
            elif line.strip():
                runs[-1].append(line)
    last = next((r for r in reversed(runs) if r), [])
    if isvc and last:  # the whole last run from the file: the message holds only the start of a log tail
        message = message.partition("; last log lines: ")[0]
        message += f"\n  last lines of {log}:\n" + "\n".join(f"    {line}" for line in last[-10:])
    return f"{message}\n  logs: {stack.adapter_log}, {stack.adapter_state / 'logs'}"


def wait_ready(
    client: MlflowClient, stack: Stack, models: list[demo_models.DemoModel], timeout: float
) -> dict[str, dict[str, str]]:
    """Show each model's deployment.status until all are `ready` and answer; return their tags."""
    before = {m.name: client.get_model_version(m.name, m.version).tags.get("deployment.updated_at") for m in models}
    stack.start_adapter()
    say(f"  service-builder run (DEPLOY_TARGET=local), log: {stack.adapter_log}")
    start = time.monotonic()
    shown: dict[str, str] = {}
    ready: dict[str, dict[str, str]] = {}
    while len(ready) < len(models):
        stack.check_alive()
        for m in models:
            if m.name in ready:
                continue
            tags = dict(client.get_model_version(m.name, m.version).tags)
            status = tags.get("deployment.status", "")
            fresh = tags.get("deployment.updated_at") != before[m.name]  # not left over from an earlier run
            url, endpoint = tags.get("deployment.url", ""), tags.get("model_endpoint", "")
            if status == "ready" and url and endpoint and http_ok(f"{url}/v2/health/ready") and http_ok(endpoint):
                ready[m.name] = tags
                say(f"  {m.name} v{m.version}: ready ({time.monotonic() - start:.0f}s)")
            elif status == "failed" and fresh and "deployment.message" in tags:
                # (tags are written one call each: wait for the message that follows the status)
                raise Failed(f"{m.name} v{m.version} failed: {failure(stack, tags)}")
            elif fresh and status not in ("", "ready", "failed") and shown.get(m.name) != status:
                say(f"  {m.name} v{m.version}: {status}")
                shown[m.name] = status
        if time.monotonic() - start > timeout:
            late = [m.name for m in models if m.name not in ready]
            waiting = ", ".join(f"{name} ({shown.get(name) or 'no status yet'})" for name in late)
            raise Failed(
                f"not ready after {timeout:g}s: {waiting}\n"
                f"  logs: {stack.adapter_log}, {stack.adapter_state / 'logs'}; more time: DEMO_TIMEOUT=600"
            )
        time.sleep(0.5)
    return ready


def curl(url: str, body: dict[str, Any], key: str) -> str:
    auth = shlex.quote(f"Authorization: Bearer {key}")
    body_text = shlex.quote(json.dumps(body))
    return f"curl -s -X POST {shlex.quote(url)} -H {auth} -H 'Content-Type: application/json' -d {body_text}"


def summary(
    settings: DemoSettings,
    models: list[demo_models.DemoModel],
    tags: dict[str, dict[str, str]],
    table: Path,
    key: str,
) -> None:
    say()
    say(f"MLflow UI (the written-back deployment.* tags are on each version): {settings.mlflow_url}/#/models")
    say(f"API key of the predictors (shown once; a new one each start; docs/security.md): {key}")
    for m in models:
        t = tags[m.name]
        api = t["model_endpoint"].rstrip("/") + "/v1"
        say()
        say(f"{m.title}: {m.name} v{m.version}")
        say(f"  MLflow:     {settings.mlflow_url}/#/models/{m.name}/versions/{m.version}")
        say(f"  Swagger UI: {t['model_endpoint']}  (Authorize with the API key, then Try it out)")
        say("  Predict a record:")
        say(f"    {curl(api + '/predict', {'records': [m.record]}, key)}")
        if m.lookup:
            say(f"  Look up a registered patient ({', '.join(m.lookup)}) and predict:")
            say(f"    {curl(api + '/model/predict', m.lookup, key)}")
        if t.get("deployment.inference_log"):
            say(f"  Inference log: {t['deployment.inference_log']}")
    say()
    say(f"Inference table (one row per call, written within seconds of it): {table}")
    say(f"  python -c {shlex.quote(f'import pandas; print(pandas.read_parquet({str(table)!r}))')}")
    say()


def run(settings: DemoSettings, stack: Stack, done: threading.Event) -> int:
    stack.lock()
    say(f"service-builder demo: state in {stack.state}; Ctrl-C stops everything")
    t0 = time.monotonic()
    say(f"[1/3] MLflow server on {settings.mlflow_url} (log: {stack.mlflow_log})")
    stack.start_mlflow()
    demo_models.preload()  # the imports overlap MLflow's start
    stack.wait_mlflow()
    say(f"  up ({time.monotonic() - t0:.0f}s)")
    say("[2/3] Example models (scikit-learn's bundled data sets)")
    client = mlflow_client(settings)
    models = demo_models.ensure_models(
        client, alias=ALIAS, tag_key=TAG_KEY, tag_value=TAG_VALUE, log=stack.state / "models.log"
    )
    for m in models:
        say(f"  {m.name} v{m.version}: {'reused' if m.reused else 'registered'}, marked by {m.marked_by}")
    say(f"[3/3] Deploying both, up to {settings.timeout:g}s")
    key = stack.new_key()
    tags = wait_ready(client, stack, models, settings.timeout)
    say(f"Both models ready, {time.monotonic() - t0:.0f}s after start.")
    summary(settings, models, tags, stack.adapter_state.resolve() / "inference-log", key)
    done.set()
    if settings.exit_when_ready:
        return 0
    say("Press Ctrl-C to stop MLflow, service-builder and the predictors.")
    while True:
        stack.check_alive()
        time.sleep(1)


def main() -> int:
    try:
        settings = DemoSettings()
    except ValidationError as e:
        err = e.errors()[0]
        print(f"demo: invalid setting DEMO_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}", file=sys.stderr)
        return 2
    stack = Stack(settings)
    done = threading.Event()
    stopping = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            raise Interrupted(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        code = run(settings, stack, done)
    except Interrupted as e:
        say()
        say(f"{e} received.")
        code = 0 if done.is_set() else 128 + e.signum
    except Failed as e:
        print(f"demo: {e}", file=sys.stderr, flush=True)
        code = e.code
    except Exception as e:  # noqa: BLE001 - e.g. MLflow refusing a call: one line, logs named, no traceback
        print(f"demo: {e.__class__.__name__}: {e}\n  logs: {stack.state}", file=sys.stderr, flush=True)
        code = 1
    finally:
        stopping.set()
        stack.stop()
    say("Stopped." if code == 0 else f"Stopped (exit code {code}).")
    return code


if __name__ == "__main__":
    sys.exit(main())
