"""Open Inference Protocol (KServe V2, Triton's HTTP protocol): server metadata, model metadata and readiness,
and `infer`, also under `/versions/<version>` (as tritonclient asks with a model version).

`infer` reads its body once: JSON whatever the Content-Type (a JSON body without one, as tritonclient sends, or
`application/octet-stream` without the binary header), or the binary tensor data extension when
`Inference-Header-Content-Length` is given; the answer is binary when the request asks for binary outputs
(`codec`). Errors are KServe's shape; another model name or version is a 404.
"""

from __future__ import annotations

import functools
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from custom_predictor import errors
from custom_predictor.dataplane import DataPlane
from custom_predictor.errors import json_response
from custom_predictor.openapi import Bodies, json_body
from custom_predictor.protocols.v2 import codec
from custom_predictor.protocols.v2.binary import HEADER
from custom_predictor.protocols.v2.datatypes import METADATA_TYPES
from custom_predictor.protocols.v2.schemas import V2Request, V2Response, example, output_names, v2_request_model
from custom_predictor.schemas import Schemas

EXTENSIONS = ["binary_tensor_data"]
"""Protocol extensions this server supports, listed in its metadata."""
BINARY = (
    "The binary tensor data extension: a JSON header of `Inference-Header-Content-Length` bytes (this schema, with "
    "`parameters.binary_data_size` instead of `data`), then each such tensor's raw data: little-endian numbers, "
    "BOOL one byte each, BYTES each a 4-byte little-endian length and its bytes."
)


def router(plane: DataPlane, schemas: Schemas, bodies: Bodies, caller: Any) -> APIRouter:
    api = APIRouter(
        tags=["kserve"],
        responses=errors.KSERVE_RESPONSES,
        route_class=errors.route_class(errors.render_kserve, "v2"),
    )
    name, version = Depends(plane.name_param()), Depends(plane.version_param())
    contract, max_rows = plane.contract, schemas.max_records
    types = {o.name: o.type for o in contract.outputs}

    async def server() -> Response:
        return json_response({"name": "custom-predictor", "version": "0.1.0", "extensions": EXTENSIONS})

    async def metadata() -> Response:
        tensors = [{"name": s.name, "datatype": METADATA_TYPES[s.type], "shape": [-1]} for s in contract.inputs]
        outs = [
            {"name": n, "datatype": METADATA_TYPES.get(types.get(n) or "", "BYTES"), "shape": [-1]}
            for n in output_names(contract)
        ]
        return json_response(
            {
                "name": plane.path,
                "versions": [plane.version] if plane.version else [],
                "platform": f"mlflow-{plane.runtime.flavor}",
                "inputs": tensors,
                "outputs": outs,
            }
        )

    async def ready() -> Response:
        ok = plane.runtime.ready
        return json_response({"name": plane.path, "ready": ok}, 200 if ok else 503)

    async def infer(request: Request) -> Response:
        header = request.headers.get(HEADER)
        body = await plane.body(request, "json" if header is None else "binary")
        decoded = await plane.decode(len(body), codec.decode, contract, body, header, max_rows)
        call, data = request.state.call, decoded.data
        call.rows_in = len(data)
        out = await plane.predict(data) if plane.typed else await plane.predict_raw(data)
        outs = codec.outputs(out, contract)
        call.rows_out = len(outs[0].values) if outs and outs[0].values.ndim else None
        head: dict[str, Any] = {
            "model_name": plane.path,
            "model_version": plane.version,
            "id": decoded.request.id,
            "parameters": {},
        }
        plane.keep(request, data, lambda: {**head, "outputs": [o.as_json() for o in outs]})
        content, headers = codec.encode(outs, decoded.request, head)
        media = "application/octet-stream" if headers else "application/json"
        return Response(content, media_type=media, headers=headers)

    documented = functools.cache(lambda: _body(schemas))  # one component model for both infer routes
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
            dependencies=[caller, *deps, Depends(plane.require_ready)],
            response_model=V2Response,
            operation_id=f"v2_infer{suffix}",
            summary="Open Inference Protocol (V2) infer",
            description="JSON, or the binary tensor data extension (`Inference-Header-Content-Length`); outputs "
            "as binary data when asked (`parameters.binary_data_output`, or an output's `parameters.binary_data`).",
        )
        bodies.add(f"v2_infer{suffix}", documented)
    return api


def _body(schemas: Schemas) -> tuple[dict[str, Any], dict[str, Any]]:
    binary = {"schema": {"type": "string", "format": "binary", "description": BINARY}}
    if not schemas.typed:
        return json_body(V2Request, None, **{"application/octet-stream": binary})
    contract = schemas.contract
    model = v2_request_model(contract, schemas.max_records, schemas.example)
    return json_body(model, example(contract, schemas.example), **{"application/octet-stream": binary})
