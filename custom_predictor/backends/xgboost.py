"""An XGBoost model (the xgboost flavor) called directly on a numpy matrix, as `mlflow.xgboost` loads it.

pyfunc hands XGBoost a DataFrame (the sklearn API's `predict`, or `Booster.predict(DMatrix(df))`); the same
model on the matrix of the same numbers gives the same outputs (XGBoost reads both as float32), without pandas
or MLflow's schema check on the way: a 1-row prediction costs a fifth of pyfunc's.
Neighbours: `backends.candidates` tries it for the xgboost flavor; `pyfunc` takes what it refuses.
"""

from __future__ import annotations

import importlib
from typing import Any

from custom_predictor.backends.base import Backend, NotApplicable, numeric_dtype
from custom_predictor.columns import Columns


class XGBoostBackend(Backend):
    kind = "xgboost"
    inline = True

    def load(self) -> None:
        conf, m = self.model.flavor_conf("xgboost"), self.model
        if conf is None or not m.options.fast_path or not m.numeric or m.has_params or m.has_code:
            raise NotApplicable("not an xgboost model with numeric inputs, no params and no code")
        import xgboost

        module, _, cls = str(conf.get("model_class", "xgboost.core.Booster")).rpartition(".")
        model = getattr(importlib.import_module(module), cls)()
        model.load_model(str(m.model_dir / str(conf["data"])))
        booster = model if isinstance(model, xgboost.Booster) else model.get_booster()
        if booster.feature_names is not None and list(booster.feature_names) != m.names:
            raise NotApplicable("the model's feature names differ from the inputs")
        if isinstance(model, xgboost.Booster):
            self.fn = model.inplace_predict  # what predict(DMatrix(df)) computes, without building a DMatrix
        else:
            self.fn = model.predict
        self.dtype = numeric_dtype(m)
        self.version = xgboost.__version__

    def predict(self, columns: Columns, *, may_block: bool = True) -> Any:
        return self.fn(columns.matrix(self.model.names, self.dtype))

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "xgboost": self.version}
