"""Adapter benchmarks of the watch: how soon MLflow shows what KServe reports, and what 1,000 owned services cost.

Against the real control plane (kube-apiserver and the KServe controller; Knative played, tests/controlplane) and
a real `mlflow server`, with `service-builder run` as a process (POLL_INTERVAL_SECONDS=600, webhooks on, one
replica), each side in its own namespace with the ServiceAccount token.

1. Status latency, 20 trials per kind. Each trial is one model: its version 1 marked production (applied by
   webhook) and played ready; version 2 marked and played failed; version 3 marked and played ready, which
   supersedes version 1; the markers removed, which retires it. Each latency runs from the InferenceService
   change as an admin watch of the namespace receives it (the real KServe controller writing Ready, or False,
   from the played Knative Service; for retired, the deletion) to the `deployment.status` value in MLflow
   (read every 20 ms). Side by side, the same for `ready` with this checkout's parent `POLLING` (polling only,
   its default POLL_INTERVAL_SECONDS=30), the 20 trials spread over 32 s so they fall on every phase of the poll.
2. End to end, 20 trials: production tag set in MLflow to `deployment.status=ready` there, with the Knative
   Service played ready as soon as KServe creates it.
3. 1,000 owned InferenceServices (created as admin from the adapter's own rendering, outside MODEL_NAME_LIKE, so
   the adapter lists and watches them but has nothing to deploy), with a resync every 20 s: the run process's
   resident memory idle, after they appear, after three rounds of 1,000 updates each, after each of three relists
   (410 Gone through the fault proxy), after more resync passes, and its peak; then the Kubernetes and MLflow
   calls of an idle minute (the resync's, and nothing else).

BENCH_QUICK=1 shrinks it (5 trials, 100 services, a 10 s idle window). Loopback only, bounded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from mlflow import MlflowClient

from adapter import naming
from adapter.render import render
from adapter.settings import AdapterSettings
from adapter.types import VersionInfo
from tests.bench.adapter import baseline_tree
from tests.controlplane.fixtures import new_namespace
from tests.controlplane.knative import Knative
from tests.controlplane.plane import ControlPlane, running
from tests.controlplane.proxy import FaultProxy
from tests.servers import free_port, mlflow_server, sample, scrape, wait_http

QUICK = os.environ.get("BENCH_QUICK") == "1"
TRIALS, OWNED, IDLE = (5, 100, 10.0) if QUICK else (20, 1000, 60.0)
SECRET = "bench-watch-secret"
REPO = Path(__file__).resolve().parents[2]
POLLING = "1f317b7"  # main before the watch (issue 25): status reached MLflow with the next poll
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
RESYNC = 20  # seconds between full passes in the memory benchmark
SETTLE = 1.2  # seconds between a rollout's start and its played outcome: past the adapter's per-model cooldown


def percentiles(values: list[float]) -> tuple[float, float, float]:
    v = sorted(values)
    return statistics.median(v), v[min(len(v) - 1, round(0.95 * (len(v) - 1)))], v[-1]


def row(label: str, values: list[float], goal: float | None = None) -> str:
    p50, p95, top = percentiles(values)
    verdict = "-" if goal is None else ("PASS" if p95 <= goal else "FAIL")
    return f"| {label} | {len(values)} | {p50 * 1000:.0f} ms | {p95 * 1000:.0f} ms | {top * 1000:.0f} ms | {verdict} |"


class Recorder:
    """An admin watch of one namespace's InferenceServices: when each event arrived."""

    def __init__(self, admin: Any, namespace: str) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._watch = k8s_watch.Watch()
        objects = k8s.CustomObjectsApi(admin)
        stream = self._watch.stream(
            objects.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, timeout_seconds=3600
        )
        self._lock = threading.Lock()

        def run() -> None:
            with contextlib.suppress(Exception):
                for e in stream:
                    with self._lock:
                        self.events.append((time.perf_counter(), e["type"], e["raw_object"]))

        threading.Thread(target=run, daemon=True).start()

    def first(self, after: float, predicate: Callable[[str, dict[str, Any]], bool], timeout: float = 30) -> float:
        """Arrival time of the first event after `after` that satisfies `predicate`."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self._lock:
                hit = next((t for t, kind, obj in self.events if t >= after and predicate(kind, obj)), None)
            if hit is not None:
                return hit
            time.sleep(0.01)
        raise TimeoutError("no such InferenceService event")

    def stop(self) -> None:
        self._watch.stop()


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c.get("type"): c.get("status") for c in (obj.get("status") or {}).get("conditions") or []}


def _version(obj: dict[str, Any]) -> str:
    return str(((obj.get("metadata") or {}).get("annotations") or {}).get("mlflow.org/model-version") or "")


def is_ready(isvc: str, version: str) -> Callable[[str, dict[str, Any]], bool]:
    def check(kind: str, obj: dict[str, Any]) -> bool:
        pred = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
        return (
            obj["metadata"]["name"] == isvc
            and _version(obj) == version
            and _conditions(obj).get("Ready") == "True"
            and bool(pred.get("latestCreatedRevision"))
            and pred.get("latestReadyRevision") == pred.get("latestCreatedRevision")
        )

    return check


def is_failed(isvc: str, version: str) -> Callable[[str, dict[str, Any]], bool]:
    def check(kind: str, obj: dict[str, Any]) -> bool:
        conds = _conditions(obj)
        return obj["metadata"]["name"] == isvc and _version(obj) == version and conds.get("PredictorReady") == "False"

    return check


def is_deleted(isvc: str) -> Callable[[str, dict[str, Any]], bool]:
    def check(kind: str, obj: dict[str, Any]) -> bool:
        gone = kind == "DELETED" or bool((obj.get("metadata") or {}).get("deletionTimestamp"))
        return obj["metadata"]["name"] == isvc and gone

    return check


@dataclass
class Adapter:
    """`service-builder run` (this checkout, or `tree`) on its own namespace and model prefix."""

    url: str
    plane: ControlPlane
    prefix: str
    log: Path
    tree: Path = REPO
    kube_url: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.admin = self.plane.api_client()
        self.ns = new_namespace(self.plane, self.admin, prefix="bench")
        self.port = free_port()
        self.env = {
            **os.environ,
            "PYTHONPATH": str(self.tree),
            "MLFLOW_TRACKING_URI": self.url,
            "K8S_API": self.kube_url or self.plane.url,
            "K8S_API_KEY": self.ns.token,
            "K8S_CA_FILE": str(self.plane.ca),
            "K8S_NAME_SPACE": self.ns.name,
            "MODEL_NAME_LIKE": f"{self.prefix}%",
            "DEPLOY_STAGE": "",
            "POLL_INTERVAL_SECONDS": "600",
            "LEADER_ELECTION": "false",
            "WEBHOOK_HOST": "127.0.0.1",
            "WEBHOOK_PORT": str(self.port),
            "MLFLOW_WEBHOOK_SECRET": SECRET,
            "LOG_LEVEL": "INFO",
            **self.extra,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.hooked = False

    def register_webhook(self) -> None:
        hook = f"http://127.0.0.1:{self.port}/webhooks/mlflow"
        cmd = [sys.executable, "-m", "adapter", "webhook", "register", "--url", hook]
        subprocess.run(cmd, env=self.env, cwd=self.tree, check=True, capture_output=True, timeout=120)
        self.hooked = True

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "adapter", "run"], env=self.env, cwd=self.tree, stderr=out
            )
        wait_http(f"http://127.0.0.1:{self.port}/healthz", timeout=90, proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
        if self.hooked:  # else MLflow keeps delivering to a receiver that is gone, retrying, and falls behind
            mlflow = MlflowClient(self.url, registry_uri=self.url)
            for hook in mlflow.list_webhooks():
                if hook.name == "service-builder":
                    mlflow.delete_webhook(hook.webhook_id)
            self.hooked = False

    def metrics(self) -> dict[Any, float]:
        return scrape(f"http://127.0.0.1:{self.port}/metrics")

    def rss(self) -> tuple[float, float]:
        """(resident, peak resident) memory of the run process, MB."""
        assert self.proc is not None
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines() if ":" in line
        )
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def wait_tag(
    mlflow: MlflowClient, name: str, version: int, value: str, timeout: float = 60, step: float = 0.02
) -> float:
    """When `deployment.status` of the version became `value` (read every `step` seconds)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if mlflow.get_model_version(name, str(version)).tags.get("deployment.status") == value:
            return time.perf_counter()
        time.sleep(step)
    raise TimeoutError(f"{name} v{version} not {value} after {timeout}s")


