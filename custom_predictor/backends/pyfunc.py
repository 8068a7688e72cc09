"""Any MLflow model through `mlflow.pyfunc.load_model`: the reference every other backend must equal.

Rows become the DataFrame the signature describes (int64, float64, bool and object columns), or, for a tensor
signature, one array of the signature's own dtype (float32 stays float32: MLflow's schema check refuses a
float64 array for a float32 tensor). MLflow's own dependency warning is suppressed: `requirements` checks first.
Neighbours: `backends.candidates` puts it last; every test compares the other backends with it.
"""

from __future__ import annotations

import math
from typing import Any

from custom_predictor.backends.base import Backend


class PyfuncBackend(Backend):
    kind = "pyfunc"

    def load(self) -> None:
        import mlflow.pyfunc

        self.pyfunc: Any = mlflow.pyfunc.load_model(str(self.model.model_dir), suppress_warnings=True)

    def predict(
        self, rows: list[dict[str, Any]], *, may_block: bool = True, params: dict[str, Any] | None = None
    ) -> Any:
        data = model_input(self.model.contract, self.model.tensor_dtype, rows)
        return self.pyfunc.predict(data, params=params) if params else self.pyfunc.predict(data)


def model_input(contract: Any, tensor_dtype: str | None, rows: list[dict[str, Any]]) -> Any:
    """What pyfunc's `predict` gets for these rows: a tensor of the signature's dtype, or a typed DataFrame."""
    import numpy as np
    import pandas as pd

    names = contract.input_names
    if not names:  # untyped (no signature, no contract): the records as pandas makes them
        return pd.DataFrame(rows)
    if tensor_dtype is not None:
        return np.array([[r.get(n) for n in names] for r in rows], dtype=tensor_dtype)
    columns = {}
    for spec in contract.inputs:
        values = [r.get(spec.name, spec.default) for r in rows]
        if spec.type == "integer" and None not in values:
            columns[spec.name] = np.array(values, dtype=np.int64)
        elif spec.type == "double":
            columns[spec.name] = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        elif spec.type == "boolean" and None not in values:
            columns[spec.name] = np.array(values, dtype=bool)
        else:
            columns[spec.name] = pd.Series(values, dtype=object)
    return pd.DataFrame(columns)
