"""The direct lane (`custom_predictor.lane`): which routes take it, and that the predictor answers every request
as FastAPI alone does (the same status, body and content type), on a real contract model, in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from starlette.responses import Response

from custom_predictor import errors, lane
from tests.predictor.conftest import ROW, in_process

PATH = "breast-cancer-risk"
API = f"/{PATH}/api/v1"


class Lanes:
    """Counts what the lanes of an app did: requests served directly, and handed to FastAPI's handler."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self.fallbacks = 0

    def direct(self, route: APIRoute, fallback: lane.Handler) -> lane.Handler | None:
        async def counted(request: Request) -> Response:
            self.fallbacks += 1
            return await fallback(request)

        handler = _DIRECT(route, counted)
        if handler is not None:
            self.built.append(f"{sorted(route.methods)[0]} {route.path}")
        return handler


_DIRECT = lane.direct


@pytest.fixture(scope="module")
def clients(local_models: dict[str, Path]) -> Iterator[tuple[Any, Any, Lanes]]:
    """The contract model twice: with the lanes (counted), and as FastAPI alone serves it (no lane). FastAPI
    builds the routes of included routers when a request first looks for one: a request to no route, under
    each app's own `lane.direct`, builds them all."""
    lanes = Lanes()
    settings = {"model_uri": str(local_models["contract"]), "model_name": "Breast Cancer_Risk", "model_version": "4"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lane, "direct", lanes.direct)
        with in_process(**settings) as with_lane:
            assert with_lane.get("/no-such-route").status_code == 404
            mp.setattr(lane, "direct", lambda route, fallback: None)
            with in_process(**settings) as alone:
                assert alone.get("/no-such-route").status_code == 404
                mp.undo()
                yield with_lane, alone, lanes


def same_answer(clients: tuple[Any, Any, Lanes], path: str, content: bytes, ctype: str | None) -> int:
    """POST to both apps; assert equal answers; return the number of fallbacks the lane took."""
    with_lane, alone, lanes = clients
    headers = {"content-type": ctype} if ctype else {}
    before = lanes.fallbacks
    a = alone.post(path, content=content, headers=headers)
    b = with_lane.post(path, content=content, headers=headers)
    assert (b.status_code, b.headers.get("content-type"), b.content) == (
        a.status_code,
        a.headers.get("content-type"),
        a.content,
    ), (path, content[:200], ctype)
    return lanes.fallbacks - before


def body(value: Any) -> bytes:
    return orjson.dumps(value)


def test_the_prediction_routes_with_a_json_body_take_the_lane(clients: tuple[Any, Any, Lanes]) -> None:
    _, _, lanes = clients
    assert {f"POST {API}/predict", f"POST {API}/model/predict", "POST /v1/models/{name}:predict"} <= set(lanes.built)
    assert not [r for r in lanes.built if "/v2/" in r or "invocations" in r], lanes.built  # raw or untyped bodies


VALID = [
    (f"{API}/predict", {"records": [ROW]}),
    (f"{API}/predict", {"records": [ROW, {**ROW, "area": 1001}]}),  # an integer for a double
    (f"{API}/model/predict", {"patient_id": 1}),
    (f"/v1/models/{PATH}:predict", {"instances": [ROW]}),
    (f"/v1/models/{PATH}:predict", {"instances": [list(ROW.values())]}),
]


@pytest.mark.parametrize(("path", "value"), VALID, ids=[f"{p}-{i}" for i, (p, _) in enumerate(VALID)])
@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_a_valid_request_is_served_by_the_lane_as_fastapi_serves_it(
    clients: tuple[Any, Any, Lanes], path: str, value: Any, ctype: str
) -> None:
    assert same_answer(clients, path, body(value), ctype) == 0


