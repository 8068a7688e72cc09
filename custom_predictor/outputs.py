"""Model outputs as JSON values: one value per row, whatever the library returned (ndarray, DataFrame, tensor...).

Neighbours: the codecs that answer in rows end here; `check` compares kernel and estimator outputs in this form.
"""

from __future__ import annotations

import math
from typing import Any


def to_list(out: Any) -> list[Any]:
    """Model output (ndarray, DataFrame, Series, list, dict of columns) -> one JSON-able value per row."""
    if hasattr(out, "to_dict") and hasattr(out, "columns"):  # DataFrame
        if len(out.columns) == 1:
            return to_list(out.iloc[:, 0].to_numpy())
        return [{str(k): native(v) for k, v in row.items()} for row in out.to_dict(orient="records")]
    if hasattr(out, "to_numpy"):  # Series
        out = out.to_numpy()
    if hasattr(out, "tolist"):
        values = out.tolist()
        return values if isinstance(values, list) else [values]
    if isinstance(out, dict):
        cols = {k: to_list(v) for k, v in out.items()}
        n = len(next(iter(cols.values()), []))
        return [{k: v[i] for k, v in cols.items()} for i in range(n)]
    if isinstance(out, list | tuple):
        return [native(v) for v in out]
    return [native(out)]


def count(out: Any) -> int:
    """How many predictions (rows) a model output holds, without converting it."""
    shape = getattr(out, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 1
    if isinstance(out, dict):  # columns: as many rows as the longest (a ragged input is the model's to refuse)
        return max((count(v) for v in out.values()), default=0)
    if isinstance(out, list | tuple):
        return len(out)
    return 1


def native(v: Any) -> Any:
    """A numpy scalar or array as plain Python; a non-finite float as None (JSON has no NaN)."""
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def frame_like(values: Any) -> Any:
    """What pyfunc's `pd.DataFrame(ndarray)` output becomes through `to_list`, without pandas: one column gives
    its values (as an array), several give one {"0": v, "1": v, ...} object per row."""
    if values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1):
        return values.reshape(-1)
    return [{str(i): native(v) for i, v in enumerate(row)} for row in values.tolist()]
