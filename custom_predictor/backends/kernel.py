"""A scikit-learn model evaluated by a numpy kernel (`kernels`), without importing scikit-learn.

The model file is read with `modelfile` (nothing in it runs) and compiled; rows the kernel leaves to scikit-learn
(a NaN where nothing imputes it, a value beyond float32 for a tree) go to the estimator, loaded on first need.
`verify()` is the safety net run once serving: the real estimator predicts probe rows in a low-priority child
process (`check`) and the outputs must equal the kernel's to the last bit; on a difference the runtime hands
over to the estimator (`fallback`).
Only for the scikit-learn release the kernels were written for (`Options.sklearn_for_kernels`).
Neighbours: `sklearn` is the fallback; `runtime` runs `verify` in a thread and swaps backends.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from custom_predictor.backends.base import Backend, Model, ModelFailure, NotApplicable, numeric_dtype
from custom_predictor.backends.sklearn import EstimatorBackend, reference_outputs, refuse_pickle, sklearn_conf
from custom_predictor.columns import Columns
from custom_predictor.outputs import to_list

log = logging.getLogger("custom_predictor.runtime")


class KernelBackend(Backend):
    kind = "kernel"
    inline = True

    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.conf = sklearn_conf(model)
        self.kernel: Any = None
        self.fallback = EstimatorBackend(model)
        self.check: str | None = None  # pending, passed, mismatch, unavailable

    def load(self) -> None:
        from custom_predictor import kernels, modelfile

        opts = self.model.options
        if self.conf is None or not opts.kernels:
            raise NotApplicable("kernels off, or not a scikit-learn model the fast paths take")
        if not opts.sklearn_for_kernels:
            raise NotApplicable(f"the kernels are written for scikit-learn {kernels.SKLEARN_RELEASE}")
        refuse_pickle(self.model, "model")
        path = self.model.model_dir / str(self.conf.get("pickled_model", "model.pkl"))
        fmt, trusted = str(self.conf.get("serialization_format", "pickle")), self.conf.get("skops_trusted_types")
        try:
            obj = modelfile.read(path, fmt, trusted, kernels.CLASSES)
            names = kernels.feature_names(obj)
            if names is not None and names != self.model.names:
                raise kernels.Unsupported("the model's feature names differ from the inputs")
            self.kernel = kernels.compile_model(obj, self.conf["predict_fn"], len(self.model.names))
        except (modelfile.ModelFileError, kernels.Unsupported) as e:
            raise NotApplicable(str(e)) from None
        except Exception as e:  # noqa: BLE001 - never let the kernel stand in the way of the library's own path
            raise NotApplicable(f"{e.__class__.__name__} while compiling it") from None

    def predict(self, columns: Columns, *, may_block: bool = True) -> Any:
        from custom_predictor.kernels import NeedsEstimator

        x = columns.matrix(self.model.names, numeric_dtype(self.model))
        try:
            return self.kernel(x)
        except NeedsEstimator:
            return self.fallback.call(x, may_block)  # the same matrix: the estimator takes what the kernel takes

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "kernel_check": self.check or "none"}

    def verifies(self) -> bool:
        return True

    def replacement(self) -> Backend:
        try:
            self.fallback.ensure_loaded()
        except ModelFailure as e:
            raise ModelFailure(f"the numpy kernel differs from scikit-learn, which cannot serve instead: {e}") from None
        return self.fallback

    def probe(self, test_rows: list[dict[str, Any]]) -> tuple[Any, list[Any]]:
        """The probe rows the kernel answers itself (others go to scikit-learn anyway) and its outputs."""
        from custom_predictor.check import probe_matrix
        from custom_predictor.kernels import NeedsEstimator

        x = probe_matrix(self.model.contract, test_rows, numeric_dtype(self.model))
        try:
            return x, to_list(self.kernel(x))
        except NeedsEstimator:
            kept = []
            for i in range(len(x)):
                try:
                    self.kernel(x[i : i + 1])
                    kept.append(i)
                except NeedsEstimator:
                    pass
            x = x[kept]
            return x, to_list(self.kernel(x)) if len(x) else []

    def verify(self, test_rows: list[dict[str, Any]], closing: threading.Event) -> str:
        """Compare the kernel with the real estimator on probe rows: passed, mismatch or unavailable.

        The estimator runs in a child process at low priority: importing scikit-learn here would hold this
        process's GIL for seconds just when the first requests after a cold start arrive, and would keep
        scikit-learn in memory for nothing.
        """
        from custom_predictor.check import TIMEOUT_SECONDS, run_in_child, same

        try:
            x, have = self.probe(test_rows)
            if len(x) == 0:
                raise RuntimeError("the kernel hands every probe row to scikit-learn")
            args = (self.model.model_dir, self.conf, x)
            want = run_in_child(reference_outputs, args, TIMEOUT_SECONDS, closing)
        except Exception as e:  # noqa: BLE001 - cannot check (estimator fails to load, child died): say so
            log.warning("numpy kernel unchecked: %s: %s", e.__class__.__name__, str(e)[:300])
            self.check = "unavailable"
            return self.check
        if same(want, have):
            log.info("numpy kernel matches scikit-learn on %d probe rows", len(x))
            self.check = "passed"
        else:
            log.error("numpy kernel differs from scikit-learn on probe rows: serving with scikit-learn from now on")
            self.check = "mismatch"
        return self.check
