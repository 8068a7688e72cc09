"""The adapter chooses the predictor image before it deploys (issue 12).

Pure tests of the catalog and the choice (adapter/images.py); the reconcile hook with fakes at the wrapper
boundary (refusal: failed, message, nothing applied, other models unaffected); the registry's reads against a
real MLflow server (two small downloads per version, once); and the whole path against the Kubernetes API
stand-in with real models of each flavor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapter import images
from adapter.images import CatalogError, NoImage, choose, parse_catalog, pytorch_variant
from adapter.reconcile import Reconciler
from adapter.settings import AdapterSettings
from adapter.types import ModelFiles
from custom_predictor import requirements as predictor_requirements
from tests.adapter.fakes import FakeCluster, FakeRegistry
from tests.predictor import image as predictor_image

BASE = "kind.local/custom-predictor:dev"
TORCH = "kind.local/custom-predictor-pytorch:dev"
CATALOG = parse_catalog("", BASE)


def flavors(flavor: str, **conf: Any) -> dict[str, Any]:
    loader = "mlflow.pyfunc.model" if flavor == "python_function" else f"mlflow.{flavor}"
    out: dict[str, Any] = {"python_function": {"loader_module": loader}}
    if flavor != "python_function":
        out[flavor] = conf
    return out


def reqs(*lines: str) -> list[Any]:
    return images.requirements("\n".join(lines)) or []


def test_the_default_catalog_is_predictor_image_and_its_pytorch_variant() -> None:
    assert [s.image for s in CATALOG] == [BASE, TORCH]
    assert pytorch_variant("ghcr.io/sb/custom-predictor:0.1.0") == "ghcr.io/sb/custom-predictor-pytorch:0.1.0"
    assert pytorch_variant("registry:5000/p") == "registry:5000/p-pytorch"
    assert "pytorch" not in CATALOG[0].flavors and {"pytorch", "sklearn", "python_function"} <= CATALOG[1].flavors


@pytest.mark.parametrize(
    ("flavor", "lines", "image"),
    [
        ("sklearn", ["scikit-learn==1.9.1", "numpy==2.4.6", "pytest==9.2.0", "psutil==5.9.8"], BASE),
        ("xgboost", ["xgboost==3.2.0", "xgboost-cpu==3.2.0", "mlflow==3.17.2", "scipy==1.17.1"], BASE),
        ("lightgbm", ["lightgbm==4.6.0", "scikit-learn==1.8.0"], BASE),  # minor drift: the predictor warns
        ("pytorch", ["torch==2.15.0+cu132", "mlflow==3.17.2"], TORCH),
        ("python_function", ["cloudpickle==3.1.3", "pandas==2.3.3"], BASE),
    ],
)
def test_the_first_image_that_covers_the_model_wins(flavor: str, lines: list[str], image: str) -> None:
    assert choose(CATALOG, flavors(flavor), reqs(*lines)) == image


def test_no_requirements_txt_is_judged_by_the_flavor_and_its_recorded_version() -> None:
    assert choose(CATALOG, flavors("xgboost", xgb_version="3.1.0"), None) == BASE
    with pytest.raises(NoImage, match=r"xgboost==1\.7\.6 \(the image has xgboost 3\.2\.0\)"):
        choose(CATALOG, flavors("xgboost", xgb_version="1.7.6"), None)


def test_refusals_name_the_flavor_or_library_and_the_setting() -> None:
    with pytest.raises(NoImage) as flavor:
        choose(CATALOG, flavors("tensorflow", keras_version="3.6.0"), reqs("tensorflow==2.18.0"))
    assert "serves the model's flavor tensorflow (it needs tensorflow)" in str(flavor.value)
    assert "PREDICTOR_IMAGES" in str(flavor.value)
    with pytest.raises(NoImage) as library:
        choose(CATALOG, flavors("sklearn"), reqs("scikit-learn==1.9.1", "catboost==1.2.7"))
    assert f"needs catboost==1.2.7, which {BASE} does not have" in str(library.value)
    assert "PREDICTOR_IMAGES" in str(library.value)
    with pytest.raises(NoImage, match=r"scikit-learn==0\.24\.2 \(the image has scikit-learn 1\.9\.1\).*major"):
        choose(CATALOG, flavors("sklearn"), reqs("scikit-learn==0.24.2"))


def test_serving_image_overrides_the_choice() -> None:
    assert choose(CATALOG, flavors("tensorflow"), None, override="my/tf-predictor:1") == "my/tf-predictor:1"


def test_an_explicit_catalog_and_its_errors() -> None:
    gpu = {"image": "r/gpu:1", "flavors": ["pytorch"], "libraries": ["torch==2.15.0", "mlflow==3.17.2"]}
    catalog = parse_catalog(json.dumps([{"image": "r/base:1", "covers": "base"}, gpu]), BASE)
    assert [s.image for s in catalog] == ["r/base:1", "r/gpu:1"]
    assert choose(catalog, flavors("pytorch"), reqs("torch==2.15.0")) == "r/gpu:1"
    for text, where in [
        ("[{", "not JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"image": ""}]', r"PREDICTOR_IMAGES\[0\]\.image"),
        ('[{"image": "a", "covers": "gpu"}]', r"PREDICTOR_IMAGES\[0\]\.covers: one of base, pytorch"),
        ('[{"image": "a", "flavors": []}]', r"PREDICTOR_IMAGES\[0\]\.flavors"),
        ('[{"image": "a", "flavors": ["x"], "libraries": ["not a req!"]}]', r"\[0\]\.libraries\[0\]"),
    ]:
        with pytest.raises(CatalogError, match=where):
            parse_catalog(text, BASE)
    with pytest.raises(ValueError, match="PREDICTOR_IMAGES"):
        AdapterSettings(predictor_images="[{")


def test_the_declarations_are_what_the_images_install() -> None:
    """adapter/predictor_images.json = the requirement files of custom_predictor/Dockerfile's targets and what
    they pull in (regenerate with `python -m tests.predictor.image`)."""
    assert images.builtin() == predictor_image.catalog()


def _judgement_cases() -> list[Any]:
    """Models and images that exercise every entry of either deployable's tables (flavor -> library, where MLmodel
    keeps the version, aliases, what is never needed): (MLmodel flavors, requirements.txt lines or None, the
    image's libraries). An entry one side lacks makes the two verdicts differ on its case."""
    sides = (images, predictor_requirements)
    cases = []
    for flavor in sorted({f for side in sides for f in side.FLAVOR_LIBRARIES}):
        lib = images.FLAVOR_LIBRARIES.get(flavor) or predictor_requirements.FLAVOR_LIBRARIES[flavor]
        key = images.FLAVOR_VERSION_KEYS.get(flavor) or predictor_requirements.FLAVOR_VERSION_KEYS.get(flavor)
        logged = flavors(flavor, **({key: "2.1.0"} if key else {}))
        for have, why in (({lib: "2.3.0"}, "same major"), ({lib: "3.0.0"}, "another major"), ({}, "absent")):
            cases.append(pytest.param(logged, None, have, id=f"{flavor} logged with {lib} 2.1.0, image: {why}"))
            cases.append(pytest.param(logged, [f"{lib}==2.1.0"], have, id=f"{flavor} needs {lib}==2.1.0, {why}"))
    for alias in sorted({a for side in sides for a in side.SAME_LIBRARY}):
        target = images.SAME_LIBRARY.get(alias) or predictor_requirements.SAME_LIBRARY[alias]
        cases.append(pytest.param(flavors("python_function"), [f"{alias}==1.0.0"], {target: "1.0.0"}, id=alias))
    for name in sorted(images.NOT_NEEDED | predictor_requirements.NOT_NEEDED):
        cases.append(pytest.param(flavors("python_function"), [f"{name}==1.0"], {}, id=f"{name} (never imported)"))
    cases.append(pytest.param(flavors("python_function"), ["some-library==1.0"], {}, id="a library not there"))
    return cases


@pytest.mark.parametrize(("logged", "lines", "libraries"), _judgement_cases())
def test_the_adapter_chooses_an_image_exactly_when_the_predictor_would_serve_the_model_in_it(
    logged: dict[str, Any], lines: list[str] | None, libraries: dict[str, str]
) -> None:
    """The two deployables cannot share code, so each keeps its own copy of the rules: the adapter's choice of an
    image and the predictor's check at start in that image must agree, or a model is deployed to fail."""
    every_flavor = set(images.FLAVOR_LIBRARIES) | set(predictor_requirements.FLAVOR_LIBRARIES)
    image = images.ImageSpec("registry/predictor:1", frozenset([*every_flavor, "python_function"]), libraries)
    wanted = None if lines is None else reqs(*lines)
    try:
        choose([image], logged, wanted)
        chosen = True
    except NoImage:
        chosen = False
    report = predictor_requirements.check({"flavors": logged}, wanted, installed=libraries.get)
    assert chosen == (not report.permanent), report.failure()


# ---- the reconcile hook, with fakes at the wrapper boundary ----------------------------------------------------
def _world() -> tuple[Reconciler, FakeRegistry, FakeCluster]:
    s = AdapterSettings(k8s_name_space="models", predictor_image=BASE)
    registry, cluster = FakeRegistry(), FakeCluster()
    return Reconciler(s, registry, cluster, sleep=lambda _: None, retry_delays=()), registry, cluster


def _image(cluster: FakeCluster, isvc: str) -> str:
    return str(cluster.objects[isvc]["spec"]["predictor"]["containers"][0]["image"])


def test_reconcile_deploys_each_model_on_the_image_that_covers_it() -> None:
    rec, registry, cluster = _world()
    for name, flavor, text in [
        ("torch-model", "pytorch", "torch==2.15.0\nmlflow==3.17.2"),
        ("tree-model", "xgboost", "xgboost==3.2.0"),
        ("s3-model", None, None),
    ]:
        registry.add(name, "1", stage="production")
        if flavor:
            registry.files[(name, "1")] = ModelFiles(flavors=flavors(flavor), requirements=text)
    out = rec.run_pass().by_model()
    assert {n: o.action for n, o in out.items()} == {
        "torch-model": "created",
        "tree-model": "created",
        "s3-model": "created",
    }
    assert _image(cluster, "torch-model") == TORCH
    assert _image(cluster, "tree-model") == BASE
    assert _image(cluster, "s3-model") == BASE  # MLflow does not serve its files: PREDICTOR_IMAGE
    rec.run_pass()
    assert registry.file_reads[("torch-model", "1")] == 1  # once deployed, the serving image stands


def test_a_model_no_image_covers_fails_with_nothing_applied_and_others_unaffected() -> None:
    rec, registry, cluster = _world()
    registry.add("tf-model", "1", stage="production")
    registry.files[("tf-model", "1")] = ModelFiles(flavors=flavors("tensorflow"), requirements="tensorflow==2.18.0")
    registry.add("ok-model", "1", stage="production")
    registry.files[("ok-model", "1")] = ModelFiles(flavors=flavors("sklearn"), requirements="scikit-learn==1.9.1")
    out = rec.run_pass().by_model()
    assert out["tf-model"].status == "failed" and "tf-model" not in cluster.objects
    tags = registry.versions[("tf-model", "1")].tags
    assert tags["deployment.status"] == "failed"
    assert "flavor tensorflow" in tags["deployment.message"] and "PREDICTOR_IMAGES" in tags["deployment.message"]
    assert out["ok-model"].action == "created" and _image(cluster, "ok-model") == BASE
    writes = registry.writes["version_tag"]
    assert rec.run_pass().by_model()["tf-model"].status == "failed"
    assert registry.writes["version_tag"] == writes  # nothing changed: nothing written again
    assert cluster.writes["apply"] == 1


def test_serving_image_tag_skips_the_choice() -> None:
    rec, registry, cluster = _world()
    registry.add("tf-model", "1", stage="production", **{"serving.image": TORCH})
    registry.files[("tf-model", "1")] = ModelFiles(flavors=flavors("tensorflow"), requirements=None)
    assert rec.run_pass().by_model()["tf-model"].action == "created"
    assert _image(cluster, "tf-model") == TORCH


def test_a_version_without_an_mlmodel_fails_with_the_reason() -> None:
    from adapter.errors import PermanentError

    rec, registry, cluster = _world()
    registry.add("broken", "1", stage="production")

    def broken(version: Any) -> ModelFiles | None:
        raise PermanentError("version 1 has no MLmodel file: not an MLflow model")

    registry.model_files = broken  # type: ignore[method-assign]
    out = rec.run_pass().by_model()["broken"]
    assert out.status == "failed" and "no MLmodel file" in out.message and cluster.objects == {}


# ---- the registry's reads, against a real MLflow server ---------------------------------------------------------
def test_registry_reads_mlmodel_and_requirements_once_per_version(tracking_uri: str, tmp_path: Path) -> None:
    import uuid

    from adapter.registry import MlflowRegistry
    from tests.predictor import flavors as flavor_models

    name = f"img-{uuid.uuid4().hex[:6]}"
    uri = flavor_models.log(flavor_models.save_xgboost, name)
    registry = MlflowRegistry(tracking_uri, tag_key="stage", tag_value="production")
    version = registry.get_version(name, uri.rsplit("/", 1)[1])
    files = registry.model_files(version)
    assert files is not None and "xgboost" in files.flavors
    assert files.requirements is not None and "xgboost-cpu==" in files.requirements
    calls = sum(registry.calls.values())
    assert registry.model_files(version) is files and sum(registry.calls.values()) == calls
    assert registry.calls["download MLmodel"] == 1 and registry.calls["download requirements.txt"] == 1
    assert choose(CATALOG, files.flavors, images.requirements(files.requirements)) == BASE


def test_against_mlflow_and_the_kubernetes_api(world: Any, tmp_path: Path) -> None:
    """Real registered models of two flavors and one that needs a library no image has, one pass: the PyTorch
    model runs on the PyTorch image, the LightGBM one on the base image, the third fails with the reason and no
    InferenceService."""
    from adapter import naming
    from tests.predictor import flavors as flavor_models
    from tests.predictor import models

    def needs_catboost(path: Path) -> Path:
        folder = models.save_pyfunc(path)
        with (folder / "requirements.txt").open("a") as f:
            f.write("\ncatboost==1.2.7\n")  # the file may not end with a newline
        return folder

    names = {}
    for suffix, saver in [
        ("torch", flavor_models.save_torch),
        ("lgbm", flavor_models.save_lightgbm),
        ("catboost", needs_catboost),
    ]:
        names[suffix] = f"{world.prefix}{suffix}"
        flavor_models.log(saver, names[suffix])
        world.mlflow.set_model_version_tag(names[suffix], "1", "stage", "production")
    out = world.reconciler().run_pass().by_model()

    def image_of(suffix: str) -> str:
        isvc = world.isvc(naming.isvc_name(names[suffix]))
        return str(isvc["spec"]["predictor"]["containers"][0]["image"])

    assert out[names["torch"]].action == "created" and image_of("torch") == "kind.local/custom-predictor-pytorch:dev"
    assert out[names["lgbm"]].action == "created" and image_of("lgbm") == "kind.local/custom-predictor:dev"
    assert world.isvc(naming.isvc_name(names["catboost"])) is None
    tags = world.tags(names["catboost"], "1")
    assert tags["deployment.status"] == "failed"
    assert "needs catboost==1.2.7, which kind.local/custom-predictor:dev does not have" in tags["deployment.message"]
    assert "PREDICTOR_IMAGES" in tags["deployment.message"]


def test_a_new_catalog_moves_a_serving_model_to_its_image() -> None:
    """The serving image stands while the catalog lists it; a catalog with new image names re-chooses."""
    rec, registry, cluster = _world()
    registry.add("torch-model", "1", stage="production")
    registry.files[("torch-model", "1")] = ModelFiles(flavors=flavors("pytorch"), requirements="torch==2.15.0")
    rec.run_pass()
    assert _image(cluster, "torch-model") == TORCH
    catalog = json.dumps([{"image": "r/base:2", "covers": "base"}, {"image": "r/torch:2", "covers": "pytorch"}])
    settings = AdapterSettings(k8s_name_space="models", predictor_image=BASE, predictor_images=catalog)
    moved = Reconciler(settings, registry, cluster, sleep=lambda _: None, retry_delays=())
    assert moved.run_pass().by_model()["torch-model"].action == "updated"
    assert _image(cluster, "torch-model") == "r/torch:2" and registry.file_reads[("torch-model", "1")] == 2
