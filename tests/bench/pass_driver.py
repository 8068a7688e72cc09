"""Reconcile passes on command, for the adapter benchmark: each `pass` line on stdin runs one pass and prints one
JSON line (wall time, MLflow calls, outcome). Started with PYTHONPATH at the tree under test (this checkout, or
an older commit's), so one driver measures both side by side; settings come from the environment as for
`service-builder sync`. The first line it prints says which `adapter` package it imported."""

from __future__ import annotations

import json
import sys
import time

import adapter
from adapter.cli import _settings, build


def main() -> None:
    rec = build(_settings())
    print(json.dumps({"adapter": adapter.__file__}), flush=True)
    for line in sys.stdin:
        if line.strip() != "pass":
            continue
        before = sum(rec.registry.calls.values())
        t0 = time.perf_counter()
        result = rec.run_pass()
        elapsed = time.perf_counter() - t0
        out = {
            "seconds": elapsed,
            "mlflow_calls": sum(rec.registry.calls.values()) - before,
            "ok": result.ok,
            "error": result.error,
            "actions": sorted(str(o.action) for o in result.outcomes),
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
