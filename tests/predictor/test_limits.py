"""One request cannot take a predictor down, tested as an attacker would: a real predictor process in a memory
cgroup of the template's default limit (2 GiB, what Kubernetes kills the pod at), its default body cap, memory
budget and body timeout (shortened), and hostile bodies on every protocol: over the cap (413 unread, with a
Content-Length or chunked), a byte a second (408), and 8 at once of every shape that costs memory to decode
(long arrays, many keys, empty arrays and objects, long strings, deep nesting, V2 binary, CSV). The process must
stay alive and under the limit, and the probes answer within 100 ms throughout; requests at the row limit still
succeed."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.predictor import flavors, models
from tests.predictor.conftest import REPO, predictor_env
from tests.servers import free_port, stop_group, wait_http

LIMIT = 2 * 2**30
CAP = 16 * 2**20  # the default MAX_BODY_BYTES
F = models.FEATURES


@dataclass
class Limited:
    url: str
    port: int
    proc: subprocess.Popen
    cgroup: Path
    log: Path

    def peak(self) -> int:
        return int((self.cgroup / "memory.max_usage_in_bytes").read_text())

    def reset_peak(self) -> None:
        (self.cgroup / "memory.max_usage_in_bytes").write_text("0")


def _own_memory_cgroup() -> Path:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, where = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory", where.lstrip("/"))
    raise AssertionError("no cgroup v1 memory controller: these tests need one (they are not skipped)")


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    root = tmp_path_factory.mktemp("limits")
    folder = flavors.save_sklearn(root / "model")
    cgroup = _own_memory_cgroup() / f"sb-limits-{uuid.uuid4().hex[:8]}"
    cgroup.mkdir()
    (cgroup / "memory.limit_in_bytes").write_text(str(LIMIT))
    port = free_port()
    env = predictor_env(MODEL_URI=str(folder), SERVICE_PATH="m", PORT=str(port), BODY_TIMEOUT_SECONDS="3")
    log = root / "predictor.log"
    script = f'echo $$ > {cgroup}/cgroup.procs && exec "$0" -m custom_predictor'
    proc = subprocess.Popen(
        ["sh", "-c", script, sys.executable],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=180, proc=proc)
        yield Limited(f"http://127.0.0.1:{port}", port, proc, cgroup, log)
    finally:
        stop_group(proc)
        for _ in range(50):
            try:
                cgroup.rmdir()
                break
            except OSError:
                time.sleep(0.1)


def raw(
    port: int, head: bytes, parts: list[bytes] = (), pause: float = 0.0, timeout: float = 10.0
) -> tuple[int, bytes]:
    """Send a request by hand (headers, then each part after `pause` s); the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head)
        try:
            for part in parts:
                if select.select([s], [], [], pause)[0]:
                    break  # the server answered: the rest is not needed
                s.sendall(part)
        except OSError:
            pass  # the server answered and closed before the rest
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 4 + _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


