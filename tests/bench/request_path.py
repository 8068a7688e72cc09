"""The predictor's request path, side by side in one run on the scikit-learn kernel model (one real `mlflow
server`, the predictor on CPU 0, wrk on CPU 1, 16 connections, 1-row requests):

1. Auth (issue 22): off, API key, OIDC token (the kube-apiserver of the test control plane is the issuer; keys and
   verified tokens kept), Kubernetes RBAC (TokenReview and SubjectAccessReview kept). Goals: throughput with auth
   at least 85 % of off, p99 at most 1 ms more, cold start unchanged within noise.
2. The inference log (issue 24): off, `metadata` (stdout, the default), `full` to the Parquet table. Goals:
   metadata at least 95 % of off, full at least 85 %, p99 at most 1 ms more; then a 60 s soak at 64 connections
   with the sink down (CloudEvents to a port nobody listens on): RSS growth under 5 %, and the records dropped
   those the queue bound says (served - queue bound).
3. The Open Inference Protocol with 1,000-row binary tensors (issue 23): this checkout against the previous main
   (BASELINE, exported with `git archive`, run from the same venv): at least 2x its rows per second.
4. One request cannot take a predictor down (issue 28): peak RSS of a fresh predictor for one cap-size (16 MiB)
   hostile body per protocol and content type, and its multiple of the body's size.
BENCH_QUICK=1 makes every phase short (a smoke run, figures not meaningful).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.bench.predictor import (
    CONNECTIONS,
    LOAD_S,
    QUICK,
    SERVER_CPU,
    SOAK_CONNECTIONS,
    SOAK_S,
    SOAK_WARMUP_S,
    WARMUP_S,
    Load,
    Target,
    settle,
    start,
    stop_quietly,
    tree_rss,
    verdict,
    wrk,
)
from tests.predictor.procs import PREDICTOR_ARGV, predictor_env
from tests.servers import free_port, mlflow_server

BASELINE = "7028f6b"
"""The main before issue 23 (lane.py, pt2.py, rows through every protocol)."""
REPO = Path(__file__).resolve().parents[2]
COLD_REPS = 2 if QUICK else 5
MODEL = "Bench Path"
PATH = "bench-path"
V2_ROWS = 1000


def target(name: str, uri: str, tracking: str, row: dict[str, float], auth: str = "", **env: str) -> Target:
    port = free_port()
    headers = {"BENCH_AUTHORIZATION": auth} if auth else {}
    return Target(
        name=name,
        argv=["taskset", "-c", SERVER_CPU, *PREDICTOR_ARGV],
        env=predictor_env(uri, tracking, port, **{"INFERENCE_LOG_MODE": "off", **env}),
        url=f"http://127.0.0.1:{port}/{PATH}/api/v1/predict",
        body=json.dumps({"records": [row]}).encode(),
        headers=headers,
    )


def measure(targets: list[Target], workdir: Path) -> dict[str, tuple[list[float], Load]]:
    """Cold starts (alternating, COLD_REPS each), then one load run each."""
    cold: dict[str, list[float]] = {t.name: [] for t in targets}
    for rep in range(COLD_REPS):
        for t in targets:
            proc, seconds = start(t, workdir / f"cold-{rep}-{abs(hash(t.name))}.log")
            stop_quietly(proc)
            cold[t.name].append(seconds)
    out = {}
    for t in targets:
        proc, _ = start(t, workdir / f"load-{abs(hash(t.name))}.log")
        try:
            settle(t, proc)
            wrk(t, CONNECTIONS, WARMUP_S, workdir)
            out[t.name] = (cold[t.name], wrk(t, CONNECTIONS, LOAD_S, workdir))
        finally:
            stop_quietly(proc)
    return out


def side_by_side(title: str, results: dict[str, tuple[list[float], Load]], goals: dict[str, float]) -> list[str]:
    """A table against the first row: throughput share (goal per row), p99 delta (goal: +1 ms), cold start."""
    (_, (_, base)), *_ = results.items()
    lines = [
        title,
        "",
        "| mode | cold start, median (s) | 1-row req/s | share of the first | goal | p50 (ms) | p99 (ms) | p99 delta | "
        "errors | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (cold, load) in results.items():
        share, delta = load.rps / base.rps, load.p99_ms - base.p99_ms
        goal = goals.get(name)
        errors = load.errors + load.non2xx
        ok = None if goal is None else share >= goal and delta <= 1.0 and errors == 0
        lines.append(
            f"| {name} | {statistics.median(cold):.2f} | {load.rps:,.0f} | {share * 100:.0f} % | "
            f"{'' if goal is None else f'>= {goal * 100:.0f} %, p99 +1 ms'} | {load.p50_ms:.2f} | {load.p99_ms:.2f} | "
            f"{delta:+.2f} | {errors} | {'' if ok is None else verdict(ok)} |"
        )
    return lines


# ---- auth --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def identities(workdir: Path) -> Iterator[dict[str, tuple[dict[str, str], str]]]:
    """Per auth mode: the predictor's env and the Authorization header a caller sends, against the real control
    plane (the predictor's ServiceAccount holding deploy/base's ClusterRole, a caller bound to `get` it)."""
    import yaml

    from custom_predictor.auth.apikeys import generate
    from tests.auth.conftest import DEPLOY, Cluster
    from tests.controlplane.fixtures import new_namespace
    from tests.controlplane.plane import running

    with running(workdir / "plane") as plane:
        admin = plane.api_client()
        ns = new_namespace(plane, admin, "bench-path").name
        account = yaml.safe_load((DEPLOY / "predictor-serviceaccount.yaml").read_text())
        account["metadata"]["namespace"] = ns
        binding = yaml.safe_load((DEPLOY / "predictor-clusterrolebinding.yaml").read_text())
        binding["metadata"]["name"] += f"-{ns}"
        binding["subjects"][0]["namespace"] = ns
        plane.apply([account, yaml.safe_load((DEPLOY / "predictor-clusterrole.yaml").read_text()), binding])
        cluster = Cluster(plane, admin, ns, isvc=PATH)
        cluster.account("caller")
        cluster.grant_get("caller", "caller-may-call")
        own = cluster.predictor_kubeconfig(workdir)
        key, line = generate("bench")
        (workdir / "keys").write_text(line + "\n")
        isvc = {"INFERENCESERVICE_NAMESPACE": ns, "INFERENCESERVICE_NAME": PATH, "KUBECONFIG": own}
        yield {
            "auth off": ({}, ""),
            "API key": ({"AUTH_MODES": "apikey", "AUTH_API_KEYS_FILE": str(workdir / "keys")}, f"Bearer {key}"),
            "OIDC token (keys and verified tokens kept)": (
                {
                    "AUTH_MODES": "oidc",
                    "AUTH_OIDC_ISSUER": plane.url,
                    "AUTH_OIDC_AUDIENCE": "risk-model",
                    "AUTH_OIDC_CA_FILE": str(plane.ca),
                    "AUTH_OIDC_KUBERNETES_CREDENTIALS": "true",
                    **isvc,
                },
                f"Bearer {cluster.token('caller', ['risk-model'])}",
            ),
            "Kubernetes RBAC (reviews kept)": (
                {"AUTH_MODES": "kubernetes", **isvc},
                f"Bearer {cluster.token('caller')}",
            ),
        }
        admin.close()


# ---- the inference log's soak with its sink down -------------------------------------------------------------
def metric(url: str, name: str) -> float:
    """The sum of a Prometheus series of the predictor at `url` (any of its URLs)."""
    with urllib.request.urlopen("/".join(url.split("/")[:3]) + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def soak_sink_down(t: Target, workdir: Path) -> tuple[Load, int, int, float, float]:
    """(load, RSS before and after, records dropped beyond what the bound explains, the queue bound) with the
    CloudEvents sink refusing. Counted over the process's life (the warm-up filled the queue too): every 1-row
    call offers one record, so dropped + queued + written + failed = the rows predicted, and with the queue full
    at the end, dropped should be rows - bound - written - failed."""
    proc, _ = start(t, workdir / "soak-log.log")
    try:
        settle(t, proc)
        wrk(t, SOAK_CONNECTIONS, SOAK_WARMUP_S, workdir)
        before, _ = tree_rss(proc)
        load = wrk(t, SOAK_CONNECTIONS, SOAK_S, workdir)
        after, _ = tree_rss(proc)
        bound = float(t.env["INFERENCE_LOG_QUEUE_RECORDS"])
        offered = metric(t.url, "predictor_predicted_rows_total")
        done = metric(t.url, "predictor_inference_log_written_total") + metric(
            t.url, "predictor_inference_log_failed_total"
        )
        dropped = metric(t.url, "predictor_inference_log_dropped_total")
        return load, before, after, dropped - max(offered - bound - done, 0), bound
    finally:
        stop_quietly(proc)


# ---- V2 binary against the previous main -----------------------------------------------------------------------
def baseline_tree(workdir: Path) -> Path:
    """The BASELINE commit's custom_predictor, exported (no checkout of the repository changes)."""
    root = workdir / "baseline"
    root.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", BASELINE, "custom_predictor"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def v2_binary(t: Target, x: Any, name: str) -> Target:
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP64", "parameters": {"binary_data_size": x.size * 8}}
    head = json.dumps({"inputs": [tensor]}).encode()
    url = "/".join(t.url.split("/")[:3]) + f"/v2/models/{PATH}/infer"
    headers = {"BENCH_CONTENT_TYPE": "application/octet-stream", "BENCH_HEADER_LENGTH": str(len(head))}
    return replace(t, name=name, url=url, body=head + x.astype("<f8").tobytes(), headers=headers)


