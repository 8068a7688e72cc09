"""The Swagger UI page at `/<model>/api/` (offline: Swagger UI's assets from fastapi-offline, served by the
predictor itself, so it works in air-gapped clusters). The OpenAPI document's request bodies: `openapi`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, JSONResponse


def router(app: FastAPI, path: str, title: str, guard: list[Any]) -> APIRouter:
    """The Swagger page at `/<path>/api/` (and `/docs`) and `/openapi.json`, each behind `guard` (the caller
    dependency when the settings protect the docs, else nothing: they hold no data)."""
    api = APIRouter(include_in_schema=False, dependencies=guard)

    def document() -> JSONResponse:
        return JSONResponse(app.openapi())

    api.add_api_route("/openapi.json", document, methods=["GET"])

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
