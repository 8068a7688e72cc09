"""Which predictor image serves a model version: the PREDICTOR_IMAGES catalog, and the choice (pure).

Each image declares what it covers: the MLflow flavors it serves and the libraries it has, with versions. The
catalog is PREDICTOR_IMAGES, a JSON list tried in order, first match wins:
  [{"image": "registry/predictor:1", "covers": "base"},                        # a declaration shipped here
   {"image": "registry/predictor-gpu:1", "flavors": ["pytorch"], "libraries": ["torch==2.15.0", ...]}]
`covers` names a declaration of `predictor_images.json` (this project's images: `base`, `pytorch`, kept equal
to custom_predictor/requirements*.txt by the tests); `python -m custom_predictor.covers` run in an image prints
its own entry. Empty (the default): PREDICTOR_IMAGE covers `base`, and the same name with `-pytorch` appended
(`.../custom-predictor-pytorch:0.1.0`) covers `pytorch`.
`choose` picks the first image that serves the model's flavor and has every library its requirements.txt names
(the flavor's own library in the same major version): the rule the predictor applies at start
(custom_predictor/requirements.py, same tables). None does: `NoImage`, naming what is missing and the setting.
Neighbours: `registry.model_files` reads the MLmodel and requirements.txt; `reconcile` calls `choose` before it
renders, and a refusal fails the version with nothing applied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

BUILTIN = Path(__file__).with_name("predictor_images.json")

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
"""The library each MLflow flavor needs (as custom_predictor/requirements.py says)."""
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
SAME_LIBRARY = {"xgboost-cpu": "xgboost", "mlflow-skinny": "mlflow"}
NOT_NEEDED = frozenset({"pytest", "psutil", "rich", "pip", "setuptools", "wheel"})


class CatalogError(ValueError):
    """PREDICTOR_IMAGES is not a usable catalog; says which entry and field."""


class NoImage(Exception):
    """No image of the catalog covers the model; the message names what is missing and the setting to change."""


@dataclass(frozen=True)
class ImageSpec:
    """One image and what it covers: flavors, libraries (library -> version, "" when unstated), Python."""

    image: str
    flavors: frozenset[str]
    libraries: Mapping[str, str] = field(default_factory=dict)
    python: str = "3.11"


def library(name: str) -> str:
    name = canonicalize_name(name)
    return SAME_LIBRARY.get(name, name)


@lru_cache(maxsize=1)
def builtin() -> dict[str, Any]:
    """The declarations of this project's images (`base`, `pytorch`)."""
    data: dict[str, Any] = json.loads(BUILTIN.read_text(encoding="utf-8"))
    return data


def pytorch_variant(image: str) -> str:
    """`registry/predictor:1.0` -> `registry/predictor-pytorch:1.0` (the name scripts/images.sh gives it)."""
    name, at, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    repo, tag = (name[:colon], name[colon:]) if colon > slash else (name, "")
    return f"{repo}-pytorch{tag}" if not at else f"{repo}-pytorch{tag}@{digest}"


def _spec(image: str, declared: Mapping[str, Any], where: str) -> ImageSpec:
    flavors, libraries = declared.get("flavors"), declared.get("libraries", [])
    if not isinstance(flavors, list) or not flavors or not all(isinstance(f, str) and f for f in flavors):
        raise CatalogError(f"{where}.flavors: a non-empty list of MLflow flavor names is needed")
    if not isinstance(libraries, list) or not all(isinstance(x, str) for x in libraries):
        raise CatalogError(f"{where}.libraries: a list of 'name==version' (or 'name') strings is needed")
    libs: dict[str, str] = {}
    for n, text in enumerate(libraries):
        try:
            req = Requirement(text)
        except InvalidRequirement:
            raise CatalogError(f"{where}.libraries[{n}]: {text[:80]!r} is not 'name==version'") from None
        pins = [s.version for s in req.specifier if s.operator in ("==", "===")]
        libs[library(req.name)] = pins[0] if pins else ""
    python = declared.get("python", "3.11")
    if not isinstance(python, str):
        raise CatalogError(f"{where}.python: a version string such as '3.11' is needed")
    return ImageSpec(image=image, flavors=frozenset([*flavors, "python_function"]), libraries=libs, python=python)