def measure_v2(targets: list[Target], workdir: Path) -> dict[str, Load]:
    out = {}
    for t in targets:
        proc, _ = start(t, workdir / f"v2-{abs(hash(t.name))}.log")
        try:
            settle(t, proc)
            wrk(t, CONNECTIONS, WARMUP_S, workdir)
            out[t.name] = wrk(t, CONNECTIONS, LOAD_S, workdir)
        finally:
            stop_quietly(proc)
    return out


# ---- hostile bodies ------------------------------------------------------------------------------------------
def peak_of(t: Target, path: str, ctype: str, body: bytes, extra: dict[str, str], workdir: Path) -> tuple[int, int]:
    """(HTTP status, peak RSS growth in bytes) of one body to a fresh predictor."""
    proc, _ = start(t, workdir / f"hostile-{abs(hash(path + ctype))}.log")
    try:
        settle(t, proc)
        status_file = Path(f"/proc/{proc.pid}/status")  # taskset execs: the predictor is the process itself
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")
        before = _kb(status_file, "VmRSS")
        root = "/".join(t.url.split("/")[:3])
        request = urllib.request.Request(root + path, data=body, headers={"content-type": ctype, **extra})
        try:
            with urllib.request.urlopen(request, timeout=300) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        return status, (_kb(status_file, "VmHWM") - before) * 1024
    finally:
        stop_quietly(proc)


