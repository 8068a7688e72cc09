"""The event loop never waits on a model: for each backend, a model that takes 2 s per call, 8 such requests in
flight, and the liveness and readiness probes still answer within 100 ms throughout (a kubelet's probe gives up
after 1 s and would restart the pod under exactly the load it serves). The slowness is put at our own boundary
(the backend class's `predict` sleeps 2 s first, patched in the predictor process before it starts), so the
start-up measurement sees it too, as it would see a slow model; the predictor is a real process, the clients
real HTTP clients."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.predictor import flavors
from tests.predictor.conftest import REPO, predictor_env
from tests.servers import free_port, stop_group, wait_http

CASES = {
    "kernel": ("sklearn", {}),
    "sklearn-fast": ("sklearn", {"KERNELS": "false"}),
    "xgboost": ("xgboost", {}),
    "lightgbm": ("lightgbm", {}),
    "pytorch": ("pytorch-float32", {}),
    "pyfunc": ("pyfunc", {}),
}

SLOW = """
import sys, time
from custom_predictor import backends
classes = {c for cs in backends.BY_FLAVOR.values() for c in cs} | {backends.PyfuncBackend}
cls = next(c for c in classes if c.kind == sys.argv[1])
fast = cls.predict
def slow(self, *args, **kwargs):
    time.sleep(2)
    return fast(self, *args, **kwargs)
cls.predict = slow
from custom_predictor.__main__ import run
run()
"""


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return bytes(r.read())


@pytest.mark.parametrize("kind", list(CASES))
def test_probes_answer_while_slow_predictions_run(kind: str, tmp_path: Path) -> None:
    import subprocess

    flavor, settings = CASES[kind]
    folder = flavors.SAVERS[flavor](tmp_path / flavor)
    port = free_port()
    env = predictor_env(MODEL_URI=str(folder), SERVICE_PATH="m", PORT=str(port), VERIFY_KERNEL="false", **settings)
    log = (tmp_path / "predictor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW, kind],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/health/ready", timeout=180, proc=proc)
        assert f'kind="{kind}"' in get(f"{url}/metrics").decode()
        spec = json.loads(get(f"{url}/openapi.json"))
        example = spec["paths"]["/m/api/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
        body = json.dumps(example).encode()
        done: list[int] = []

        def predict() -> None:
            req = urllib.request.Request(
                f"{url}/m/api/v1/predict", data=body, headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=60) as r:
                done.append(r.status)

        callers = [threading.Thread(target=predict) for _ in range(8)]
        for t in callers:
            t.start()
        slowest, probes = 0.0, 0
        while any(t.is_alive() for t in callers):
            for probe in ("/v2/health/live", "/v2/health/ready"):
                t0 = time.perf_counter()
                get(url + probe)
                slowest = max(slowest, time.perf_counter() - t0)
                probes += 1
            time.sleep(0.02)
        for t in callers:
            t.join()
        assert done == [200] * 8, (tmp_path / "predictor.log").read_text()[-2000:]
        assert probes >= 50 and slowest < 0.1, (probes, slowest)
    finally:
        stop_group(proc)
