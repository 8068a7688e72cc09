"""A LightGBM model (the lightgbm flavor) evaluated by its Booster on a numpy matrix.

A `Booster` is called as pyfunc calls it; an `LGBMClassifier`/`LGBMRegressor` goes straight to its Booster with
the sklearn API's own post-processing (binary probabilities stacked, the arg-max mapped back through the label
encoder), which skips the sklearn API's per-call input validation (about a millisecond a call). Models with
pandas categorical columns, custom objectives or other classes are left to pyfunc.
Neighbours: `backends.candidates` tries it for the lightgbm flavor; `sklearn.load_estimator` reads the file.
"""

from __future__ import annotations

from typing import Any

from custom_predictor.backends.base import Backend, NotApplicable, matrix, numeric_dtype
from custom_predictor.backends.sklearn import refuse_pickle

_SKLEARN_API = ("lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRegressor")


class LightGBMBackend(Backend):
    kind = "lightgbm"
    inline = True

    def load(self) -> None:
        conf, m = self.model.flavor_conf("lightgbm"), self.model
        if conf is None or not m.options.fast_path or not m.numeric or m.has_params or m.has_code:
            raise NotApplicable("not a lightgbm model with numeric inputs, no params and no code")
        model_class = str(conf.get("model_class", "lightgbm.basic.Booster"))
        if model_class != "lightgbm.basic.Booster" and model_class not in _SKLEARN_API:
            raise NotApplicable(f"model class {model_class}")
        import lightgbm

        path = m.model_dir / str(conf["data"])
        self.estimator: Any = None
        if model_class == "lightgbm.basic.Booster":
            self.booster = lightgbm.Booster(model_file=str(path))
        else:
            from custom_predictor.backends.sklearn import load_estimator

            refuse_pickle(m, "model")
            fmt = conf.get("serialization_format", "cloudpickle")
            est = load_estimator(m.model_dir, {**conf, "pickled_model": conf["data"], "serialization_format": fmt})
            if callable(getattr(est, "_objective", None)):
                raise NotApplicable("a custom objective")
            self.estimator, self.booster = est, est.booster_
        if self.booster.pandas_categorical:
            raise NotApplicable("pandas categorical columns")
        self.dtype = numeric_dtype(m)
        self.version = lightgbm.__version__

    def predict(self, rows: list[dict[str, Any]], *, may_block: bool = True) -> Any:
        import numpy as np

        result: Any = self.booster.predict(matrix(rows, self.model.names, self.dtype))
        est = self.estimator
        if est is None or not hasattr(est, "_le"):  # a Booster, or a regressor
            return result
        if est._n_classes <= 2:
            result = np.vstack((1.0 - result, result)).transpose()
        return est._le.inverse_transform(np.argmax(result, axis=1))

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "lightgbm": self.version}
