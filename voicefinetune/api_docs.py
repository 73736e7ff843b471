"""The API documentation pages served by the app itself: Swagger UI at /docs and ReDoc at /redoc, with their files
from the ``fastapi-offline`` distribution (no CDN, so they render offline), and the API key's two ways of being
sent declared in the OpenAPI schema when a key is configured, so Swagger UI's Authorize button sends it."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .security import (
    API_KEY_HEADER,
    DOCS_ASSETS_PATH,
    OPENAPI_PATH,
    REDOC_PATH,
    SWAGGER_PATH,
    parse_keys,
)
from .settings import Settings

ASSETS = files("fastapi_offline") / "static"
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "the API key as 'Authorization: Bearer <key>'",
    },
    "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
}


def install_docs(app: FastAPI, settings: Settings) -> None:
    """The pages on an app made with ``docs_url=None, redoc_url=None`` (FastAPI's own load their files from a CDN)."""
    app.mount(DOCS_ASSETS_PATH, StaticFiles(directory=str(ASSETS)), name="docs-assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{DOCS_ASSETS_PATH}/{name}"

    @app.get(SWAGGER_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '')}{OPENAPI_PATH}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=None,
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            # No online validator badge (Swagger UI fetches it from validator.swagger.io otherwise).
            swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
        )

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '')}{OPENAPI_PATH}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )

    if parse_keys(settings.api_key):
        declare_api_key(app)


def declare_api_key(app: FastAPI) -> None:
    """Every operation of the schema requires the key, sent either way."""

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # built once, then cached by FastAPI: adding twice changes nothing
        schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        schema["security"] = [{name: []} for name in SECURITY_SCHEMES]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
