"""KServe V1, as KServe's own model server answers it: `GET /` (liveness, `{"status": "alive"}`, with this model's
name and links besides), the model list, `GET /v1/models/<name>` (200 ready, 503 not yet) and
`POST /v1/models/<name>:predict` with `instances`. Errors are KServe's shape (`KServeErrorBody`); another model
name is a 404 on every route.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from custom_predictor import errors
from custom_predictor.dataplane import DataPlane
from custom_predictor.errors import json_response
from custom_predictor.openapi import Bodies, json_body
from custom_predictor.outputs import to_list
from custom_predictor.protocols.v1 import codec
from custom_predictor.protocols.v1.schemas import V1Response, request_model
from custom_predictor.schemas import Schemas


def router(plane: DataPlane, schemas: Schemas, bodies: Bodies, caller: Any) -> APIRouter:
    api = APIRouter(
        tags=["kserve"],
        responses=errors.KSERVE_RESPONSES,
        route_class=errors.route_class(errors.render_kserve, "kserve_v1"),
    )
    name = [Depends(plane.name_param())]

    async def live() -> Response:
        """KServe's liveness answer, plus where this model's API is."""
        return json_response(
            {
                "status": "alive",
                "model": plane.source.name,
                "version": plane.version,
                "docs": f"/{plane.path}/api/",
                "predict": f"/{plane.path}/api/v1/predict",
                "ready": plane.runtime.ready,
            }
        )

    async def models() -> Response:
        return json_response({"models": [plane.path]})

    async def model_ready() -> Response:
        ready = plane.runtime.ready
        return json_response({"name": plane.path, "ready": ready}, 200 if ready else 503)

    api.add_api_route("/", live, methods=["GET"], operation_id="v1_live", summary="KServe V1 liveness")
    api.add_api_route("/v1/models", models, methods=["GET"], operation_id="v1_models", summary="KServe V1 model list")
    api.add_api_route(
        "/v1/models/{name}",
        model_ready,
        methods=["GET"],
        dependencies=name,
        operation_id="v1_model",
        summary="KServe V1 model readiness",
    )

    async def predict(request: Request) -> Response:
        body = await plane.body(request, "json")
        data = await plane.decode(len(body), codec.decode, schemas, body)
        call = request.state.call
        call.rows_in = len(data)
        out = to_list(await plane.predict(data) if plane.typed else await plane.predict_raw(data))
        call.rows_out = len(out)
        plane.keep(request, data, lambda: {"predictions": out})
        return json_response({"predictions": out})

    api.add_api_route(
        "/v1/models/{name}:predict",
        predict,
        methods=["POST"],
        dependencies=[caller, *name, Depends(plane.require_ready)],
        response_model=V1Response,
        operation_id="v1_predict",
        summary="KServe V1 predict",
    )
    example = {"instances": [schemas.example]} if schemas.typed else None
    bodies.add("v1_predict", lambda: json_body(request_model(schemas), example))
    return api
