"""Serves each service's OpenAPI /docs page with Swagger UI's own files from the installed
``swagger-ui-bundle-v2`` package, so the docs work with no internet access (no CDN)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

ASSETS = "/docs-assets"


def install(app: FastAPI) -> None:
    """Replace FastAPI's CDN-backed /docs (and drop /redoc, which has no offline copy here)."""
    docs_url = app.docs_url or "/docs"
    app.router.routes[:] = [
        r for r in app.router.routes if not (isinstance(r, Route) and r.path in (docs_url, app.redoc_url))
    ]
    app.docs_url = app.redoc_url = None
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url="data:,",
            oauth2_redirect_url=f"{docs_url}/oauth2-redirect",
        )

    @app.get(f"{docs_url}/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
