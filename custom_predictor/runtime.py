"""The loaded model: load (numpy kernel, scikit-learn estimator or pyfunc), predict validated rows, self-test.

Three ways to run a model, fastest first:
- kernel: a scikit-learn model that `kernels` covers is read with `modelfile` and evaluated in numpy, without
  importing scikit-learn (most of a cold start). Once serving, a low-priority child process runs the real
  estimator on probe rows (`check`), and the runtime hands over to it if the two differ (`kernel_check`).
  Rows the kernel leaves to scikit-learn (a NaN where nothing imputes it) go to the estimator.
- sklearn-fast: the estimator itself, unpickled directly and called on a numpy array (no pyfunc wrapper).
- pyfunc: `mlflow.pyfunc.load_model` for everything else (dependency check suppressed).
Tests prove the first two give exactly pyfunc's outputs.
Neighbours: `source` gives the folder, `contract` the inputs; `kernels` and `check` the numpy path and its check;
`app` calls `predict` from its routes.
"""

from __future__ import annotations

import gc
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


class WouldBlock(Exception):
    """`predict(..., may_block=False)` needs the estimator, which is still loading: call again in a thread."""


class ModelFailure(Exception):
    """The model raised while predicting; the message is safe to return (type only, no input echo)."""


class ModelRejectedInput(ModelFailure):
    """The model refused valid-looking input (ValueError/TypeError, mlflow schema errors): a client error.

    Example: a value that passes the contract but overflows inside the model (1e308 through a scaler gives inf,
    which scikit-learn rejects). Everything else the model raises stays a server error.
    """


_INPUT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"}
_INPUT_ERRORS = (ValueError, TypeError, OverflowError)  # OverflowError: an integer beyond int64


