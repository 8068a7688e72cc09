"""Real models of each flavor the predictor serves, small and fast to train, saved with MLflow into a folder.

Each `save_*` trains a model on the breast-cancer columns of `models` (or a mix with a string column), saves it
with its MLflow flavor's `save_model` (signature and input example, pinned pip requirements of the installed
libraries so that no requirement inference runs), and returns the folder. `SAVERS` names them for tests and the
benchmark; `log(saver, name)` registers one on the MLflow server the library points at.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tests.predictor import models


def pins(*libraries: str) -> list[str]:
    """`name==version` of installed libraries (torch keeps its local label: 2.15.0+cu132)."""
    return [f"{lib}=={metadata.version(lib)}" for lib in libraries]


def _frame(n: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    x, y = models.breast_cancer(n)
    return pd.DataFrame(x, columns=models.FEATURES), y


def save_xgboost(path: Path, *, booster: bool = False) -> Path:
    """An XGBoost classifier (sklearn API), or a native Booster (binary:logistic), 20 trees of depth 3."""
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    frame, y = _frame()
    if booster:
        model: Any = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(frame, y), 20)
        out = model.predict(xgb.DMatrix(frame[:5]))
    else:
        model = xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(frame, y)
        out = model.predict(frame[:5])
    mlflow.xgboost.save_model(
        model,
        str(path),
        signature=infer_signature(frame[:5], out),
        input_example=frame[:5],
        pip_requirements=pins("xgboost-cpu", "scikit-learn", "numpy", "pandas"),
    )
    return path


def save_lightgbm(path: Path, *, booster: bool = False, regressor: bool = False) -> Path:
    """A LightGBM classifier or regressor (sklearn API, skops), or a native Booster; 20 trees."""
    import lightgbm as lgb
    import mlflow.lightgbm
    from mlflow.models import infer_signature

    frame, y = _frame()
    target = frame["radius"] * 3 - frame["smoothness"] * 50 + y if regressor else y
    if booster:
        model: Any = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(frame, target), 20)
    elif regressor:
        model = lgb.LGBMRegressor(n_estimators=20, verbose=-1).fit(frame, target)
    else:
        model = lgb.LGBMClassifier(n_estimators=20, verbose=-1).fit(frame, target)
    mlflow.lightgbm.save_model(
        model,
        str(path),
        signature=infer_signature(frame[:5], model.predict(frame[:5])),
        input_example=frame[:5],
        pip_requirements=pins("lightgbm", "scikit-learn", "numpy", "pandas", "skops"),
    )
    return path


def _torch_classifier(dtype: Any) -> Any:
    """A small MLP (5 -> 8 -> 1, sigmoid) trained 200 steps on standardized breast-cancer columns. The class is
    defined here, inside a function, so that cloudpickle stores it by value: the predictor needs no test code."""
    import torch
    from torch import nn

    class RiskNet(nn.Module):
        def __init__(self, mean: Any, std: Any) -> None:
            super().__init__()
            self.register_buffer("mean", mean)
            self.register_buffer("std", std)
            self.layers = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid())

        def forward(self, x: Any) -> Any:
            return self.layers((x - self.mean) / self.std)

    torch.manual_seed(0)
    x, y = models.breast_cancer()
    xt, yt = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype).reshape(-1, 1)
    net = RiskNet(xt.mean(0), xt.std(0)).to(dtype)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
    return net.eval()


def save_torch(path: Path, *, dtype: str = "float32", serialization_format: str = "pt2") -> Path:
    """The MLP with a tensor signature of `dtype` (float32 or float64: the model's own) and an input example,
    exported with torch.export (`pt2`, MLflow 3's default) or pickled (`pickle`)."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    net = _torch_classifier(getattr(torch, dtype))
    x = models.breast_cancer(5)[0].astype(dtype)
    with torch.no_grad():
        out = net(torch.from_numpy(x)).numpy()
    mlflow.pytorch.save_model(
        net,
        str(path),
        signature=infer_signature(x, out),
        input_example=x,
        pip_requirements=pins("torch"),
        serialization_format=serialization_format,
    )
    return path


def torch_contract(features_file: str = "patients.csv") -> dict[str, Any]:
    """A DPM360-style contract for the MLP: typed inputs, a probability out, lookup by patient_id."""
    data = models.contract_dict(features_file)
    data["description"] = "Malignancy risk from five cell-nucleus measurements (a PyTorch model)."
    data["outputs"] = [{"name": "risk", "type": "double", "description": "Probability of a benign diagnosis."}]
    data["test_data"].pop("expected")
    return data


def save_torch_dpm(path: Path) -> Path:
    """The float32 MLP with no signature: a contract (entity lookup of patient_id in patients.csv) instead, as
    DPM360's PyTorch (lightsaber) models were served."""
    import mlflow.pytorch
    import torch

    net = _torch_classifier(torch.float32)
    mlflow.pytorch.save_model(net, str(path), pip_requirements=pins("torch"), serialization_format="pickle")
    (path / "contract.yaml").write_text(yaml.safe_dump(torch_contract()))
    models.write_patients(path / "patients.csv")
    return path


def mixed_frame(n: int = 200) -> tuple[pd.DataFrame, np.ndarray]:
    """Four numeric columns and a string column `site` (three sites), with a target that depends on both."""
    frame, y = _frame(n)
    sites = np.array(["north", "south", "east"])[np.arange(len(frame)) % 3]
    frame = frame.drop(columns=["smoothness"]).assign(site=sites)
    return frame, (y + (sites == "east")) % 2


def save_sklearn(path: Path) -> Path:
    """The breast-cancer classifier of `models` (StandardScaler + LogisticRegression) with pinned requirements
    (an inferred list would name every library this venv imports on the side, torch included)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    frame, _ = _frame(5)
    model = models._fit_classifier()
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(frame, model.predict(frame)),
        input_example=frame,
        pip_requirements=pins("scikit-learn", "numpy", "pandas", "scipy", "skops"),
    )
    return path


def save_column_transformer(path: Path) -> Path:
    """scikit-learn: a ColumnTransformer (StandardScaler on the numbers, OneHotEncoder on the string `site`)
    and a LogisticRegression, with a signature that has a string column."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    frame, y = mixed_frame()
    numbers = [c for c in frame.columns if c != "site"]
    prep = ColumnTransformer([("num", StandardScaler(), numbers), ("cat", OneHotEncoder(), ["site"])])
    model = make_pipeline(prep, LogisticRegression(max_iter=1000)).fit(frame, y)
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(frame[:5], model.predict(frame[:5])),
        input_example=frame[:5],
        pip_requirements=pins("scikit-learn", "numpy", "pandas", "skops"),
    )
    return path


SAVERS: dict[str, Callable[[Path], Path]] = {
    "sklearn": save_sklearn,
    "xgboost": save_xgboost,
    "xgboost-booster": lambda p: save_xgboost(p, booster=True),
    "lightgbm": save_lightgbm,
    "lightgbm-regressor": lambda p: save_lightgbm(p, regressor=True),
    "lightgbm-booster": lambda p: save_lightgbm(p, booster=True),
    "pytorch-float32": save_torch,
    "pytorch-float64": lambda p: save_torch(p, dtype="float64", serialization_format="pickle"),
    "pytorch-dpm360": save_torch_dpm,
    "sklearn-column-transformer": save_column_transformer,
    "pyfunc": models.save_pyfunc,
}
"""Every flavor model by name -> its saver."""


def log(saver: Callable[[Path], Path], name: str) -> str:
    """Save a model with `saver` and register it as `name` on the current MLflow server: `models:/name/1`."""
    with tempfile.TemporaryDirectory() as tmp:
        return models._register(saver(Path(tmp) / "model"), name)


# ---- signature shapes: column names as MLflow takes them, optional columns, models logged without signature ----
ODD_NAMES = [
    "sepal length (cm)",
    "BMI (kg/m2)",
    "glucose %",
    "a/b ratio",
    "v.1",
    "x-y",
    "2nd dose",
    "größe",
    'he said "hi", twice',
    "n" * 200,
]
"""Column names MLflow accepts that are no identifiers: spaces, parentheses, %, /, dots, dashes, a leading digit,
non-ASCII letters, quotes and a comma (CSV quoting), a long name."""


def _odd_frame(n: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, len(ODD_NAMES))) * 10 + 50
    y = (x[:, 0] + x[:, 1] > 100).astype(int)
    return pd.DataFrame(x, columns=ODD_NAMES), y


