"""Any MLflow model through `mlflow.pyfunc.load_model`: the reference every other backend must equal.

Columns become the DataFrame the signature describes (int64, float64, bool and object columns, as `Columns` holds
them), or, for a tensor signature, one row-major array of the signature's own dtype (float32 stays float32:
MLflow's schema check refuses a float64 array for a float32 tensor). MLflow's own dependency warning is
suppressed: `requirements` checks first.
Neighbours: `backends.candidates` puts it last; every test compares the other backends with it.
"""

from __future__ import annotations

from typing import Any

from custom_predictor.backends.base import Backend
from custom_predictor.columns import Columns


class PyfuncBackend(Backend):
    kind = "pyfunc"

    def load(self) -> None:
        import mlflow.pyfunc

        self.pyfunc: Any = mlflow.pyfunc.load_model(str(self.model.model_dir), suppress_warnings=True)

    def predict(self, columns: Columns, *, may_block: bool = True, params: dict[str, Any] | None = None) -> Any:
        data = model_input(self.model.contract.input_names, self.model.tensor_dtype, columns)
        return self.predict_raw(data, params)

    def predict_raw(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """The model's output for its input as given (an untyped model's DataFrame or array, as MLflow decodes it)."""
        return self.pyfunc.predict(data, params=params) if params else self.pyfunc.predict(data)


def model_input(names: list[str], tensor_dtype: str | None, columns: Columns) -> Any:
    """What pyfunc's `predict` gets for these columns: a tensor of the signature's dtype, or a typed DataFrame."""
    import numpy as np
    import pandas as pd

    if tensor_dtype is not None:
        return np.ascontiguousarray(columns.matrix(names, tensor_dtype))
    return pd.DataFrame({name: columns.arrays[name] for name in names}, copy=False)