class Runtime:
    """One model in memory. `state` is loading -> ready, or failed with `reason`; `kind` says how it runs."""

    def __init__(
        self,
        model_dir: Path,
        mlmodel: dict[str, Any],
        contract: Contract,
        *,
        fast_path: bool = True,
        kernels: bool = True,
        verify_kernel: bool = True,
        allow_pickle: bool = True,
    ) -> None:
        self.model_dir, self.mlmodel, self.contract = model_dir, mlmodel, contract
        self.want_fast, self.want_kernel, self.verify_kernel = fast_path, kernels, verify_kernel
        self.allow_pickle = allow_pickle
        self.state = "loading"
        self.reason: str | None = None
        self.load_seconds: float | None = None
        self.kind: str | None = None  # "kernel", "sklearn-fast" or "pyfunc"
        self.kernel_check: str | None = None  # kernel only: pending, passed, mismatch, unavailable
        self.names = contract.input_names
        self._kernel: Any = None
        self._method: Any = None  # the estimator's predict function, once loaded
        self._estimator_lock = threading.Lock()
        self._estimator_error: str | None = None
        self._pyfunc: Any = None
        self._tensor = len(self.names) > 0 and contract.source == "signature" and self._tensor_signature()
        self._defaults = {i.name: i.default for i in contract.inputs if i.default is not None}
        self._integers_only = all(i.type == "integer" for i in contract.inputs)
        self._sk = self._sklearn_flavor()
        self._ready = threading.Event()
        self._checked = threading.Event()
        self._closing = threading.Event()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def inline(self) -> bool:
        """Small requests are quick enough to predict on the event loop (no thread hop)."""
        return self.kind in ("kernel", "sklearn-fast")

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
            sk = self._sk if self.want_fast else None
            if sk is not None and not self.allow_pickle:
                raise RuntimeError("MLFLOW_ALLOW_PICKLE_DESERIALIZATION is false: refusing to deserialize the model")
            if sk is not None and self.want_kernel:
                self._load_kernel(sk)
            if sk is not None and self.kind is None and self._load_estimator(sk):
                self.kind = "sklearn-fast"
            if self.kind is None:
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
        if self.kind == "kernel" and self.verify_kernel and not self._closing.is_set():
            self.kernel_check = "pending"
            threading.Thread(target=self._check_kernel, name="kernel-check", daemon=True).start()
        else:
            self._checked.set()

    def _fail(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        log.error("predictor not ready: %s", reason)
        self._ready.set()
        self._checked.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.ready

    def close(self) -> None:
        """The server is stopping: end the kernel check (its child process with it) and start no other."""
        self._closing.set()

    def wait_checked(self, timeout: float | None = None) -> bool:
        """Wait for the kernel check (if any) to finish; True once it has."""
        return self._checked.wait(timeout)

    def _sklearn_flavor(self) -> dict[str, Any] | None:
        """The sklearn flavor's settings when the model can skip pyfunc: numeric inputs, no params, no code."""
        flavors = self.mlmodel.get("flavors") or {}
        sk, py = flavors.get("sklearn"), flavors.get("python_function") or {}
        numeric = bool(self.contract.inputs) and all(i.type in ("integer", "double") for i in self.contract.inputs)
        sig = self.mlmodel.get("signature") or {}
        if not isinstance(sk, dict) or not numeric or sig.get("params") or sk.get("code") or py.get("code"):
            return None
        if sk.get("serialization_format", "pickle") not in _FAST_FORMATS:
            return None
        return {**sk, "predict_fn": str(py.get("predict_fn", "predict"))}

    def _load_kernel(self, sk: dict[str, Any]) -> None:
        from custom_predictor import kernels, modelfile

        path = self.model_dir / str(sk.get("pickled_model", "model.pkl"))
        try:
            fmt, trusted = str(sk.get("serialization_format", "pickle")), sk.get("skops_trusted_types")
            obj = modelfile.read(path, fmt, trusted, kernels.CLASSES)
            names = kernels.feature_names(obj)
            if names is not None and names != self.names:
                raise kernels.Unsupported("the model's feature names differ from the inputs")
            self._kernel = kernels.compile_model(obj, sk["predict_fn"], len(self.names))
        except (modelfile.ModelFileError, kernels.Unsupported) as e:
            log.info("numpy kernel not used (%s): loading scikit-learn", e)
            return
        except Exception as e:  # noqa: BLE001 - never let the kernel stand in the way of the library's own path
            log.warning("numpy kernel not used (%s while compiling it): loading scikit-learn", e.__class__.__name__)
            return
        self.kind = "kernel"

    def _load_estimator(self, sk: dict[str, Any]) -> bool:
        """Unpickle the estimator itself (as the sklearn flavor does); False if it cannot take our arrays."""
        est = load_estimator(self.model_dir, sk)
        method, fitted_names = getattr(est, sk["predict_fn"], None), getattr(est, "feature_names_in_", None)
        if method is None or (fitted_names is not None and list(fitted_names) != self.names):
            log.info("fast path not applicable (predict_fn or feature names differ): using pyfunc")
            return False
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        self._method = method
        return True

    @property
    def _dtype(self) -> Any:
        """int64 when every input is an integer (pyfunc's DataFrame then hands scikit-learn int64), else float64."""
        import numpy as np

        return np.int64 if self._integers_only else np.float64

    def _estimator(self) -> Any:
        """The estimator's predict function, loading it on first use (thread-safe). Raises ModelFailure."""
        if self._method is not None:
            return self._method
        with self._estimator_lock:
            if self._method is None and self._estimator_error is None:
                try:
                    if self._sk is None or not self._load_estimator(self._sk):
                        raise RuntimeError("the estimator cannot be called directly")
                    gc.collect()
                    gc.freeze()
                except Exception as e:  # noqa: BLE001 - reported once, for every later call too
                    self._estimator_error = f"{e.__class__.__name__}: {str(e)[:300]}"
        if self._method is None:
            raise ModelFailure(f"scikit-learn could not load the model ({self._estimator_error})")
        return self._method

    def _load_pyfunc(self) -> None:
        import mlflow.pyfunc

        self._pyfunc = mlflow.pyfunc.load_model(str(self.model_dir), suppress_warnings=True)
        self.kind = "pyfunc"

    def _check_kernel(self) -> None:
        """Compare the kernel with the real estimator on probe rows; hand over to the estimator if they differ.

        The estimator runs in a child process at low priority: importing scikit-learn here would hold this
        process's GIL for seconds just when the first requests after a cold start arrive, and would keep
        scikit-learn in memory for nothing.
        """
        from custom_predictor.check import TIMEOUT_SECONDS, reference_outputs, run_in_child, same

        try:
            x, have = self._kernel_on_probe()
            if len(x) == 0:
                raise RuntimeError("the kernel hands every probe row to scikit-learn")
            want = run_in_child(reference_outputs, (self.model_dir, self._sk, x), TIMEOUT_SECONDS, self._closing)
            if same(want, have):
                self.kernel_check = "passed"
                log.info("numpy kernel matches scikit-learn on %d probe rows", len(x))
                return
            self.kernel_check = "mismatch"
            log.error("numpy kernel differs from scikit-learn on probe rows: serving with scikit-learn from now on")
            try:
                self._estimator()
            except ModelFailure as e:
                self._kernel = None
                self._fail(f"the numpy kernel differs from scikit-learn, which cannot serve instead: {e}")
                return
            self._kernel, self.kind = None, "sklearn-fast"
        except Exception as e:  # noqa: BLE001 - cannot check (estimator fails to load, child died): say so
            self.kernel_check = "unavailable"
            log.warning("numpy kernel unchecked: %s: %s", e.__class__.__name__, str(e)[:300])
        finally:
            self._checked.set()

    def _kernel_on_probe(self) -> tuple[Any, list[Any]]:
        """The probe rows the kernel answers itself (others go to scikit-learn anyway) and its outputs."""
        from custom_predictor.check import probe_matrix
        from custom_predictor.kernels import NeedsEstimator

        x = probe_matrix(self.contract, self.self_test_rows(), self._dtype)
        try:
            return x, to_list(self._kernel(x))
        except NeedsEstimator:
            kept = []
            for i in range(len(x)):
                try:
                    self._kernel(x[i : i + 1])
                    kept.append(i)
                except NeedsEstimator:
                    pass
            x = x[kept]
            return x, to_list(self._kernel(x)) if len(x) else []

    # ---- predicting ----------------------------------------------------------------------------------------
    def predict(
        self,
        rows: list[dict[str, Any]],
        *,
        may_block: bool = True,
        params: dict[str, Any] | None = None,
        raw: bool = False,
    ) -> Any:
        """Predictions for validated rows (one per row). Raises `ModelFailure` if the model raises.

        With `may_block=False`, raises `WouldBlock` instead of waiting for the estimator to load. `params` go to a
        pyfunc model (the others take none). With `raw`, the model's own output (array, DataFrame, ...) is
        returned instead of one JSON-able value per row.
        """
        if self._defaults:
            rows = [{**self._defaults, **r} for r in rows]
        try:
            if self._kernel is not None:
                out = self._predict_kernel(rows, may_block)
            elif self._method is not None:
                out = self._method(self._matrix(rows, self._dtype))
            else:
                out = self._predict_pyfunc(rows, params)
            if raw:
                return out
            result = to_list(out)
        except (WouldBlock, ModelFailure):
            raise
        except Exception as e:  # noqa: BLE001 - the model's own errors become one safe error body
            raise _failure(e, len(rows)) from None
        if len(result) != len(rows):
            raise ModelFailure(f"the model returned {len(result)} predictions for {len(rows)} rows")
        return result

    def predict_raw(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """An untyped model (no signature, no contract): `data` (DataFrame, array, ...) to pyfunc as is, and its
        own output back. Raises `ModelFailure` if the model raises."""
        try:
            return self._pyfunc.predict(data, params=params) if params else self._pyfunc.predict(data)
        except Exception as e:  # noqa: BLE001 - the model's own errors become one safe error body
            raise _failure(e, len(data) if hasattr(data, "__len__") else 1) from None

    def _matrix(self, rows: list[dict[str, Any]], dtype: Any) -> Any:
        """Rows as a column-major matrix: the layout pyfunc's DataFrame hands scikit-learn, so that BLAS sums
        in the same order and the results are identical to the last bit."""
        import numpy as np

        names, nan = self.names, math.nan
        matrix = [[nan if (v := r.get(n)) is None else v for n in names] for r in rows]
        return np.array(matrix, dtype=dtype, order="F")

    def _predict_kernel(self, rows: list[dict[str, Any]], may_block: bool) -> Any:
        from custom_predictor.kernels import NeedsEstimator

        x = self._matrix(rows, self._dtype)
        kernel = self._kernel
        if kernel is not None:
            try:
                return kernel(x)
            except NeedsEstimator:
                pass
        if self._method is None and not may_block:
            raise WouldBlock
        return self._estimator()(x)  # the same matrix: the estimator takes what the kernel takes

    def _predict_pyfunc(self, rows: list[dict[str, Any]], params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        if not self.names:  # untyped: the records as pandas makes them
            return self.predict_raw(pd.DataFrame(rows), params)
        if params:
            return self._pyfunc.predict(self._frame(rows), params=params)
        return self._pyfunc.predict(self._frame(rows))

    def _frame(self, rows: list[dict[str, Any]]) -> Any:
        import numpy as np
        import pandas as pd

        if self._tensor:
            dtype = {"integer": np.int64, "double": np.float64, "boolean": np.bool_}.get(
                self.contract.inputs[0].type, object
            )
            return np.array([[r.get(n) for n in self.names] for r in rows], dtype=dtype)
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
        return pd.DataFrame(columns)

    # ---- self-test -----------------------------------------------------------------------------------------
    def self_test_rows(self) -> list[dict[str, Any]]:
        test = self.contract.test_data
        return [] if test is None else [{k: coerce(self.contract, k, v) for k, v in r.items()} for r in test.rows]

    def self_test(self) -> str | None:
        """Predict the contract's test rows (or the input example); None if all is well, else why not."""
        if not self.names:
            return self._untyped_self_test()
        test = self.contract.test_data
        if test is None:
            return None
        try:
            got = self.predict(self.self_test_rows())
        except ModelFailure as e:
            return f"predicting the test rows: {e}"
        for n, (want, have) in enumerate(zip(test.expected or [], got, strict=False)):
            if not matches(want, have, test.tolerance):
                return f"test_data row {n}: expected {want!r}, the model returned {have!r}"
        return None

    def _untyped_self_test(self) -> str | None:
        """No signature, no contract: predict the input example, if the model has one, as MLflow loads it."""
        try:
            example = _input_example(self.model_dir)
        except Exception as e:  # noqa: BLE001 - an unreadable example is a failed self-test, not a crash
            return f"reading the input example: {e.__class__.__name__}: {str(e)[:300]}"
        if example is None:
            return None
        try:
            self.predict_raw(example)
        except ModelFailure as e:
            return f"predicting the input example: {e}"
        return None


def _input_example(model_dir: Path) -> Any:
    """The model's input example as MLflow loads it (DataFrame, array, dict, ...), or None."""
    from mlflow.models import Model

    return Model.load(str(model_dir)).load_input_example(str(model_dir))


def _failure(e: Exception, rows: int) -> ModelFailure:
    """The model's own exception -> a safe one (its type only: no input echo)."""
    log.warning("model raised %s while predicting %d rows", e.__class__.__name__, rows)
    if isinstance(e, _INPUT_ERRORS) or getattr(e, "error_code", None) in _INPUT_ERROR_CODES:
        return ModelRejectedInput(f"the model rejected the input ({e.__class__.__name__})")
    return ModelFailure(f"the model raised {e.__class__.__name__}")


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
