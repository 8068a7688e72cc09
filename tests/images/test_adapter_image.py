"""The adapter image, built for real (adapter/Dockerfile) and run locked down as its own user.

Its entrypoint renders an InferenceService from the template the image carries (TEMPLATE_PATH), with the
predictor image it is told; a bad setting is one line and a non-zero exit; what pip installed is exactly what
adapter/requirements.txt pins, and those pins are the versions the tests run.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.images.containers import Images, run

# The first test builds the images for the session (a cold build takes minutes).
pytestmark = pytest.mark.timeout(1800)

REQUIREMENTS = Path(__file__).resolve().parents[2] / "adapter" / "requirements.txt"


def pins() -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def test_pins_are_exact_and_the_versions_the_tests_run() -> None:
    reqs = pins()
    assert {r.name.lower() for r in reqs} >= {"mlflow-skinny", "kubernetes", "pydantic", "pydantic-settings"}
    for req in reqs:
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"pin {req}"
        assert metadata.version(req.name) == next(iter(req.specifier)).version, f"{req.name}: tests run another"


def test_renders_an_inferenceservice_as_its_own_user(images: Images) -> None:
    out = run(
        images,
        images.adapter,
        "--",
        "render",
        "--model",
        "risk",
        "--version",
        "3",
        env={"PREDICTOR_IMAGE": images.predictor, "K8S_NAME_SPACE": "models"},
    )
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load("\n".join(line for line in out.stdout.splitlines() if not line.startswith("#")))
    assert doc["kind"] == "InferenceService" and doc["metadata"]["namespace"] == "models"
    (container,) = doc["spec"]["predictor"]["containers"]
    assert container["image"] == images.predictor
    whoami = run(images, images.adapter, "--entrypoint=id", "--", "-u")
    assert whoami.stdout.strip() == "10001"


def test_a_bad_setting_is_one_line(images: Images) -> None:
    out = run(images, images.adapter, "--", "sync", env={"POLL_INTERVAL_SECONDS": "soon"})
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "POLL_INTERVAL_SECONDS" in lines[0], out.stderr


def test_installs_exactly_the_pinned_versions(images: Images) -> None:
    out = run(images, images.adapter, "--entrypoint=pip", "--", "list", "--format=json")
    assert out.returncode == 0, out.stderr
    installed = {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out.stdout)}
    for req in pins():
        assert installed.get(req.name.lower()) == next(iter(req.specifier)).version, req
    assert installed.get("service-builder") == metadata.version("service-builder")