def _kb(status: Path, field: str) -> int:
    return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith(field))


def hostile_table(t: Target, workdir: Path) -> list[str]:
    from tests.predictor import test_limits

    lines = [
        "One cap-size (16 MiB) hostile body to a fresh predictor, per protocol and content type (peak RSS growth,"
        " VmHWM after the answer against VmRSS before):",
        "",
        "| body | answer | peak RSS growth (MiB) | multiple of the body |",
        "|---|---|---|---|",
    ]
    for name, (path, ctype, body, extra) in test_limits.hostile().items():
        path = path.replace("/m/", f"/{PATH}/").replace("/models/m", f"/models/{PATH}")
        status, grew = peak_of(t, path, ctype, body, extra, workdir)
        lines.append(f"| {name} | {status} | {grew / 2**20:.0f} | {grew / len(body):.1f}x |")
    return lines


def main() -> list[str]:
    import mlflow
    import numpy as np

    from tests.predictor.models import FEATURES, breast_cancer, train_classifier

    with tempfile.TemporaryDirectory(prefix="bench-path-") as tmp:
        workdir = Path(tmp)
        with mlflow_server(workdir / "mlflow") as server:
            mlflow.set_tracking_uri(server.url)
            mlflow.set_registry_uri(server.url)
            uri = train_classifier(MODEL)
            x, _ = breast_cancer(1)
            row = dict(zip(FEATURES, map(float, x[0]), strict=True))
            with identities(workdir) as ids:
                auth = measure([target(n, uri, server.url, row, a, **e) for n, (e, a) in ids.items()], workdir)
            logs = {
                "log off": {},
                "log metadata (stdout)": {"INFERENCE_LOG_MODE": "metadata", "INFERENCE_LOG_SINKS": "stdout"},
                "log full (Parquet table)": {
                    "INFERENCE_LOG_MODE": "full",
                    "INFERENCE_LOG_SINKS": "table",
                    "INFERENCE_LOG_TABLE_URI": str(workdir / "table"),
                },
            }
            logged = measure([target(n, uri, server.url, row, **e) for n, e in logs.items()], workdir)
            down = target(
                "sink down",
                uri,
                server.url,
                row,
                INFERENCE_LOG_MODE="metadata",
                INFERENCE_LOG_SINKS="cloudevents",
                INFERENCE_LOG_CLOUDEVENTS_URL=f"http://127.0.0.1:{free_port()}/",
                INFERENCE_LOG_QUEUE_RECORDS="10000",
            )
            soaked = soak_sink_down(down, workdir)
            rng = np.random.default_rng(0)
            low, high = breast_cancer()[0].min(axis=0), breast_cancer()[0].max(axis=0)
            tensor = rng.uniform(low, high, size=(V2_ROWS, len(FEATURES)))
            ours = v2_binary(target("this checkout", uri, server.url, row), tensor, "this checkout")
            old = target("previous main", uri, server.url, row)
            old.env["PYTHONPATH"] = str(baseline_tree(workdir))
            v2 = measure_v2([ours, v2_binary(old, tensor, f"previous main ({BASELINE})")], workdir)
            hostile = hostile_table(target("hostile", uri, server.url, row, INFERENCE_LOG_MODE="off"), workdir)
    return report(auth, logged, soaked, v2, hostile)