REFUSED = [
    (f"{API}/predict", b"", "application/json"),
    (f"{API}/predict", b"{not json", "application/json"),
    (f"{API}/predict", b"\xff\xfe", "application/json"),
    (f"{API}/predict", b'{"records": [{"radius": NaN}]}', "application/json"),  # json.loads reads NaN, orjson not
    (f"{API}/predict", b'{"records": [{"radius": 1e999}]}', "application/json"),
    (f"{API}/predict", b'{"records": [{"radius": ' + b"9" * 40 + b"}]}", "application/json"),
    (f"{API}/predict", body({"records": [ROW]}), None),
    (f"{API}/predict", body({"records": [ROW]}), "text/plain"),
    (f"{API}/predict", b"radius=1", "application/x-www-form-urlencoded"),
    (f"{API}/predict", body({"records": [ROW]}), "application/vnd.api+json"),  # FastAPI reads +json as JSON
    (f"{API}/predict", body({"records": [ROW]}), "application/a/b+json"),  # two slashes: text/plain to FastAPI
    (f"{API}/predict", body({"records": []}), "application/json"),
    (f"{API}/predict", body({"records": [{**ROW, "radius": "17.5"}]}), "application/json"),  # strict numbers
    (f"{API}/predict", body({"records": None}), "application/json"),
    (f"{API}/predict", body({"records": [{**ROW, "radius": -1.0}]}), "application/json"),
    (f"{API}/predict", body({"records": [{**ROW, "extra": 1}]}), "application/json"),
    (f"{API}/predict", body({"records": [ROW], "extra": 1}), "application/json"),
    (f"{API}/predict", body([ROW]), "application/json"),
    (f"{API}/model/predict", body({"patient_id": 10**9}), "application/json"),  # valid, unknown: the lane's 404
    (f"{API}/model/predict", body({"patient_id": "one"}), "application/json"),
    ("/v1/models/other-model:predict", body({"instances": [ROW]}), "application/json"),
    ("/v1/models/other-model:predict", b"{", "application/json"),
    (f"/v1/models/{PATH}:predict", body({"instances": [[1.0, 2.0]]}), "application/json"),
]


