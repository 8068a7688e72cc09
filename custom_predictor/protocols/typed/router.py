"""The typed API under `/<path>/api/v1`: records in, predictions (with labels) out; the entity lookup by id and its
feature rows when the contract registers them. Each route reads its body once (`codec`), the request models are
documented in the OpenAPI document (`Bodies`), errors are `ErrorBody`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from custom_predictor import errors
from custom_predictor.dataplane import DataPlane
from custom_predictor.errors import PredictorError, json_response
from custom_predictor.openapi import Bodies, json_body
from custom_predictor.protocols.typed import codec
from custom_predictor.schemas import Schemas

UNTYPED = (
    " This model was logged with no signature and no contract, so records are not checked: each is a row of the "
    "DataFrame given to the model. Log the model with a signature (`infer_signature`, or an `input_example`) or a "
    "contract.yaml to get typed inputs, exact schemas and examples here."
)


def router(plane: DataPlane, schemas: Schemas, bodies: Bodies, caller: Any) -> APIRouter:
    api = APIRouter(
        prefix=f"/{plane.path}/api/v1",
        tags=["predict"],
        responses=errors.RESPONSES,
        route_class=errors.route_class(errors.render_default, "typed"),
    )
    guard = [caller, Depends(plane.require_ready)]
    contract, name, version = plane.contract, plane.source.name, plane.version

    async def predict(request: Request) -> Response:
        body = await plane.body(request, "json")
        data = await plane.decode(len(body), codec.decode, schemas, body)
        call = request.state.call
        call.rows_in = len(data)
        out = await plane.predict(data) if plane.typed else await plane.predict_raw(data)
        answer = codec.answer(out, contract, name, version)
        call.rows_out = len(answer["predictions"])
        plane.keep(request, data, lambda: answer)
        return json_response(answer)

    api.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        response_model=schemas.predict_response,
        summary="Predict records",
        dependencies=guard,
        description="Predict one or more records. Each record holds the model's inputs by name."
        + ("" if plane.typed else UNTYPED),
        operation_id="predict",
    )
    example = {"records": [schemas.example]}  # as given: an untyped model's columns keep their order
    bodies.add("predict", lambda: json_body(schemas.predict_request, example))
    if contract.entity:
        _entity_routes(api, plane, schemas, bodies, guard)
    return api


def _entity_routes(api: APIRouter, plane: DataPlane, schemas: Schemas, bodies: Bodies, guard: list[Any]) -> None:
    ent, entities, contract = plane.contract.entity, plane.entities, plane.contract
    assert ent
    from custom_predictor.columns import Columns

    async def predict_entity(request: Request) -> Response:
        """Look up the registered feature row for an id and predict it."""
        key = codec.decode_id(schemas, await plane.body(request, "json"), ent.id)
        call = request.state.call
        call.entity_id = str(key)
        row = entities.get(key)
        if row is None:
            raise PredictorError(404, "not_found", f"no registered row has this {ent.id}")
        call.rows_in = 1
        columns = Columns.from_rows([row], contract)
        out = codec.answer(await plane.predict(columns), contract, *_named(plane))
        call.rows_out = len(out["predictions"])
        answer = {**out, ent.id: key, "features": row}
        plane.keep(request, columns, lambda: {**out, ent.id: key})  # the features: in the request, redacted
        return json_response(answer)

    async def dataset(
        request: Request, limit: int = Query(100, ge=1, le=10_000), offset: int = Query(0, ge=0)
    ) -> Response:
        """The registered feature rows (id and inputs), a page at a time."""
        items = list(entities.items())[offset : offset + limit]
        request.state.call.rows_out = len(items)
        return json_response({"total": len(entities), "rows": [{ent.id: k, **v} for k, v in items]})

    api.add_api_route(
        "/model/predict",
        predict_entity,
        methods=["POST"],
        dependencies=guard,
        operation_id="predict_entity",
        response_model=schemas.entity_response,
        summary=f"Predict by {ent.id}",
        responses={
            404: errors.documented(errors.ErrorBody, _not_found(ent.id), f"No registered row has this {ent.id}.")
        },
    )
    example = schemas.entity_example
    bodies.add(
        "predict_entity", lambda: json_body(schemas.entity_request, None if example is None else {ent.id: example})
    )
    api.add_api_route(
        "/model/dataset",
        dataset,
        methods=["GET"],
        dependencies=guard[:1],
        operation_id="dataset",
        response_model=schemas.dataset_response,
        summary="Registered feature rows",
    )


def _named(plane: DataPlane) -> tuple[str, str | None]:
    return plane.source.name, plane.version


def _not_found(id_name: str) -> dict[str, Any]:
    return {"error": "not_found", "message": f"no registered row has this {id_name}", "details": []}