def report(
    auth: dict[str, tuple[list[float], Load]],
    logged: dict[str, tuple[list[float], Load]],
    soaked: tuple[Load, int, int, float, float],
    v2: dict[str, Load],
    hostile: list[str],
) -> list[str]:
    names = list(auth)
    lines = [
        "## The predictor's request path (scikit-learn kernel model, 1-row requests)",
        "",
        *side_by_side("Auth, each mode side by side:", auth, dict.fromkeys(names[1:], 0.85)),
        "",
        *side_by_side(
            "The inference log, each mode side by side:",
            logged,
            {"log metadata (stdout)": 0.95, "log full (Parquet table)": 0.85},
        ),
    ]
    load, before, after, unexplained, bound = soaked
    growth = after / before - 1
    ok = growth < 0.05 and load.errors + load.non2xx == 0 and abs(unexplained) <= 0.01 * load.requests + 100
    mb = 2**20
    lines += [
        "",
        f"A {SOAK_S} s soak at {SOAK_CONNECTIONS} connections with the sink down (CloudEvents to a closed port, queue"
        f" bound {bound:.0f}): {load.requests:,} requests, {load.errors + load.non2xx} errors, RSS"
        f" {before / mb:.0f} -> {after / mb:.0f} MB ({growth * 100:+.1f} %), records dropped beyond what the bound"
        f" explains (served - queued - written - failed, over the process's life): {unexplained:+,.0f}; goal: RSS"
        f" < +5 %, no errors, drops as the bound says: {verdict(ok)}",
    ]
    (new_name, new), (old_name, old) = v2.items()
    rows_new, rows_old = new.rps * V2_ROWS, old.rps * V2_ROWS
    lines += [
        "",
        f"Open Inference Protocol, {V2_ROWS:,}-row binary tensors (FP64 [{V2_ROWS}, 5]), {CONNECTIONS} connections:",
        "",
        "| server | req/s | rows/s | p50 (ms) | p99 (ms) | errors |",
        "|---|---|---|---|---|---|",
        *[
            f"| {name} | {load.rps:,.0f} | {load.rps * V2_ROWS:,.0f} | {load.p50_ms:.1f} | {load.p99_ms:.1f} | "
            f"{load.errors + load.non2xx} |"
            for name, load in ((new_name, new), (old_name, old))
        ],
        "",
        f"this checkout vs the previous main: {rows_new / rows_old:.2f}x rows/s; goal >= 2x: "
        f"{verdict(rows_new >= 2 * rows_old and new.errors + new.non2xx == 0)}",
        "",
        *hostile,
    ]
    print("\n".join(lines), flush=True)
    return lines


if __name__ == "__main__":
    sys.exit(0 if not any("FAIL" in line for line in main()) else 1)