@pytest.mark.parametrize(("path", "content", "ctype"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_any_other_request_gets_the_answer_fastapi_gives(
    clients: tuple[Any, Any, Lanes], path: str, content: bytes, ctype: str | None
) -> None:
    same_answer(clients, path, content, ctype)


def test_what_fastapi_would_refuse_goes_to_fastapi(clients: tuple[Any, Any, Lanes]) -> None:
    assert same_answer(clients, f"{API}/predict", b"{not json", "application/json") == 1
    assert same_answer(clients, f"{API}/predict", body({"records": [{**ROW, "radius": -1}]}), "application/json") == 1
    assert same_answer(clients, f"{API}/predict", body({"records": [ROW]}), "text/plain") == 1
    # a valid body for another model name: validated here, refused by the name dependency, as FastAPI refuses it
    assert same_answer(clients, "/v1/models/other:predict", body({"instances": [ROW]}), "application/json") == 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
records = st.lists(
    st.fixed_dictionaries({}, optional={k: json_values | st.floats(0, 5000) for k in [*ROW, "other"]}),
    max_size=3,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.fixed_dictionaries({"records": records}) | json_values)
def test_random_bodies_get_the_answer_fastapi_gives(clients: tuple[Any, Any, Lanes], value: Any) -> None:
    same_answer(clients, f"{API}/predict", json.dumps(value).encode(), "application/json")  # NaN, huge integers


# ---- which routes are of the lane's shape --------------------------------------------------------------------


class In(BaseModel):
    x: float


async def ready() -> None:
    return None


async def named(name: str) -> None:
    return None


async def needs_request(request: Request) -> None:
    return None


def sync_ready() -> None:
    return None


def route(endpoint: Any, path: str = "/p/{name}", dependencies: list[Any] | None = None) -> APIRoute:
    return APIRoute(path, endpoint, methods=["POST"], dependencies=dependencies or [])


async def fallback(request: Request) -> Response:
    return Response()


def test_the_lane_takes_an_async_body_endpoint_with_plain_async_dependencies() -> None:
    async def endpoint(body: In) -> Response:
        return Response()

    assert lane.direct(route(endpoint, dependencies=[Depends(ready), Depends(named)]), fallback) is not None


def test_the_lane_leaves_every_other_shape_to_fastapi() -> None:
    async def plain(body: In) -> Response:
        return Response()

    async def with_query(body: In, q: int = 0) -> Response:
        return Response()

    async def embedded(body: Annotated[In, Body(embed=True)]) -> Response:
        return Response()

    async def returns_a_dict(body: In) -> dict:
        return {}

    def sync(body: In) -> Response:
        return Response()

    async def two_bodies(a: In, b: In) -> Response:
        return Response()

    async def no_body() -> Response:
        return Response()

    async def with_request(body: In, request: Request) -> Response:
        return Response()

    async def int_dep(name: int) -> None:
        return None

    async def param_dep(body: In, n: None = Depends(ready)) -> Response:
        return Response()

    refused = [
        route(with_query),
        route(embedded),
        route(returns_a_dict),
        route(sync),
        route(two_bodies),
        route(no_body),
        route(with_request),
        route(param_dep),
        route(plain, dependencies=[Depends(needs_request)]),
        route(plain, dependencies=[Depends(sync_ready)]),
        route(plain, dependencies=[Depends(int_dep)]),
    ]
    assert [r.endpoint.__name__ for r in refused if lane.direct(r, fallback) is not None] == []


# ---- FastAPI's semantics on small apps: included dependencies, overrides, caching, long integers, aliases -------


async def deny() -> None:
    raise errors.PredictorError(401, "unauthorized", "no token")


async def allow() -> None:
    return None


class AnyIn(BaseModel):
    x: Any


def small_app(
    endpoint: Any, path: str = "/a", route_dependencies: list[Any] | None = None, **include: Any
) -> tuple[FastAPI, list[str]]:
    """An app with one route of the predictor's route class, in a router included with `include`; the list
    records the lanes built."""
    built: list[str] = []
    app = FastAPI()
    router = APIRouter(route_class=errors.route_class(errors.render_default))
    router.add_api_route(path, endpoint, methods=["POST"], dependencies=route_dependencies)
    app.include_router(router, **include)
    real = lane.direct

    def spy(route: Any, fallback: lane.Handler) -> lane.Handler | None:
        handler = real(route, fallback)
        built.append("lane" if handler else "fastapi")
        return handler

    lane.direct = spy  # type: ignore[assignment]
    try:
        assert TestClient(app).get("/no-such-route").status_code == 404  # builds the included routes
    finally:
        lane.direct = real  # type: ignore[assignment]
    return app, built


async def served(body: In) -> Response:
    return Response("served")


def test_dependencies_of_an_include_run_on_the_lane() -> None:
    app, built = small_app(served, dependencies=[Depends(deny)])
    r = TestClient(app).post("/a", json={"x": 1})
    assert (r.status_code, r.json()["error"], built) == (401, "unauthorized", ["lane"])
    app, built = small_app(served, dependencies=[Depends(allow)])
    assert TestClient(app).post("/a", json={"x": 1}).text == "served" and built == ["lane"]


def test_a_dependency_override_is_honoured() -> None:
    for where in ("route", "include"):
        deps = {"route_dependencies" if where == "route" else "dependencies": [Depends(deny)]}
        app, _ = small_app(served, **deps)
        assert TestClient(app).post("/a", json={"x": 1}).status_code == 401
        app.dependency_overrides[deny] = allow
        assert TestClient(app).post("/a", json={"x": 1}).text == "served", where


def test_a_repeated_dependency_runs_once_as_fastapi_caches_it() -> None:
    calls: list[int] = []

    async def counted() -> None:
        calls.append(1)

    app, built = small_app(served, dependencies=[Depends(counted), Depends(counted)])
    assert TestClient(app).post("/a", json={"x": 1}).text == "served" and calls == [1]
    assert built == ["fastapi"]


def test_an_integer_beyond_64_bits_reaches_the_endpoint_exact() -> None:
    async def echo(body: AnyIn) -> Response:
        return Response(repr(body.x))

    app, built = small_app(echo)
    client = TestClient(app)
    for value in (18446744073709551617, -(2**63) - 1, 2**63 - 1, 12):
        r = client.post("/a", content=f'{{"x": {value}}}', headers={"content-type": "application/json"})
        assert r.text == repr(value)
    assert built == ["lane"]


def test_a_path_parameter_under_an_alias_is_passed_by_its_name() -> None:
    seen: list[str] = []

    async def model(model_name: Annotated[str, PathParam(alias="name")]) -> None:
        seen.append(model_name)

    app, built = small_app(served, "/m/{name}", dependencies=[Depends(model)])
    assert TestClient(app).post("/m/risk", json={"x": 1}).text == "served"
    assert (seen, built) == (["risk"], ["lane"])
