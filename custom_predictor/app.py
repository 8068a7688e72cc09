"""The FastAPI app: typed prediction routes from the contract, KServe V1/V2, health, metrics, offline Swagger.

`create_app(settings)` resolves the model and its contract (an invalid contract raises `ContractError`), builds
the routes, and loads the model in the background once the server runs, so `/v2/health/live` answers at once
and `/v2/health/ready` turns true after the load and the self-test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from custom_predictor import errors
from custom_predictor.contract import Contract, ContractError, derive_contract, load_contract, load_entities
from custom_predictor.errors import ErrorBody, PredictorError
from custom_predictor.metrics import Metrics, MetricsMiddleware
from custom_predictor.protocols import (
    Locate,
    v1_locate,
    v1_rows,
    v2_locate,
    v2_metadata_tensors,
    v2_outputs,
    v2_rows,
)
from custom_predictor.runtime import ModelFailure, ModelRejectedInput, Runtime, WouldBlock
from custom_predictor.schemas import Schemas, V1Request, V1Response, V2Request, V2Response
from custom_predictor.settings import Settings, service_path_for
from custom_predictor.source import ModelSource, fetch

log = logging.getLogger("custom_predictor")


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status, media_type="application/json"
    )


class NotReadyGate:
    """Answer prediction calls with 503 before the model is ready, without reading or parsing their bodies.

    While the model loads, callers (Knative's activator, load balancers, impatient clients) may poll; turning
    them away cheaply leaves the CPU (and the GIL) to the loading thread.
    """

    def __init__(self, app: ASGIApp, runtime: Runtime, paths: set[str]) -> None:
        self.app, self.runtime, self.paths = app, runtime, paths
        self.body = orjson.dumps({"error": "not_ready", "message": "the model is still loading", "details": []})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.runtime.ready or scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        body = self.body
        if self.runtime.reason:
            body = orjson.dumps({"error": "not_ready", "message": self.runtime.reason, "details": []})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def resolve_contract(source: ModelSource) -> tuple[Contract, dict[Any, dict[str, Any]]]:
    """The model's contract (file, else derived from the signature) and its entity rows (id -> inputs)."""
    if source.contract_file is not None:
        contract = load_contract(source.contract_file)
        label, base = str(source.contract_file), source.contract_file.parent
    else:
        contract = derive_contract(source.model_dir, source.mlmodel)
        label, base = str(source.model_dir / "MLmodel"), source.model_dir
    entities = load_entities(contract, base, label) if contract.entity else {}
    return contract, entities


def _description(source: ModelSource, contract: Contract, flavor: str, notes: list[str] | None = None) -> str:
    origin = "contract.yaml" if contract.source == "contract" else "derived from the MLflow signature"
    lines = [
        contract.description or "",
        "",
        f"**Model** `{source.name}` · **version** `{source.version or '-'}` · **run** `{source.run_id or '-'}` "
        f"· **flavor** `{flavor}` · **contract** {origin}",
    ]
    if notes:
        lines += ["", "**Environment**: this image differs from what the model was logged with:", "", *notes]
    for title, values in (
        ("Params", source.run.get("params")),
        ("Metrics", source.run.get("metrics")),
        ("Tags", source.run.get("tags")),
    ):
        if values:
            lines += ["", f"**{title}**", "", "| name | value |", "|---|---|"]
            lines += [f"| {k} | {str(v).replace('|', '/')[:200]} |" for k, v in sorted(values.items())[:100]]
    return "\n".join(lines).strip()


def create_app(settings: Settings, source: ModelSource | None = None) -> FastAPI:
    """Build the predictor app for the settings' model. Raises SourceError/ContractError when it cannot."""
    source = source or fetch(settings)
    contract, entities = resolve_contract(source)
    path = settings.service_path or service_path_for(source.name)
    runtime = Runtime(
        source.model_dir,
        source.mlmodel,
        contract,
        fast_path=settings.fast_path,
        kernels=settings.kernels,
        verify_kernel=settings.verify_kernel,
        allow_pickle=settings.mlflow_allow_pickle_deserialization,
        requirements_check=settings.requirements_check,
    )
    schemas = Schemas(contract, settings.max_records, source.name)
    metrics = Metrics()
    metrics.record_environment(runtime.findings)
    labels = contract.outputs[0].labels if len(contract.outputs) == 1 else None

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        def load() -> None:
            runtime.load()
            gc.collect()
            gc.freeze()  # the model and libraries are long-lived: keep them out of later GC passes (p99)
            metrics.load_seconds.set(runtime.load_seconds or 0)
            metrics.ready.set(1 if runtime.ready else 0)

        thread = threading.Thread(target=load, name="model-load", daemon=True)
        thread.start()
        yield
        runtime.close()
        await asyncio.to_thread(thread.join, 30)

    app = FastAPI(
        title=f"{source.name} (version {source.version or '-'})",
        version=str(source.version or "0"),
        description=_description(source, contract, runtime.flavor, runtime.notes),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=Response,
    )
    app.state.runtime, app.state.contract, app.state.service_path, app.state.source = runtime, contract, path, source
    errors.install(app)
    predict_paths = {
        f"/{path}/api/v1/predict",
        f"/{path}/api/v1/model/predict",
        f"/v1/models/{path}:predict",
        f"/v2/models/{path}/infer",
    }
    app.add_middleware(NotReadyGate, runtime=runtime, paths=predict_paths)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    static = Path(str(__import__("fastapi_offline").__file__)).parent / "static"
    app.mount(f"/{path}/api/static", StaticFiles(directory=static), name="swagger-static")

    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{source.name} - Swagger UI",
            swagger_js_url=f"/{path}/api/static/swagger-ui-bundle.js",
            swagger_css_url=f"/{path}/api/static/swagger-ui.css",
            swagger_favicon_url=f"/{path}/api/static/favicon.png",
        )

    app.add_api_route(f"/{path}/api/", swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", swagger, methods=["GET"], include_in_schema=False)

    def require_ready() -> None:
        if not runtime.ready:
            raise PredictorError(503, "not_ready", runtime.reason or "the model is still loading")

    async def run(rows: list[dict[str, Any]]) -> list[Any]:
        require_ready()
        try:
            preds = None
            if runtime.inline and len(rows) <= 64:  # quick enough for the event loop, unless scikit-learn must load
                with contextlib.suppress(WouldBlock):
                    preds = runtime.predict(rows, may_block=False)
            if preds is None:
                preds = await run_in_threadpool(runtime.predict, rows)
        except ModelRejectedInput as e:
            raise PredictorError(422, "model_rejected_input", str(e)) from None
        except ModelFailure as e:
            raise PredictorError(500, "model_error", str(e)) from None
        metrics.predictions.inc(len(rows))
        return preds

    def validate_rows(raw: list[Any], prefix: str, locate: Locate) -> list[dict[str, Any]]:
        """Rows from a KServe body against the contract; errors located in that body by `locate`."""
        if len(raw) > settings.max_records:
            raise PredictorError(
                422,
                "invalid_input",
                f"at most {settings.max_records} rows per request",
                [{"loc": prefix, "msg": "too many rows", "type": "too_long"}],
            )
        try:
            rows: list[dict[str, Any]] = schemas.rows.validate_python(raw)
            return rows
        except ValidationError as e:
            raise PredictorError(
                422,
                "invalid_input",
                "the request does not match the model's contract",
                errors.validation_details(e.errors(), locate),
            ) from None

    def predict_body(preds: list[Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"predictions": preds}
        if labels:
            body["labels"] = [labels.get(str(p)) if not isinstance(p, list | dict) else None for p in preds]
        body["model"], body["version"] = source.name, source.version
        return body

    api = APIRouter(prefix=f"/{path}/api/v1", tags=["predict"], responses=errors.RESPONSES)

    async def predict(body: Any) -> Response:
        """Predict one or more records. Each record holds the model's inputs by name."""
        return _json(predict_body(await run(body.records)))

    predict.__annotations__["body"] = schemas.predict_request

    api.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=schemas.predict_response,
        summary="Predict records",
        operation_id="predict",
    )

    if contract.entity:
        ent = contract.entity

        async def predict_entity(body: Any) -> Response:
            """Look up the registered feature row for an id and predict it."""
            key = getattr(body, ent.id)
            row = entities.get(key)
            if row is None:
                raise PredictorError(404, "not_found", f"no registered row has this {ent.id}")
            out = predict_body(await run([row]))
            return _json({**out, ent.id: key, "features": row})

        predict_entity.__annotations__["body"] = schemas.entity_request

        async def dataset(limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0)) -> Response:
            """The registered feature rows (id and inputs), a page at a time."""
            items = list(entities.items())[offset : offset + limit]
            return _json({"total": len(entities), "rows": [{ent.id: k, **v} for k, v in items]})

        api.add_api_route(
            "/model/predict",
            predict_entity,
            methods=["POST"],
            operation_id="predict_entity",
            response_model=schemas.entity_response,
            summary=f"Predict by {ent.id}",
        )
        api.add_api_route(
            "/model/dataset",
            dataset,
            methods=["GET"],
            operation_id="dataset",
            response_model=schemas.dataset_response,
            summary="Registered feature rows",
        )
    app.include_router(api)

    model_name: Any = Annotated[
        str,
        FastAPIPath(
            description=f"The model's name in the KServe protocols: `{path}` (any other is a 404).",
            openapi_examples={"this predictor's model": {"value": path}},
        ),
    ]

    def check_name(name: str) -> None:
        if name != path:
            raise PredictorError(404, "not_found", f"this predictor serves the model '{path}' only")

    kserve = APIRouter(tags=["kserve"], responses=errors.RESPONSES)

    def kserve_route(route: str, method: str, *, body: Any = None, **kw: Any) -> Callable[[Any], Any]:
        """Register a KServe route with its `name` (and `body`) typed for this model in the OpenAPI document."""

        def register(fn: Any) -> Any:
            if "name" in fn.__annotations__:
                fn.__annotations__["name"] = model_name
            if body is not None:
                fn.__annotations__["body"] = body
            kserve.add_api_route(route, fn, methods=[method], **kw)
            return fn

        return register

    @kserve_route(
        "/v1/models/{name}:predict",
        "POST",
        body=schemas.v1_request,
        response_model=V1Response,
        operation_id="v1_predict",
        summary="KServe V1 predict",
    )
    async def v1_predict(name: str, body: V1Request) -> Response:
        check_name(name)
        locate = v1_locate(body.instances, contract.input_names)
        rows = validate_rows(v1_rows(body.instances, contract.input_names), "instances", locate)
        return _json({"predictions": await run(rows)})

    @kserve_route("/v1/models/{name}", "GET", operation_id="v1_model", summary="KServe V1 model status")
    async def v1_model(name: str) -> Response:
        check_name(name)
        return _json({"name": path, "ready": runtime.ready}, 200 if runtime.ready else 503)

    @kserve.get("/v1/models", operation_id="v1_models", summary="KServe V1 model list")
    async def v1_models() -> Response:
        return _json({"models": [path]})

    @kserve_route(
        "/v2/models/{name}/infer",
        "POST",
        body=schemas.v2_request,
        response_model=V2Response,
        operation_id="v2_infer",
        summary="Open Inference Protocol (V2) infer",
    )
    async def v2_infer(name: str, body: V2Request) -> Response:
        check_name(name)
        rows = validate_rows(v2_rows(body, contract, settings.max_records), "inputs", v2_locate(body, contract))
        outputs = v2_outputs(await run(rows), contract)
        if body.outputs:
            wanted = {o.name for o in body.outputs}
            outputs = [o for o in outputs if o["name"] in wanted] or outputs
        return _json(
            {"model_name": path, "model_version": source.version, "id": body.id, "parameters": {}, "outputs": outputs}
        )

    @kserve_route("/v2/models/{name}", "GET", operation_id="v2_model_metadata", summary="V2 model metadata")
    async def v2_metadata(name: str) -> Response:
        check_name(name)
        outs = [
            {
                "name": o.name,
                "datatype": {"integer": "INT64", "double": "FP64", "boolean": "BOOL"}.get(o.type or "", "BYTES"),
                "shape": [-1],
            }
            for o in contract.outputs
        ]
        return _json(
            {
                "name": path,
                "versions": [source.version] if source.version else [],
                "platform": f"mlflow-{runtime.flavor}",
                "inputs": v2_metadata_tensors(contract),
                "outputs": outs,
            }
        )

    @kserve_route("/v2/models/{name}/ready", "GET", operation_id="v2_model_ready", summary="V2 model readiness")
    async def v2_model_ready(name: str) -> Response:
        check_name(name)
        return _json({"name": path, "ready": runtime.ready}, 200 if runtime.ready else 503)

    @kserve.get("/v2", operation_id="v2_server_metadata", summary="V2 server metadata")
    async def v2_server() -> Response:
        return _json({"name": "custom-predictor", "version": "0.1.0", "extensions": []})

    app.include_router(kserve)
    health = APIRouter(tags=["health"])

    @health.get("/v2/health/live", operation_id="live", summary="Liveness: the server runs")
    async def live() -> Response:
        return _json({"live": True})

    @health.get(
        "/v2/health/ready",
        operation_id="ready",
        summary="Readiness: model loaded and self-test passed",
        responses={503: {"model": ErrorBody}},
    )
    async def ready() -> Response:
        if runtime.ready:
            return _json({"ready": True})
        return _json({"ready": False, "state": runtime.state, "reason": runtime.reason}, 503)

    @health.get("/healthz", operation_id="healthz", summary="Plain health check (same as readiness)")
    async def healthz() -> Response:
        return await ready()

    @health.get("/metrics", operation_id="metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics_route() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.runtime.info({"kind": runtime.kind or "none", "kernel_check": runtime.kernel_check or "none"})
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(health)

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> Response:
        return _json(
            {
                "model": source.name,
                "version": source.version,
                "docs": f"/{path}/api/",
                "predict": f"/{path}/api/v1/predict",
                "ready": runtime.ready,
            }
        )

    return app


__all__ = ["ContractError", "create_app", "resolve_contract"]
