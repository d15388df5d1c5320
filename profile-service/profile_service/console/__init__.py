"""The admin console: server-rendered pages under /console/ that act through the same service
code as the admin API (see docs/console.md)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from profile_service.console import pages_ops, pages_org, pages_profiles, web


def install(app: FastAPI) -> None:
    """Mount the console's pages, static files and its error pages on profile-service."""
    web.install_handlers(app)
    app.mount(f"{web.PREFIX}/static", StaticFiles(directory=str(web.HERE / "static")), name="console-static")
    for module in (pages_org, pages_profiles, pages_ops):
        app.include_router(module.router)

    @app.get(web.PREFIX, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse(f"{web.PREFIX}/", status_code=308)
