"""MLflow's scoring protocol, as `mlflow models serve` speaks it: `POST /invocations` (JSON with one of
`dataframe_split`, `dataframe_records`, `instances`, `inputs`, and `params`; or CSV), `GET /ping`, `/health`,
`/version`. Existing MLflow scoring code (MLflow's own `ScoringServerClient` included) works pointed at us.

Typed models are parsed without pandas (`codec`) and validated against the contract; an untyped model gets
MLflow's own parsers, so it sees exactly the DataFrame or array `mlflow models serve` would give it. Errors are
MLflow's shape and codes.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from custom_predictor import errors
from custom_predictor.dataplane import DataPlane
from custom_predictor.openapi import Bodies, schema_of
from custom_predictor.outputs import count
from custom_predictor.protocols.mlflow import codec
from custom_predictor.protocols.mlflow.schemas import RESPONSES, examples, invocations_type
from custom_predictor.schemas import Schemas


@functools.cache
def _mlflow_version() -> str:
    for name in ("mlflow", "mlflow-skinny"):
        try:
            return package_version(name)
        except PackageNotFoundError:
            continue
    return "unknown"


def router(plane: DataPlane, schemas: Schemas, bodies: Bodies, caller: Any, serving_example: Any = None) -> APIRouter:
    api = APIRouter(tags=["mlflow"], responses=RESPONSES, route_class=errors.route_class(codec.render, "mlflow"))

    async def ping() -> Response:
        return Response("\n", status_code=200 if plane.runtime.ready else 503, media_type="application/json")

    async def mlflow_version() -> Response:
        return Response(_mlflow_version(), media_type="application/json")

    async def invocations(request: Request) -> Response:
        kind = codec.media_type(request.headers.get("content-type"))
        body = await plane.body(request, kind)
        data, params = await plane.decode(len(body), codec.decode, schemas, kind, body)
        call = request.state.call
        call.rows_in = count(data)
        if plane.typed:
            out = await plane.predict(data, params=params)
        else:
            out = await plane.predict_raw(data, params)
        response = codec.predictions(out)
        call.rows_out = count(out)
        plane.keep(request, data, lambda: bytes(response.body).decode())
        return response

    for path, summary in (("/ping", "MLflow liveness (200 once the model is ready)"), ("/health", "Same as /ping")):
        api.add_api_route(path, ping, methods=["GET"], operation_id=f"mlflow_{path[1:]}", summary=summary)
    api.add_api_route(
        "/version", mlflow_version, methods=["GET"], operation_id="mlflow_version", summary="MLflow version"
    )
    api.add_api_route(
        "/invocations",
        invocations,
        methods=["POST"],
        dependencies=[caller, Depends(plane.require_ready)],
        operation_id="mlflow_invocations",
        summary="MLflow scoring (`mlflow models serve`'s /invocations)",
        description="Exactly one of `dataframe_split`, `dataframe_records`, `instances`, `inputs` (with `params`), "
        'or CSV with a header row. Answers `{"predictions": [...]}` as MLflow does.',
    )
    bodies.add("mlflow_invocations", lambda: _body(schemas, serving_example))
    return api


def _body(schemas: Schemas, serving_example: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    schema, defs = schema_of(invocations_type(schemas.contract, schemas, schemas.max_records))
    json_example, csv_example = examples(schemas.contract, schemas, serving_example)
    content: dict[str, Any] = {"application/json": {"schema": schema, "example": json_example}}
    content["text/csv"] = {"schema": {"type": "string", "description": "A header row, then one row per line."}}
    if csv_example:
        content["text/csv"]["example"] = csv_example
    return {"required": True, "content": content}, defs
