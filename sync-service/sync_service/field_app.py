"""Serves the offline field app (a progressive web app built on the TypeScript SDK) under /app/:
its static shell, and config.json telling it where to sign in. The device websocket is on the
same origin, so the app needs nothing else from the network."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from offsync_shared import protocol as p
from sync_service.settings import Settings

STATIC = Path(__file__).parent / "static" / "app"


class AppConfig(BaseModel):
    auth_url: str = Field(description="Base URL of profile-service, where the app signs in (/v1/auth/login).")
    sync_path: str = Field(description="Path of the device websocket on this origin.")


def mount(app: FastAPI, settings: Settings) -> None:
    """Add /app/ (static files), /app/config.json and the /app redirect to sync-service."""

    @app.get(
        "/app/config.json",
        response_model=AppConfig,
        summary="Field app configuration",
        description=(
            "Where the field app signs in: OFFSYNC_APP_AUTH_URL, else profile-service's port on the host the "
            "browser used to reach this service."
        ),
        tags=["field app"],
    )
    async def app_config(request: Request) -> AppConfig:
        auth = settings.app_auth_url or f"{request.url.scheme}://{request.url.hostname}:{settings.profile_port}"
        return AppConfig(auth_url=auth.rstrip("/"), sync_path=p.PATH)

    @app.get("/app", include_in_schema=False)
    async def app_root() -> RedirectResponse:
        return RedirectResponse("/app/", status_code=308)

    # check_dir=False: a checkout whose bundle was not built yet still starts (the shell's
    # app.js then 404s until `make js`).
    app.mount("/app", StaticFiles(directory=STATIC, html=True, check_dir=False), name="field-app")
