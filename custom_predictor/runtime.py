"""The loaded model: load (fast scikit-learn path or pyfunc), predict validated rows, run the self-test.

Fast path: a model with the sklearn flavor whose inputs are all numbers is unpickled directly and called on a
numpy array, skipping mlflow's import and pyfunc's per-call DataFrame conversion; tests prove its outputs equal
pyfunc's. Everything else goes through `mlflow.pyfunc.load_model` (dependency check suppressed).
Neighbours: `source` gives the folder, `contract` the inputs; `app` calls `predict` from its routes.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from custom_predictor.contract import PY_TYPES, Contract

log = logging.getLogger("custom_predictor.runtime")

_FAST_FORMATS = ("pickle", "cloudpickle", "skops")


def preload(mlmodel_file: Path) -> threading.Thread | None:
    """Start importing the libraries the model will need (in a thread) as soon as its MLmodel is known.

    Imports are the largest part of a cold start (scikit-learn + skops about 2 s); doing them while the other
    artifacts download and the web app is built takes them off the critical path.
    """
    try:
        import yaml

        flavors = (yaml.safe_load(mlmodel_file.read_text()) or {}).get("flavors") or {}
    except (OSError, ValueError, ImportError, AttributeError):
        return None
    fmt = (flavors.get("sklearn") or {}).get("serialization_format")
    modules = {
        "skops": ["numpy", "skops.io"],
        "pickle": ["numpy", "cloudpickle", "sklearn.base"],
        "cloudpickle": ["numpy", "cloudpickle", "sklearn.base"],
    }.get(str(fmt), ["mlflow.pyfunc"])

    def run() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - a failed warm-up import shows up again, properly, in load()
                return

    thread = threading.Thread(target=run, name="preload", daemon=True)
    thread.start()
    return thread


class ModelFailure(Exception):
    """The model raised while predicting; the message is safe to return (type only, no input echo)."""


class ModelRejectedInput(ModelFailure):
    """The model refused valid-looking input (ValueError/TypeError, mlflow schema errors): a client error.

    Example: a value that passes the contract but overflows inside the model (1e308 through a scaler gives inf,
    which scikit-learn rejects). Everything else the model raises stays a server error.
    """


_INPUT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"}


class Runtime:
    """One model in memory. `state` is loading -> ready, or failed with `reason`."""

    def __init__(
        self,
        model_dir: Path,
        mlmodel: dict[str, Any],
        contract: Contract,
        *,
        fast_path: bool = True,
        allow_pickle: bool = True,
    ) -> None:
        self.model_dir, self.mlmodel, self.contract = model_dir, mlmodel, contract
        self.want_fast, self.allow_pickle = fast_path, allow_pickle
        self.state = "loading"
        self.reason: str | None = None
        self.load_seconds: float | None = None
        self.kind: str | None = None  # "sklearn-fast" or "pyfunc"
        self.names = contract.input_names
        self._estimator: Any = None
        self._method: Any = None
        self._pyfunc: Any = None
        self._all_int = False
        self._tensor = len(self.names) > 0 and contract.source == "signature" and self._tensor_signature()
        self._defaults = {i.name: i.default for i in contract.inputs if i.default is not None}
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def flavor(self) -> str:
        flavors = self.mlmodel.get("flavors") or {}
        return next((f for f in flavors if f != "python_function"), "python_function")

    def _tensor_signature(self) -> bool:
        sig = (self.mlmodel.get("signature") or {}).get("inputs") or ""
        return '"tensor"' in sig

    # ---- loading -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model and run the self-test; never raises (failures land in `state`/`reason`)."""
        t0 = time.perf_counter()
        try:
            if not (self.want_fast and self._load_fast()):
                self._load_pyfunc()
        except Exception as e:  # noqa: BLE001 - any load failure keeps the predictor not ready
            self._fail(f"model load failed: {e.__class__.__name__}: {str(e)[:500]}")
            return
        finally:
            self.load_seconds = time.perf_counter() - t0
        problem = self.self_test()
        if problem:
            self._fail(f"self-test failed: {problem}")
            return
        self.state = "ready"
        log.info("model ready kind=%s flavor=%s load_seconds=%.3f", self.kind, self.flavor, self.load_seconds)
        self._ready.set()

    def _fail(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        log.error("predictor not ready: %s", reason)
        self._ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.ready

    def _load_fast(self) -> bool:
        flavors = self.mlmodel.get("flavors") or {}
        sk, py = flavors.get("sklearn"), flavors.get("python_function") or {}
        numeric = all(i.type in ("integer", "double") for i in self.contract.inputs)
        sig = self.mlmodel.get("signature") or {}
        if not sk or not numeric or sig.get("params") or sk.get("serialization_format", "pickle") not in _FAST_FORMATS:
            return False
        if sk.get("code") or py.get("code"):
            return False
        if not self.allow_pickle:
            raise RuntimeError("MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false: refusing to deserialize the model")
        path = self.model_dir / str(sk.get("pickled_model", "model.pkl"))
        fmt = sk.get("serialization_format", "pickle")
        if fmt == "skops":
            import skops.io

            est = skops.io.load(path, trusted=sk.get("skops_trusted_types"))
        else:
            import cloudpickle  # also reads plain pickles

            with path.open("rb") as f:
                est = cloudpickle.load(f)
        method = getattr(est, str(py.get("predict_fn", "predict")), None)
        fitted_names = getattr(est, "feature_names_in_", None)
        if method is None or (fitted_names is not None and list(fitted_names) != self.names):
            log.info("fast path not applicable (predict_fn or feature names differ): using pyfunc")
            return False
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self._estimator, self._method, self.kind = est, method, "sklearn-fast"
        self._all_int = all(i.type == "integer" for i in self.contract.inputs)
        return True

    def _load_pyfunc(self) -> None:
        import mlflow.pyfunc

        self._pyfunc = mlflow.pyfunc.load_model(str(self.model_dir), suppress_warnings=True)
        self.kind = "pyfunc"

    # ---- predicting ----------------------------------------------------------------------------------------
    def predict(self, rows: list[dict[str, Any]]) -> list[Any]:
        """Predictions for validated rows (one per row). Raises `ModelFailure` if the model raises."""
        if self._defaults:
            rows = [{**self._defaults, **r} for r in rows]
        try:
            out = self._predict_fast(rows) if self._method is not None else self._predict_pyfunc(rows)
            result = to_list(out)
        except Exception as e:  # noqa: BLE001 - the model's own errors become one safe error body
            log.warning("model raised %s while predicting %d rows", e.__class__.__name__, len(rows))
            if isinstance(e, ValueError | TypeError) or getattr(e, "error_code", None) in _INPUT_ERROR_CODES:
                raise ModelRejectedInput(f"the model rejected the input ({e.__class__.__name__})") from None
            raise ModelFailure(f"the model raised {e.__class__.__name__}") from None
        if len(result) != len(rows):
            raise ModelFailure(f"the model returned {len(result)} predictions for {len(rows)} rows")
        return result

    def _predict_fast(self, rows: list[dict[str, Any]]) -> Any:
        import numpy as np

        names = self.names
        nan = math.nan
        matrix = [[nan if (v := r.get(n)) is None else v for n in names] for r in rows]
        return self._method(np.array(matrix, dtype=np.int64 if self._all_int else np.float64))

    def _predict_pyfunc(self, rows: list[dict[str, Any]]) -> Any:
        import numpy as np
        import pandas as pd

        if self._tensor:
            dtype = {"integer": np.int64, "double": np.float64, "boolean": np.bool_}.get(
                self.contract.inputs[0].type, object
            )
            return self._pyfunc.predict(np.array([[r.get(n) for n in self.names] for r in rows], dtype=dtype))
        columns = {}
        for spec in self.contract.inputs:
            values = [r.get(spec.name, spec.default) for r in rows]
            if spec.type == "integer" and None not in values:
                columns[spec.name] = np.array(values, dtype=np.int64)
            elif spec.type == "double":
                columns[spec.name] = np.array([nan_if_none(v) for v in values], dtype=np.float64)
            elif spec.type == "boolean" and None not in values:
                columns[spec.name] = np.array(values, dtype=bool)
            else:
                columns[spec.name] = pd.Series(values, dtype=object)
        return self._pyfunc.predict(pd.DataFrame(columns))

    # ---- self-test -----------------------------------------------------------------------------------------
    def self_test(self) -> str | None:
        """Predict the contract's test rows (or the input example); None if all is well, else why not."""
        test = self.contract.test_data
        if test is None:
            return None
        rows = [{k: coerce(self.contract, k, v) for k, v in r.items()} for r in test.rows]
        try:
            got = self.predict(rows)
        except ModelFailure as e:
            return f"predicting the test rows: {e}"
        for n, (want, have) in enumerate(zip(test.expected or [], got, strict=False)):
            if not matches(want, have, test.tolerance):
                return f"test_data row {n}: expected {want!r}, the model returned {have!r}"
        return None


def nan_if_none(v: Any) -> Any:
    return math.nan if v is None else v


def coerce(contract: Contract, name: str, value: Any) -> Any:
    """Test rows from YAML: ints given for doubles become floats, like request validation does."""
    spec = next((i for i in contract.inputs if i.name == name), None)
    if spec is not None and value is not None and spec.type == "double":
        return float(value)
    return value if spec is None or value is None else PY_TYPES[spec.type](value)


def matches(want: Any, have: Any, tol: float) -> bool:
    if isinstance(want, list) and isinstance(have, list):
        return len(want) == len(have) and all(matches(w, h, tol) for w, h in zip(want, have, strict=True))
    if isinstance(want, dict) and isinstance(have, dict):
        return want.keys() == have.keys() and all(matches(want[k], have[k], tol) for k in want)
    numbers = (int, float)
    if isinstance(want, numbers) and isinstance(have, numbers) and not isinstance(want, bool):
        return math.isclose(want, have, rel_tol=tol, abs_tol=tol)
    return bool(want == have)


def to_list(out: Any) -> list[Any]:
    """Model output (ndarray, DataFrame, Series, list, dict of columns) -> one JSON-able value per row."""
    if hasattr(out, "to_dict") and hasattr(out, "columns"):  # DataFrame
        if len(out.columns) == 1:
            return to_list(out.iloc[:, 0].to_numpy())
        return [{str(k): _native(v) for k, v in row.items()} for row in out.to_dict(orient="records")]
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
        return [_native(v) for v in out]
    return [_native(out)]


def _native(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