@lru_cache(maxsize=8)
def parse_catalog(text: str, predictor_image: str) -> tuple[ImageSpec, ...]:
    """PREDICTOR_IMAGES as image specs, in order; empty text gives the default catalog (see module doc)."""
    if not text.strip():
        base, torch = builtin()["base"], builtin()["pytorch"]
        return (_spec(predictor_image, base, "base"), _spec(pytorch_variant(predictor_image), torch, "pytorch"))
    try:
        data = json.loads(text)
    except ValueError as e:
        raise CatalogError(f"PREDICTOR_IMAGES is not JSON ({e})") from None
    if not isinstance(data, list) or not data:
        raise CatalogError("PREDICTOR_IMAGES must be a non-empty JSON list of {image, covers | flavors, libraries}")
    out = []
    for n, entry in enumerate(data):
        where = f"PREDICTOR_IMAGES[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"].strip():
            raise CatalogError(f"{where}.image: an image reference is needed")
        covers = entry.get("covers")
        if covers is not None:
            if covers not in builtin() or set(entry) - {"image", "covers"}:
                known = ", ".join(sorted(builtin()))
                raise CatalogError(f"{where}.covers: one of {known}, and no flavors/libraries beside it")
            out.append(_spec(entry["image"].strip(), builtin()[covers], where))
        else:
            out.append(_spec(entry["image"].strip(), entry, where))
    return tuple(out)


def serving_flavor(flavors: Mapping[str, Any]) -> str:
    """The flavor pyfunc loads the model with (`loader_module: mlflow.<flavor>`), else the model's first own
    flavor; `python_function` for a custom PythonModel."""
    py = flavors.get("python_function")
    loader = py.get("loader_module") if isinstance(py, dict) else None
    if isinstance(loader, str) and loader.startswith("mlflow.") and loader.split(".")[1] in flavors:
        return loader.split(".")[1]
    return next((f for f in flavors if f != "python_function"), "python_function")


@dataclass
class _Fit:
    spec: ImageSpec
    missing: list[str] = field(default_factory=list)
    major: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.major


def _major(version: str) -> int | None:
    try:
        return Version(version).major
    except InvalidVersion:
        return None


def _fit(spec: ImageSpec, flavor: str, wanted: Sequence[Requirement], flavor_version: str | None) -> _Fit:
    fit = _Fit(spec)
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env["python_version"] = spec.python
    env.update(python_full_version=f"{spec.python}.0", sys_platform="linux", platform_system="Linux", os_name="posix")
    flavor_lib = FLAVOR_LIBRARIES.get(flavor)
    for req in wanted:
        lib = library(req.name)
        if lib in NOT_NEEDED or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        if lib not in spec.libraries:
            fit.missing.append(str(req))
            continue
        named = next((s.version for s in req.specifier if s.operator in ("==", "===", "~=", ">=")), None)
        have = spec.libraries[lib]
        if lib == flavor_lib and named and have and _major(named) != _major(have):
            fit.major.append(f"{req} (the image has {lib} {have})")
    if flavor_lib and flavor_lib not in {library(r.name) for r in wanted} and flavor_version:
        image_has = spec.libraries.get(flavor_lib)
        if image_has is None:
            fit.missing.append(f"{flavor_lib}=={flavor_version}")
        elif image_has and _major(image_has) != _major(flavor_version):
            fit.major.append(f"{flavor_lib}=={flavor_version} (the image has {flavor_lib} {image_has})")
    return fit


def requirements(text: str | None) -> list[Requirement] | None:
    """requirements.txt as requirements (pip options, paths and URLs skipped); None for no file."""
    if text is None:
        return None
    out = []
    for raw in text.splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.url is None:
            out.append(req)
    return out


def choose(
    catalog: Sequence[ImageSpec],
    flavors: Mapping[str, Any],
    wanted: Sequence[Requirement] | None,
    override: str | None = None,
) -> str:
    """The image for a model with these MLmodel `flavors` and requirements (`wanted`; None: no requirements.txt).

    `override` (a validated `serving.image` tag) wins. Raises NoImage when no image covers the model."""
    if override:
        return override
    if not catalog:
        raise NoImage("PREDICTOR_IMAGES is empty")
    flavor = serving_flavor(flavors)
    conf = flavors.get(flavor)
    version = conf.get(FLAVOR_VERSION_KEYS.get(flavor, ""), None) if isinstance(conf, dict) else None
    flavor_version = str(version) if version else None
    serving = [spec for spec in catalog if flavor in spec.flavors]
    if not serving:
        lib = FLAVOR_LIBRARIES.get(flavor)
        need = f" (it needs {lib}{'==' + flavor_version if flavor_version else ''})" if lib else ""
        raise NoImage(
            f"no image in PREDICTOR_IMAGES serves the model's flavor {flavor}{need}: add an image that does to"
            " PREDICTOR_IMAGES"
        )
    fits = [_fit(spec, flavor, list(wanted or []), flavor_version) for spec in serving]
    for fit in fits:
        if fit.ok:
            return fit.spec.image
    best = min(fits, key=lambda f: (len(f.major), len(f.missing)))
    problems = []
    if best.missing:
        problems.append(f"needs {', '.join(best.missing)}, which {best.spec.image} does not have")
    if best.major:
        problems.append(f"needs {', '.join(best.major)}: another major version of the flavor's library")
    raise NoImage(
        f"no image in PREDICTOR_IMAGES covers this {flavor} model: it {'; it '.join(problems)}. Add an image that"
        " covers it to PREDICTOR_IMAGES, or log the model with requirements an image meets"
    )
