"""Real MLflow models for the predictor tests and benchmarks (shared with tests/bench and the browser tests).

Every builder trains or defines a small real model, logs it to the MLflow server the library currently points
at (the `tracking_uri` fixture), registers it, and returns the `models:/<name>/<version>` URI. `save_*` builders
write the model to a local folder instead (the KServe `/mnt/models` case) and return the folder.
"""

from __future__ import annotations

import csv
import functools
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

FEATURES = ["radius", "texture", "perimeter", "area", "smoothness"]
"""Input columns of the classifiers: five columns of scikit-learn's bundled breast-cancer data set."""

LABELS = {0: "malignant", 1: "benign"}


def breast_cancer(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first five columns of the breast-cancer data set (offline, bundled with scikit-learn)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = data.data[:, :5], data.target
    return (x[:n], y[:n]) if n else (x, y)


def _fit_classifier() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = breast_cancer()
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(_frame(x), y)


def _frame(x: np.ndarray) -> Any:
    import pandas as pd

    return pd.DataFrame(x, columns=FEATURES)


def save_classifier(path: Path, *, predict_fn: str = "predict") -> Path:
    """Save the classifier with a signature and an input example (no contract) into `path`; return it."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model = _fit_classifier()
    x, _ = breast_cancer(5)
    example = _frame(x)
    output = getattr(model, predict_fn)(example)
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(example, output),
        input_example=example,
        pyfunc_predict_fn=predict_fn,
    )
    return path


def _register(local_dir: Path, name: str, *, run_files: dict[str, Path] | None = None) -> str:
    """Log a saved model folder as the run's `model` artifact, register it, return `models:/name/version`."""
    import mlflow

    with mlflow.start_run() as run:
        mlflow.log_params({"model_family": "logistic-regression", "features": len(FEATURES)})
        mlflow.log_metric("train_rows", 569)
        mlflow.set_tag("team", "predictor-tests")
        mlflow.log_artifacts(str(local_dir), artifact_path="model")
        for folder, file in (run_files or {}).items():
            mlflow.log_artifact(str(file), artifact_path=folder)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    return f"models:/{name}/{version.version}"


def train_classifier(name: str = "Breast Cancer_Risk", *, predict_fn: str = "predict") -> str:
    """A scikit-learn classifier with a signature and input example and no contract; registered as `name`."""
    with tempfile.TemporaryDirectory() as tmp:
        return _register(save_classifier(Path(tmp) / "model", predict_fn=predict_fn), name)


def log_logged_model(name: str, *, in_run: bool = True) -> str:
    """The classifier logged with MLflow 3's `log_model(name=...)`, not registered: returns `models:/m-<id>`.

    With `in_run` it is logged inside a run carrying the same params, metric and tag as `_register`'s runs;
    without, the logged model has no source run."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model = _fit_classifier()
    example = _frame(breast_cancer(5)[0])
    signature = infer_signature(example, model.predict(example))
    if not in_run:
        return str(mlflow.sklearn.log_model(model, name=name, signature=signature, input_example=example).model_uri)
    with mlflow.start_run():
        mlflow.log_params({"model_family": "logistic-regression", "features": len(FEATURES)})
        mlflow.log_metric("train_rows", 569)
        mlflow.set_tag("team", "predictor-tests")
        info = mlflow.sklearn.log_model(model, name=name, signature=signature, input_example=example)
    return str(info.model_uri)


@functools.cache
def _classifier_predictions(n: int) -> tuple[int, ...]:
    """The classifier's predictions for the first `n` rows (fitted once: test modules build contracts at import)."""
    x, _ = breast_cancer(n)
    return tuple(int(v) for v in _fit_classifier().predict(_frame(x)))


def contract_dict(features_file: str = "patients.csv", *, expected: list[int] | None = None) -> dict:
    """A valid contract for the classifier: typed inputs, labelled output, a patient lookup and test data."""
    x, _ = breast_cancer(3)
    rows = [dict(zip(FEATURES, map(float, r), strict=True)) for r in x]
    units = {"radius": "mm", "texture": None, "perimeter": "mm", "area": "mm2", "smoothness": None}
    return {
        "version": 1,
        "description": "Breast cancer diagnosis from five cell-nucleus measurements.",
        "inputs": [
            {
                "name": f,
                "type": "double",
                "description": f"Mean {f} of the cell nuclei.",
                **({"unit": units[f]} if units[f] else {}),
                "minimum": 0.0,
                "maximum": 5000.0,
                "example": rows[0][f],
            }
            for f in FEATURES
        ],
        "outputs": [
            {
                "name": "diagnosis",
                "type": "integer",
                "description": "Predicted diagnosis.",
                "labels": {str(k): v for k, v in LABELS.items()},
            }
        ],
        "entity": {
            "id": "patient_id",
            "type": "integer",
            "description": "Patient identifier in the registered feature file.",
            "features": features_file,
        },
        "test_data": {
            "rows": rows,
            "expected": expected if expected is not None else list(_classifier_predictions(3)),
        },
    }


def write_patients(path: Path, n: int = 20) -> Path:
    """The feature file of the entity lookup: `patient_id` (1000, 1001, ...) and the five feature columns."""
    x, _ = breast_cancer(n)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["patient_id", *FEATURES])
        for i, row in enumerate(x):
            w.writerow([1000 + i, *(repr(float(v)) for v in row)])
    return path


