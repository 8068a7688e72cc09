"""A LightGBM model (the lightgbm flavor) evaluated by its Booster on a numpy matrix.

A `Booster` is called as pyfunc calls it; an `LGBMClassifier`/`LGBMRegressor` goes straight to its Booster with
the sklearn API's own post-processing (binary probabilities stacked, the arg-max mapped back through the label
encoder), which skips the sklearn API's per-call input validation (about a millisecond a call). A skops file
(MLflow 3's default for the sklearn API) is read with `modelfile`, which runs nothing in it and imports neither
skops nor scikit-learn's every estimator (skops' own import costs seconds of a cold start): the Booster is
restored from its state as unpickling restores it. Models with pandas categorical columns, custom objectives or
other classes are left to pyfunc.
Neighbours: `backends.candidates` tries it for the lightgbm flavor; `modelfile` and `sklearn.load_estimator`
read the file.
"""

from __future__ import annotations

from typing import Any

from custom_predictor.backends.base import Backend, NotApplicable, numeric_dtype
from custom_predictor.backends.sklearn import refuse_pickle
from custom_predictor.columns import Columns

_SKLEARN_API = ("lightgbm.sklearn.LGBMClassifier", "lightgbm.sklearn.LGBMRegressor")
_LABEL_ENCODERS = {"sklearn.preprocessing._label.LabelEncoder", "lightgbm.compat._LGBMLabelEncoder"}


class _Classes:
    """What the sklearn API's `predict` needs of a classifier: its classes (the label encoder's) and their count."""

    def __init__(self, classes: Any, n_classes: int) -> None:
        self.classes, self.n_classes = classes, n_classes

    @staticmethod
    def of(est: Any) -> _Classes | None:
        """For an unpickled LGBMClassifier; None for a regressor."""
        le = getattr(est, "_le", None)
        return None if le is None else _Classes(le.classes_, int(est._n_classes))


def _from_skops(lightgbm: Any, path: Any, model_class: str, trusted: list[str] | None) -> tuple[Any, Any]:
    """An LGBMClassifier/LGBMRegressor skops file -> (classes or None, Booster), as skops would restore them."""
    import numpy as np

    from custom_predictor import modelfile

    try:
        obj = modelfile.read(path, "skops", trusted, {*_SKLEARN_API, "lightgbm.basic.Booster", *_LABEL_ENCODERS})
    except modelfile.ModelFileError as e:  # pyfunc then loads it with skops itself, and its own trust rules
        raise NotApplicable(str(e)) from None
    if not isinstance(obj, modelfile.Obj) or obj.cls != model_class or not isinstance(obj.state, dict):
        raise NotApplicable("not the flavor's model class")
    booster_obj = obj.state.get("_Booster")
    state = booster_obj.state if isinstance(booster_obj, modelfile.Obj) else None
    if not isinstance(state, dict) or not isinstance(state.get("_handle"), str) or _opaque(state):
        raise NotApplicable("a Booster state the reader does not represent")
    if not isinstance(obj.state.get("_objective"), str):
        raise NotApplicable("a custom objective")
    booster = lightgbm.Booster.__new__(lightgbm.Booster)
    booster.__setstate__(dict(state))
    if model_class.endswith("Regressor"):
        return None, booster
    le, n = obj.state.get("_le"), obj.state.get("_n_classes")
    classes = le.state.get("classes_") if isinstance(le, modelfile.Obj) and isinstance(le.state, dict) else None
    if not isinstance(classes, np.ndarray) or not isinstance(n, int) or len(classes) != n:
        raise NotApplicable("the classifier's label encoder")
    return _Classes(classes, n), booster


def _opaque(value: Any) -> bool:
    """Anything the reader left as a placeholder (an object it does not rebuild) somewhere in `value`."""
    from custom_predictor import modelfile

    if isinstance(value, modelfile.Obj | modelfile.Unsupported):
        return True
    if isinstance(value, dict):
        return any(_opaque(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_opaque(v) for v in value)
    return False


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
            refuse_pickle(m, "model")
            fmt = conf.get("serialization_format", "cloudpickle")
            if fmt == "skops":
                self.estimator, self.booster = _from_skops(lightgbm, path, model_class, conf.get("skops_trusted_types"))
            else:
                from custom_predictor.backends.sklearn import load_estimator

                est = load_estimator(m.model_dir, {**conf, "pickled_model": conf["data"], "serialization_format": fmt})
                if callable(getattr(est, "_objective", None)):
                    raise NotApplicable("a custom objective")
                self.estimator, self.booster = _Classes.of(est), est.booster_
        if self.booster.pandas_categorical:
            raise NotApplicable("pandas categorical columns")
        self.dtype = numeric_dtype(m)
        self.version = lightgbm.__version__

    def predict(self, columns: Columns, *, may_block: bool = True) -> Any:
        import numpy as np

        result: Any = self.booster.predict(columns.matrix(self.model.names, self.dtype))
        classes = self.estimator
        if classes is None:  # a Booster, or a regressor
            return result
        if classes.n_classes <= 2:
            result = np.vstack((1.0 - result, result)).transpose()
        return classes.classes.take(np.argmax(result, axis=1), axis=0)

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "lightgbm": self.version}
