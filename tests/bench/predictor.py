"""Predictor benchmark: the generic predictor against `mlflow models serve` on the same registered model.

In one run, on one real `mlflow server` (sqlite, proxied artifacts) holding a registered scikit-learn classifier
(tests/predictor/models.py), each server pinned to CPU 0 and the load generator (Debian's `wrk`) to CPU 1; the
predictor runs twice, with its numpy kernel (the default) and with `KERNELS=false` (the estimator itself, what
models outside the kernels get), the second for information (no goal):
1. Cold start: process start to the first 200 prediction, alternating the servers, median of 5.
2. 1-row throughput (goal: at least 10x) and p50/p99 latency under the same load (16 connections, 20 s after a
   3 s warm-up),
   then RSS of the server's process tree (`mlflow models serve` is a CLI process plus a uvicorn child). The
   predictor is measured once its kernel check (scikit-learn in a low-priority child) is over; how long
   that took on an idle server is reported.
3. Soak of the predictor: 60 s at 64 connections; zero errors, RSS growth under 5 % (after a 64-connection
   warm-up).
4. Open Inference Protocol, 1,000 rows per request: the same tensor [1000, 5] as JSON and with the binary tensor
   data extension, to the predictor (kernel), 16 connections each; the binary path must not be slower.
5. The flavors of issue 12: an XGBoost classifier, a LightGBM classifier and a PyTorch MLP (tensor signature,
   MLflow 3's exported format), each registered and served by both servers in turn: cold start (median of
   COLD_REPS, alternating) and 1-row throughput and latency under the same load. Goals: at most 0.5x the cold
   start (0.6x for PyTorch: `import torch` and `torch.export.load` bound both servers) and at least 3x the
   throughput of `mlflow models serve`.
Prints markdown tables with ratios and PASS/FAIL per goal of issues 3, 12 and 13. BENCH_QUICK=1 makes every phase short
(a smoke run, figures not meaningful). Loopback only; every load is bounded in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from tests.predictor.procs import PREDICTOR_ARGV, VENV_BIN, base_env, log_tail, predictor_env, spawn, stop
from tests.servers import free_port, mlflow_server

QUICK = os.environ.get("BENCH_QUICK") == "1"
COLD_REPS = 2 if QUICK else 5
WARMUP_S, LOAD_S, CONNECTIONS = (1, 3, 16) if QUICK else (3, 20, 16)
SOAK_WARMUP_S, SOAK_S, SOAK_CONNECTIONS = (2, 5, 64) if QUICK else (5, 60, 64)
SERVER_CPU, LOAD_CPU = "0", "1"
MODEL_NAME = "Bench Classifier"
V2_ROWS = 1000

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length then wrk.headers["Inference-Header-Content-Length"] = header_length end
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization then wrk.headers["Authorization"] = authorization end
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*a"); f:close()
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %f, "errors": %d, "non2xx": %d, "p50_us": %d, "p99_us": %d}\\n',
    s.requests, s.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class Target:
    """One server under test: how to start it and what a 1-row prediction request to it looks like."""

    name: str
    argv: list[str]
    env: dict[str, str]
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    """BENCH_* variables for the wrk script: BENCH_CONTENT_TYPE, BENCH_HEADER_LENGTH, BENCH_AUTHORIZATION."""


@dataclass
class Load:
    requests: int
    seconds: float
    errors: int
    non2xx: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def targets(model_uri: str, tracking_uri: str, row: dict[str, float]) -> list[Target]:
    port = free_port()
    mlflow = Target(
        name="mlflow models serve",
        argv=[
            *("taskset", "-c", SERVER_CPU),
            *(str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local"),
            *("--workers", "1", "--host", "127.0.0.1", "--port", str(port)),
        ],
        env=base_env(MLFLOW_TRACKING_URI=tracking_uri),
        url=f"http://127.0.0.1:{port}/invocations",
        body=json.dumps({"dataframe_records": [row]}).encode(),
    )
    port = free_port()
    ours = Target(
        name="custom_predictor",
        argv=["taskset", "-c", SERVER_CPU, *PREDICTOR_ARGV],
        env=predictor_env(model_uri, tracking_uri, port),
        url=f"http://127.0.0.1:{port}/bench-classifier/api/v1/predict",
        body=json.dumps({"records": [row]}).encode(),
    )
    port = free_port()
    estimator = Target(
        name="custom_predictor, KERNELS=false",
        argv=["taskset", "-c", SERVER_CPU, *PREDICTOR_ARGV],
        env=predictor_env(model_uri, tracking_uri, port, KERNELS="false"),
        url=f"http://127.0.0.1:{port}/bench-classifier/api/v1/predict",
        body=ours.body,
    )
    return [mlflow, ours, estimator]


def stop_quietly(proc: subprocess.Popen, deadline_s: float = 10.0) -> None:
    """Stop `proc`'s process group, then wait until none of its processes runs (a child the predictor started
    just before it stopped would otherwise still use the core the next server's cold start is measured on)."""
    stop(proc)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        alive = []
        for p in psutil.process_iter(["status"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(p.pid) == proc.pid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        if not alive:
            return
        time.sleep(0.05)
    raise RuntimeError(f"processes of group {proc.pid} still run {deadline_s} s after it was stopped")


def predict_once(t: Target, timeout: float = 2.0) -> int:
    headers = {"Content-Type": t.headers.get("BENCH_CONTENT_TYPE", "application/json")}
    if "BENCH_AUTHORIZATION" in t.headers:
        headers["Authorization"] = t.headers["BENCH_AUTHORIZATION"]
    if "BENCH_HEADER_LENGTH" in t.headers:
        headers["Inference-Header-Content-Length"] = t.headers["BENCH_HEADER_LENGTH"]
    request = urllib.request.Request(t.url, data=t.body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def start(t: Target, log: Path, deadline_s: float = 180.0) -> tuple[subprocess.Popen, float]:
    """Start `t`, poll a prediction every 10 ms; return the process and seconds to the first 200."""
    t0 = time.perf_counter()
    proc = spawn(t.argv, t.env, log)
    while predict_once(t) != 200:
        if proc.poll() is not None or time.perf_counter() - t0 > deadline_s:
            stop(proc)
            raise RuntimeError(f"{t.name} did not answer a prediction:\n{log_tail(log)}")
        time.sleep(0.01)
    return proc, time.perf_counter() - t0


def settle(t: Target, proc: subprocess.Popen, deadline_s: float = 300.0) -> float:
    """For the predictor, wait until its kernel check (a low-priority child process) is over; return the
    seconds waited. Load and memory are measured in that steady state, not while the check runs."""
    if not t.name.startswith("custom_predictor"):
        return 0.0
    root = t.url.split("/", 3)[:3]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s and proc.poll() is None:
        with urllib.request.urlopen("/".join(root) + "/metrics", timeout=5) as r:
            if 'kernel_check="pending"' not in r.read().decode():
                return time.perf_counter() - t0
        time.sleep(0.2)
    raise RuntimeError(f"{t.name}: the kernel check did not finish")


def tree_rss(proc: subprocess.Popen) -> tuple[int, int]:
    """RSS of the whole process tree and of its largest process, in bytes."""
    root = psutil.Process(proc.pid)
    sizes = [p.memory_info().rss for p in [root, *root.children(recursive=True)]]
    return sum(sizes), max(sizes)


def wrk(t: Target, connections: int, seconds: int, workdir: Path) -> Load:
    wrk_bin = shutil.which("wrk")
    if wrk_bin is None:
        raise SystemExit("the benchmark needs wrk: apt-get install wrk")
    script, body = workdir / "post.lua", workdir / f"body-{abs(hash(t.name))}.bin"
    script.write_text(WRK_SCRIPT)
    body.write_bytes(t.body)
    argv = ["taskset", "-c", LOAD_CPU, wrk_bin, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    out = subprocess.run(
        [*argv, "-s", str(script), t.url],
        env={**os.environ, "BENCH_BODY": str(body), **t.headers},
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    r = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT ")).removeprefix("RESULT "))
    return Load(r["requests"], r["seconds"], r["errors"], r["non2xx"], r["p50_us"] / 1e3, r["p99_us"] / 1e3)


def measure_cold_starts(ts: list[Target], workdir: Path) -> dict[str, list[float]]:
    cold: dict[str, list[float]] = {t.name: [] for t in ts}
    for rep in range(COLD_REPS):
        for t in ts:
            proc, seconds = start(t, workdir / f"cold-{rep}-{t.name.replace(' ', '-')}.log")
            stop_quietly(proc)
            cold[t.name].append(seconds)
    return cold


def measure_load(t: Target, workdir: Path) -> tuple[Load, tuple[int, int], float]:
    proc, _ = start(t, workdir / f"load-{t.name.replace(' ', '-')}.log")
    try:
        settled = settle(t, proc)
        wrk(t, CONNECTIONS, WARMUP_S, workdir)
        load = wrk(t, CONNECTIONS, LOAD_S, workdir)
        return load, tree_rss(proc), settled
    finally:
        stop(proc)


def soak(t: Target, workdir: Path) -> tuple[Load, int, int]:
    proc, _ = start(t, workdir / "soak.log")
    try:
        settle(t, proc)
        wrk(t, SOAK_CONNECTIONS, SOAK_WARMUP_S, workdir)
        before, _ = tree_rss(proc)
        load = wrk(t, SOAK_CONNECTIONS, SOAK_S, workdir)
        after, _ = tree_rss(proc)
        return load, before, after
    finally:
        stop(proc)


def v2_bodies(x: Any) -> tuple[bytes, bytes, int]:
    """The tensor `x` as a V2 JSON body and as a binary one (and the binary one's JSON header length)."""
    import orjson

    shape = list(x.shape)
    as_json = orjson.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP64", "data": x.ravel().tolist()}]})
    parameters = {"binary_data_size": x.size * 8}
    head = orjson.dumps({"inputs": [{"name": "x", "shape": shape, "datatype": "FP64", "parameters": parameters}]})
    return as_json, head + x.astype("<f8").tobytes(), len(head)


def measure_v2(t: Target, x: Any, workdir: Path) -> tuple[Load, Load]:
    """1,000-row V2 requests to the predictor: (JSON, binary), the same tensor, each after its warm-up."""
    as_json, binary, header = v2_bodies(x)
    url = "/".join(t.url.split("/", 3)[:3]) + "/v2/models/bench-classifier/infer"
    json_target = replace(t, name="v2-json", url=url, body=as_json)
    binary_target = replace(
        t,
        name="v2-binary",
        url=url,
        body=binary,
        headers={"BENCH_CONTENT_TYPE": "application/octet-stream", "BENCH_HEADER_LENGTH": str(header)},
    )
    proc, _ = start(t, workdir / "v2.log")
    try:
        settle(t, proc)
        loads = []
        for target in (json_target, binary_target):
            wrk(target, CONNECTIONS, WARMUP_S, workdir)
            loads.append(wrk(target, CONNECTIONS, LOAD_S, workdir))
        return loads[0], loads[1]
    finally:
        stop(proc)


def v2_table(v2: tuple[Load, Load], rows: int) -> list[str]:
    j, b = v2
    ok = b.rps >= j.rps and b.errors + b.non2xx + j.errors + j.non2xx == 0
    return [
        "",
        f"Open Inference Protocol, {rows:,} rows per request (one FP64 tensor [{rows}, 5]), {CONNECTIONS} connections, "
        f"{LOAD_S} s each:",
        "",
        "| body | req/s | rows/s | p50 (ms) | p99 (ms) | errors |",
        "|---|---|---|---|---|---|",
        *[
            f"| {name} | {load.rps:.0f} | {load.rps * rows:,.0f} | {load.p50_ms:.1f} | {load.p99_ms:.1f} | "
            f"{load.errors + load.non2xx} |"
            for name, load in (("JSON", j), ("binary tensor data", b))
        ],
        "",
        f"binary vs JSON: {b.rps / j.rps:.2f}x throughput; goal: not slower: {verdict(ok)}",
    ]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(
    cold: dict[str, list[float]],
    loads: dict[str, tuple[Load, tuple[int, int], float]],
    soaked: tuple[Load, int, int],
) -> list[str]:
    m, o, e = "mlflow models serve", "custom_predictor", "custom_predictor, KERNELS=false"
    cm, co, ce = statistics.median(cold[m]), statistics.median(cold[o]), statistics.median(cold[e])
    (lm, (rm, wm), _), (lo, (ro, wo), checked), (le, (re_, _), _) = loads[m], loads[o], loads[e]
    mb = 1024 * 1024
    s, before, after = soaked
    growth = after / before - 1
    rows = [
        ("cold start, median (s)", f"{cm:.2f}", f"{co:.2f}", co / cm, "<= 0.3x", co / cm <= 0.3),
        (
            "1-row throughput (req/s)",
            f"{lm.rps:.0f}",
            f"{lo.rps:.0f}",
            lo.rps / lm.rps,
            ">= 10x",
            lo.rps / lm.rps >= 10,
        ),
        ("p50 latency (ms)", f"{lm.p50_ms:.1f}", f"{lo.p50_ms:.1f}", lo.p50_ms / lm.p50_ms, "", None),
        (
            "p99 latency (ms)",
            f"{lm.p99_ms:.1f}",
            f"{lo.p99_ms:.1f}",
            lo.p99_ms / lm.p99_ms,
            "<= 0.3x",
            lo.p99_ms / lm.p99_ms <= 0.3,
        ),
        ("RSS, process tree (MB)", f"{rm / mb:.0f}", f"{ro / mb:.0f}", ro / rm, "<= 0.6x", ro / rm <= 0.6),
        ("RSS, serving process (MB)", f"{wm / mb:.0f}", f"{wo / mb:.0f}", wo / wm, "", None),
    ]
    lines = [
        "## Predictor vs `mlflow models serve` (same registered scikit-learn model)",
        "",
        f"Cold starts: {COLD_REPS} each; load: {CONNECTIONS} connections, {LOAD_S} s after {WARMUP_S} s warm-up; "
        "servers on CPU 0, wrk on CPU 1." + (" QUICK RUN: figures not meaningful." if QUICK else ""),
        "",
        "| figure | mlflow models serve | custom_predictor | ratio | goal | result |",
        "|---|---|---|---|---|---|",
    ]
    for name, a, b, ratio, goal, ok in rows:
        lines.append(f"| {name} | {a} | {b} | {ratio:.2f}x | {goal} | {'' if ok is None else verdict(ok)} |")
    em, eo, ee = lm.errors + lm.non2xx, lo.errors + lo.non2xx, le.errors + le.non2xx
    lines.append(f"| errors in the load runs | {em} | {eo} | | 0 | {verdict(em + eo + ee == 0)} |")
    lines += [
        "",
        "Without the numpy kernel (`KERNELS=false`: the estimator itself, for models the kernels do not cover):",
        "",
        "| cold start (s) | ratio | 1-row req/s | ratio | p99 (ms) | ratio | RSS (MB) | ratio |",
        "|---|---|---|---|---|---|---|---|",
        f"| {ce:.2f} | {ce / cm:.2f}x | {le.rps:.0f} | {le.rps / lm.rps:.1f}x | {le.p99_ms:.1f} | "
        f"{le.p99_ms / lm.p99_ms:.2f}x | {re_ / mb:.0f} | {re_ / rm:.2f}x |",
        "",
        f"Soak of custom_predictor: {SOAK_CONNECTIONS} connections for {SOAK_S} s.",
        "",
        "| requests | req/s | p99 (ms) | errors | RSS before -> after (MB) | growth | goal | result |",
        "|---|---|---|---|---|---|---|---|",
        f"| {s.requests} | {s.rps:.0f} | {s.p99_ms:.1f} | {s.errors + s.non2xx} | {before / mb:.0f} -> "
        f"{after / mb:.0f} | {growth * 100:+.1f} % | 0 errors, < 5 % | "
        f"{verdict(s.errors + s.non2xx == 0 and growth < 0.05)} |",
        "",
        f"The kernel check (scikit-learn loaded in a child at nice 10, outputs compared on 260 probe rows) was "
        f"over {checked:.1f} s after the first answer, the server idle.",
        "",
        "Cold starts (s): " + "; ".join(f"{n}: {', '.join(f'{x:.2f}' for x in v)}" for n, v in cold.items()),
    ]
    return lines


FLAVORS = {
    "XGBoost (XGBClassifier, 20 trees)": "xgboost",
    "LightGBM (LGBMClassifier, 20 trees)": "lightgbm",
    "PyTorch (MLP, float32 tensor, torch.export)": "pytorch-float32",
}
"""The flavor models of section 4 (tests/predictor/flavors.py SAVERS keys) by the name the report gives them."""


def flavor_targets(model_uri: str, tracking_uri: str, path: str, row: dict[str, float], tensor: bool) -> list[Target]:
    """`mlflow models serve` and the predictor on one model; a tensor model takes `inputs` in MLflow's protocol."""
    mlflow, ours, _ = targets(model_uri, tracking_uri, row)
    mlflow.body = json.dumps({"inputs": [list(row.values())]} if tensor else {"dataframe_records": [row]}).encode()
    ours.url = ours.url.replace("/bench-classifier/", f"/{path}/")
    return [mlflow, ours]


def measure_flavors(tracking_uri: str, workdir: Path) -> dict[str, tuple[dict[str, list[float]], dict[str, Load]]]:
    from tests.predictor import flavors
    from tests.predictor.models import FEATURES, breast_cancer

    x, _ = breast_cancer(1)
    out = {}
    for title, key in FLAVORS.items():
        name = f"Bench {key}"
        uri = flavors.log(flavors.SAVERS[key], name)
        tensor = key.startswith("pytorch")
        names = [f"x{i}" for i in range(len(FEATURES))] if tensor else FEATURES
        row = dict(zip(names, map(float, x[0]), strict=True))
        path = f"bench-{key}"  # the service path the predictor derives from the name
        ts = flavor_targets(uri, tracking_uri, path, row, tensor)
        cold = measure_cold_starts(ts, workdir)
        loads = {t.name: measure_load(t, workdir)[0] for t in ts}
        out[title] = (cold, loads)
    return out


def flavor_table(results: dict[str, tuple[dict[str, list[float]], dict[str, Load]]]) -> list[str]:
    m, o = "mlflow models serve", "custom_predictor"
    lines = [
        "## Flavors: predictor vs `mlflow models serve` (same registered model each)",
        "",
        f"Cold starts: {COLD_REPS} each, alternating; load: {CONNECTIONS} connections, {LOAD_S} s after {WARMUP_S} s "
        "warm-up, 1-row requests." + (" QUICK RUN: figures not meaningful." if QUICK else ""),
        "",
        "| model | cold start (s) mlflow / ours | ratio | goal | 1-row req/s mlflow / ours | ratio | goal |"
        " p99 (ms) mlflow / ours | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for title, (cold, loads) in results.items():
        cm, co = statistics.median(cold[m]), statistics.median(cold[o])
        lm, lo = loads[m], loads[o]
        errors = lm.errors + lm.non2xx + lo.errors + lo.non2xx
        cold_goal = 0.6 if "PyTorch" in title else 0.5  # import torch bounds both servers (issue 23)
        lines.append(
            f"| {title} | {cm:.2f} / {co:.2f} | {co / cm:.2f}x | <= {cold_goal}x: {verdict(co / cm <= cold_goal)} | "
            f"{lm.rps:.0f} / {lo.rps:.0f} | {lo.rps / lm.rps:.1f}x | >= 3x: {verdict(lo.rps / lm.rps >= 3)} | "
            f"{lm.p99_ms:.1f} / {lo.p99_ms:.1f} | {errors}: {verdict(errors == 0)} |"
        )
    lines += [
        "",
        "Cold starts (s): "
        + "; ".join(
            f"{title}: " + ", ".join(f"{n} {', '.join(f'{v:.2f}' for v in vs)}" for n, vs in cold.items())
            for title, (cold, _) in results.items()
        ),
    ]
    return lines


def main() -> list[str]:
    import mlflow
    import numpy as np

    from tests.predictor.models import FEATURES, breast_cancer, train_classifier

    with tempfile.TemporaryDirectory(prefix="bench-predictor-") as tmp:
        workdir = Path(tmp)
        with mlflow_server(workdir / "mlflow") as server:
            mlflow.set_tracking_uri(server.url)
            mlflow.set_registry_uri(server.url)
            model_uri = train_classifier(MODEL_NAME)
            x, _ = breast_cancer(1)
            row = dict(zip(FEATURES, map(float, x[0]), strict=True))
            ts = targets(model_uri, server.url, row)
            cold = measure_cold_starts(ts, workdir)
            loads = {t.name: measure_load(t, workdir) for t in ts}
            soaked = soak(ts[1], workdir)
            rng = np.random.default_rng(0)
            low, high = breast_cancer()[0].min(axis=0), breast_cancer()[0].max(axis=0)
            v2 = measure_v2(ts[1], rng.uniform(low, high, size=(V2_ROWS, len(FEATURES))), workdir)
            flavored = measure_flavors(server.url, workdir)
    lines = [*table(cold, loads, soaked), *v2_table(v2, V2_ROWS), "", *flavor_table(flavored)]
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    main()
