"""The scikit-learn fast path (the estimator called on numpy, kernels off) gives exactly pyfunc's outputs.

The numpy kernels, which come before it, have their own tests in test_kernels.py.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from custom_predictor.app import resolve_contract
from custom_predictor.outputs import to_list
from custom_predictor.runtime import Runtime
from custom_predictor.settings import Settings
from custom_predictor.source import fetch
from tests.predictor import models


def runtime_for(folder: Path, **kw: Any) -> Runtime:
    src = fetch(Settings(model_uri=str(folder)))
    contract, _ = resolve_contract(src)
    rt = Runtime(src.model_dir, src.mlmodel, contract, **kw)
    rt.load()
    assert rt.ready, rt.reason
    return rt


def predict_rows(rt: Runtime, rows: list[dict[str, Any]]) -> list[Any]:
    """The runtime's predictions for rows, one JSON value each (rows as the request path gives them: columns)."""
    from custom_predictor.columns import Columns
    from custom_predictor.outputs import to_list

    return to_list(rt.predict(Columns.from_rows(rows, rt.contract)))


def random_rows(n: int, columns: list[str], seed: int = 7) -> list[dict[str, float]]:
    x, _ = models.breast_cancer()
    rng = np.random.default_rng(seed)
    lo, hi = x[:, : len(columns)].min(axis=0), x[:, : len(columns)].max(axis=0)
    data = rng.uniform(lo * 0.8, hi * 1.2, size=(n, len(columns)))
    return [dict(zip(columns, map(float, r), strict=True)) for r in data]


@functools.cache
def _pyfunc(folder: Path) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(folder))


def pyfunc_outputs(folder: Path, rows: list[dict[str, Any]]) -> list[Any]:
    """What `mlflow.pyfunc` predicts for `rows` (given as the DataFrame its scoring server builds)."""
    return to_list(_pyfunc(folder).predict(pd.DataFrame(rows)))


def save(folder: Path, model: Any, x: Any, *, fmt: str, predict_fn: str = "predict", **kw: Any) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    mlflow.sklearn.save_model(
        model,
        str(folder),
        serialization_format=fmt,
        pyfunc_predict_fn=predict_fn,
        signature=infer_signature(x, getattr(model, predict_fn)(x)),
        input_example=x[:3],
        **kw,
    )
    return folder


def _forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    x, y = models.breast_cancer()
    return RandomForestClassifier(n_estimators=20, random_state=0).fit(pd.DataFrame(x, columns=models.FEATURES), y)


CASES = {
    "pipeline-skops-predict": ("skops", "predict", None),
    "forest-pickle-predict_proba": ("pickle", "predict_proba", _forest),
    "forest-cloudpickle-predict": ("cloudpickle", "predict", _forest),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_equals_pyfunc(tmp_path: Path, case: str) -> None:
    fmt, fn, build = CASES[case]
    x, _ = models.breast_cancer(10)
    frame = pd.DataFrame(x, columns=models.FEATURES)
    model = build() if build else models._fit_classifier()
    folder = save(tmp_path / case, model, frame, fmt=fmt, predict_fn=fn)
    rt = runtime_for(folder, kernels=False)
    assert rt.kind == "sklearn-fast"
    rows = random_rows(300, models.FEATURES)
    fast = predict_rows(rt, rows)
    assert fast == pyfunc_outputs(folder, rows)  # exactly equal, element by element
    assert all(predict_rows(rt, [r]) == [f] for r, f in zip(rows[:20], fast[:20], strict=True))  # one row at a time too


def test_fast_path_model_fitted_without_feature_names_on_integers(tmp_path: Path) -> None:
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(1)
    x = rng.integers(0, 100, size=(200, 3))
    model = DecisionTreeRegressor(random_state=0).fit(x, x[:, 0] * 2.5 - x[:, 2])  # numpy: no feature names
    frame = pd.DataFrame(x, columns=["a", "b", "c"])
    folder = save(tmp_path / "tree", model, frame, fmt="skops", skops_trusted_types=["sklearn.tree._tree.Tree"])
    rt = runtime_for(folder, kernels=False)
    assert rt.kind == "sklearn-fast" and [i.type for i in rt.contract.inputs] == ["integer"] * 3
    rows = [{"a": int(a), "b": int(b), "c": int(c)} for a, b, c in rng.integers(-50, 150, size=(100, 3))]
    assert predict_rows(rt, rows) == pyfunc_outputs(folder, rows)


def test_falls_back_to_pyfunc_when_feature_order_differs(tmp_path: Path) -> None:
    x, _ = models.breast_cancer(10)
    folder = save(tmp_path / "m", models._fit_classifier(), pd.DataFrame(x, columns=models.FEATURES), fmt="skops")
    data = models.contract_dict()
    data["inputs"] = list(reversed(data["inputs"]))
    data.pop("entity")
    (folder / "contract.yaml").write_text(yaml.safe_dump(data))
    rt = runtime_for(folder)
    assert rt.kind == "pyfunc"


def test_falls_back_to_pyfunc_when_disabled_or_not_numeric(tmp_path: Path, local_models: dict[str, Path]) -> None:
    assert runtime_for(local_models["classifier"], fast_path=False).kind == "pyfunc"
    assert runtime_for(local_models["pyfunc"]).kind == "pyfunc"


def test_refuses_to_unpickle_when_not_allowed(local_models: dict[str, Path]) -> None:
    src = fetch(Settings(model_uri=str(local_models["classifier"])))
    contract, _ = resolve_contract(src)
    rt = Runtime(src.model_dir, src.mlmodel, contract, allow_pickle=False)
    rt.load()
    assert rt.state == "failed" and "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in (rt.reason or "")
