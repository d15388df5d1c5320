"""Console pages for sign-in, entities (enable for offline), app modules, organization settings
and solutions (export / import); each action calls the admin API's own route functions."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from offsync_shared.errors import OffsyncError
from profile_service import routes_org, routes_profiles, routes_solutions
from profile_service.console.pages_profiles import problem_text
from profile_service.console.session import COOKIE, SESSION_TTL_S, csrf_ok, open_session, read_session
from profile_service.console.signin import authenticate
from profile_service.console.web import PREFIX, ConsoleDep, back, plain, safe_next, templates
from profile_service.schemas import AppModuleIn, AppModulePatch, EntityPatch, OrgSettingsPatch, SolutionIn

log = logging.getLogger("profile_service.console")

router = APIRouter(prefix=PREFIX, include_in_schema=False)


# --- sign in / out ----------------------------------------------------------------------------


LOGIN_NONCE = "offsync_console_login"  # double-submit token of the sign-in form (login CSRF)


def _login_page(
    request: Request, *, error: str = "", next_url: str = "", username: str = "", status: int = 200
) -> HTMLResponse:
    # Even signing in is a state change: a forged sign-in could put a victim into an attacker's
    # session. The form carries a nonce that must match the HttpOnly cookie set with it.
    nonce = secrets.token_urlsafe(24)
    resp = templates.TemplateResponse(
        request,
        "login.html",
        {
            "error": error,
            "next": safe_next(next_url),
            "username": username,
            "user_id": "",
            "csrf": nonce,
            "path": "",
        },
        status_code=status,
    )
    resp.set_cookie(LOGIN_NONCE, nonce, max_age=3600, path=f"{PREFIX}/login", httponly=True, samesite="strict")
    return resp


def _refusal(reason: str) -> str:
    """What the person signing in is told: the same words for an unknown user and a wrong
    password (neither is given away); rate limits and disabled users are said as they are."""
    if reason.startswith(("too many", "this user is disabled")):
        return reason[:1].upper() + reason[1:] + ("" if reason.endswith(".") else ".")
    return "Wrong username or password."


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "") -> HTMLResponse:
    return _login_page(request, next_url=next)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    sent, expected = str(form.get("csrf") or ""), request.cookies.get(LOGIN_NONCE) or ""
    if not expected or not hmac.compare_digest(sent, expected):
        log.warning("console sign-in refused: bad or missing sign-in form token")
        return _login_page(request, error="The sign-in form expired; please sign in again.", status=403)
    username = str(form.get("username") or "").strip()[:200]
    password = str(form.get("password") or "")[:8192]
    next_url = str(form.get("next") or "")
    rt = request.app.state.runtime
    result = await authenticate(
        rt.pool,
        username,
        password,
        settings=rt.settings,
        client_address=request.client.host if request.client else None,
    )
    if result.user_id is None:
        log.warning("console sign-in failed", extra={"username": username, "reason": result.reason})
        return _login_page(request, error=_refusal(result.reason), next_url=next_url, username=username, status=401)
    log.info("console sign-in", extra={"user_id": result.user_id})
    resp = RedirectResponse(safe_next(next_url), status_code=303)
    resp.delete_cookie(LOGIN_NONCE, path=f"{PREFIX}/login")
    resp.set_cookie(
        COOKIE,
        open_session(
            rt.settings.jwt_secret, result.user_id, issuer=rt.settings.jwt_issuer, generation=result.generation
        ),
        max_age=SESSION_TTL_S,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=rt.settings.env == "prod",
    )
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Signing out needs a session and its CSRF token, not an administrator (a refused
    non-admin signs out here too)."""
    s = request.app.state.runtime.settings
    session = read_session(s.jwt_secret, request.cookies.get(COOKIE), issuer=s.jwt_issuer)
    sent = (await request.form()).get("csrf")
    if session is not None and not csrf_ok(session, sent if isinstance(sent, str) else None):
        return back(f"{PREFIX}/", error="Sign-out refused: reload the page and try again.")
    resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
    resp.delete_cookie(COOKIE, path=PREFIX)
    return resp


@router.get("/", response_class=HTMLResponse)
async def home(c: ConsoleDep) -> HTMLResponse:
    entities = plain(await routes_org.list_entities(c.ctx))
    profiles = plain(await routes_profiles.list_profiles(c.ctx))
    settings = plain(await routes_org.get_org_settings(c.ctx))
    return c.render(
        "home.html",
        enabled=[e for e in entities if e["offline_enabled"]],
        profiles=profiles,
        unpublished=[p for p in profiles if p["has_unpublished_changes"]],
        settings=settings,
    )


# --- entities ---------------------------------------------------------------------------------


@router.get("/entities", response_class=HTMLResponse)
async def entities_page(c: ConsoleDep) -> HTMLResponse:
    entities = plain(await routes_org.list_entities(c.ctx))
    return c.render("entities.html", entities=entities)


@router.post("/entities/{name}")
async def toggle_entity(c: ConsoleDep, name: str) -> RedirectResponse:
    form = await c.form()
    enable = str(form.get("offline_enabled")) == "true"
    try:
        await routes_org.update_entity(c.ctx, name, EntityPatch(offline_enabled=enable))
    except (OffsyncError, ValidationError) as exc:
        return back(f"{PREFIX}/entities", error=problem_text(exc), entity=name)
    verb = "enabled" if enable else "disabled"
    return back(f"{PREFIX}/entities", ok=f"{name} {verb} for mobile offline", entity=name)


