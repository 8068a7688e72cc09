"""The data plane: what every protocol's router shares. It holds the model (the runtime), checks the model name,
version and readiness (FastAPI dependencies), and runs predictions off the event loop.

A prediction runs in a bounded thread pool (`PREDICT_THREADS`), or on the event loop only when the runtime measured
the model fast enough for that many rows at start (`Runtime.inline_rows`): a model that takes seconds never holds
the loop, so health probes and other requests are answered meanwhile. Decoding a large body (`decode`) runs in a
thread too, one at a time, so the loop is never held longer than one such decode.
The runtime's surface used here and by the routers: `ready`, `state`, `reason`, `kind`, `kernel_check`, `flavor`,
`inline_rows`, `predict(columns, may_block=, params=)`, `predict_raw(data, params)` (see `runtime`).
Neighbours: `app` builds it; `protocols/*/router` depend on it; `columns` is what it predicts from.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Path, Request

from custom_predictor.columns import Columns
from custom_predictor.contract import Contract
from custom_predictor.errors import PredictorError
from custom_predictor.inference_log import InferenceLog
from custom_predictor.limits import Budget
from custom_predictor.metrics import Metrics
from custom_predictor.outputs import count
from custom_predictor.runtime import ModelFailure, ModelRejectedInput, Runtime, WouldBlock
from custom_predictor.source import ModelSource

T = TypeVar("T")

DECODE_INLINE_BYTES = 64 * 1024
"""Bodies up to this size are decoded on the event loop; larger ones in a thread, one at a time."""


@dataclass
class DataPlane:
    """One model's data plane. `path` is its name in URLs and in the KServe protocols."""

    runtime: Runtime
    contract: Contract
    source: ModelSource
    path: str
    metrics: Metrics
    entities: dict[Any, dict[str, Any]]
    budget: Budget
    max_body: int
    log: InferenceLog
    threads: int = 4
    pool: ThreadPoolExecutor = field(init=False)
    _decoding: asyncio.Semaphore | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="predict")

    @property
    def typed(self) -> bool:
        """False for a model with no signature and no contract (served untyped)."""
        return bool(self.contract.inputs)

    @property
    def version(self) -> str | None:
        return self.source.version

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

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

    # ---- reading, decoding and predicting ------------------------------------------------------------------
    async def body(self, request: Request, kind: str) -> bytes:
        """The request's body, read once the memory budget holds what decoding a body of this size and `kind`
        (json, csv, binary) costs; the reservation ends with the call."""
        length = request.headers.get("content-length", "")
        size = int(length) if length.isdigit() else self.max_body
        request.state.call.reserved += await self.budget.reserve(size, kind)
        return await request.body()

    async def decode(self, size: int, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)`, a codec's decoding of a body of `size` bytes: on the loop when small, else in a thread,
        one at a time (a decode holds the GIL: two at once would hold the loop twice as long)."""
        if size <= DECODE_INLINE_BYTES:
            return fn(*args)
        if self._decoding is None:
            self._decoding = asyncio.Semaphore(1)
        async with self._decoding:
            return await asyncio.get_running_loop().run_in_executor(self.pool, functools.partial(fn, *args))

    async def predict(self, columns: Columns, params: dict[str, Any] | None = None) -> Any:
        """The model's own output for checked columns (see `Runtime.predict`): on the loop when the runtime
        measured that many rows as quick, else in the pool."""
        runtime = self.runtime
        try:
            out: Any = None
            done = False
            if columns.n <= runtime.inline_rows:  # unless a library must load first
                with contextlib.suppress(WouldBlock):
                    out, done = runtime.predict(columns, may_block=False, params=params), True
            if not done:
                call = functools.partial(runtime.predict, columns, params=params)
                out = await asyncio.get_running_loop().run_in_executor(self.pool, call)
        except ModelRejectedInput as e:
            raise PredictorError(422, "model_rejected_input", str(e)) from None
        except ModelFailure as e:
            raise PredictorError(500, "model_error", str(e)) from None
        self.metrics.predictions.inc(columns.n)
        return out

    def keep(self, request: Request, data: Any, response: Callable[[], Any]) -> None:
        """When the inference log keeps this call's bodies (mode full, the call sampled): the request as the model
        saw it (`{"inputs": {column: [values]}}`, sensitive inputs as keyed hashes) and the response, as JSON."""
        call = request.state.call
        if not self.log.keep_bodies(call.request_id):
            return
        if isinstance(data, Columns):
            columns: Any = data.arrays
        elif hasattr(data, "columns") and hasattr(data, "to_dict"):  # an untyped model's DataFrame
            columns = {str(k): v.to_numpy() for k, v in data.items()}
        else:  # an untyped model's array
            columns = {"input": data}
        option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
        inputs = self.log.redact(columns, self.contract.sensitive_inputs)
        call.request_body = orjson.dumps({"inputs": inputs}, option=option, default=str).decode()
        answer = response()
        call.response_body = answer if isinstance(answer, str) else orjson.dumps(answer, option=option).decode()

    async def predict_raw(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """An untyped model's output for its input as decoded (see `Runtime.predict_raw`), in the pool."""
        try:
            call = functools.partial(self.runtime.predict_raw, data, params)
            out = await asyncio.get_running_loop().run_in_executor(self.pool, call)
        except ModelRejectedInput as e:
            raise PredictorError(422, "model_rejected_input", str(e)) from None
        except ModelFailure as e:
            raise PredictorError(500, "model_error", str(e)) from None
        self.metrics.predictions.inc(count(data))
        return out