def bench_status(url: str, plane: ControlPlane, tmp: Path) -> tuple[list[str], str]:
    mlflow = MlflowClient(url, registry_uri=url)
    side = Adapter(url, plane, "bench-status-", tmp / "status.log")
    knative = Knative(side.admin)
    recorder = Recorder(side.admin, side.ns.name)
    side.register_webhook()
    side.start()
    kinds: dict[str, list[float]] = {"ready": [], "failed": [], "superseded": [], "retired": []}
    try:
        for i in range(TRIALS):
            name = f"bench-status-{i:02d}"
            isvc = naming.isvc_name(name)
            mlflow.create_registered_model(name)
            mlflow.create_model_version(name, "s3://bench/model", tags={"stage": "production"}, await_creation_for=0)
            wait_tag(mlflow, name, 1, "deploying")
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            knative.play(side.ns.name, isvc, "ready")
            kinds["ready"].append(wait_tag(mlflow, name, 1, "ready") - recorder.first(t0, is_ready(isvc, "1")))

            mlflow.create_model_version(name, "s3://bench/model", tags={"stage": "production"}, await_creation_for=0)
            wait_tag(mlflow, name, 2, "deploying")
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            knative.play(side.ns.name, isvc, "failed", message="bench: the model cannot be served")
            kinds["failed"].append(wait_tag(mlflow, name, 2, "failed") - recorder.first(t0, is_failed(isvc, "2")))

            mlflow.create_model_version(name, "s3://bench/model", tags={"stage": "production"}, await_creation_for=0)
            wait_tag(mlflow, name, 3, "deploying")
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            knative.play(side.ns.name, isvc, "ready")
            superseded = wait_tag(mlflow, name, 1, "superseded")
            kinds["superseded"].append(superseded - recorder.first(t0, is_ready(isvc, "3")))

            time.sleep(SETTLE)
            t0 = time.perf_counter()
            for v in (1, 2, 3):
                mlflow.delete_model_version_tag(name, str(v), "stage")
            kinds["retired"].append(wait_tag(mlflow, name, 3, "retired") - recorder.first(t0, is_deleted(isvc)))
    finally:
        side.stop()
        recorder.stop()
    effects = sum(
        1
        for line in side.log.read_text().splitlines()
        if any(f"{verb} InferenceService " in line for verb in ("Created", "Updated", "Deleted"))
    )
    lines = [
        f"Status latency: InferenceService change (as an admin watch receives it) to `deployment.status` in MLflow,"
        f" POLL_INTERVAL_SECONDS=600, {TRIALS} trials per kind (goal p95 <= 2 s):",
        "",
        "| status | trials | p50 | p95 | max | goal |",
        "|---|---|---|---|---|---|",
        *(row(kind, values, goal=2.0) for kind, values in kinds.items()),
    ]
    note = f"{effects} applies and deletes for {TRIALS * 4} rollouts and retirements (one each)."
    return lines, note


