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
