"""Static checks of the deploy files: shellcheck on every script, hadolint and user checks on the
Dockerfiles, yamllint on the manifests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, tool

SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
DOCKERFILES = [REPO / "adapter" / "Dockerfile", REPO / "custom_predictor" / "Dockerfile"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_is_clean(script: Path) -> None:
    proc = subprocess.run(
        [tool("shellcheck"), "--severity=style", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    proc = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    """Kubernetes can only verify `runAsNonRoot` (set in the InferenceService template and the
    Deployment) when the image's user is a number."""
    lines = [ln.strip() for ln in dockerfile.read_text().splitlines()]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    users = [ln.split(None, 1)[1] for ln in lines[last_from:] if ln.upper().startswith("USER ")]
    assert users, f"{dockerfile}: the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert re.fullmatch(r"[0-9]+", uid), f"{dockerfile}: USER {users[-1]} is not numeric"
    assert int(uid) != 0


def test_yamllint_is_clean_on_the_manifests() -> None:
    config = (
        "{extends: default, rules: {line-length: {max: 200}, document-start: disable,"
        " comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}"
    )
    proc = subprocess.run(
        [tool("yamllint"), "-s", "-d", config, str(REPO / "deploy")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
