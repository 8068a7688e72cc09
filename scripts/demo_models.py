"""The two example models of `make demo`: train, log, register and mark them for deployment (idempotent).

Used by `scripts/demo.py`. Both models are trained on data sets bundled with scikit-learn (nothing is
downloaded) and saved in MLflow's default sklearn format, which the generic predictor loads without
extra trusted types:

- `demo-diabetes-risk` (patient risk, with a contract): will a patient's diabetes progress more than
  average within a year? Ten baseline measurements in clinical units; `contract.yaml` (inputs with
  types, units, ranges and examples; a labelled output; test rows with expected outputs) and
  `patients.csv` (the `patient_id` lookup) sit in the model's artifacts. Marked by the alias
  `production`.
- `demo-iris-species` (plain): an iris classifier with only an MLflow signature and input example,
  logged the ordinary way (`mlflow.sklearn.log_model`). Marked by the version tag `stage=production`.

A model that already has its marked version is reused, so a second run registers nothing new.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

PREFIX = "demo-"
RISK_MODEL = f"{PREFIX}diabetes-risk"
IRIS_MODEL = f"{PREFIX}iris-species"
EXPERIMENT = "service-builder-demo"

# scikit-learn's raw diabetes columns -> readable names, with unit, range and description.
RISK_INPUTS: list[tuple[str, str, str, str | None, float, float, str]] = [
    ("age", "age", "integer", "years", 0, 120, "Age at baseline."),
    ("sex", "sex", "integer", None, 1, 2, "Sex as coded in the data set (1 or 2)."),
    ("bmi", "bmi", "double", "kg/m2", 10, 80, "Body mass index."),
    ("bp", "bp", "double", "mmHg", 30, 200, "Mean arterial blood pressure."),
    ("s1", "total_cholesterol", "double", "mg/dL", 50, 500, "Total serum cholesterol."),
    ("s2", "ldl", "double", "mg/dL", 10, 400, "Low-density lipoproteins."),
    ("s3", "hdl", "double", "mg/dL", 5, 150, "High-density lipoproteins."),
    ("s4", "cholesterol_hdl_ratio", "double", None, 0.5, 20, "Total cholesterol / HDL."),
    ("s5", "log_triglycerides", "double", "log(mg/dL)", 2, 8, "Log of the serum triglycerides level."),
    ("s6", "glucose", "double", "mg/dL", 30, 400, "Blood sugar level."),
]
RISK_THRESHOLD = 140.0
"""Disease progression score one year after baseline above which a patient counts as higher risk (the median)."""
RISK_LABELS = {"0": "lower risk", "1": "higher risk"}
PATIENT_ROWS = 42
"""The last rows of the data set are held out of training and registered as the patients of the lookup."""
FIRST_PATIENT_ID = 1001
IRIS_FEATURES = ["sepal_length_cm", "sepal_width_cm", "petal_length_cm", "petal_width_cm"]


@dataclass
class DemoModel:
    """A registered, marked example model and what the demo shows about it."""

    name: str
    version: str
    title: str
    marked_by: str
    reused: bool
    record: dict[str, Any]
    lookup: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def preload() -> None:
    """Import what training and logging need (a few seconds), e.g. while the MLflow server starts."""
    import mlflow.sklearn  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    from sklearn.datasets import load_diabetes  # noqa: F401


# ---- data --------------------------------------------------------------------------------------------------------
def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    """The diabetes data set in clinical units with readable column names, and the 0/1 risk target."""
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(scaled=False, as_frame=True).frame
    x = frame[[src for src, *_ in RISK_INPUTS]].rename(columns={src: name for src, name, *_ in RISK_INPUTS})
    x = x.astype({name: "int64" for _, name, kind, *_ in RISK_INPUTS if kind == "integer"})
    y = (frame["target"] > RISK_THRESHOLD).astype("int64")
    return x, y


def patients() -> pd.DataFrame:
    """The registered patients: the held-out rows with ids 1001, 1002, ..."""
    x, _ = diabetes()
    held = x.tail(PATIENT_ROWS).reset_index(drop=True)
    held.insert(0, "patient_id", range(FIRST_PATIENT_ID, FIRST_PATIENT_ID + len(held)))
    return held


def iris() -> tuple[pd.DataFrame, pd.Series]:
    """The iris data set with unit-bearing column names and species names as the target."""
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    x = data.data.set_axis(IRIS_FEATURES, axis=1)
    y = data.target.map(dict(enumerate(data.target_names))).astype(str)
    return x, y


def _row(frame: pd.DataFrame, i: int) -> dict[str, Any]:
    """One row as plain Python values, column by column so integer columns stay ints."""
    return {str(c): frame[c].iloc[i].item() for c in frame.columns}


def risk_record() -> dict[str, Any]:
    """A real record for the risk model's curl example: the first registered patient's measurements."""
    row = _row(patients(), 0)
    row.pop("patient_id")
    return row


def iris_record() -> dict[str, Any]:
    """A real record for the iris model's curl example (a versicolor flower)."""
    x, _ = iris()
    return _row(x, 60)


