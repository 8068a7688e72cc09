"""The start-up check of a model's environment: its `requirements.txt` (and flavor) against what is installed.

MLflow records next to each model the pip requirements it was logged with. Read with `packaging`, without
importing any of them: a library that is not installed, or another major version of the flavor's own library
(scikit-learn for sklearn, torch for pytorch, ...), is a permanent failure: the model cannot be expected to load
or to predict as it did. Any other difference (a minor version of the flavor's library, another version of any
other library) is drift: a warning in the log, in `/metrics` and on the Swagger page.
Libraries MLflow's requirement inference records although serving never imports them (`NOT_NEEDED`) are skipped;
distributions that provide the same library under another name (`SAME_LIBRARY`: xgboost-cpu, mlflow-skinny)
count as it. The adapter makes the same decision before deploying (`adapter/images.py`, same tables).
Neighbours: `runtime` runs `check` before choosing a backend and fails for good on `Report.permanent`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

log = logging.getLogger("custom_predictor.requirements")

FLAVOR_LIBRARIES = {
    "sklearn": "scikit-learn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "pytorch": "torch",
    "tensorflow": "tensorflow",
    "keras": "keras",
    "transformers": "transformers",
    "sentence_transformers": "sentence-transformers",
    "catboost": "catboost",
    "statsmodels": "statsmodels",
    "prophet": "prophet",
    "spacy": "spacy",
    "onnx": "onnxruntime",
    "h2o": "h2o",
    "paddle": "paddlepaddle",
}
"""The library each MLflow flavor needs (flavor name as in MLmodel -> distribution)."""

FLAVOR_VERSION_KEYS = {
    "sklearn": "sklearn_version",
    "xgboost": "xgb_version",
    "lightgbm": "lgb_version",
    "pytorch": "pytorch_version",
    "transformers": "transformers_version",
    "keras": "keras_version",
    "catboost": "cb_version",
    "statsmodels": "statsmodels_version",
    "prophet": "prophet_version",
    "spacy": "spacy_version",
    "onnx": "onnx_version",
}
"""Where a flavor's MLmodel entry records its library's version (used when requirements.txt does not say)."""

SAME_LIBRARY = {"xgboost-cpu": "xgboost", "mlflow-skinny": "mlflow"}
"""Distributions that install the same importable library as another one."""

NOT_NEEDED = frozenset({"pytest", "psutil", "rich", "pip", "setuptools", "wheel"})
"""Recorded by MLflow's requirement inference (mlflow, skops and test runs import them on the side) but never
imported to serve a model: not checked."""

MISSING, MAJOR, DRIFT = "missing", "major", "drift"


def library(name: str) -> str:
    """The canonical library name of a distribution name (`xgboost_cpu` -> `xgboost`)."""
    name = canonicalize_name(name)
    return SAME_LIBRARY.get(name, name)


def installed_version(name: str) -> str | None:
    """The installed version of a library, under its own name or one that provides the same library."""
    wanted = library(name)
    for dist in [wanted, *(d for d, lib in SAME_LIBRARY.items() if lib == wanted)]:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return None


@dataclass(frozen=True)
class Finding:
    """One requirement the environment does not meet."""

    library: str
    required: str  # the requirement as the model states it, e.g. "xgboost==3.2.0"
    installed: str | None
    kind: str  # missing, major or drift

    def __str__(self) -> str:
        if self.kind == MISSING:
            return f"{self.required} (not installed)"
        return f"{self.required} (installed: {self.installed})"


@dataclass
class Report:
    """What `check` found for one model."""

    flavor: str
    flavor_library: str | None = None
    wanted: dict[str, str] = field(default_factory=dict)  # library -> the version the model names
    findings: list[Finding] = field(default_factory=list)
    source: str = "requirements.txt"

    @property
    def permanent(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in (MISSING, MAJOR)]

    @property
    def drift(self) -> list[Finding]:
        return [f for f in self.findings if f.kind == DRIFT]

    def failure(self) -> str | None:
        """The one line that says why the model cannot run here, or None."""
        missing = [f for f in self.permanent if f.kind == MISSING]
        major = [f for f in self.permanent if f.kind == MAJOR]
        parts = []
        if missing:
            parts.append(f"the model needs {', '.join(f.required for f in missing)}, not installed in this image")
        for f in major:
            parts.append(
                f"the model's flavor {self.flavor} was logged with {f.library} {self.wanted.get(f.library)} and "
                f"this image has {f.installed}, another major version"
            )
        if not parts:
            return None
        return "; ".join(parts) + " (serve it with an image that covers it: PREDICTOR_IMAGES in the adapter)"


def _public(spec: SpecifierSet) -> SpecifierSet:
    """The specifier without local version labels (`==2.5.1+cpu` -> `==2.5.1`): a CPU or CUDA build of the same
    release is the same library."""
    out = []
    for s in spec:
        try:
            out.append(Specifier(f"{s.operator}{Version(s.version).public}"))
        except (InvalidVersion, InvalidSpecifier):
            out.append(s)
    return SpecifierSet(",".join(str(s) for s in out))


def _named_version(req: Requirement) -> str | None:
    """The version a requirement names (`==1.9.1`, `~=1.9`, `>=1.9`), if it names one."""
    for s in req.specifier:
        if s.operator in ("==", "===", "~=", ">=") and "*" not in s.version:
            with contextlib.suppress(InvalidVersion):
                return Version(s.version).public
    return None


def read(model_dir: Path) -> list[Requirement] | None:
    """The model's requirements.txt as requirements (pip options, paths and URLs skipped), or None without one."""
    path = model_dir / "requirements.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.name} cannot be read ({e.__class__.__name__})") from None
    reqs = []
    for raw in text.splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue  # a path or URL (code logged with the model): not a library to look up
        if req.url is None:
            reqs.append(req)
    return reqs


