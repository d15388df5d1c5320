"""What every console page shares: the signed-in admin (or a redirect to sign in, or a refusal
page), CSRF checks on every state-changing request, template rendering, and turning a service
error into a message on the page the admin came from."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, overload
from urllib.parse import urlencode, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel

from profile_service import users
from profile_service.admin_access import Admin, is_admin
from profile_service.console.session import COOKIE, CSRF_FIELD, CSRF_HEADER, ConsoleSession, csrf_ok, read_session
from profile_service.context import Ctx

log = logging.getLogger("profile_service.console")

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
# Record attributes shown as JSON, readable (the page's autoescape still applies).
templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, ensure_ascii=False, default=str)
PREFIX = "/console"


@overload
def plain(answer: BaseModel) -> dict[str, Any]: ...
@overload
def plain(answer: Sequence[BaseModel]) -> list[dict[str, Any]]: ...
def plain(answer: BaseModel | Sequence[BaseModel]) -> dict[str, Any] | list[dict[str, Any]]:
    """An API route's answer as the JSON-like rows pages and templates index: keys as on the
    wire (by alias), fields the route left out left out."""
    if isinstance(answer, BaseModel):
        return answer.model_dump(by_alias=True, exclude_unset=True)
    return [a.model_dump(by_alias=True, exclude_unset=True) for a in answer]


class NeedSignIn(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class NotAdmin(Exception):
    def __init__(self, user_id: str, csrf: str) -> None:
        self.user_id = user_id
        self.csrf = csrf  # lets the refusal page offer to sign out


class BadCsrf(Exception):
    pass


def safe_next(url: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if not url:
        return f"{PREFIX}/"
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{PREFIX}/") or "\\" in url:
        return f"{PREFIX}/"
    return url


class Console:
    """The signed-in admin's handle on the service: the same :class:`Ctx` the API routes get."""

    def __init__(self, request: Request, session: ConsoleSession, ctx: Ctx, display_name: str) -> None:
        self.request = request
        self.session = session
        self.ctx = ctx
        self.display_name = display_name

    @property
    def user_id(self) -> str:
        return self.session.user_id

    def render(self, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        q = self.request.query_params
        values.setdefault("ok", q.get("ok", ""))
        values.setdefault("error", q.get("error", ""))
        return templates.TemplateResponse(
            self.request,
            template,
            {
                "user_id": self.user_id,
                "display_name": self.display_name,
                "csrf": self.session.csrf,
                "path": self.request.url.path,
                **values,
            },
            status_code=status_code,
        )

    async def form(self) -> dict[str, Any]:
        form = await self.request.form()
        return {k: form.getlist(k) if len(form.getlist(k)) > 1 else form.get(k) for k in form}


def back(url: str, *, ok: str = "", error: str = "", **extra: str) -> RedirectResponse:
    """See-other to a console page, carrying a one-line outcome for its status region."""
    params = {k: v for k, v in {"ok": ok, "error": error, **extra}.items() if v}
    sep = "&" if "?" in url else "?"
    return RedirectResponse(f"{url}{sep}{urlencode(params)}" if params else url, status_code=303)


async def _console(request: Request) -> Console:
    rt = request.app.state.runtime
    s = rt.settings
    session = read_session(s.jwt_secret, request.cookies.get(COOKIE), issuer=s.jwt_issuer)
    if session is None:
        raise NeedSignIn(str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""))
    async with rt.pool.acquire() as conn:
        if not await is_admin(conn, session.user_id, session.generation):
            raise NotAdmin(session.user_id, session.csrf)
        name = await users.name_of(conn, session.user_id)
    if request.method not in ("GET", "HEAD"):
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            value = (await request.form()).get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if not csrf_ok(session, sent):
            log.warning("console request refused: bad or missing CSRF token", extra={"user_id": session.user_id})
            raise BadCsrf()
    ctx = Ctx(admin=Admin(session.user_id), pool=rt.pool, emitter=request.app.state.emitter, settings=s)
    return Console(request, session, ctx, name or session.user_id)


ConsoleDep = Annotated[Console, Depends(_console)]


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(NeedSignIn)
    async def need_sign_in(_: Request, exc: NeedSignIn) -> Response:
        return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': safe_next(exc.next_url)})}", status_code=303)

    @app.exception_handler(NotAdmin)
    async def not_admin(request: Request, exc: NotAdmin) -> Response:
        return templates.TemplateResponse(
            request,
            "refused.html",
            {"user_id": exc.user_id, "csrf": exc.csrf, "path": "", "bare": True},
            status_code=403,
        )

    @app.exception_handler(BadCsrf)
    async def bad_csrf(request: Request, _: BadCsrf) -> Response:
        return templates.TemplateResponse(
            request,
            "message.html",
            {
                "user_id": "",
                "csrf": "",
                "path": "",
                "title": "Request refused",
                "message": "This form was sent without a valid security token (CSRF). Reload the page and try again.",
            },
            status_code=403,
        )
