"""Shared helpers of the deploy tests: repository paths, the pinned kubectl for `kustomize`, built overlays.

kubectl is the one built with the test control plane (tests/controlplane/build.py), so CI never depends on
what the machine has and client and server versions match.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.controlplane.build import ensure

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("deploy", "deploy/cronjob", "deploy/e2e", "deploy/e2e-mlflow")
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A CLI from the virtualenv, else from PATH; a clear failure when neither has it."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: `pip install -e '.[dev]'` provides it")
    return found


def kustomize(path: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(ensure().kubectl), "kustomize", str(REPO / path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="session")
def built() -> dict[str, list[dict[str, Any]]]:
    """Every overlay built once for the session: {overlay path: [objects]}."""
    return {path: kustomize(path) for path in OVERLAYS}


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]
