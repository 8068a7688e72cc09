"""The local target (DEPLOY_TARGET=local): each InferenceService is a predictor process on 127.0.0.1.

`LocalCluster` speaks the same `Cluster` protocol as `kube.KubeCluster`, so the reconcile core is
unchanged: it emulates InferenceService objects (metadata, spec, and a KServe-shaped status read
from the process and its `/v2/health/ready`). State and logs live under SERVICE_BUILDER_STATE_DIR:
`services/<name>.json` per service, `logs/<name>.log` per predictor. A service keeps its port
across versions, so `deployment.url` is stable; a new version replaces the process (unlike KServe,
the previous version stops serving while the new one starts). A predictor that exits is reported
failed with its termination message (the one line a predictor writes before it exits; its last log
lines otherwise) and restarted with backoff, unless it exited for good (code 2: the model cannot be served), which
stays failed until the service changes. A lock file keeps two adapters from
managing one state dir; a restarted adapter adopts predictors that still answer, or replaces them.
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
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from adapter.errors import PermanentError
from adapter.log import kv
from adapter.render import CONTAINER
from adapter.settings import AdapterSettings
from adapter.types import MANAGED_BY, MANAGED_BY_LABEL

log = logging.getLogger("adapter.local")
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
PERMANENT_EXIT = 2
"""The predictor's exit code for a model it cannot serve: not restarted until the service changes (as Knative
keeps a failed revision failed)."""
LOG_TAIL_LINES = 12


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


class LocalCluster:
    """InferenceServices as local predictor processes."""

    def __init__(self, settings: AdapterSettings, *, python: str = sys.executable, manage: bool = True) -> None:
        """`manage=False` only reads state (for `status`): no lock, no process started or stopped."""
        self.namespace = "local"
        self.manage = manage
        self.base_env = settings.local_predictor_env()
        self.python = python
        self.root = settings.service_builder_state_dir.resolve()
        self.services = self.root / "services"
        self.logs = self.root / "logs"
        self.services.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._restarts: dict[str, tuple[int, float]] = {}  # name -> (failures, not before)
        self._lock_file: IO[str] | None = None
        if not manage:
            return
        self._lock_file = open(self.root / "adapter.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise PermanentError(f"another service-builder is using the state dir {self.root}") from None

    # ---- state files --------------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.services / f"{name}.json"

    def _load(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._path(name).read_text()))
        except (OSError, ValueError):
            return None

    def _save(self, state: dict[str, Any]) -> None:
        path = self._path(state["metadata"]["name"])
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)

    # ---- processes ----------------------------------------------------------------------------
    def _start(self, state: dict[str, Any]) -> None:
        name = state["metadata"]["name"]
        container = next(c for c in state["spec"]["predictor"]["containers"] if c.get("name") == CONTAINER)
        env = dict(self.base_env)  # local credentials (AWS_*, MLFLOW_TRACKING_*) come from the adapter's env
        env.update({e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e})
        # SERVICE_BUILDER_STATE_DIR names the adapter that owns the process (for people and orphan checks).
        termination = self._termination(name)
        termination.unlink(missing_ok=True)
        env.update(
            PORT=str(state["port"]),
            HOST="127.0.0.1",
            MLFLOW_DISABLE_TELEMETRY="true",
            SERVICE_BUILDER_STATE_DIR=str(self.root),
            TERMINATION_MESSAGE_PATH=str(termination),  # as Kubernetes' /dev/termination-log, per service
        )
        logfile = self.logs / f"{name}.log"
        with open(logfile, "ab") as out:
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
        state["pid"] = proc.pid
        state["startedAt"] = datetime.now(UTC).isoformat()
        state.pop("exitCode", None)
        log.info(
            "Started predictor %s",
            kv(isvc=f"local/{name}", pid=proc.pid, port=state["port"], revision=state["revision"]),
        )

    def _termination(self, name: str) -> Path:
        return self.logs / f"{name}.termination"

    def _reason(self, name: str) -> str:
        """Why the predictor exited: its termination message (one line), else its last log lines."""
        try:
            message = self._termination(name).read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            message = ""
        return message or "last log lines: " + (_tail(self.logs / f"{name}.log") or "(none)")

    def _stop(self, pid: int, timeout: float = 10.0) -> None:
        if not pid or not _alive(pid):
            self._children.pop(pid, None)
            return
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
        child = self._children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)

    def _exit_code(self, pid: int) -> int | None:
        child = self._children.get(pid)
        return child.poll() if child is not None else None

    def _refresh(self, state: dict[str, Any]) -> dict[str, Any]:
        """Read the process into a KServe-shaped status; restart a crashed predictor with backoff."""
        name = state["metadata"]["name"]
        pid = int(state.get("pid") or 0)
        alive = bool(pid) and _alive(pid) and (pid in self._children or _is_predictor(pid))
        if not alive and pid and self.manage:
            code = self._exit_code(pid)
            self._children.pop(pid, None)
            state["exitCode"] = code if code is not None else "unknown"
            state["pid"] = 0
            self._save(state)
            log.warning("Predictor exited %s", kv(isvc=f"local/{name}", exit_code=state["exitCode"]))
        if not alive and self.manage and state.get("exitCode") != PERMANENT_EXIT:
            failures, not_before = self._restarts.get(name, (0, 0.0))
            if time.monotonic() >= not_before:
                delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
                self._restarts[name] = (failures + 1, time.monotonic() + delay)
                crashed = state.get("exitCode")
                self._start(state)
                self._save(state)
                if crashed is not None:
                    state["exitCode"] = crashed  # report this round as failed, the restart is under way
        ready = bool(state.get("pid")) and "exitCode" not in state and _ready(state["port"])
        if ready:
            self._restarts.pop(name, None)
        return self._view(state, ready)

    def _view(self, state: dict[str, Any], ready: bool) -> dict[str, Any]:
        name, rev = state["metadata"]["name"], state["revision"]
        url = f"http://127.0.0.1:{state['port']}"
        pred: dict[str, Any] = {"latestCreatedRevision": rev, "latestReadyRevision": rev if ready else "", "url": url}
        conditions = [
            {"type": "Ready", "status": "True" if ready else "Unknown"},
            {"type": "PredictorReady", "status": "True" if ready else "Unknown"},
        ]
        if "exitCode" in state:
            message = f"predictor exited with code {state['exitCode']}: {self._reason(name)}"
            conditions = [
                {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": message},
                {
                    "type": "PredictorReady",
                    "status": "False",
                    "reason": f"ExitCode{state['exitCode']}",
                    "message": message,
                },
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

    # ---- the Cluster protocol ----------------------------------------------------------------
    def list_owned(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.services.glob("*.json")):
            state = self._load(path.stem)
            if state and (state["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY:
                out.append(self._refresh(state))
        return out

    def list_all(self) -> list[dict[str, Any]]:
        """Every local service is this adapter's own (the state folder is not shared)."""
        return self.list_owned()

    def get(self, name: str) -> dict[str, Any] | None:
        state = self._load(name)
        return self._refresh(state) if state else None

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        name = manifest["metadata"]["name"]
        state = self._load(name)
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
            self._stop(int(state.get("pid") or 0))
            state.update(wanted)
            state["generation"] += 1
            state["metadata"]["generation"] = state["generation"]
            state["revision"] = f"{name}-predictor-{state['generation']:05d}"
            state.pop("exitCode", None)
            self._restarts.pop(name, None)
            self._start(state)
            self._save(state)
        return self._refresh(state)

    def delete(self, name: str) -> bool:
        state = self._load(name)
        if state is None:
            return False
        self._stop(int(state.get("pid") or 0))
        self._path(name).unlink(missing_ok=True)
        log.info("Stopped predictor %s", kv(isvc=f"local/{name}"))
        return True

    def event(self, isvc: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        log.debug("Event %s", kv(isvc=f"local/{isvc['metadata']['name']}", reason=reason, message=message))

    def close(self) -> None:
        """Stop every predictor this adapter runs (on `run` exit: no orphans)."""
        for path in sorted(self.services.glob("*.json")):
            state = self._load(path.stem)
            if state and state.get("pid"):
                self._stop(int(state["pid"]))
                state["pid"] = 0
                self._save(state)
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
