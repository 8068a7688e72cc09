"""Open Inference Protocol (KServe V2, Triton's HTTP protocol): server metadata, model metadata and readiness,
and `infer`, also under `/versions/<version>` (as tritonclient asks with a model version).

`infer` reads its body itself: JSON whatever the Content-Type (a JSON body without one, as tritonclient sends,
or `application/octet-stream` without the binary header), or the binary tensor data extension when
`Inference-Header-Content-Length` is given; the answer is binary when the request asks for binary outputs.
Errors are KServe's shape; another model name or version is a 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import Response

from custom_predictor import errors
from custom_predictor.errors import json_response
from custom_predictor.kserve_schemas import V2Request, V2Response
from custom_predictor.protocols import v2
from custom_predictor.protocols.v2_binary import HEADER, split
from custom_predictor.protocols.v2_datatypes import METADATA_TYPES
from custom_predictor.protocols.v2_outputs import check_requested, metadata_outputs, output_names, respond, v2_outputs
from custom_predictor.routes.docs import Bodies, schema_of
from custom_predictor.service import PredictionService

EXTENSIONS = ["binary_tensor_data"]
"""Protocol extensions this server supports, listed in its metadata."""
BINARY = (
    "The binary tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes (this schema, with "
    "`parameters.binary_data_size` instead of `data`), then each such tensor's raw data: little-endian numbers, "
    "BOOL one byte each, BYTES each a 4-byte little-endian length and its bytes."
)


def router(service: PredictionService, bodies: Bodies) -> APIRouter:
    api = APIRouter(
        tags=["kserve"], responses=errors.KSERVE_RESPONSES, route_class=errors.route_class(errors.render_kserve)
    )
    name, version = Depends(service.name_param()), Depends(service.version_param())
    contract = service.contract

    async def server() -> Response:
        return json_response({"name": "custom-predictor", "version": "0.1.0", "extensions": EXTENSIONS})

    async def metadata() -> Response:
        tensors = [{"name": s.name, "datatype": METADATA_TYPES[s.type], "shape": [-1]} for s in contract.inputs]
        return json_response(
            {
                "name": service.path,
                "versions": [service.version] if service.version else [],
                "platform": f"mlflow-{service.runtime.flavor}",
                "inputs": tensors,
                "outputs": metadata_outputs(contract),
            }
        )

    async def ready() -> Response:
        ok = service.runtime.ready
        return json_response({"name": service.path, "ready": ok}, 200 if ok else 503)

    async def infer(request: Request) -> Response:
        head, tail = split(await request.body(), request.headers.get(HEADER))
        try:
            req = V2Request.model_validate_json(head)
        except ValidationError as e:
            raise errors.from_validation(list(e.errors())) from None
        check_requested(req, output_names(contract))
        tensors = v2.read_tensors(req, tail)
        if service.typed:
            rows, locate = v2.rows(tensors, contract, service.max_records)
            outputs = v2_outputs(await service.predict(service.validate(rows, "inputs", locate)), contract)
        else:
            outputs = v2_outputs(service.rows_of(await service.predict_raw(v2.model_input(tensors))), contract)
        head_out: dict[str, Any] = {
            "model_name": service.path,
            "model_version": service.version,
            "id": req.id,
            "parameters": {},
        }
        content, headers = respond(req, outputs, head_out)
        media = "application/octet-stream" if headers else "application/json"
        return Response(content, media_type=media, headers=headers)

    api.add_api_route("/v2", server, methods=["GET"], operation_id="v2_server_metadata", summary="V2 server metadata")
    routes = (("/v2/models/{name}", [name], ""), ("/v2/models/{name}/versions/{version}", [name, version], "_version"))
    for prefix, deps, suffix in routes:
        api.add_api_route(
            prefix,
            metadata,
            methods=["GET"],
            dependencies=deps,
            operation_id=f"v2_model_metadata{suffix}",
            summary="V2 model metadata",
        )
        api.add_api_route(
            f"{prefix}/ready",
            ready,
            methods=["GET"],
            dependencies=deps,
            operation_id=f"v2_model_ready{suffix}",
            summary="V2 model readiness",
        )
        api.add_api_route(
            f"{prefix}/infer",
            infer,
            methods=["POST"],
            dependencies=[*deps, Depends(service.require_ready)],
            response_model=V2Response,
            operation_id=f"v2_infer{suffix}",
            summary="Open Inference Protocol (V2) infer",
            description="JSON, or the binary tensor data extension (`Inference-Header-Content-Length`); outputs "
            "as binary data when asked (`parameters.binary_data_output`, or an output's `parameters.binary_data`).",
        )
        bodies.add(f"v2_infer{suffix}", lambda: _body(service))
    return api


def _body(service: PredictionService) -> tuple[dict[str, Any], dict[str, Any]]:
    schema, defs = schema_of(service.schemas.v2_request)
    json_body: dict[str, Any] = {"schema": schema}
    if service.typed:
        json_body["example"] = service.schemas.v2_request.model_config["json_schema_extra"]["examples"][0]
    binary = {"schema": {"type": "string", "format": "binary", "description": BINARY}}
    return {"required": True, "content": {"application/json": json_body, "application/octet-stream": binary}}, defs
