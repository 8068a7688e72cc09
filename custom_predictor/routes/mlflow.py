"""MLflow's scoring protocol, as `mlflow models serve` speaks it: `POST /invocations` (JSON with one of
`dataframe_split`, `dataframe_records`, `instances`, `inputs`, and `params`; or CSV), `GET /ping`, `/health`,
`/version`. Existing MLflow scoring code (MLflow's own `ScoringServerClient` included) works pointed at us.

Typed models are parsed without pandas (`protocols.mlflow_scoring`) and validated against the contract; an
untyped model gets MLflow's own parsers, so it sees exactly the DataFrame or array `mlflow models serve` would
give it. Errors are MLflow's shape and codes.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from custom_predictor import errors
from custom_predictor.mlflow_schemas import examples, invocations_type
from custom_predictor.protocols import mlflow_scoring as scoring
from custom_predictor.routes.docs import Bodies, schema_of
from custom_predictor.service import PredictionService


@functools.cache
def _mlflow_version() -> str:
    for name in ("mlflow", "mlflow-skinny"):
        try:
            return package_version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def router(service: PredictionService, bodies: Bodies, serving_example: Any = None) -> APIRouter:
    api = APIRouter(tags=["mlflow"], responses=scoring.RESPONSES, route_class=errors.route_class(scoring.render))
    contract = service.contract

    async def ping() -> Response:
        return Response("\n", status_code=200 if service.runtime.ready else 503, media_type="application/json")

    async def mlflow_version() -> Response:
        return Response(_mlflow_version(), media_type="application/json")

    async def invocations(request: Request) -> Response:
        kind = scoring.media_type(request.headers.get("content-type"))
        body = await request.body()
        if not service.typed:
            data, params = scoring.untyped_input(kind, body)
            return scoring.predictions(await service.predict_raw(data, params))
        params = None
        if kind == "csv":
            rows, locate = scoring.csv_rows(body, contract)
            where = "csv"
        else:
            where, data, params = scoring.split_json(body)
            rows, locate = scoring.json_rows(where, data, contract)
        rows = service.validate(scoring.keep_inputs(rows, contract), where, locate, status=400)
        return scoring.predictions(await service.predict(rows, params=params, raw=True))

    for path, summary in (("/ping", "MLflow liveness (200 once the model is ready)"), ("/health", "Same as /ping")):
        api.add_api_route(path, ping, methods=["GET"], operation_id=f"mlflow_{path[1:]}", summary=summary)
    api.add_api_route(
        "/version", mlflow_version, methods=["GET"], operation_id="mlflow_version", summary="MLflow version"
    )
    api.add_api_route(
        "/invocations",
        invocations,
        methods=["POST"],
        dependencies=[Depends(service.require_ready)],
        operation_id="mlflow_invocations",
        summary="MLflow scoring (`mlflow models serve`'s /invocations)",
        description="Exactly one of `dataframe_split`, `dataframe_records`, `instances`, `inputs` (with `params`), "
        'or CSV with a header row. Answers `{"predictions": [...]}` as MLflow does.',
    )
    bodies.add("mlflow_invocations", lambda: _body(service, serving_example))
    return api


def _body(service: PredictionService, serving_example: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    schema, defs = schema_of(invocations_type(service.contract, service.schemas, service.max_records))
    json_example, csv_example = examples(service.contract, service.schemas, serving_example)
    content: dict[str, Any] = {"application/json": {"schema": schema, "example": json_example}}
    content["text/csv"] = {"schema": {"type": "string", "description": "A header row, then one row per line."}}
    if csv_example:
        content["text/csv"]["example"] = csv_example
    return {"required": True, "content": content}, defs
