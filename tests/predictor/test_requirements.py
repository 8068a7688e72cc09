"""The start-up check of a model's requirements.txt against the installed libraries.

Unit tests of `requirements.check` against a stated environment, then real models whose requirements.txt is
edited as a user's would differ: a missing library and another major version of the flavor's library end the
process with one line; a minor drift serves, and says so in the log, /metrics and the Swagger description; the
numpy kernels step aside when the model's scikit-learn is not the release they were written for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from custom_predictor import requirements
from tests.predictor.conftest import in_process, run_to_exit_with_log

INSTALLED = {"scikit-learn": "1.9.1", "numpy": "2.4.6", "xgboost": "3.2.0", "mlflow": "3.17.2", "torch": "2.15.0"}


def check(flavor: str, lines: list[str], conf: dict | None = None) -> requirements.Report:
    mlmodel = {"flavors": {"python_function": {}, flavor: conf or {}}}
    return requirements.check(mlmodel, [Requirement(x) for x in lines], lambda lib: INSTALLED.get(lib))


def test_a_model_the_environment_meets_has_no_findings() -> None:
    report = check("sklearn", ["scikit-learn==1.9.1", "numpy==2.4.6", "mlflow==3.17.2"])
    assert report.findings == [] and report.failure() is None
    assert report.wanted["scikit-learn"] == "1.9.1"


def test_a_missing_library_is_permanent() -> None:
    report = check("sklearn", ["scikit-learn==1.9.1", "catboost==1.2.7", "lightgbm>=4"])
    assert [(f.library, f.kind) for f in report.findings] == [("catboost", "missing"), ("lightgbm", "missing")]
    line = report.failure()
    assert line is not None and "catboost==1.2.7, lightgbm>=4, not installed in this image" in line
    assert "PREDICTOR_IMAGES" in line


def test_another_major_version_of_the_flavor_library_is_permanent_a_minor_one_drift() -> None:
    major = check("sklearn", ["scikit-learn==0.24.2"])
    assert [f.kind for f in major.findings] == ["major"]
    assert "scikit-learn 0.24.2 and this image has 1.9.1, another major version" in (major.failure() or "")
    minor = check("sklearn", ["scikit-learn==1.8.0"])
    assert [f.kind for f in minor.findings] == ["drift"] and minor.failure() is None
    other = check("sklearn", ["scikit-learn==1.9.1", "numpy==1.26.4"])  # another major, but not the flavor's
    assert [(f.library, f.kind) for f in other.findings] == [("numpy", "drift")] and other.failure() is None


def test_builds_and_aliases_count_as_the_same_library() -> None:
    """torch 2.15.0+cpu is 2.15.0; xgboost-cpu provides xgboost; mlflow-skinny provides mlflow."""
    report = check("pytorch", ["torch==2.15.0+cpu", "xgboost-cpu==3.2.0", "mlflow-skinny==3.17.2"])
    assert report.findings == []


def test_what_serving_never_imports_is_skipped_and_markers_are_honoured() -> None:
    lines = ["scikit-learn==1.9.1", "pytest==9.2.0", "psutil==5.9.8", "rich==15.0.0", 'pywin32==306; os_name == "nt"']
    assert check("sklearn", lines).findings == []


def test_the_flavor_version_in_mlmodel_stands_in_for_a_missing_requirements_txt() -> None:
    mlmodel = {"flavors": {"python_function": {}, "xgboost": {"xgb_version": "1.7.6"}}}
    report = requirements.check(mlmodel, None, lambda lib: INSTALLED.get(lib))
    assert [(f.library, f.kind) for f in report.findings] == [("xgboost", "major")]
    assert report.source.startswith("MLmodel")


def test_reading_skips_pip_options_paths_and_urls(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text(
        "-r other.txt\n--extra-index-url https://example.invalid/simple\nscikit-learn==1.9.1  # pinned\n"
        "code/extra.whl\nmylib @ https://example.invalid/mylib.whl\n\n"
    )
    assert [str(r) for r in requirements.read(tmp_path) or []] == ["scikit-learn==1.9.1"]
    assert requirements.read(tmp_path / "nowhere") is None


def _model_with(tmp_path: Path, source: Path, *lines: str) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(source, folder)
    text = (folder / "requirements.txt").read_text().splitlines()
    names = {Requirement(x).name for x in lines}
    kept = [x for x in text if x.strip() and Requirement(x).name not in names]
    (folder / "requirements.txt").write_text("\n".join([*kept, *lines]) + "\n")
    return folder


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("catboost==1.2.7", "the model needs catboost==1.2.7, not installed in this image"),
        ("scikit-learn==0.24.2", "the model's flavor sklearn was logged with scikit-learn 0.24.2 and this image has"),
    ],
    ids=["missing-library", "major-version"],
)
def test_the_process_ends_with_the_reason(
    tmp_path: Path, local_models: dict[str, Path], line: str, expected: str
) -> None:
    folder = _model_with(tmp_path, local_models["classifier"], line)
    code, lines = run_to_exit_with_log(MODEL_URI=str(folder), MODEL_NAME="risk", MODEL_VERSION="3")
    assert code == 2, lines
    assert lines[-1].startswith("custom_predictor: model risk version 3 cannot be served: " + expected), lines[-1]
    assert lines[-1].endswith("(serve it with an image that covers it: PREDICTOR_IMAGES in the adapter)")


def test_warn_mode_serves_anyway(tmp_path: Path, local_models: dict[str, Path]) -> None:
    folder = _model_with(tmp_path, local_models["classifier"], "catboost==1.2.7")
    with in_process(model_uri=str(folder), service_path="m", requirements_check="warn") as client:
        assert client.app_state.runtime.ready
        assert "catboost" in client.get("/openapi.json").json()["info"]["description"]


def test_minor_drift_serves_on_the_estimator_and_is_reported(tmp_path: Path, local_models: dict[str, Path]) -> None:
    """A model logged with scikit-learn 1.8: served, but by the estimator (the kernels are written for 1.9), and
    the drift is in /metrics and on the Swagger page."""
    folder = _model_with(tmp_path, local_models["classifier"], "scikit-learn==1.8.0")
    with in_process(model_uri=str(folder), service_path="m") as client:
        runtime = client.app_state.runtime
        assert runtime.ready and runtime.kind == "sklearn-fast"
        metrics = client.get("/metrics").text
        assert (
            'predictor_requirement_drift{installed="1.9.1",library="scikit-learn",required="scikit-learn==1.8.0"} 1.0'
            in metrics
        )
        description = client.get("/openapi.json").json()["info"]["description"]
        assert "`scikit-learn`: the model names `scikit-learn==1.8.0`, this image has `1.9.1`" in description


def test_the_kernels_serve_the_release_they_were_written_for(local_models: dict[str, Path]) -> None:
    with in_process(model_uri=str(local_models["classifier"]), service_path="m", verify_kernel=False) as client:
        assert client.app_state.runtime.kind == "kernel"
        assert "predictor_requirement_drift{" not in client.get("/metrics").text