def bench_polling(url: str, plane: ControlPlane, tmp: Path) -> list[str]:
    """The same `ready` latency with main before the watch (polling every 30 s, its default)."""
    mlflow = MlflowClient(url, registry_uri=url)
    with baseline_tree(tmp, POLLING) as tree:
        side = Adapter(url, plane, "bench-poll-", tmp / "poll.log", tree=tree, extra={"POLL_INTERVAL_SECONDS": "30"})
        knative = Knative(side.admin)
        recorder = Recorder(side.admin, side.ns.name)
        names = [f"bench-poll-{i:02d}" for i in range(TRIALS)]
        for name in names:
            mlflow.create_registered_model(name)
            mlflow.create_model_version(name, "s3://bench/model", tags={"stage": "production"}, await_creation_for=0)
        side.start()
        latencies: list[float] = []
        try:
            for name in names:
                wait_tag(mlflow, name, 1, "deploying", timeout=90, step=0.2)
            started = time.perf_counter()
            played: dict[str, float] = {}
            for i, name in enumerate(names):
                time.sleep(max(0.0, started + i * 32.0 / TRIALS - time.perf_counter()))
                played[name] = time.perf_counter()
                knative.play(side.ns.name, naming.isvc_name(name), "ready")
            for name in names:
                ready = wait_tag(mlflow, name, 1, "ready", timeout=90)
                changed = recorder.first(played[name], is_ready(naming.isvc_name(name), "1"))
                latencies.append(ready - changed)
        finally:
            side.stop()
            recorder.stop()
    return [row(f"ready, `{POLLING}` (polling every 30 s)", latencies)]


