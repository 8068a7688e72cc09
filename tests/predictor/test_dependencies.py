"""FastAPI's own request handling runs for every data route: a dependency declared on a router that includes the
predictor's routes, and one declared on the app above it, run for every data route and every content type,
valid body or not (the predictor has no request path of its own beside FastAPI's: `lane.py` is gone). The real
predictor app's routes, included as any FastAPI app includes a router, with its middleware and lifespan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.testclient import TestClient

from custom_predictor.app import create_app
from custom_predictor.calls import Calls
from custom_predictor.settings import Settings
from tests.predictor.conftest import ROW

TENSORS = {"inputs": [{"name": k, "shape": [1], "datatype": "FP64", "data": [v]} for k, v in ROW.items()]}
ROUTES = [
    ("/m/api/v1/predict", orjson.dumps({"records": [ROW]})),
    ("/m/api/v1/model/predict", b'{"patient_id": 1001}'),
    ("/v1/models/m:predict", orjson.dumps({"instances": [ROW]})),
    ("/v2/models/m/infer", orjson.dumps(TENSORS)),
    ("/v2/models/m/versions/1/infer", orjson.dumps(TENSORS)),
    ("/invocations", orjson.dumps({"dataframe_records": [ROW]})),
]
CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "text/plain", "application/octet-stream"]


@pytest.fixture(scope="module")
def outer(local_models: dict[str, Path]) -> Any:
    app = create_app(Settings(model_uri=str(local_models["contract"]), service_path="m"))
    seen: list[tuple[str, str]] = []

    async def by_router(request: Request) -> None:
        seen.append(("router", request.url.path))

    async def by_app(request: Request) -> None:
        seen.append(("app", request.url.path))

    router = APIRouter(dependencies=[Depends(by_router)])
    router.include_router(app.router)
    wrapped = FastAPI(dependencies=[Depends(by_app)], lifespan=app.router.lifespan_context, openapi_url=None)
    wrapped.include_router(router)
    calls = next(m for m in app.user_middleware if m.cls is Calls)
    wrapped.add_middleware(Calls, **calls.kwargs)
    with TestClient(wrapped, raise_server_exceptions=False) as client:
        assert app.state.runtime.wait(120)
        yield client, seen


@pytest.mark.parametrize(("path", "body"), ROUTES)
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("valid", [True, False], ids=["valid", "broken"])
def test_router_and_app_dependencies_run_for_every_data_route(
    outer: Any, path: str, body: bytes, content_type: str | None, valid: bool
) -> None:
    client, seen = outer
    seen.clear()
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(path, content=body if valid else body[:-3], headers=headers)
    assert r.status_code < 500, r.text
    assert seen == [("app", path), ("router", path)], (r.status_code, r.text)
