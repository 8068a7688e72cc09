"""The InferenceService the adapter renders with the e2e settings (deploy/e2e ConfigMap), checked
offline: it validates against the KServe CRD, uses the kind-loaded predictor image without tag
resolution, points the predictor at the in-cluster MLflow, and carries the version annotation that
scripts/e2e.sh reads back after the rollout."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import REPO, VENV_BIN, one

CRD = REPO.parent / "shared" / "crds" / "serving.kserve.io_inferenceservices.yaml"


@pytest.fixture(scope="module")
def rendered(built: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    settings = one(built["deploy/e2e"], "ConfigMap")["data"]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **settings, "K8S_NAME_SPACE": "service-builder"}
    proc = subprocess.run(
        [str(VENV_BIN / "service-builder"), "render", "--model", "e2e-iris", "--version", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    assert isinstance(doc, dict)
    return doc


def _schema() -> dict[str, Any]:
    assert CRD.exists(), f"the KServe CRD is expected at {CRD}"
    crd = yaml.safe_load(Path(CRD).read_text())
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    return served["schema"]["openAPIV3Schema"]


def test_validates_against_the_kserve_crd(rendered: dict[str, Any]) -> None:
    jsonschema.validate(rendered, _schema())


def test_the_crd_schema_does_reject_a_broken_object(rendered: dict[str, Any]) -> None:
    broken = {**rendered, "spec": {"predictor": {**rendered["spec"]["predictor"], "minReplicas": "zero"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema())


def test_uses_the_kind_loaded_predictor_image_and_the_in_cluster_mlflow(
    rendered: dict[str, Any], built: dict[str, list[dict[str, Any]]]
) -> None:
    settings = one(built["deploy/e2e"], "ConfigMap")["data"]
    (container,) = rendered["spec"]["predictor"]["containers"]
    assert container["image"] == settings["PREDICTOR_IMAGE"]
    assert container["image"].startswith(("kind.local/", "dev.local/"))
    assert container["imagePullPolicy"] == "IfNotPresent"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert settings["PREDICTOR_TRACKING_URI"] in env.values()
    assert rendered["metadata"]["namespace"] == "service-builder"


def test_carries_what_the_e2e_reads_back(rendered: dict[str, Any]) -> None:
    script = (REPO / "scripts" / "e2e.sh").read_text()
    # The rollout check reads this annotation and the pods carry the KServe label the scale-to-zero wait selects.
    assert "metadata.annotations.mlflow\\.org/model-version" in script
    assert rendered["metadata"]["annotations"]["mlflow.org/model-version"] == "1"
    assert "serving.kserve.io/inferenceservice=" in script
    assert rendered["spec"]["predictor"]["minReplicas"] == 0, "the e2e waits for scale to zero"
    name = rendered["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(f"{name}-predictor-00001") <= 63
