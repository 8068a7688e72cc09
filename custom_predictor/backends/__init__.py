"""Ways of running a model, one class each, and the one function that chooses among them.

`candidates(model)` lists the backends that may run a model, fastest first, by its flavor: the numpy kernels and
the estimator for scikit-learn, the library's own model for XGBoost, LightGBM and PyTorch, and pyfunc, which
runs any MLflow model, last. The runtime loads the first that takes the model (`NotApplicable` passes to the
next). Importing this package imports no model library.
"""

from __future__ import annotations

from custom_predictor.backends.base import (
    Backend,
    Model,
    ModelFailure,
    ModelRejectedInput,
    NotApplicable,
    Options,
    WouldBlock,
)
from custom_predictor.backends.kernel import KernelBackend
from custom_predictor.backends.lightgbm import LightGBMBackend
from custom_predictor.backends.pyfunc import PyfuncBackend
from custom_predictor.backends.pytorch import TorchBackend
from custom_predictor.backends.sklearn import EstimatorBackend
from custom_predictor.backends.xgboost import XGBoostBackend

BY_FLAVOR: dict[str, tuple[type[Backend], ...]] = {
    "sklearn": (KernelBackend, EstimatorBackend),
    "xgboost": (XGBoostBackend,),
    "lightgbm": (LightGBMBackend,),
    "pytorch": (TorchBackend,),
}
"""The flavor-specific backends to try before pyfunc, in order."""


def candidates(model: Model) -> list[Backend]:
    """The backends to try for `model`, in order; the last (pyfunc) takes any MLflow model. An untyped model (no
    declared inputs) runs on pyfunc only: the others need named columns."""
    if not model.contract.inputs:
        return [PyfuncBackend(model)]
    return [cls(model) for cls in BY_FLAVOR.get(model.flavor, ())] + [PyfuncBackend(model)]


__all__ = [
    "BY_FLAVOR",
    "Backend",
    "Model",
    "ModelFailure",
    "ModelRejectedInput",
    "NotApplicable",
    "Options",
    "WouldBlock",
    "candidates",
]