def save_contract_model(path: Path, *, contract: dict | None = None) -> Path:
    """The classifier with `contract.yaml` and `patients.csv` inside the model folder; return the folder."""
    save_classifier(path)
    (path / "contract.yaml").write_text(yaml.safe_dump(contract or contract_dict()))
    write_patients(path / "patients.csv")
    return path


def log_contract_model(
    name: str = "breast-cancer-lookup", *, contract: dict | None = None, in_run_features: bool = False
) -> str:
    """The classifier with a contract (entity lookup by `patient_id`, test data with expected outputs).

    By default the contract and feature file sit in the model's artifacts; with `in_run_features=True` they are
    logged to the run's `features/` folder instead, as DPM360 did.
    """
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_classifier(Path(tmp) / "model")
        extra = Path(tmp) / "extra"
        extra.mkdir()
        (extra / "contract.yaml").write_text(yaml.safe_dump(contract or contract_dict()))
        write_patients(extra / "patients.csv")
        if in_run_features:
            files = {"features": extra / "contract.yaml"}
            uri = _register(model_dir, name, run_files=files)
            _log_to_same_run(uri, extra / "patients.csv", "features")
            return uri
        for f in extra.iterdir():
            (model_dir / f.name).write_bytes(f.read_bytes())
        return _register(model_dir, name)


def _log_to_same_run(model_uri: str, file: Path, folder: str) -> None:
    import mlflow

    name, version = model_uri.removeprefix("models:/").split("/")
    run_id = mlflow.MlflowClient().get_model_version(name, version).run_id
    mlflow.MlflowClient().log_artifact(run_id, str(file), artifact_path=folder)


