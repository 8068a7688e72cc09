"""The inference log through the real predictor: one record per call that reaches a model route (success, 422,
401, 5xx), the request id taken from X-Request-Id or Ce-Id or made and returned, the caller's subject, rows in and
out; bodies under `full` with sensitive inputs hashed, binary tensors as arrays, the entity lookup's id; nothing
for probes. Then the process: SIGTERM writes every record served, SIGKILL loses at most the open batch. Records go
to the local Parquet table and are read as docs/inference-log.md says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds

from custom_predictor.auth.apikeys import generate
from tests.predictor import models
from tests.predictor.conftest import REPO, ROW, in_process, predictor_env
from tests.servers import free_port, wait_http


def table(root: Path) -> list[dict[str, Any]]:
    if not any(root.rglob("*.parquet")):
        return []
    return ds.dataset(root, partitioning="hive").to_table().to_pylist()


def test_one_record_per_model_call_with_what_it_was(tmp_path: Path, local_models: dict[str, Path]) -> None:
    folder = local_models["contract"]
    data = models.contract_dict()
    data["inputs"][0]["sensitive"] = True  # radius: hashed in logged bodies
    (tmp_path / "model").mkdir()
    for f in folder.iterdir():
        (tmp_path / "model" / f.name).write_bytes(f.read_bytes())
    import yaml

    (tmp_path / "model" / "contract.yaml").write_text(yaml.safe_dump(data))
    key, line = generate("notebook")
    (tmp_path / "keys").write_text(line + "\n")
    settings = {
        "auth_modes": "apikey",
        "auth_api_keys_file": str(tmp_path / "keys"),
        "inference_log_mode": "full",
        "inference_log_sinks": "table",
        "inference_log_table_uri": str(tmp_path / "log"),
        "inferenceservice_namespace": "clinic",
        "inferenceservice_name": "risk",
    }
    auth = {"X-API-Key": key}
    with in_process(model_uri=str(tmp_path / "model"), service_path="m", **settings) as c:
        ok = c.post("/m/api/v1/predict", json={"records": [ROW, ROW]}, headers={**auth, "X-Request-Id": "req-1"})
        assert ok.status_code == 200 and ok.headers["x-request-id"] == "req-1"
        bad = c.post("/m/api/v1/predict", json={"records": [{**ROW, "radius": "big"}]}, headers=auth)
        assert bad.status_code == 422 and len(bad.headers["x-request-id"]) == 32
        anonymous = c.post("/v1/models/m:predict", json={"instances": [ROW]}, headers={"Ce-Id": "ce-7"})
        assert anonymous.status_code == 401 and anonymous.headers["x-request-id"] == "ce-7"
        entity = c.post("/m/api/v1/model/predict", json={"patient_id": 1001}, headers=auth)
        assert entity.status_code == 200
        tensors = [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in ROW.items()]
        v2 = c.post(
            "/v2/models/m/infer", json={"inputs": tensors, "parameters": {"binary_data_output": True}}, headers=auth
        )
        assert v2.status_code == 200
        for probe in ("/v2/health/ready", "/metrics", "/openapi.json"):
            c.get(probe)
    rows = {r["request_id"]: r for r in table(tmp_path / "log")}
    assert len(rows) == 5  # the probes are not model calls
    first = rows["req-1"]
    assert (first["status"], first["protocol"], first["route"]) == (200, "typed", "/m/api/v1/predict")
    assert (first["rows_in"], first["rows_out"], first["subject"]) == (2, 2, "apikey:notebook")
    assert (first["model_name"], first["namespace"], first["inferenceservice"]) == (
        c.app_state.source.name,
        "clinic",
        "risk",
    )
    logged = json.loads(first["request"])["inputs"]
    assert logged["texture"] == [ROW["texture"]] * 2 and all(v.startswith("hmac-sha256:") for v in logged["radius"])
    assert json.loads(first["response"])["predictions"] == ok.json()["predictions"]
    assert first["latency_ms"] > 0 and first["sampling_fraction"] == 1.0 and first["error"] is None
    refused = next(r for r in rows.values() if r["status"] == 422)
    assert (
        refused["error"] == "invalid_input" and refused["request"] is None and refused["subject"] == "apikey:notebook"
    )
    assert (
        rows["ce-7"]["status"] == 401 and rows["ce-7"]["error"] == "unauthenticated" and rows["ce-7"]["subject"] is None
    )
    looked_up = next(r for r in rows.values() if r["route"] == "/m/api/v1/model/predict")
    assert looked_up["entity_id"] == "1001" and "hmac-sha256:" in looked_up["request"]
    binary = next(r for r in rows.values() if r["protocol"] == "v2")
    assert json.loads(binary["response"])["outputs"][0]["data"] == [
        json.loads(binary["response"])["outputs"][0]["data"][0]
    ]
    assert key not in json.dumps(list(rows.values()), default=str)  # never a credential


def _served(tmp_path: Path, folder: Path, stop: signal.Signals, n: int) -> tuple[int, list[dict[str, Any]]]:
    """Serve `n` predictions with a real predictor writing a local table, stop it with `stop`, read the table."""
    tmp_path.mkdir()
    port = free_port()
    env = predictor_env(
        MODEL_URI=str(folder),
        SERVICE_PATH="m",
        PORT=str(port),
        INFERENCE_LOG_SINKS="table",
        INFERENCE_LOG_TABLE_URI=str(tmp_path / "log"),
        INFERENCE_LOG_BATCH_ROWS="50",
        INFERENCE_LOG_BATCH_SECONDS="600",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "custom_predictor"],
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=(tmp_path / "log.txt").open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/health/ready", timeout=120, proc=proc)
        body = json.dumps({"records": [ROW]}).encode()
        for i in range(n):
            request = urllib.request.Request(
                f"{url}/m/api/v1/predict", data=body, headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as r:
                assert r.status == 200
            if i == 49:  # the first batch written (the writer has its Parquet library loaded) before going on
                deadline = time.monotonic() + 30
                while not table(tmp_path / "log") and time.monotonic() < deadline:
                    time.sleep(0.1)
        os.killpg(proc.pid, stop)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.2)
    return code, table(tmp_path / "log")


def test_sigterm_writes_every_record_and_sigkill_loses_at_most_the_open_batch(
    tmp_path: Path, local_models: dict[str, Path]
) -> None:
    code, rows = _served(tmp_path / "term", local_models["classifier"], signal.SIGTERM, 300)
    assert code in (0, -signal.SIGTERM), code  # uvicorn re-raises the signal once it has drained
    assert len(rows) == 300 and {r["status"] for r in rows} == {200}
    code, rows = _served(tmp_path / "kill", local_models["classifier"], signal.SIGKILL, 300)
    assert code == -signal.SIGKILL and 300 - 2 * 50 <= len(rows) < 300  # the open batch and the one being written
