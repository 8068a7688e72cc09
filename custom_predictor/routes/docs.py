"""The Swagger UI page (offline: assets from fastapi-offline, served by the predictor) and the OpenAPI document's
request bodies of the routes that read their body themselves (V2 with binary data, MLflow's JSON and CSV).

Those bodies are built when the document is first asked for, not at startup (wide contracts take tens of ms).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, TypeAdapter
from starlette.responses import HTMLResponse

REF = "#/components/schemas/{model}"
Build = Callable[[], tuple[dict[str, Any], dict[str, Any]]]
"""() -> (an operation's requestBody, the component schemas it refers to)."""


class Bodies:
    """Documented request bodies by operation id, added to the OpenAPI document when it is built."""

    def __init__(self) -> None:
        self.builds: dict[str, Build] = {}

    def add(self, operation_id: str, build: Build) -> None:
        self.builds[operation_id] = build

    def install(self, app: FastAPI) -> None:
        plain = app.openapi

        def openapi() -> dict[str, Any]:
            if app.openapi_schema:
                return app.openapi_schema
            schema = plain()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for item in schema["paths"].values():
                for operation in item.values():
                    build = self.builds.get(operation.get("operationId"))
                    if build is not None:
                        operation["requestBody"], defs = build()
                        components.update(defs)
            return schema

        app.openapi = openapi  # type: ignore[method-assign]


def schema_of(type_: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the JSON schema of `type_`, or a $ref to it when it is a model; the component schemas it refers to)."""
    schema = TypeAdapter(type_).json_schema(ref_template=REF)
    defs = schema.pop("$defs", {})
    if isinstance(type_, type) and issubclass(type_, BaseModel):
        defs[type_.__name__] = schema
        schema = {"$ref": REF.format(model=type_.__name__)}
    return schema, defs


def router(path: str, title: str) -> APIRouter:
    """The Swagger page at `/<path>/api/` (and `/docs`) and its static assets."""
    api = APIRouter(include_in_schema=False)

    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"/{path}/api/static/swagger-ui-bundle.js",
            swagger_css_url=f"/{path}/api/static/swagger-ui.css",
            swagger_favicon_url=f"/{path}/api/static/favicon.png",
        )

    api.add_api_route(f"/{path}/api/", swagger, methods=["GET"])
    api.add_api_route("/docs", swagger, methods=["GET"])
    return api


def mount_assets(app: FastAPI, path: str) -> None:
    static = Path(str(__import__("fastapi_offline").__file__)).parent / "static"
    app.mount(f"/{path}/api/static", StaticFiles(directory=static), name="swagger-static")