def bench_end_to_end(url: str, plane: ControlPlane, tmp: Path) -> list[str]:
    """Production tag set in MLflow -> `deployment.status=ready` there; Knative played ready at once."""
    mlflow = MlflowClient(url, registry_uri=url)
    side = Adapter(url, plane, "bench-e2e-", tmp / "e2e.log")
    knative = Knative(side.admin)
    side.register_webhook()
    names = [f"bench-e2e-{i:02d}" for i in range(TRIALS)]
    for name in names:
        mlflow.create_registered_model(name)
        mlflow.create_model_version(name, "s3://bench/model", await_creation_for=0)
    side.start()
    stop = threading.Event()
    problems: list[str] = []

    def player() -> None:
        """Knative, as fast as it can be: each new Knative Service reported ready as soon as it exists."""
        done: set[str] = set()
        objects = k8s.CustomObjectsApi(side.admin)
        while not stop.is_set():
            try:
                items = objects.list_namespaced_custom_object("serving.knative.dev", "v1", side.ns.name, "services")
                for ksvc in items["items"]:
                    isvc = ksvc["metadata"]["name"].removesuffix("-predictor")
                    if isvc not in done:
                        knative.play(side.ns.name, isvc, "ready")
                        done.add(isvc)
            except (TimeoutError, ApiException, KeyError) as e:
                problems.append(f"{type(e).__name__}: {e}"[:300])
            time.sleep(0.01)

    thread = threading.Thread(target=player, daemon=True)
    thread.start()
    latencies = []
    try:
        time.sleep(2.0)  # the first pass is over: from here on only webhooks and the watch act
        for name in names:
            t0 = time.perf_counter()
            mlflow.set_model_version_tag(name, "1", "stage", "production")
            try:
                latencies.append(wait_tag(mlflow, name, 1, "ready") - t0)
            except TimeoutError:
                tail = "\n".join(side.log.read_text().splitlines()[-40:])
                raise TimeoutError(f"{name} not ready; Knative player: {problems[-5:]}; adapter log:\n{tail}") from None
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=30)
        side.stop()
    return [row("end to end: tag set to ready in MLflow", latencies)]