def save_odd_names(path: Path) -> Path:
    """A scikit-learn classifier trained on columns named as clinical and iris data name them (`ODD_NAMES`)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    frame, y = _odd_frame()
    model = LogisticRegression(max_iter=1000).fit(frame, y)
    mlflow.sklearn.save_model(
        model,
        str(path),
        signature=infer_signature(frame[:5], model.predict(frame[:5])),
        input_example=frame[:5],
        pip_requirements=pins("scikit-learn", "numpy", "pandas", "scipy", "skops"),
    )
    return path


class _Optional:
    """A pyfunc model with optional columns: `a + b` (b missing counts 0) and `c` added when given."""

    @staticmethod
    def save(path: Path) -> Path:
        import mlflow.pyfunc
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, Schema

        class WithOptional(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
                out = model_input["a"].astype(float)
                for name in ("b", "c"):
                    if name in model_input:
                        out = out + model_input[name].astype(float).fillna(0.0)
                return out.to_numpy()

        inputs = Schema(
            [ColSpec("double", "a"), ColSpec("double", "b", required=False), ColSpec("long", "c", required=False)]
        )
        signature = ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double")]))
        mlflow.pyfunc.save_model(
            str(path),
            python_model=WithOptional(),
            signature=signature,
            input_example=pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, 1.5], "c": [1, 2]}),
            pip_requirements=pins("numpy", "pandas"),
        )
        return path


def save_unsigned_sklearn(path: Path, *, names: bool = True) -> Path:
    """The breast-cancer classifier logged with no signature and no example, fitted on a DataFrame (it keeps
    `feature_names_in_`) or on a bare array (only `n_features_in_`)."""
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    frame, y = _frame()
    model = LogisticRegression(max_iter=2000).fit(frame if names else frame.to_numpy(), y)
    mlflow.sklearn.save_model(
        model, str(path), signature=False, pip_requirements=pins("scikit-learn", "numpy", "pandas", "scipy", "skops")
    )
    return path


def save_unsigned_xgboost(path: Path) -> Path:
    """An XGBoost Booster logged with no signature: its feature names are in the model."""
    import mlflow.xgboost
    import xgboost as xgb

    frame, y = _frame()
    model = xgb.train({"objective": "binary:logistic", "max_depth": 3}, xgb.DMatrix(frame, y), 10)
    mlflow.xgboost.save_model(model, str(path), signature=False, pip_requirements=pins("xgboost-cpu", "numpy"))
    return path


def save_unsigned_lightgbm(path: Path) -> Path:
    """A LightGBM Booster logged with no signature, trained on a bare array (LightGBM names its columns)."""
    import lightgbm as lgb
    import mlflow.lightgbm

    frame, y = _frame()
    model = lgb.train({"objective": "binary", "verbose": -1}, lgb.Dataset(frame.to_numpy(), y), 10)
    mlflow.lightgbm.save_model(model, str(path), signature=False, pip_requirements=pins("lightgbm", "numpy"))
    return path


def save_untyped_pyfunc(path: Path, *, example: bool = True) -> Path:
    """A custom pyfunc model logged with no signature (with an input example, or none): it declares nothing, so
    it is served untyped."""
    import mlflow.pyfunc

    class Sum(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return np.asarray(pd.DataFrame(model_input).sum(axis=1, numeric_only=True))

    kw: dict[str, Any] = {"input_example": pd.DataFrame({"u": [1.0, 2.0], "v": [3.0, 4.0]})} if example else {}
    mlflow.pyfunc.save_model(
        str(path), python_model=Sum(), signature=False, pip_requirements=pins("numpy", "pandas"), **kw
    )
    return path


SHAPES: dict[str, Callable[[Path], Path]] = {
    "odd-names": save_odd_names,
    "optional-columns": _Optional.save,
    "unsigned-sklearn": save_unsigned_sklearn,
    "unsigned-sklearn-array": lambda p: save_unsigned_sklearn(p, names=False),
    "unsigned-xgboost": save_unsigned_xgboost,
    "unsigned-lightgbm": save_unsigned_lightgbm,
    "untyped-pyfunc": save_untyped_pyfunc,
}
"""Signature shapes beyond the flavors: odd column names, optional columns, models logged without signature."""