def check(
    mlmodel: dict[str, Any],
    requirements: list[Requirement] | None,
    installed: Callable[[str], str | None] = installed_version,
) -> Report:
    """Compare what the model names with what `installed` reports."""
    flavors = mlmodel.get("flavors") or {}
    flavor = next((f for f in flavors if f != "python_function"), "python_function")
    report = Report(flavor=flavor, flavor_library=FLAVOR_LIBRARIES.get(flavor))
    reqs = list(requirements or [])
    if requirements is None:
        report.source = "MLmodel (no requirements.txt)"
    names = {library(r.name) for r in reqs}
    conf = flavors.get(flavor) if isinstance(flavors.get(flavor), dict) else {}
    logged = (conf or {}).get(FLAVOR_VERSION_KEYS.get(flavor, ""), None)
    if report.flavor_library and report.flavor_library not in names and logged:
        reqs.append(Requirement(f"{report.flavor_library}=={logged}"))
    for req in reqs:
        lib = library(req.name)
        if lib in NOT_NEEDED or (req.marker is not None and not req.marker.evaluate()):
            continue
        named = _named_version(req)
        if named:
            report.wanted[lib] = named
        have = installed(lib)
        if have is None:
            report.findings.append(Finding(lib, str(req), None, MISSING))
            continue
        try:
            have_version = Version(have)
        except InvalidVersion:
            continue
        if lib == report.flavor_library and named and Version(named).major != have_version.major:
            report.findings.append(Finding(lib, str(req), have, MAJOR))
        elif not _public(req.specifier).contains(have_version.public, prereleases=True):
            report.findings.append(Finding(lib, str(req), have, DRIFT))
    return report


def same_release(wanted: str | None, installed: str | None, release: str) -> bool:
    """Both versions belong to `release` (e.g. "1.9": 1.9.0, 1.9.1, ...)."""

    def of(v: str | None) -> bool:
        try:
            return v is not None and Version(v).release[:2] == Version(release).release[:2]
        except InvalidVersion:
            return False

    return of(wanted) and of(installed)
