"""The predictor image, built for real (custom_predictor/Dockerfile, target base) and run as a pod runs it: as the
image's own unprivileged user, read-only root, every capability dropped, /tmp the only writable place.

It serves a model registered on the real MLflow server (models:/ URI, the adapter's way), answers predictions and
its Swagger UI; every flavor the base image declares loads in it (LightGBM needs the OpenMP runtime the slim base
lacks); a PyTorch model is refused with the predictor's one line and exit code 2; what pip installed in it is
exactly what requirements.txt pins.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.images.containers import Container, Images, run, serving, wait_ready
from tests.predictor import flavors, models
from tests.predictor.image import requirements
from tests.servers import MlflowServer, free_port

# The first test builds the images for the session (a cold build takes minutes).
pytestmark = pytest.mark.timeout(1800)

PREDICTOR_UID = "10001"


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return str(r.read().decode())


def test_serves_a_registered_model_as_its_own_user_on_a_read_only_root(
    images: Images, mlflow_srv: MlflowServer, tracking_uri: str
) -> None:
    uri = flavors.log(flavors.save_sklearn, "image-risk")  # pinned requirements: no torch
    env = {"MODEL_URI": uri, "MLFLOW_TRACKING_URI": mlflow_srv.url, "SERVICE_PATH": "image-risk"}
    with serving(images, images.predictor, free_port(), env=env) as c:
        _serves_locked_down(c)


def _serves_locked_down(c: Container) -> None:
    wait_ready(c)
    assert c.exec("id", "-u").stdout.strip() == PREDICTOR_UID
    status = c.exec("grep", "-E", "^(CapEff|NoNewPrivs)", "/proc/1/status").stdout.split()
    assert status == ["CapEff:", "0000000000000000", "NoNewPrivs:", "1"], status
    denied = c.exec("touch", "/app/custom_predictor/x")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    row = dict.fromkeys(models.FEATURES, 1.0)
    answer = _post(f"{c.url}/image-risk/api/v1/predict", {"records": [row]})
    assert len(answer["predictions"]) == 1
    page = _get(f"{c.url}/image-risk/api/")
    assert "swagger-ui" in page
    assert "SwaggerUIBundle" in _get(f"{c.url}/image-risk/api/static/swagger-ui-bundle.js")  # served offline
    spec = json.loads(_get(f"{c.url}/openapi.json"))
    assert "/image-risk/api/v1/predict" in spec["paths"]


FLAVORS = [("xgboost", "xgboost"), ("lightgbm", "lightgbm"), ("pyfunc", "pyfunc")]


@pytest.mark.parametrize(("model", "kind"), FLAVORS, ids=[m for m, _ in FLAVORS])
def test_each_base_flavor_loads_in_the_image(images: Images, model: str, kind: str, tmp_path: Path) -> None:
    folder = flavors.SAVERS[model](tmp_path / "m")
    folder.chmod(0o755)
    names = {"pyfunc": ["a", "b", "name"]}.get(model, models.FEATURES)
    row: dict[str, Any] = dict.fromkeys(names, 1.0) if model != "pyfunc" else {"a": 1.0, "b": 2, "name": "x"}
    env = {"MODEL_URI": "/models/m", "SERVICE_PATH": "m", "KERNELS": "false"}
    with serving(images, images.predictor, free_port(), f"--volume={folder}:/models/m:ro", env=env) as c:
        wait_ready(c)
        assert len(_post(f"{c.url}/m/api/v1/predict", {"records": [row]})["predictions"]) == 1
        assert f'kind="{kind}"' in _get(f"{c.url}/metrics")


def test_refuses_a_pytorch_model_with_one_line(images: Images, tmp_path: Path) -> None:
    folder = flavors.save_torch(tmp_path / "m")
    out = run(
        images,
        images.predictor,
        f"--volume={folder}:/models/m:ro",
        env={"MODEL_URI": "/models/m", "MODEL_NAME": "risk", "MODEL_VERSION": "2"},
    )
    last = (out.stdout + out.stderr).strip().splitlines()[-1]
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert last.startswith("custom_predictor: model risk version 2 cannot be served: the model needs torch==")
    assert "not installed in this image" in last and "PREDICTOR_IMAGES" in last


def test_installs_exactly_the_pinned_versions(images: Images) -> None:
    out = run(images, images.predictor, "--entrypoint=pip", "--", "list", "--format=json")
    assert out.returncode == 0, out.stderr
    installed = {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(out.stdout)}
    for req in requirements("base"):
        assert installed.get(req.name.lower()) == next(iter(req.specifier)).version, req
    assert "torch" not in installed and "pytest" not in installed
