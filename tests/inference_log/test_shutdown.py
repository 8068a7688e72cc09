"""SIGTERM against SIGKILL, counted: a driver process puts records into the inference log (table sink, a local
directory and the real S3 server); the test counts the rows the table holds against the records put.

SIGTERM: nothing is lost (the queue and the open batch are flushed). SIGKILL: at most the open batch and the one
being written (2 x INFERENCE_LOG_BATCH_ROWS), and never a partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pandas
import pytest

from tests.objectstore.server import ACCESS_KEY, SECRET_KEY, S3Server

BATCH_ROWS = 50
ROOT = Path(__file__).resolve().parents[2]


def run_driver(env: dict[str, str], sig: signal.Signals, after: int) -> tuple[int, list[str]]:
    """Start the driver, send `sig` once it has put `after` records; (records put, its output lines)."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MODEL_URI": "models:/driver/1",
        "MODEL_NAME": "driver",
        "INFERENCE_LOG_SINKS": "table",
        "INFERENCE_LOG_BATCH_ROWS": str(BATCH_ROWS),
        "INFERENCE_LOG_BATCH_SECONDS": "3600",  # only full batches are written while it runs
        "INFERENCE_LOG_FLUSH_SECONDS": "20",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.inference_log.driver"],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("put ") and int(line.split()[1]) >= after:
                proc.send_signal(sig)
                break
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += rest.splitlines()
    put = max(int(line.split()[1]) for line in lines if line.startswith("put "))
    expected_rc = 0 if sig == signal.SIGTERM else -signal.SIGKILL
    assert proc.returncode == expected_rc, err[-2000:]
    return put, [*lines, *err.splitlines()]


def held(df: pandas.DataFrame) -> set[int]:
    ids = [int(r.split("-")[1]) for r in df["request_id"]]
    assert len(ids) == len(set(ids)), "no record twice"
    return set(ids)


def check(sig: signal.Signals, put: int, lines: list[str], rows: set[int]) -> None:
    if sig == signal.SIGTERM:
        assert f"stopped {put}" in lines
        assert rows == set(range(put)), f"SIGTERM lost {put - len(rows)} of {put} records"
    else:
        assert rows <= set(range(put + 1)), "only records that were put (one more may have been put unprinted)"
        lost = put - len(rows)
        assert lost <= 2 * BATCH_ROWS, f"SIGKILL lost {lost} records, more than two batches"
        assert rows == set(range(len(rows))), "what is lost is the tail: the batches not yet written"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_local_table(tmp_path: Path, sig: signal.Signals):
    put, lines = run_driver({"INFERENCE_LOG_TABLE_URI": str(tmp_path / "table")}, sig, after=400)
    df = pandas.read_parquet(tmp_path / "table")  # a partial file would fail this read
    check(sig, put, lines, held(df))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_s3_table(s3: S3Server, sig: signal.Signals):
    prefix = f"shutdown-{uuid.uuid4().hex[:8]}"
    env = {
        "INFERENCE_LOG_TABLE_URI": f"s3://{s3.bucket}/{prefix}",
        "INFERENCE_LOG_S3_ENDPOINT_URL": s3.endpoint,
        "INFERENCE_LOG_S3_REGION": "us-east-1",
        "INFERENCE_LOG_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "INFERENCE_LOG_S3_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    put, lines = run_driver(env, sig, after=400)
    df = pandas.read_parquet(f"{s3.bucket}/{prefix}", filesystem=s3.filesystem())
    check(sig, put, lines, held(df))
