"""The backend protocol: one way of running a model (`load`, `predict`, `describe`), and what backends share.

A backend is built from a `Model` (the folder, its MLmodel, its contract, the settings' switches) without doing
any work; `load()` imports the library and reads the model, or raises `NotApplicable` when this way of running
cannot take this model (the next candidate of `backends.candidates` then tries); `predict(columns)` returns the
model's raw output for checked `Columns` (each protocol's codec encodes it). A backend that serves with an
evaluator of ours (a numpy kernel) says so (`verifies`); the runtime then runs its `verify` once serving and
serves with its `replacement()` on a difference, or when the check cannot run. Every library
import happens inside `load`, never at module import.
Neighbours: `backends/__init__` chooses; `runtime` loads the chosen one, self-tests and serves it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from custom_predictor.columns import Columns
from custom_predictor.contract import Contract


class NotApplicable(Exception):
    """This backend cannot run this model (feature names differ, a format it does not read...): try the next."""


class WouldBlock(Exception):
    """`predict(..., may_block=False)` needs the estimator, which is still loading: call again in a thread."""


class ModelFailure(Exception):
    """The model raised while predicting; the message is safe to return (type only, no input echo)."""


class ModelRejectedInput(ModelFailure):
    """The model refused valid-looking input (ValueError/TypeError, mlflow schema errors): a client error.

    Example: a value that passes the contract but overflows inside the model (1e308 through a scaler gives inf,
    which scikit-learn rejects). Everything else the model raises stays a server error.
    """


@dataclass(frozen=True)
class Options:
    """The settings' switches that decide how a model may run."""

    fast_path: bool = True
    kernels: bool = True
    verify_kernel: bool = True
    allow_pickle: bool = True
    sklearn_for_kernels: bool = False
    """The model's and the installed scikit-learn are the release the kernels were written for (`requirements`)."""


_TENSOR_DTYPES = {"float32", "float64", "int32", "int64", "int16", "int8", "uint8", "bool"}


@dataclass
class Model:
    """A model folder with its MLmodel and contract: what every backend reads."""

    model_dir: Path
    mlmodel: dict[str, Any]
    contract: Contract
    options: Options = Options()

    @property
    def flavors(self) -> dict[str, Any]:
        return dict(self.mlmodel.get("flavors") or {})

    def flavor_conf(self, name: str) -> dict[str, Any] | None:
        conf = self.flavors.get(name)
        return conf if isinstance(conf, dict) else None

    @property
    def flavor(self) -> str:
        """The model's own flavor (sklearn, xgboost, ...), or python_function for a custom PythonModel."""
        return next((f for f in self.flavors if f != "python_function"), "python_function")

    @property
    def names(self) -> list[str]:
        return self.contract.input_names

    @property
    def has_params(self) -> bool:
        return bool((self.mlmodel.get("signature") or {}).get("params"))

    @property
    def has_code(self) -> bool:
        """Code logged with the model (`code_paths`): only pyfunc puts it on sys.path."""
        return any(isinstance(c, dict) and c.get("code") for c in self.flavors.values())

    @property
    def numeric(self) -> bool:
        return all(i.type in ("integer", "double") for i in self.contract.inputs)

    @property
    def integers_only(self) -> bool:
        return all(i.type == "integer" for i in self.contract.inputs)

    @cached_property
    def tensor_dtype(self) -> str | None:
        """numpy dtype of a single 2-D tensor input signature (float32, int64...), else None."""
        if self.contract.source != "signature":
            return None
        raw = (self.mlmodel.get("signature") or {}).get("inputs") or "[]"
        try:
            specs = json.loads(raw)
        except ValueError:
            return None
        if len(specs) == 1 and specs[0].get("type") == "tensor":
            dtype = str(specs[0].get("tensor-spec", {}).get("dtype"))
            return dtype if dtype in _TENSOR_DTYPES else "object"
        return None


def numeric_dtype(model: Model) -> Any:
    """int64 when every input is an integer (pyfunc's DataFrame then holds int64), else float64."""
    import numpy as np

    return np.int64 if model.integers_only else np.float64


class Backend:
    """One way of running a model. Subclasses set `kind` and implement `load` and `predict`."""

    kind: ClassVar[str] = ""
    inline: ClassVar[bool] = False
    """Small requests are quick enough to predict on the event loop (no thread hop)."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def load(self) -> None:
        """Import the library and read the model. Raises NotApplicable, or any error as a load failure."""
        raise NotImplementedError

    def predict(self, columns: Columns, *, may_block: bool = True) -> Any:
        """The model's own output (array, DataFrame, ...) for checked columns. May raise WouldBlock."""
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        """How the model runs, for logs and metrics: at least `kind`."""
        return {"kind": self.kind}

    def verifies(self) -> bool:
        """It serves with an evaluator of ours (a numpy kernel, the pt2 reader) that `verify` checks against the
        library once serving."""
        return False

    def verify(self, test_rows: list[dict[str, Any]], closing: threading.Event) -> str:
        """Compare our evaluator with the library on probe rows: passed, mismatch or unavailable."""
        raise NotImplementedError

    def replacement(self) -> Backend:
        """After a mismatch: the backend that serves instead, loaded. Raises ModelFailure (the reason) if none can."""
        raise NotImplementedError

    def close(self) -> None:
        """The server stops: end any background work."""
