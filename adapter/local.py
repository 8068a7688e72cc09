"""The local target (DEPLOY_TARGET=local): each InferenceService is a predictor process on 127.0.0.1.

Three parts, each with one job:
- `StateStore`: the emulated objects, `services/<name>.json` under SERVICE_BUILDER_STATE_DIR (written
  atomically), and the lock file that keeps two adapters from managing one state dir;
- `Supervisor`: the predictor processes (`logs/<name>.log` each). It starts and stops them, and its `tick()`,
  called by the `run` loop (and once by `sync`), records a predictor that exited and restarts it with backoff,
  and adopts predictors a restarted adapter finds still running. A thread per predictor it starts follows it
  and tells (`notify`) as soon as it answers ready and as soon as it exits;
- `LocalCluster`: the thin facade that speaks the `Cluster` protocol of `kube.KubeCluster`, so the reconcile
  core is unchanged. Reads (`get`, `list_owned`) only look: a KServe-shaped status from the state, the
  process and its `/v2/health/ready`; they never start, stop or restart anything. `apply` and `delete` are
  the writes: they replace or stop the process. `events` is its change source for the run loop
  (`adapter.manager`): the supervisor's news, as the watch on InferenceServices is on the kserve target.

A service keeps its port across versions, so `deployment.url` is stable; a new version replaces the process
(unlike KServe, the previous version stops serving while the new one starts). A predictor that exited is
reported failed, with its exit code and its termination message (the one line a predictor writes before it
exits, as Kubernetes keeps `/dev/termination-log`; its last log lines otherwise), until a restart of it is
ready. One that exited for good (code 2: the model cannot be served) is not restarted until the service changes,
as Knative keeps a failed revision failed.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from adapter.errors import PermanentError
from adapter.log import kv
from adapter.render import CONTAINER
from adapter.settings import AdapterSettings
from adapter.types import ANN_MODEL_NAME, MANAGED_BY, MANAGED_BY_LABEL

log = logging.getLogger("adapter.local")
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
PERMANENT_EXIT = 2
"""The predictor's exit code for a model it cannot serve: not restarted until the service changes."""
LOG_TAIL_LINES = 12
READY_POLL_SECONDS = 0.1  # how often a starting predictor's /v2/health/ready is asked


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return True


def _is_predictor(pid: int) -> bool:
    try:
        return b"custom_predictor" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=0.5) as r:
            return bool(r.status == 200)
    except (OSError, ValueError):
        return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    current = text.rsplit("--- ", 1)[-1].splitlines()[1:]  # only this revision's lines
    return " | ".join(line.strip() for line in current[-lines:] if line.strip())


def predictor_env(manifest: dict[str, Any], base_env: dict[str, str], port: int) -> dict[str, str]:
    """The env of a predictor process for a rendered InferenceService: `base_env` (local credentials: AWS_*,
    MLFLOW_TRACKING_*), the container's env values (references to Secrets are not resolved here), and the port on
    127.0.0.1 (also used by the plugin's `run_local`)."""
    container = next(c for c in manifest["spec"]["predictor"]["containers"] if c.get("name") == CONTAINER)
    env = dict(base_env)
    env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
    env.update(PORT=str(port), HOST="127.0.0.1", MLFLOW_DISABLE_TELEMETRY="true")
    return env


