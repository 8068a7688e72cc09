"""The typed API under `/<path>/api/v1`: records in, predictions (with labels) out; the entity lookup by id and
its feature rows when the contract registers them. Bodies are the contract's own models (`schemas`), so FastAPI
validates them and the Swagger page documents them; errors are `ErrorBody`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from starlette.responses import Response

from custom_predictor import errors
from custom_predictor.errors import PredictorError, json_response
from custom_predictor.service import PredictionService

UNTYPED = (
    " This model was logged with no signature and no contract, so records are not checked: each is a row of the "
    "DataFrame given to the model. Log the model with a signature (`infer_signature`, or an `input_example`) or a "
    "contract.yaml to get typed inputs, exact schemas and examples here."
)


def router(service: PredictionService) -> APIRouter:
    schemas = service.schemas
    api = APIRouter(
        prefix=f"/{service.path}/api/v1",
        tags=["predict"],
        responses=errors.RESPONSES,
        route_class=errors.route_class(errors.render_default),
    )
    ready = [Depends(service.require_ready)]

    async def predict(body: Any) -> Response:
        return json_response(service.answer(await service.predict(body.records)))

    example = {"records": [schemas.example]}  # as given: an untyped model's columns keep their order
    predict.__annotations__["body"] = Annotated[
        schemas.predict_request, Body(openapi_examples={"example": {"summary": "A valid request", "value": example}})
    ]
    api.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=schemas.predict_response,
        summary="Predict records",
        dependencies=ready,
        description="Predict one or more records. Each record holds the model's inputs by name."
        + ("" if service.typed else UNTYPED),
        operation_id="predict",
    )
    if service.contract.entity:
        _entity_routes(api, service)
    return api


def _entity_routes(api: APIRouter, service: PredictionService) -> None:
    ent, entities, schemas = service.contract.entity, service.entities, service.schemas
    assert ent

    async def predict_entity(body: Any) -> Response:
        """Look up the registered feature row for an id and predict it."""
        key = getattr(body, ent.id)
        row = entities.get(key)
        if row is None:
            raise PredictorError(404, "not_found", f"no registered row has this {ent.id}")
        out = service.answer(await service.predict([row]))
        return json_response({**out, ent.id: key, "features": row})

    predict_entity.__annotations__["body"] = schemas.entity_request

    async def dataset(limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0)) -> Response:
        """The registered feature rows (id and inputs), a page at a time."""
        items = list(entities.items())[offset : offset + limit]
        return json_response({"total": len(entities), "rows": [{ent.id: k, **v} for k, v in items]})

    api.add_api_route(
        "/model/predict",
        predict_entity,
        methods=["POST"],
        dependencies=[Depends(service.require_ready)],
        operation_id="predict_entity",
        response_model=schemas.entity_response,
        summary=f"Predict by {ent.id}",
        responses={
            404: errors.documented(errors.ErrorBody, _not_found(ent.id), f"No registered row has this {ent.id}.")
        },
    )
    api.add_api_route(
        "/model/dataset",
        dataset,
        methods=["GET"],
        operation_id="dataset",
        response_model=schemas.dataset_response,
        summary="Registered feature rows",
    )


def _not_found(id_name: str) -> dict[str, Any]:
    return {"error": "not_found", "message": f"no registered row has this {id_name}", "details": []}
