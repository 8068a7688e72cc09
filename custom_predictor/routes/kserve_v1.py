"""KServe V1, as KServe's own model server answers it: `GET /` (liveness, `{"status": "alive"}`, with this
model's name and links besides), the model
list, `GET /v1/models/<name>` (200 ready, 503 not yet) and `POST /v1/models/<name>:predict` with `instances`
(records, or arrays of values in input order; for an untyped model, read as MLflow reads `instances`). Errors
are KServe's shape (`KServeErrorBody`); another model name is a 404 on every route.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.responses import Response

from custom_predictor import errors
from custom_predictor.errors import json_response
from custom_predictor.kserve_schemas import V1Request, V1Response
from custom_predictor.protocols.mlflow_scoring import untyped_data
from custom_predictor.protocols.v1 import v1_locate, v1_rows
from custom_predictor.service import PredictionService


def router(service: PredictionService) -> APIRouter:
    api = APIRouter(
        tags=["kserve"],
        responses=errors.KSERVE_RESPONSES,
        route_class=errors.route_class(errors.render_kserve),
    )
    name = [Depends(service.name_param())]
    names = service.contract.input_names

    async def live() -> Response:
        """KServe's liveness answer, plus where this model's API is."""
        return json_response(
            {
                "status": "alive",
                "model": service.source.name,
                "version": service.version,
                "docs": f"/{service.path}/api/",
                "predict": f"/{service.path}/api/v1/predict",
                "ready": service.runtime.ready,
            }
        )

    async def models() -> Response:
        return json_response({"models": [service.path]})

    async def model_ready() -> Response:
        ready = service.runtime.ready
        return json_response({"name": service.path, "ready": ready}, 200 if ready else 503)

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

    async def predict(body: V1Request) -> Response:
        if not service.typed:  # MLflow's reading of `instances`: records as a DataFrame, arrays as an array
            out = await service.predict_raw(untyped_data("instances", body.instances))
            return json_response({"predictions": service.rows_of(out)})
        rows = service.validate(v1_rows(body.instances, names), "instances", v1_locate(body.instances, names))
        return json_response({"predictions": await service.predict(rows)})

    predict.__annotations__["body"] = service.schemas.v1_request or V1Request
    api.add_api_route(
        "/v1/models/{name}:predict",
        predict,
        methods=["POST"],
        dependencies=[*name, Depends(service.require_ready)],
        response_model=V1Response,
        operation_id="v1_predict",
        summary="KServe V1 predict",
    )
    return api
