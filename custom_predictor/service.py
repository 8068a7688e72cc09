"""The prediction service: what every router shares. It checks the model name and readiness (FastAPI
dependencies), validates rows against the contract, runs the model, and builds the typed API's answers.

The runtime is an interface here (one backend class per way of running a model, in `runtime`), built by `app`
as `Runtime(model_dir, mlmodel, contract, fast_path=, kernels=, verify_kernel=, allow_pickle=)`; the service, the
routers, the gate and the lifespan use only this surface of it:
- the state: `ready`, `state` (loading, ready, failed), `reason`, `kind`, `flavor`, `kernel_check`,
  `load_seconds`; `inline`: whether a small request may run on the event loop;
- `predict(rows, *, may_block=True, params=None, raw=False)`: validated rows (dicts of input name -> value) ->
  one JSON-able prediction per row, or with `raw` the model's own output (array, DataFrame); raises
  `WouldBlock` (only with `may_block=False`), `ModelRejectedInput` (the model refused the input) or
  `ModelFailure` (it raised), whose messages are safe to return;
- `predict_raw(data, params=None)`: for an untyped model (no signature, no contract), the model input as MLflow or
  V2 decoding makes it (DataFrame, array) -> the model's own output; same exceptions;
- `load()`, `wait(timeout)`, `close()`: the app's lifespan.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Path
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from custom_predictor import errors
from custom_predictor.contract import Contract
from custom_predictor.errors import PredictorError
from custom_predictor.metrics import Metrics
from custom_predictor.protocols.v1 import Locate
from custom_predictor.runtime import ModelFailure, ModelRejectedInput, Runtime, WouldBlock, to_list
from custom_predictor.schemas import Schemas
from custom_predictor.source import ModelSource

INLINE_ROWS = 64
"""Requests up to this many rows run on the event loop when the runtime says that is quick (no thread hop)."""


@dataclass
class PredictionService:
    """One model's prediction service. `path` is its name in URLs and in the KServe protocols."""

    runtime: Runtime
    contract: Contract
    schemas: Schemas
    source: ModelSource
    path: str
    max_records: int
    metrics: Metrics
    entities: dict[Any, dict[str, Any]]

    @property
    def typed(self) -> bool:
        """False for a model with no signature and no contract (served untyped)."""
        return bool(self.contract.inputs)

    @property
    def version(self) -> str | None:
        return self.source.version

    # ---- dependencies -------------------------------------------------------------------------------------
    async def require_ready(self) -> None:
        """Dependency of every prediction route: 503 until the model is loaded and passed its self-test (async:
        FastAPI would run a plain function in its thread pool, a thread hop on every request)."""
        if not self.runtime.ready:
            raise PredictorError(503, "not_ready", self.runtime.reason or "the model is still loading")

    def name_param(self) -> Callable[..., Awaitable[str]]:
        """Dependency of the KServe routes: the `{name}` path parameter, this model's or a 404 (annotated after
        definition: the documented type refers to locals)."""
        path = self.path
        doc = f"The model's name in the KServe protocols: `{path}` (any other is a 404)."
        examples: Any = {"this predictor's model": {"value": path}}

        async def model_name(name: str) -> str:
            if name != path:
                raise PredictorError(404, "not_found", f"this predictor serves the model '{path}' only")
            return name

        model_name.__annotations__["name"] = Annotated[str, Path(description=doc, openapi_examples=examples)]
        return model_name

    def version_param(self) -> Callable[..., Awaitable[str]]:
        """Dependency of the V2 `/versions/{version}` routes: this model's version or a 404."""
        served = self.version or "1"
        doc = f"The model version: `{served}` (any other is a 404)."

        async def model_version(version: str) -> str:
            if version != served:
                raise PredictorError(404, "not_found", f"this predictor serves version {served} only")
            return version

        examples: Any = {"served": {"value": served}}
        model_version.__annotations__["version"] = Annotated[str, Path(description=doc, openapi_examples=examples)]
        return model_version

    # ---- validating and predicting ------------------------------------------------------------------------
    def validate(self, raw: list[Any], prefix: str, locate: Locate, status: int = 422) -> list[dict[str, Any]]:
        """Rows from a request body against the contract; errors located in that body by `locate`."""
        if len(raw) > self.max_records:
            raise errors.invalid(prefix, f"at most {self.max_records} rows per request", "too_long", status)
        try:
            rows: list[dict[str, Any]] = self.schemas.rows.validate_python(raw)
            return rows
        except ValidationError as e:
            details = errors.validation_details(e.errors(), locate)
            raise PredictorError(status, "invalid_input", errors.INVALID, details) from None

    async def predict(
        self, rows: list[dict[str, Any]], *, params: dict[str, Any] | None = None, raw: bool = False
    ) -> Any:
        """The model's predictions for validated rows (see `Runtime.predict`), off the event loop unless quick."""
        runtime = self.runtime
        try:
            out: Any = None
            done = False
            if runtime.inline and len(rows) <= INLINE_ROWS:  # unless scikit-learn must load first
                with contextlib.suppress(WouldBlock):
                    out, done = runtime.predict(rows, may_block=False, params=params, raw=raw), True
            if not done:
                out = await run_in_threadpool(runtime.predict, rows, params=params, raw=raw)
        except ModelRejectedInput as e:
            raise PredictorError(422, "model_rejected_input", str(e)) from None
        except ModelFailure as e:
            raise PredictorError(500, "model_error", str(e)) from None
        self.metrics.predictions.inc(len(rows))
        return out

    async def predict_raw(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """An untyped model's output for its input as decoded (see `Runtime.predict_raw`)."""
        try:
            out = await run_in_threadpool(self.runtime.predict_raw, data, params)
        except ModelRejectedInput as e:
            raise PredictorError(422, "model_rejected_input", str(e)) from None
        except ModelFailure as e:
            raise PredictorError(500, "model_error", str(e)) from None
        self.metrics.predictions.inc(len(data) if hasattr(data, "__len__") else 1)
        return out

    @staticmethod
    def rows_of(output: Any) -> list[Any]:
        """A model's own output (array, DataFrame, ...) as one JSON-able value per row."""
        return to_list(output)

    def answer(self, predictions: list[Any]) -> dict[str, Any]:
        """The typed API's answer: predictions, their labels when the contract names them, model and version."""
        body: dict[str, Any] = {"predictions": predictions}
        labels = self.contract.outputs[0].labels if len(self.contract.outputs) == 1 else None
        if labels:
            body["labels"] = [labels.get(str(p)) if not isinstance(p, list | dict) else None for p in predictions]
        body["model"], body["version"] = self.source.name, self.source.version
        return body