# ---- training ----------------------------------------------------------------------------------------------------
def train_risk() -> tuple[Any, pd.DataFrame, float]:
    """Standardised logistic regression on all but the held-out patients; returns (model, x_train, accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = diabetes()
    x_train, y_train = x.iloc[:-PATIENT_ROWS], y.iloc[:-PATIENT_ROWS]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x_train, y_train)
    accuracy = float(model.score(x.iloc[-PATIENT_ROWS:], y.iloc[-PATIENT_ROWS:]))
    return model, x_train, accuracy


def risk_contract(model: Any, x_train: pd.DataFrame) -> dict[str, Any]:
    """contract.yaml of the risk model (format: docs/contract.md)."""
    example = risk_record()
    rows = [_row(x_train, i) for i in range(3)]
    return {
        "version": 1,
        "description": (
            "Diabetes progression risk: is the disease progression score one year after baseline above "
            f"{RISK_THRESHOLD:g} (the median of the data set)? Trained on scikit-learn's diabetes data set."
        ),
        "inputs": [
            {
                "name": name,
                "type": kind,
                "description": doc,
                **({"unit": unit} if unit else {}),
                **({"allowed": [1, 2]} if name == "sex" else {"minimum": low, "maximum": high}),
                "example": example[name],
            }
            for _, name, kind, unit, low, high, doc in RISK_INPUTS
        ],
        "outputs": [
            {
                "name": "risk",
                "type": "integer",
                "description": "1 if the progression score is expected above the median, else 0.",
                "labels": RISK_LABELS,
            }
        ],
        "entity": {
            "id": "patient_id",
            "type": "integer",
            "description": "A registered patient (the feature file patients.csv holds their baseline measurements).",
            "features": "patients.csv",
        },
        "test_data": {"rows": rows, "expected": [int(v) for v in model.predict(x_train.head(3))]},
    }


def write_patients(path: Path) -> Path:
    """patients.csv: `patient_id` and the ten inputs, one registered patient a line."""
    frame = patients()
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(frame.columns))
        for i in range(len(frame)):
            writer.writerow(list(_row(frame, i).values()))
    return path


def requirements() -> list[str]:
    """The models' pip requirements, given so MLflow skips inferring them (a subprocess that loads the model)."""
    import mlflow.sklearn

    return list(mlflow.sklearn.get_default_pip_requirements(include_skops=True))


# ---- registry ----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Send MLflow's own progress lines and library warnings to `log`, out of the demo's output."""
    with open(log, "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        handler = logging.StreamHandler(sink)
        logger = logging.getLogger("mlflow")
        saved = logger.handlers[:], logger.propagate
        logger.handlers[:], logger.propagate = [handler], False
        try:
            yield  # warnings print to sys.stderr, which is the log too
        finally:
            logger.handlers[:], logger.propagate = saved


def _marked_by_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def _marked_by_tag(client: MlflowClient, name: str, key: str, value: str) -> str | None:
    found = client.search_model_versions(f"name = '{name}' AND tags.`{key}` = '{value}'")
    return str(max(int(v.version) for v in found)) if found else None


def register_risk(client: MlflowClient) -> str:
    """Log the risk model with its contract and patients file in the model folder; register it; return the version."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model, x_train, accuracy = train_risk()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        example = x_train.head(3)
        mlflow.sklearn.save_model(
            model,
            str(folder),
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            pip_requirements=requirements(),
        )
        (folder / "contract.yaml").write_text(yaml.safe_dump(risk_contract(model, x_train), sort_keys=False))
        write_patients(folder / "patients.csv")
        mlflow.set_experiment(EXPERIMENT)
        with mlflow.start_run(run_name=RISK_MODEL) as run:
            mlflow.log_params({"model": "StandardScaler+LogisticRegression", "threshold": RISK_THRESHOLD})
            mlflow.log_metric("holdout_accuracy", accuracy)
            mlflow.set_tag("dataset", "sklearn.datasets.load_diabetes(scaled=False)")
            mlflow.log_artifacts(str(folder), artifact_path="model")
    return str(mlflow.register_model(f"runs:/{run.info.run_id}/model", RISK_MODEL).version)


def register_iris() -> str:
    """Log the iris classifier the ordinary way (signature + input example, no contract); return the version."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    x, y = iris()
    model = LogisticRegression(max_iter=1000).fit(x, y)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=IRIS_MODEL):
        mlflow.log_param("model", "LogisticRegression")
        mlflow.log_metric("train_accuracy", float(model.score(x, y)))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(x, model.predict(x)),
            input_example=x.iloc[[0, 60, 120]],
            pip_requirements=requirements(),
            registered_model_name=IRIS_MODEL,
        )
    if info.registered_model_version is None:
        raise RuntimeError(f"{IRIS_MODEL} was logged but not registered")
    return str(info.registered_model_version)


def ensure_models(client: MlflowClient, *, alias: str, tag_key: str, tag_value: str, log: Path) -> list[DemoModel]:
    """Both example models, registered and marked; an already marked version is reused, not registered again.

    MLflow's progress lines and warnings go to `log`."""
    with quiet(log):
        version = _marked_by_alias(client, RISK_MODEL, alias)
        reused = version is not None
        if version is None:
            version = register_risk(client)
            client.set_registered_model_alias(RISK_MODEL, alias, version)
        risk = DemoModel(
            name=RISK_MODEL,
            version=version,
            title="Patient risk model (contract, patient_id lookup)",
            marked_by=f"alias {alias}",
            reused=reused,
            record=risk_record(),
            lookup={"patient_id": FIRST_PATIENT_ID},
        )
        version = _marked_by_tag(client, IRIS_MODEL, tag_key, tag_value)
        reused = version is not None
        if version is None:
            version = register_iris()
            client.set_model_version_tag(IRIS_MODEL, version, tag_key, tag_value)
        plain = DemoModel(
            name=IRIS_MODEL,
            version=version,
            title="Iris model (signature only, no contract)",
            marked_by=f"tag {tag_key}={tag_value}",
            reused=reused,
            record=iris_record(),
        )
    return [risk, plain]