class StateStore:
    """`services/<name>.json` per emulated InferenceService, and the state dir's lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services = root / "services"
        self.logs = root / "logs"
        self.services.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = None

    def lock(self) -> None:
        """Hold the state dir for this process; PermanentError if another adapter holds it."""
        self._lock_file = open(self.root / "adapter.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise PermanentError(f"another service-builder is using the state dir {self.root}") from None

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def termination(self, name: str) -> Path:
        return self.logs / f"{name}.termination"

    def reason(self, name: str) -> str:
        """Why a predictor exited: its termination message (one line), else its last log lines."""
        try:
            message = self.termination(name).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            message = ""
        return message or "last log lines: " + (_tail(self.logs / f"{name}.log") or "(none)")

    def path(self, name: str) -> Path:
        return self.services / f"{name}.json"

    def load(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self.path(name).read_text()))
        except (OSError, ValueError):
            return None

    def save(self, state: dict[str, Any]) -> None:
        path = self.path(state["metadata"]["name"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    def all(self) -> list[dict[str, Any]]:
        return [s for path in sorted(self.services.glob("*.json")) if (s := self.load(path.stem))]

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)


class Supervisor:
    """Starts, stops and watches the predictor processes named in the store."""

    def __init__(self, store: StateStore, python: str, base_env: dict[str, str]) -> None:
        self.store, self.python, self.base_env = store, python, base_env
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._restarts: dict[str, tuple[int, float]] = {}  # name -> (failures, not before)
        self._lock = threading.RLock()
        self._stopping: set[int] = set()  # pids being stopped on purpose: their exit is no news
        self.notify: Callable[[str], None] | None = None  # told the service name when a predictor is ready or exits

    def _tell(self, name: str) -> None:
        notify = self.notify
        if notify is not None:
            try:
                notify(name)
            except Exception:  # the run loop's business; never the supervisor's end
                log.exception("Predictor news not delivered %s", kv(isvc=f"local/{name}"))

    def _follow(self, proc: subprocess.Popen[bytes], name: str, port: int) -> None:
        """Tell when `proc` first answers ready, then when it exits (unless it was stopped on purpose)."""
        while proc.poll() is None:
            if _ready(port):
                self._tell(name)
                proc.wait()
                break
            time.sleep(READY_POLL_SECONDS)
        if proc.pid not in self._stopping:
            self._tell(name)

    def start(self, state: dict[str, Any]) -> None:
        """Start the predictor of `state` (sets `pid`, `startedAt`); the caller saves the state."""
        name = state["metadata"]["name"]
        env = predictor_env(state, self.base_env, int(state["port"]))
        # SERVICE_BUILDER_STATE_DIR names the adapter that owns the process (for people and orphan checks).
        termination = self.store.termination(name)
        termination.unlink(missing_ok=True)
        env.update(
            SERVICE_BUILDER_STATE_DIR=str(self.store.root),
            TERMINATION_MESSAGE_PATH=str(termination),  # as Kubernetes' /dev/termination-log, per service
        )
        logfile = self.store.logs / f"{name}.log"
        with self._lock, open(logfile, "ab") as out:
            out.write(f"--- {datetime.now(UTC).isoformat()} starting revision {state['revision']}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [self.python, "-m", "custom_predictor"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._children[proc.pid] = proc
        threading.Thread(
            target=self._follow, args=(proc, name, int(state["port"])), name=f"follow-{name}", daemon=True
        ).start()
        state["pid"] = proc.pid
        state["startedAt"] = datetime.now(UTC).isoformat()
        state.pop("exitCode", None)
        log.info(
            "Started predictor %s",
            kv(isvc=f"local/{name}", pid=proc.pid, port=state["port"], revision=state["revision"]),
        )

    def stop(self, pid: int, timeout: float = 10.0) -> None:
        if not pid or not _alive(pid):
            with self._lock:
                self._children.pop(pid, None)
            return
        self._stopping.add(pid)
        try:
            self._stop(pid, timeout)
        finally:
            self._stopping.discard(pid)

    def _stop(self, pid: int, timeout: float) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)  # predictors lead their own session: workers go too
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            child = self._children.get(pid)
            if child is not None and child.poll() is not None:
                break
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with self._lock:
            child = self._children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)

    def forget(self, name: str) -> None:
        """A new revision starts with a clean restart record."""
        with self._lock:
            self._restarts.pop(name, None)

    def running(self, state: dict[str, Any]) -> bool:
        """Whether the process `state` names is alive and is our predictor (a reused pid is not)."""
        pid = int(state.get("pid") or 0)
        return bool(pid) and _alive(pid) and (pid in self._children or _is_predictor(pid))

    def exit_code(self, pid: int) -> int | None:
        child = self._children.get(pid)
        return child.poll() if child is not None else None

    def tick(self) -> None:
        """Record predictors that exited, restart them when their backoff allows, forget recovered ones."""
        with self._lock:
            for state in self.store.all():
                self._tick_one(state)

    def _tick_one(self, state: dict[str, Any]) -> None:
        name = state["metadata"]["name"]
        pid = int(state.get("pid") or 0)
        if self.running(state):
            if "lastExitCode" in state and _ready(state["port"]):  # recovered
                self._restarts.pop(name, None)
                state.pop("lastExitCode", None)
                state.pop("lastLog", None)
                self.store.save(state)
            return
        if pid:  # it ran and is gone: a crash (a clean stop sets pid 0)
            code = self.exit_code(pid)
            self._children.pop(pid, None)
            state["exitCode"] = state["lastExitCode"] = code if code is not None else "unknown"
            state["lastLog"] = self.store.reason(name)  # before a restart starts a new section
            state["pid"] = 0
            self.store.save(state)
            log.warning("Predictor exited %s", kv(isvc=f"local/{name}", exit_code=state["exitCode"]))
            self._tell(name)
        if state.get("exitCode") == PERMANENT_EXIT:
            return  # the model cannot be served: failed until the service changes
        failures, not_before = self._restarts.get(name, (0, 0.0))
        if time.monotonic() < not_before:
            return
        if "exitCode" in state or "lastExitCode" in state:
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            self._restarts[name] = (failures + 1, time.monotonic() + delay)
        self.start(state)
        self.store.save(state)

    def stop_all(self) -> None:
        """Stop every predictor in the store (on `run` exit: no orphans)."""
        with self._lock:
            for state in self.store.all():
                if state.get("pid"):
                    self.stop(int(state["pid"]))
                    state["pid"] = 0
                    self.store.save(state)


class SupervisorEvents:
    """The local target's change source: the supervisor's news about a predictor, as the model to reconcile."""

    def __init__(self, store: StateStore, supervisor: Supervisor) -> None:
        self.store, self.supervisor = store, supervisor

    def start(self, changed: Callable[[str], None], resync: Callable[[], None]) -> None:
        def tell(name: str) -> None:
            state = self.store.load(name)
            model = str(((state or {}).get("metadata") or {}).get("annotations", {}).get(ANN_MODEL_NAME) or "")
            if model:
                changed(model)

        self.supervisor.notify = tell
        resync()  # nothing to list: the state is on disk, and the first full pass reads it

    def stop(self) -> None:
        self.supervisor.notify = None


class LocalCluster:
    """InferenceServices as local predictor processes: the `Cluster` facade over the store and the supervisor."""

    def __init__(self, settings: AdapterSettings, *, python: str = sys.executable, manage: bool = True) -> None:
        """`manage=False` only reads state (for `status`): no lock, no process started or stopped."""
        self.namespace = "local"
        self.manage = manage
        self.store = StateStore(settings.service_builder_state_dir.resolve())
        self.root = self.store.root
        self.supervisor = Supervisor(self.store, python, settings.local_predictor_env())
        self.events = SupervisorEvents(self.store, self.supervisor)
        if manage:
            self.store.lock()

    def tick(self) -> None:
        """One round of process supervision (the `run` loop calls it; reads never do)."""
        if self.manage:
            self.supervisor.tick()

    # ---- reads ---------------------------------------------------------------------------------
    def _view(self, state: dict[str, Any]) -> dict[str, Any]:
        """A KServe-shaped object from the state and the process: looks, changes nothing."""
        name, rev = state["metadata"]["name"], state["revision"]
        url = f"http://127.0.0.1:{state['port']}"
        running = self.supervisor.running(state)
        exit_code = state.get("exitCode")
        pid = int(state.get("pid") or 0)
        if not running and pid and exit_code is None:  # gone since the supervisor last looked
            code = self.supervisor.exit_code(pid)
            exit_code = code if code is not None else "unknown"
        ready = running and _ready(state["port"])
        crashed_reason = ""
        if not ready and exit_code is None and "lastExitCode" in state:  # restarted after a crash, not ready yet
            exit_code, crashed_reason = state["lastExitCode"], str(state.get("lastLog") or "")
        pred: dict[str, Any] = {"latestCreatedRevision": rev, "latestReadyRevision": rev if ready else "", "url": url}
        conditions = [
            {"type": "Ready", "status": "True" if ready else "Unknown"},
            {"type": "PredictorReady", "status": "True" if ready else "Unknown"},
        ]
        if not ready and exit_code is not None:
            # The crashed run's reason: recorded at the crash, unless a restart has not been seen yet.
            message = f"predictor exited with code {exit_code}: {crashed_reason or self.store.reason(name)}"
            conditions = [
                {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": message},
                {"type": "PredictorReady", "status": "False", "reason": f"ExitCode{exit_code}", "message": message},
            ]
        if ready:
            pred["traffic"] = [{"revisionName": rev, "percent": 100, "latestRevision": True}]
        view = {k: copy.deepcopy(state[k]) for k in ("apiVersion", "kind", "metadata", "spec")}
        view["status"] = {
            "url": url,
            "address": {"url": url},
            "conditions": conditions,
            "components": {"predictor": pred},
        }
        return view

    def list_all(self) -> list[dict[str, Any]]:
        return [self._view(state) for state in self.store.all()]

    def list_owned(self) -> list[dict[str, Any]]:
        return [
            self._view(state)
            for state in self.store.all()
            if (state["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        ]

    def get(self, name: str) -> dict[str, Any] | None:
        state = self.store.load(name)
        return self._view(state) if state else None

    # ---- writes --------------------------------------------------------------------------------
    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        state = self.store.load(name)
        wanted = {k: copy.deepcopy(manifest[k]) for k in ("metadata", "spec")}
        if state is None:
            state = {
                "apiVersion": manifest["apiVersion"],
                "kind": manifest["kind"],
                "generation": 0,
                "port": _free_port(),
                "pid": 0,
            }
            wanted["metadata"]["creationTimestamp"] = datetime.now(UTC).isoformat(timespec="seconds")
        else:
            wanted["metadata"]["creationTimestamp"] = state["metadata"].get("creationTimestamp")
        if state.get("spec") != wanted["spec"] or state.get("metadata") != wanted["metadata"]:
            self.supervisor.stop(int(state.get("pid") or 0))
            state.update(wanted)
            state["generation"] += 1
            state["metadata"]["generation"] = state["generation"]
            state["revision"] = f"{name}-predictor-{state['generation']:05d}"
            for key in ("exitCode", "lastExitCode", "lastLog"):
                state.pop(key, None)
            self.supervisor.forget(name)
            self.supervisor.start(state)
            self.store.save(state)
        return self._view(state)

    def delete(self, name: str) -> bool:
        state = self.store.load(name)
        if state is None:
            return False
        self.supervisor.stop(int(state.get("pid") or 0))
        self.supervisor.forget(name)
        self.store.remove(name)
        log.info("Stopped predictor %s", kv(isvc=f"local/{name}"))
        return True

    def event(self, isvc: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        log.debug("Event %s", kv(isvc=f"local/{isvc['metadata']['name']}", reason=reason, message=message))

    def close(self) -> None:
        """Stop every predictor this adapter runs and free the state dir."""
        if self.manage:
            self.supervisor.stop_all()
        self.store.unlock()
