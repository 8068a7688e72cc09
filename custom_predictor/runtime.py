"""The loaded model as the HTTP side sees it: check its environment, choose a backend, self-test, serve.

`Runtime(model_dir, mlmodel, contract, ...)` does no work; `load()` (in a thread, once the server runs):
1. checks the model's requirements against the installed libraries (`requirements`): a missing library or
   another major version of the flavor's library fails it for good; smaller drift becomes `notes`;
2. loads the first backend of `backends.candidates` that takes the model;
3. predicts the contract's test rows (or the input example) and compares them with the expected outputs;
4. times a 1-row and an `INLINE_ROWS`-row prediction: requests small enough to cost under `INLINE_SECONDS` may
   then run on the event loop (`inline_rows`); everything else runs in the data plane's thread pool.
State is loading -> ready, or failed with `reason` (every load failure is permanent: `__main__` then ends the
process with that reason as its last line). With an evaluator of ours (a numpy kernel), a low-priority check
against the library runs once serving and hands over to the library on a difference, and also when the check
cannot run (fails closed).
The facade the data plane uses: `state`, `ready`, `reason`, `kind`, `kernel_check`, `flavor`, `inline_rows`,
`notes`, `predict(columns, may_block=..., params=...)`, `predict_raw`, `wait`, `wait_checked`, `wait_failed`,
`close`, `self_test`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from custom_predictor import requirements
from custom_predictor.backends import (
    Backend,
    Model,
    ModelFailure,
    ModelRejectedInput,
    NotApplicable,
    Options,
    WouldBlock,
    candidates,
)
from custom_predictor.backends.pyfunc import PyfuncBackend
from custom_predictor.columns import Columns
from custom_predictor.contract import PY_TYPES, Contract, example_row
from custom_predictor.outputs import count, to_list

log = logging.getLogger("custom_predictor.runtime")

_INPUT_ERROR_CODES = {"INVALID_PARAMETER_VALUE", "BAD_REQUEST"}
_INPUT_ERRORS = (ValueError, TypeError, OverflowError)  # OverflowError: an integer beyond int64
INLINE_ROWS = 64
"""Most rows a request may have to be predicted on the event loop (no thread hop)."""
INLINE_SECONDS = 0.0005
"""What a prediction on the event loop may cost at most, as measured at start (other requests wait meanwhile)."""


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
        requirements_check: str = "strict",
    ) -> None:
        self.model_dir, self.mlmodel, self.contract = model_dir, mlmodel, contract
        self.options = Options(
            fast_path=fast_path, kernels=kernels, verify_kernel=verify_kernel, allow_pickle=allow_pickle
        )
        self.requirements_check = requirements_check
        self.state = "loading"
        self.reason: str | None = None
        self.load_seconds: float | None = None
        self.kernel_check: str | None = None  # our evaluator against the library: pending, passed, mismatch...
        self.report: requirements.Report | None = None
        self._unreadable: str | None = None
        try:  # cheap (one small file, no imports): done here so that `notes` can describe the API at once
            self.report = requirements.check(mlmodel, requirements.read(model_dir))
        except ValueError as e:
            self._unreadable = f"unreadable model: {e}"
        self.backend: Backend | None = None
        self.names = contract.input_names
        self.inline_rows = 0
        """Requests of up to this many rows run on the event loop (measured once the self-test passed)."""
        self._ready = threading.Event()
        self._checked = threading.Event()
        self._closing = threading.Event()
        self._failed = threading.Event()

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def kind(self) -> str | None:
        """How the model runs: kernel, sklearn-fast, xgboost, lightgbm, pytorch or pyfunc (None before load)."""
        return self.backend.kind if self.backend is not None else None

    @property
    def flavor(self) -> str:
        flavors = self.mlmodel.get("flavors") or {}
        return next((f for f in flavors if f != "python_function"), "python_function")

    @property
    def findings(self) -> list[requirements.Finding]:
        """Every requirement of the model this environment does not meet (drift, or ignored by REQUIREMENTS_CHECK)."""
        return list(self.report.findings) if self.report else []

    @property
    def notes(self) -> list[str]:
        """Markdown lines for the API description: the environment drift found at start."""
        if self.report is None or not self.report.findings:
            return []
        return [
            f"- `{f.library}`: the model names `{f.required}`, this image has "
            f"`{f.installed or 'none'}`" + (" (checked: warn only)" if f.kind != requirements.DRIFT else "")
            for f in self.report.findings
        ]

    # ---- loading -------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Check, load and self-test the model; never raises (failures land in `state`/`reason`)."""
        t0 = time.perf_counter()
        try:
            options = self._check_environment()
            if options is None:
                return
            self.backend = self._load_backend(Model(self.model_dir, self.mlmodel, self.contract, options))
        except Exception as e:  # noqa: BLE001 - any load failure is permanent: the reason is reported
            self._fail(f"model load failed: {e.__class__.__name__}: {str(e)[:500]}")
            return
        finally:
            self.load_seconds = time.perf_counter() - t0
        problem = self.self_test()
        if problem:
            self._fail(f"self-test failed: {problem}")
            return
        self.inline_rows = self._measure()
        self.state = "ready"
        log.info(
            "model ready kind=%s flavor=%s load_seconds=%.3f inline_rows=%d",
            self.kind,
            self.flavor,
            self.load_seconds,
            self.inline_rows,
        )
        self._ready.set()
        if self.backend.verifies() and self.options.verify_kernel and not self._closing.is_set():
            self.kernel_check = "pending"
            threading.Thread(target=self.check_kernel, name="kernel-check", daemon=True).start()
        else:
            self._checked.set()

    def _check_environment(self) -> Options | None:
        """Run the requirements check; the options for the backends, or None after failing the runtime."""
        from custom_predictor.kernels import SKLEARN_RELEASE

        report = self.report
        if report is None:
            self._fail(self._unreadable or "unreadable model")
            return None
        for f in report.drift:
            log.warning("environment drift library=%s model=%s installed=%s", f.library, f.required, f.installed)
        problem = report.failure()
        if problem and self.requirements_check == "strict":
            self._fail(problem)
            return None
        if problem:
            log.warning("%s (REQUIREMENTS_CHECK=%s: loading anyway)", problem, self.requirements_check)
        sklearn = report.wanted.get("scikit-learn")
        same = requirements.same_release(sklearn, requirements.installed_version("scikit-learn"), SKLEARN_RELEASE)
        return Options(**{**self.options.__dict__, "sklearn_for_kernels": same})

    def _load_backend(self, model: Model) -> Backend:
        for backend in candidates(model):
            try:
                backend.load()
                return backend
            except NotApplicable as e:
                log.info("backend %s not used (%s)", backend.kind, e)
        raise RuntimeError("no backend takes the model")  # not reached: pyfunc takes any model

    def _fail(self, reason: str) -> None:
        self.state, self.reason = "failed", reason
        log.error("predictor not ready: %s", reason)
        self._failed.set()
        self._ready.set()
        self._checked.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.ready

    def wait_failed(self, timeout: float | None = None) -> bool:
        """Block until the model has failed for good (at load, or a later hand-over); True if it has."""
        return self._failed.wait(timeout)

    def close(self) -> None:
        """The server is stopping: end the kernel check (its child process with it) and start no other."""
        self._closing.set()
        if self.backend is not None:
            self.backend.close()

    def wait_checked(self, timeout: float | None = None) -> bool:
        """Wait for the kernel check (if any) to finish; True once it has."""
        return self._checked.wait(timeout)

    def check_kernel(self) -> None:
        """Our evaluator (a numpy kernel) against the library; on a difference, or when the check cannot run
        (its child fails to start, runs out of memory, times out), serve with the backend's replacement (the
        estimator) from then on: no unverified answers."""
        backend = self.backend
        try:
            if backend is None or not backend.verifies():
                return
            self.kernel_check = backend.verify(self.self_test_rows(), self._closing)
            if self.kernel_check == "passed" or self._closing.is_set():
                return  # stopping: load nothing more
            log.warning("serving with the library from now on (kernel check: %s)", self.kernel_check)
            try:
                self.backend = backend.replacement()
                self.inline_rows = 0
            except ModelFailure as e:
                self._fail(str(e))
        finally:
            self._checked.set()

    # ---- predicting ----------------------------------------------------------------------------------------
    def predict(self, columns: Columns, *, may_block: bool = True, params: dict[str, Any] | None = None) -> Any:
        """The model's own output (array, DataFrame, ...) for checked columns, one prediction per row. Raises
        `ModelFailure` if the model raises or answers another number of rows.

        With `may_block=False`, raises `WouldBlock` instead of waiting for a library to load. `params` go to a
        pyfunc model (the others take none).
        """
        backend = self.backend
        if backend is None:
            raise ModelFailure("the model is not loaded")
        try:
            if params and isinstance(backend, PyfuncBackend):
                out = backend.predict(columns, may_block=may_block, params=params)
            else:
                out = backend.predict(columns, may_block=may_block)
            n = count(out)
        except (WouldBlock, ModelFailure):
            raise
        except Exception as e:  # noqa: BLE001 - the model's own errors become one safe error body
            raise _failure(e, columns.n) from None
        if n != columns.n:
            raise ModelFailure(f"the model returned {n} predictions for {columns.n} rows")
        return out

    def predict_raw(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """An untyped model (no signature, no contract): `data` (DataFrame, array, ...) to pyfunc as is, and its
        own output back. Raises `ModelFailure` if the model raises."""
        backend = self.backend
        if not isinstance(backend, PyfuncBackend):
            raise ModelFailure("the model is not loaded")
        try:
            return backend.predict_raw(data, params)
        except Exception as e:  # noqa: BLE001 - the model's own errors become one safe error body
            raise _failure(e, count(data)) from None

    def _measure(self) -> int:
        """How many rows a request may have to run on the event loop: 0 unless the backend may run there and a
        1-row and an INLINE_ROWS-row prediction (best of 3 each) show that many rows cost under INLINE_SECONDS."""
        if self.backend is None or not self.backend.inline or not self.names:
            return 0
        rows = self.self_test_rows() or [example_row(self.contract)]
        one = Columns.from_rows(rows[:1], self.contract)
        many = Columns.from_rows((rows * INLINE_ROWS)[:INLINE_ROWS], self.contract)
        try:
            fixed = self._best(one)
            if fixed > INLINE_SECONDS:
                return 0
            full = self._best(many)
        except Exception as e:  # noqa: BLE001 - not measurable (it would load a library, or raised): the pool
            log.info("not predicting on the event loop: %s", e.__class__.__name__)
            return 0
        per_row = max(full - fixed, 0.0) / (INLINE_ROWS - 1)
        return INLINE_ROWS if per_row == 0 else max(0, min(INLINE_ROWS, 1 + int((INLINE_SECONDS - fixed) / per_row)))

    def _best(self, columns: Columns) -> float:
        """The quickest of 3 predictions, or the first one's time when it is over the budget already."""
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            self.predict(columns, may_block=False)
            best = min(best, time.perf_counter() - t0)
            if best > INLINE_SECONDS:
                break
        return best

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
            got = to_list(self.predict(Columns.from_rows(self.self_test_rows(), self.contract)))
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


__all__ = ["ModelFailure", "ModelRejectedInput", "Runtime", "WouldBlock", "to_list"]