ROUTES = {
    "typed": ("/m/api/v1/predict", "application/json", lambda b: b["error"]),
    "kserve v1": ("/v1/models/m:predict", "application/json", lambda b: b["code"]),
    "v2": ("/v2/models/m/infer", "application/json", lambda b: b["code"]),
    "mlflow json": ("/invocations", "application/json", lambda b: b["error_code"]),
    "mlflow csv": ("/invocations", "text/csv", lambda b: b["error_code"]),
}


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_body_over_the_cap_is_refused_before_it_is_read(limited: Limited, route: str) -> None:
    path, ctype, code = ROUTES[route]
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {CAP + 1}\r\n\r\n"
    t0 = time.perf_counter()
    status, body = raw(limited.port, head.encode())
    assert status == 413 and time.perf_counter() - t0 < 1.0
    answer = json.loads(body)
    assert code(answer) in ("too_large", "BAD_REQUEST") and str(CAP) in json.dumps(answer), answer
    chunk = b"[" * 65536
    chunked = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (CAP // len(chunk) + 2) + [b"0\r\n\r\n"]
    status, body = raw(limited.port, chunked.encode(), parts)
    assert status == 413 and str(CAP) in body.decode(), body[:300]


def test_a_body_sent_a_byte_a_second_is_cut_off(limited: Limited) -> None:
    head = (
        b"POST /m/api/v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    t0 = time.perf_counter()
    status, body = raw(limited.port, head, [b"{"] * 30, pause=1.0, timeout=20)
    assert status == 408 and json.loads(body)["error"] == "timeout", body
    assert time.perf_counter() - t0 < 8


def _fill(prefix: bytes, unit: bytes, suffix: bytes, sep: bytes = b",") -> bytes:
    n = (CAP - len(prefix) - len(suffix)) // (len(unit) + len(sep))
    return prefix + sep.join([unit] * n) + suffix


def _binary() -> tuple[bytes, dict[str, str]]:
    x = np.ones(((CAP - 130) // 40, 5))
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP64", "parameters": {"binary_data_size": x.size * 8}}
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


_V2 = b'{"inputs":[{"name":"x","shape":[1,5],"datatype":"FP64","data":['
Hostile = tuple[str, str, bytes, dict[str, str]]  # path, content type, body, headers
# Each cap-size body is built when a test asks for it (16 MiB each): not at collection, not all for one test.
HOSTILE: dict[str, Callable[[], Hostile]] = {
    "typed, a long array": lambda: ("/m/api/v1/predict", "application/json", _fill(b'{"records":[', b"1.0", b"]}"), {}),
    "typed, many keys": lambda: (
        "/m/api/v1/predict",
        "application/json",
        b'{"records":[{' + b",".join(b'"k%07d":1' % i for i in range((CAP - 20) // 13)) + b"}]}",
        {},
    ),
    "typed, empty objects": lambda: ("/m/api/v1/predict", "application/json", _fill(b'{"records":[', b"{}", b"]}"), {}),
    "typed, a long string": lambda: (
        "/m/api/v1/predict",
        "application/json",
        b'{"records":[{"radius":"' + b"\\u00e9" * ((CAP - 40) // 6) + b'"}]}',
        {},
    ),
    "typed, deep nesting": lambda: ("/m/api/v1/predict", "application/json", b"[" * CAP, {}),
    "v1, empty arrays": lambda: (
        "/v1/models/m:predict",
        "application/json",
        _fill(b'{"instances":[', b"[]", b"]}"),
        {},
    ),
    "v2 JSON, a long array": lambda: ("/v2/models/m/infer", "application/json", _fill(_V2, b"1.0", b"]}]}"), {}),
    "v2 JSON, empty arrays": lambda: ("/v2/models/m/infer", "application/json", _fill(_V2, b"[]", b"]}]}"), {}),
    "v2 binary": lambda: ("/v2/models/m/infer", "application/octet-stream", *_binary()),
    "mlflow JSON, rows": lambda: (
        "/invocations",
        "application/json",
        _fill(b'{"dataframe_split":{"columns":' + json.dumps(F).encode() + b',"data":[', b"[1,2,3,4,5]", b"]}}"),
        {},
    ),
    "mlflow CSV, cells": lambda: (
        "/invocations",
        "text/csv",
        _fill(",".join(F).encode() + b"\n", b"12,3", b"", b"\n"),
        {},
    ),
}


def hostile() -> dict[str, Hostile]:
    """Every hostile body, built (make bench sends each to a fresh predictor)."""
    return {name: build() for name, build in HOSTILE.items()}


def _post(url: str, path: str, ctype: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url + path, data=body, headers={"content-type": ctype, **headers})
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("shape", list(HOSTILE))
def test_eight_hostile_bodies_at_once_cost_less_than_the_limit(limited: Limited, shape: str) -> None:
    path, ctype, body, headers = HOSTILE[shape]()
    assert CAP - 64 <= len(body) <= CAP, len(body)
    limited.reset_peak()
    answers: list[int] = []
    callers = [
        threading.Thread(target=lambda: answers.append(_post(limited.url, path, ctype, body, headers)))
        for _ in range(8)
    ]
    for t in callers:
        t.start()
    slowest = 0.0
    while any(t.is_alive() for t in callers):
        for probe in ("/v2/health/live", "/v2/health/ready"):
            t0 = time.perf_counter()
            with urllib.request.urlopen(limited.url + probe, timeout=5) as r:
                assert r.status == 200
            slowest = max(slowest, time.perf_counter() - t0)
        time.sleep(0.02)
    for t in callers:
        t.join()
    assert limited.proc.poll() is None, limited.log.read_text()[-2000:]
    assert len(answers) == 8 and all(400 <= a < 500 or a == 503 for a in answers), answers
    peak = limited.peak()
    assert peak < LIMIT, f"{shape}: peak {peak / 2**20:.0f} MiB"
    assert slowest < 0.1, f"{shape}: a probe took {slowest * 1000:.0f} ms"
    print(
        f"{shape}: answers {sorted(set(answers))}, peak {peak / 2**20:.0f} MiB, slowest probe {slowest * 1000:.0f} ms"
    )


def test_requests_at_the_row_limit_still_succeed(limited: Limited) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 100, size=(10_000, 5))
    records = json.dumps({"records": [dict(zip(F, row, strict=True)) for row in x.tolist()]}).encode()
    assert _post(limited.url, "/m/api/v1/predict", "application/json", records, {}) == 200
    tensor = {"name": "x", "shape": [10_000, 5], "datatype": "FP64", "parameters": {"binary_data_size": x.size * 8}}
    head = json.dumps({"inputs": [tensor]}).encode()
    status = _post(
        limited.url,
        "/v2/models/m/infer",
        "application/octet-stream",
        head + x.tobytes(),
        {"Inference-Header-Content-Length": str(len(head))},
    )
    assert status == 200
    assert os.path.exists(f"/proc/{limited.proc.pid}")