# --- app modules ------------------------------------------------------------------------------


@router.get("/app-modules", response_class=HTMLResponse)
async def app_modules_page(c: ConsoleDep) -> HTMLResponse:
    apps = plain(await routes_profiles.list_app_modules(c.ctx))
    profiles = plain(await routes_profiles.list_profiles(c.ctx))
    return c.render("app_modules.html", apps=apps, profiles=profiles, names={p["id"]: p["name"] for p in profiles})


@router.post("/app-modules")
async def create_app_module(c: ConsoleDep) -> RedirectResponse:
    form = await c.form()
    try:
        await routes_profiles.create_app_module(
            c.ctx, AppModuleIn(name=str(form.get("name") or ""), offline_enabled=form.get("offline_enabled") == "on")
        )
    except (OffsyncError, ValidationError) as exc:
        return back(f"{PREFIX}/app-modules", error=problem_text(exc))
    return back(f"{PREFIX}/app-modules", ok="App module created")


@router.post("/app-modules/{app_id}")
async def update_app_module(c: ConsoleDep, app_id: str) -> RedirectResponse:
    form = await c.form()
    try:
        if "offline_enabled" in form:
            await routes_profiles.update_app_module(
                c.ctx, app_id, AppModulePatch(offline_enabled=form.get("offline_enabled") == "true")
            )
        if form.get("attach"):
            await routes_profiles.attach_profile(c.ctx, app_id, str(form["attach"]))
        if form.get("detach"):
            await routes_profiles.detach_profile(c.ctx, app_id, str(form["detach"]))
    except (OffsyncError, ValidationError) as exc:
        return back(f"{PREFIX}/app-modules", error=problem_text(exc))
    return back(f"{PREFIX}/app-modules", ok="App module saved")


# --- organization settings --------------------------------------------------------------------


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(c: ConsoleDep) -> HTMLResponse:
    return c.render("settings.html", settings=plain(await routes_org.get_org_settings(c.ctx)))


@router.post("/settings")
async def save_settings(c: ConsoleDep) -> RedirectResponse:
    form = await c.form()
    try:
        await routes_org.update_org_settings(
            c.ctx, OrgSettingsPatch(conflict_detection=form.get("conflict_detection") == "yes")
        )
    except (OffsyncError, ValidationError) as exc:
        return back(f"{PREFIX}/settings", error=problem_text(exc))
    return back(f"{PREFIX}/settings", ok="Conflict detection saved")


# --- solutions --------------------------------------------------------------------------------


@router.get("/solutions", response_class=HTMLResponse)
async def solutions_page(c: ConsoleDep) -> HTMLResponse:
    return c.render(
        "solutions.html", profiles=plain(await routes_profiles.list_profiles(c.ctx)), result=None, problems=[]
    )


@router.get("/solutions/export")
async def export(c: ConsoleDep, profile_id: Annotated[list[str] | None, Query()] = None) -> Response:
    try:
        body = plain(await routes_solutions.export_solution(c.ctx, profile_id or None))
    except OffsyncError as exc:
        return back(f"{PREFIX}/solutions", error=problem_text(exc))
    return Response(
        json.dumps(body, indent=2, default=str),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="offsync-solution.json"'},
    )


@router.post("/solutions/import", response_class=HTMLResponse)
async def import_(c: ConsoleDep) -> HTMLResponse:
    form = await c.request.form()
    upload = form.get("file")
    problems: list[dict[str, object]] = []
    result = None
    raw = await upload.read(5_000_001) if upload is not None and hasattr(upload, "read") else b""
    try:
        if not raw:
            raise ValueError("choose a solution file to import")
        if len(raw) > 5_000_000:
            raise ValueError("the file is larger than 5 MB")
        doc = json.loads(raw)
        result = plain(await routes_solutions.import_solution(c.ctx, SolutionIn.model_validate(doc)))
        if form.get("publish") == "on":
            for p in result["profiles"]:
                await routes_profiles.publish_profile(c.ctx, p["id"], Response())
                p["published"] = True
    except OffsyncError as exc:
        problems = list((exc.details or {}).get("problems") or [{"message": exc.message, "field": exc.field}])
    except ValidationError as exc:
        problems = [{"message": problem_text(exc)}]
    except (ValueError, UnicodeDecodeError) as exc:
        problems = [{"message": f"not a solution file: {exc}" if isinstance(exc, json.JSONDecodeError) else str(exc)}]
    return c.render(
        "solutions.html",
        status_code=422 if problems else 200,
        profiles=plain(await routes_profiles.list_profiles(c.ctx)),
        result=result,
        problems=problems,
        error="The import was refused: nothing was imported." if problems else "",
        ok="Imported." if result and not problems else "",
    )


@router.post("/solutions/publish-all")
async def publish_all(c: ConsoleDep) -> RedirectResponse:
    form = await c.form()
    ids = form.get("profile_id") or []
    ids = ids if isinstance(ids, list) else [ids]
    done = []
    for pid in ids:
        try:
            out = plain(await routes_profiles.publish_profile(c.ctx, str(pid), Response()))
            done.append(f"{pid} v{out['published']['version']}")
        except OffsyncError as exc:
            return back(f"{PREFIX}/solutions", error=f"{pid}: {problem_text(exc)}")
    return back(f"{PREFIX}/solutions", ok="Published " + ", ".join(done))