def save_pyfunc(path: Path) -> Path:
    """A custom pyfunc model: `score = 2*a + b`, `flag = name == "x"`, with a signature; saved to `path`.

    It raises RuntimeError for a < -1e6 (a model failure: 500) and ValueError for a > 1e12 (rejected input: 422).
    """
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class Linear(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            if (model_input["a"] < -1e6).any():
                raise RuntimeError("internal failure: secret-internal-detail")
            if (model_input["a"] > 1e12).any():
                raise ValueError("a too large: secret-internal-detail")
            return pd.DataFrame({"score": 2 * model_input["a"] + model_input["b"], "flag": model_input["name"] == "x"})

    example = pd.DataFrame({"a": [1.0, 2.5], "b": [3, 4], "name": ["x", "y"]})
    out = pd.DataFrame({"score": [5.0, 9.0], "flag": [True, False]})
    mlflow.pyfunc.save_model(
        str(path), python_model=Linear(), signature=infer_signature(example, out), input_example=example
    )
    return path


def log_pyfunc_model(name: str = "custom-linear") -> str:
    """The custom pyfunc model, registered as `name`; returns `models:/name/version`."""
    with tempfile.TemporaryDirectory() as tmp:
        return _register(save_pyfunc(Path(tmp) / "model"), name)


MIXED_CONTRACT = {
    "version": 1,
    "description": "A score from inputs of every contract type: bounded, enumerated and optional ones.",
    "inputs": [
        {"name": "dose", "type": "double", "minimum": 0.0, "maximum": 1000.0, "unit": "mg", "example": 2.5},
        {"name": "visits", "type": "integer", "minimum": 0, "maximum": 100, "example": 3},
        {"name": "arm", "type": "string", "allowed": ["placebo", "low", "high"], "example": "low"},
        {"name": "smoker", "type": "boolean", "required": False, "default": False},
        {"name": "note", "type": "string", "required": False, "default": ""},
    ],
    "outputs": [{"name": "score", "type": "double", "description": "2 x dose + visits (+ 1 for smokers)."}],
}
"""Contract of `save_mixed_pyfunc`: one input of each type, with ranges, allowed values and optional inputs."""


def save_mixed_pyfunc(path: Path) -> Path:
    """A pyfunc model over inputs of every type (`MIXED_CONTRACT` in the folder): `score = 2*dose + visits
    (+1 for smokers)`. It accepts every row its contract allows: no input makes it fail."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class Mixed(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            score = 2 * model_input["dose"] + model_input["visits"] + model_input["smoker"].astype(float)
            return pd.DataFrame({"score": score.astype(float)})

    example = pd.DataFrame(
        {"dose": [2.5, 0.0], "visits": [3, 0], "arm": ["low", "placebo"], "smoker": [True, False], "note": ["", "x"]}
    )
    mlflow.pyfunc.save_model(
        str(path),
        python_model=Mixed(),
        signature=infer_signature(example, pd.DataFrame({"score": [8.0, 0.0]})),
        input_example=example,
    )
    (path / "contract.yaml").write_text(yaml.safe_dump(MIXED_CONTRACT, sort_keys=False))
    return path


def save_untyped(path: Path, *, example: bool = True) -> Path:
    """The classifier saved with no signature (and no contract): with its input example (`signature=False` keeps
    MLflow from inferring one from it), or with none. The predictor serves it untyped."""
    import mlflow.sklearn

    model = _fit_classifier()
    kw: dict[str, Any] = {"input_example": _frame(breast_cancer(5)[0])} if example else {}
    mlflow.sklearn.save_model(model, str(path), signature=False, **kw)
    return path


def log_untyped_model(name: str = "untyped-risk") -> str:
    """The untyped classifier (no signature, an input example) logged to the MLflow server and registered."""
    with tempfile.TemporaryDirectory() as tmp:
        return _register(save_untyped(Path(tmp) / "model"), name)


def save_failing_untyped(path: Path) -> Path:
    """A pyfunc model with no signature whose input example makes it raise: its self-test must fail."""
    import mlflow.pyfunc
    import pandas as pd

    class Broken(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            raise RuntimeError("broken on purpose")

    mlflow.pyfunc.save_model(
        str(path), python_model=Broken(), signature=False, input_example=pd.DataFrame({"a": [1.0, 2.0]})
    )
    return path


def save_params_pyfunc(path: Path) -> Path:
    """A pyfunc model with an inference param: `y = scale * x` (`scale` defaults to 1.0)."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    class Scaled(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return (model_input["x"] * float((params or {}).get("scale", 1.0))).to_numpy()

    example = pd.DataFrame({"x": [1.0, 2.0]})
    signature = infer_signature(example, example["x"].to_numpy(), params={"scale": 1.0})
    mlflow.pyfunc.save_model(str(path), python_model=Scaled(), signature=signature, input_example=example)
    return path