def bench_owned(url: str, plane: ControlPlane, tmp: Path) -> list[str]:
    """Memory with OWNED owned InferenceServices, and the calls of an idle adapter. The resync runs every
    RESYNC seconds here, so its full passes (each lists every owned service) are measured too."""
    proxy = FaultProxy(plane.url, plane.ca).start()
    # Its models are none of the owned ones: it lists and watches them all, and has nothing to deploy.
    side = Adapter(
        url,
        plane,
        "bench-owned-in-scope-",
        tmp / "owned.log",
        kube_url=proxy.url,
        extra={"POLL_INTERVAL_SECONDS": str(RESYNC)},
    )
    objects = k8s.CustomObjectsApi(side.admin)
    settings = AdapterSettings(k8s_name_space=side.ns.name, predictor_image="kind.local/custom-predictor:dev")
    rows: list[tuple[str, float]] = []

    def passes() -> float:
        m = side.metrics()
        return sum(sample(m, "service_builder_passes_total", result=r) for r in ("ok", "error", "skipped"))

    try:
        side.start()
        time.sleep(5)
        rows.append(("idle, nothing owned", side.rss()[0]))
        t0 = time.perf_counter()

        def create(i: int) -> None:
            doc = render(settings, VersionInfo(f"bench-owned-{i:04d}", "1"))
            doc["metadata"]["namespace"] = side.ns.name
            objects.create_namespaced_custom_object(GROUP, VERSION, side.ns.name, PLURAL, doc)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(create, range(OWNED)))
        created = time.perf_counter() - t0
        until_quiet(side)
        done = passes()
        until(lambda: passes() >= done + 1, RESYNC * 3)
        rows.append((f"{OWNED} owned: listed, watched, one resync pass", side.rss()[0]))
        for round_ in range(3):
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(partial(touch, objects, side.ns.name, round_), range(OWNED)))
            until_quiet(side)
        events = sample(side.metrics(), "service_builder_watch_events_total", type="modified")
        rows.append((f"after 3 x {OWNED} updates ({events:.0f} modified events)", side.rss()[0]))
        restarts = "service_builder_watch_restarts_total"
        for n in range(1, 4):
            proxy.expire_watches()
            proxy.cut_watches()
            until(lambda n=n: sample(side.metrics(), restarts, reason="expired") >= n, 60)
            until(lambda: proxy.open_watches() == 1, 60)
            until_quiet(side)
            rows.append((f"after relist {n} (410 Gone: {OWNED} listed again)", side.rss()[0]))
        done = passes()
        until(lambda: passes() >= done + 3, RESYNC * 6)
        rows.append((f"after {passes():.0f} resync passes in all", side.rss()[0]))
        peak = side.rss()[1]
        until(lambda: passes() >= done + 4, RESYNC * 3)  # the idle window starts right after a resync
        before, resyncs = side.metrics(), passes()
        proxy.reset_log()
        time.sleep(IDLE)
        after = side.metrics()
        resyncs = passes() - resyncs
        lists, watches = proxy.count("GET", watch=False), proxy.count(watch=True)
        other = proxy.count() - lists - watches
        mlflow_calls = mlflow_total(after) - mlflow_total(before)
    finally:
        side.stop()
        proxy.stop()
    return [
        f"{OWNED} owned InferenceServices (created in {created:.0f} s), `service-builder run` with a resync every"
        f" {RESYNC} s, resident memory:",
        "",
        "| moment | RSS |",
        "|---|---|",
        *(f"| {what} | {mb:.0f} MB |" for what, mb in rows),
        f"| peak (VmHWM) | {peak:.0f} MB |",
        "",
        f"Idle for {IDLE:.0f} s afterwards ({resyncs:.0f} resync passes): {lists} Kubernetes lists, {watches} new"
        f" watches, {other} other Kubernetes requests, {mlflow_calls:.0f} MLflow calls.",
    ]


def mlflow_total(metrics: dict[Any, float]) -> float:
    return sum(
        v
        for (n, labels), v in metrics.items()
        if n == "service_builder_api_calls_total" and ("system", "mlflow") in labels
    )


def touch(objects: Any, ns: str, round_: int, i: int) -> None:
    name = naming.isvc_name(f"bench-owned-{i:04d}")
    patch = {"metadata": {"annotations": {"bench/round": str(round_)}}}
    objects.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)


def until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)


def until_quiet(side: Adapter, quiet: float = 5.0, timeout: float = 600) -> None:
    """Until the adapter's watch has seen no event for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1.0, time.monotonic()
    while time.monotonic() < deadline:
        m = side.metrics()
        seen = sum(v for (n, _), v in m.items() if n == "service_builder_watch_events_total")
        if seen != last:
            last, since = seen, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.5)
    raise TimeoutError("the watch never went quiet")


def main() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp, running(Path(tmp) / "controlplane") as plane:
        try:
            with mlflow_server(Path(tmp) / "mlflow") as server:
                status, note = bench_status(server.url, plane, Path(tmp))
                polling = bench_polling(server.url, plane, Path(tmp))
                e2e = bench_end_to_end(server.url, plane, Path(tmp))
                owned = bench_owned(server.url, plane, Path(tmp))
        except BaseException:
            for log in sorted(Path(tmp).glob("*.log")):  # the adapters' logs go with the temporary folder
                print(f"--- last lines of {log.name}:", *log.read_text().splitlines()[-30:], sep="\n", file=sys.stderr)
            raise
    lines = ["## Adapter: the watch", "", *status, *polling, *e2e, "", note, "", *owned, ""]
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
