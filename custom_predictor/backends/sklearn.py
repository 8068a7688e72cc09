"""The scikit-learn estimator itself, unpickled as the sklearn flavor does and called on a numpy matrix.

No pyfunc wrapper and no DataFrame: for numeric inputs the estimator receives the matrix pyfunc's DataFrame would
give it (column-major, int64 when every input is an integer), so its outputs are pyfunc's exactly.
Neighbours: `kernel` falls back to it for rows a kernel leaves to scikit-learn and hands over to it on a failed
check; the check's child process calls `reference_outputs`.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

from custom_predictor.backends.base import (
    Backend,
    Model,
    ModelFailure,
    NotApplicable,
    WouldBlock,
    numeric_dtype,
)
from custom_predictor.columns import Columns
from custom_predictor.outputs import to_list

FORMATS = ("pickle", "cloudpickle", "skops")


def sklearn_conf(model: Model) -> dict[str, Any] | None:
    """The sklearn flavor's settings when the model can skip pyfunc: numeric inputs, no params, no code."""
    sk, py = model.flavor_conf("sklearn"), model.flavor_conf("python_function") or {}
    if sk is None or not model.options.fast_path or not model.numeric or model.has_params or model.has_code:
        return None
    if sk.get("serialization_format", "pickle") not in FORMATS:
        return None
    return {**sk, "predict_fn": str(py.get("predict_fn", "predict"))}


def refuse_pickle(model: Model, what: str) -> None:
    if not model.options.allow_pickle:
        raise RuntimeError(f"MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false: refusing to deserialize the {what}")


def load_estimator(model_dir: Path, sk: dict[str, Any]) -> Any:
    """The estimator in the sklearn flavor's file, loaded the way mlflow.sklearn loads it, made sequential."""
    path = model_dir / str(sk.get("pickled_model", "model.pkl"))
    if sk.get("serialization_format", "pickle") == "skops":
        import skops.io

        est = skops.io.load(path, trusted=sk.get("skops_trusted_types"))
    else:
        import cloudpickle  # also reads plain pickles

        with path.open("rb") as f:
            est = cloudpickle.load(f)
    # A forest fitted with n_jobs > 1 adds its trees' outputs in the order its threads finish: the last bits vary
    # from call to call. One job adds them in order, as the kernels do, and answers a few rows sooner.
    for part in [est, *(step for _, step in getattr(est, "steps", []) or [])]:
        if getattr(part, "n_jobs", None) not in (None, 1):
            part.n_jobs = None
    return est


def reference_outputs(model_dir: Path, sk: dict[str, Any], x: Any) -> list[Any]:
    """In the kernel check's child process: the estimator's own predictions for the probe matrix `x`."""
    warnings.filterwarnings("ignore", message="X does not have valid feature names")
    return to_list(getattr(load_estimator(model_dir, sk), sk["predict_fn"])(x))


class EstimatorBackend(Backend):
    """`estimator.<predict_fn>(matrix)`; the estimator may load lazily (`load_later`) behind a kernel."""

    kind = "sklearn-fast"
    inline = True

    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.conf = sklearn_conf(model)
        self.dtype: Any = None
        self.method: Any = None  # the estimator's predict function, once loaded
        self._lock = threading.Lock()
        self._error: str | None = None

    def load(self) -> None:
        if self.conf is None:
            raise NotApplicable("not a scikit-learn model with numeric inputs, no params and no code")
        refuse_pickle(self.model, "model")
        self.dtype = numeric_dtype(self.model)
        est = load_estimator(self.model.model_dir, self.conf)
        method, fitted = getattr(est, self.conf["predict_fn"], None), getattr(est, "feature_names_in_", None)
        if method is None or (fitted is not None and list(fitted) != self.model.names):
            raise NotApplicable("predict_fn or feature names differ from the inputs")
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self.method = method

    def ensure_loaded(self) -> Any:
        """The predict function, loading the estimator on first use (thread-safe, once). Raises ModelFailure."""
        if self.method is not None:
            return self.method
        with self._lock:
            if self.method is None and self._error is None:
                try:
                    self.load()
                    import gc

                    gc.collect()
                    gc.freeze()
                except Exception as e:  # noqa: BLE001 - reported once, for every later call too
                    self._error = f"{e.__class__.__name__}: {str(e)[:300]}"
        if self.method is None:
            raise ModelFailure(f"scikit-learn could not load the model ({self._error})")
        return self.method

    def predict(self, columns: Columns, *, may_block: bool = True) -> Any:
        return self.call(columns.matrix(self.model.names, self.dtype or numeric_dtype(self.model)), may_block)

    def call(self, x: Any, may_block: bool = True) -> Any:
        """The estimator on a matrix already built (a kernel's); WouldBlock if it must load and may not."""
        if self.method is None and not may_block:
            raise WouldBlock
        return self.ensure_loaded()(x)
