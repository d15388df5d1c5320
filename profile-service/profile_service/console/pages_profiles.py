"""Console pages for mobile offline profiles: list, create, edit, clone, delete, items with the
filter builder and relationships, people, validate, publish with its diff, and version history.
Every action calls the admin API's own route functions, so rules live in one place."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from offsync_shared.errors import Conflict, NotFound, OffsyncError
from profile_service import profiles as store
from profile_service import routes_org, routes_profiles, validation
from profile_service.console import forms
from profile_service.console.web import PREFIX, Console, ConsoleDep, back, plain
from profile_service.schemas import CloneIn, ItemIn, ItemPatch, ProfileIn, ProfilePatch, UsersIn
from profile_service.versions import diff

router = APIRouter(prefix=f"{PREFIX}/profiles", include_in_schema=False)


def problem_text(exc: Exception) -> str:
    if isinstance(exc, OffsyncError):
        return exc.message
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    if isinstance(exc, forms.FormError):
        return exc.message
    return "the request could not be completed"


def problem_field(exc: Exception) -> str:
    if isinstance(exc, OffsyncError):
        return exc.field or ""
    if isinstance(exc, forms.FormError):
        return exc.field
    if isinstance(exc, ValidationError):
        return ".".join(str(x) for x in exc.errors()[0].get("loc", ()))
    return ""


def _url(profile_id: str, tail: str = "") -> str:
    return f"{PREFIX}/profiles/{profile_id}{tail}"


@router.get("/", response_class=HTMLResponse)
async def list_page(c: ConsoleDep) -> HTMLResponse:
    profiles = plain(await routes_profiles.list_profiles(c.ctx))
    return c.render("profiles.html", profiles=profiles)


@router.post("/")
async def create(c: ConsoleDep) -> RedirectResponse:
    form = await c.form()
    try:
        body = ProfileIn(name=str(form.get("name") or ""), description=str(form.get("description") or ""))
        made = plain(await routes_profiles.create_profile(c.ctx, body, Response()))
    except (OffsyncError, ValidationError) as exc:
        return back(f"{PREFIX}/profiles/", error=problem_text(exc))
    return back(_url(made["id"]), ok=f"Profile {made['name']} created")


async def _everything(c: Console, profile_id: str) -> dict[str, Any]:
    profile = plain(await routes_profiles.get_profile(c.ctx, profile_id, Response()))
    async with c.ctx.read() as conn:
        metas = await store.load_metas(conn)
    users = plain(await routes_org.list_users(c.ctx))
    teams = plain(await routes_org.list_teams(c.ctx))
    entities = plain(await routes_org.list_entities(c.ctx))
    profile_names = {p["id"]: p["name"] for p in plain(await routes_profiles.list_profiles(c.ctx))}
    return {
        "profile": profile,
        "metas": metas,
        "users": users,
        "users_by_id": {u["id"]: u for u in users},
        "teams": teams,
        "entities": entities,
        "profile_names": profile_names,
    }


@router.get("/{profile_id}", response_class=HTMLResponse)
async def profile_page(c: ConsoleDep, profile_id: str, validate: str = "") -> HTMLResponse:
    try:
        data = await _everything(c, profile_id)
    except NotFound as exc:
        return c.render("message.html", status_code=404, title="Not found", message=exc.message)
    report = None
    if validate:
        report = plain(await routes_profiles.validate_profile(c.ctx, profile_id))
        if report.get("estimates"):
            report["estimates"] = sorted(report["estimates"], key=lambda e: -e["records"])
    in_profile = {i["entity"] for i in data["profile"]["items"]}
    addable = [e for e in data["entities"] if e["offline_enabled"] and e["logical_name"] not in in_profile]
    q = c.request.query_params
    move = None
    if q.get("move_user") and q.get("move_from"):
        move = {"user_id": q["move_user"], "from": q["move_from"], "from_name": q.get("move_from_name", "")}
    return c.render(
        "profile.html",
        **data,
        report=report,
        addable=addable,
        describe_filter=forms.describe_filter,
        move=move,
    )


@router.post("/{profile_id}/edit")
async def edit(c: ConsoleDep, profile_id: str) -> RedirectResponse:
    form = await c.form()
    try:
        body = ProfilePatch(name=str(form.get("name") or ""), description=str(form.get("description") or ""))
        await routes_profiles.update_profile(c.ctx, profile_id, body, Response(), form.get("etag") or None)
    except (OffsyncError, ValidationError) as exc:
        return back(_url(profile_id), error=problem_text(exc))
    return back(_url(profile_id), ok="Saved")


@router.post("/{profile_id}/clone")
async def clone(c: ConsoleDep, profile_id: str) -> RedirectResponse:
    form = await c.form()
    try:
        made = await routes_profiles.clone_profile(
            c.ctx, profile_id, CloneIn(name=str(form.get("name") or "")), Response()
        )
    except (OffsyncError, ValidationError) as exc:
        return back(_url(profile_id), error=problem_text(exc))
    return back(_url(made.id), ok=f"Cloned into {made.name}")


@router.post("/{profile_id}/delete")
async def delete(c: ConsoleDep, profile_id: str) -> RedirectResponse:
    try:
        await routes_profiles.delete_profile(c.ctx, profile_id)
    except OffsyncError as exc:
        return back(_url(profile_id), error=problem_text(exc))
    return back(f"{PREFIX}/profiles/", ok="Profile deleted")


# --- items ------------------------------------------------------------------------------------


async def _item_form(
    c: Console, profile_id: str, entity: str, *, values: dict[str, Any] | None, error: str = "", field: str = ""
) -> HTMLResponse:
    data = await _everything(c, profile_id)
    meta = data["metas"].get(entity)
    if meta is None:
        return c.render("message.html", status_code=404, title="Not found", message=f"entity {entity!r} not found")
    current = next((i for i in data["profile"]["items"] if i["entity"] == entity), None)
    item = (
        values
        or current
        or {"entity": entity, "filter": {"kind": "related"}, "relationships": [], "sync_interval_minutes": 5}
    )
    in_profile = [i["entity"] for i in data["profile"]["items"]]
    kinds = rules_kinds(meta.ownership)
    return c.render(
        "item.html",
        status_code=422 if error else 200,
        error=error,
        error_field=field,
        profile=data["profile"],
        entity=entity,
        meta=meta,
        item=item,
        is_new=current is None,
        kinds=kinds,
        other_flags=other_flags(meta.ownership),
        filter_labels=forms.FILTER_LABELS,
        other_labels=forms.OTHER_LABELS,
        relationships=forms.relationship_choices(entity, data["metas"], in_profile),
        chosen_relationships={f"{r['entity']}|{r['attribute']}|{r.get('side', 'self')}" for r in item["relationships"]},
        spec_json=json.dumps(forms.builder_spec(meta)),
        condition_json=json.dumps(item["filter"].get("condition")) if item["filter"].get("kind") == "custom" else "",
        pickers_json=json.dumps(
            {
                "user": [[u["id"], u["name"]] for u in data["users"]],
                "team": [[t["id"], t["name"]] for t in data["teams"]],
                "businessunit": [[b["id"], b["name"]] for b in plain(await routes_org.list_business_units(c.ctx))],
            }
        ),
    )


def rules_kinds(ownership: str) -> tuple[str, ...]:
    return validation.ALLOWED_KINDS.get(ownership, ())


def other_flags(ownership: str) -> tuple[str, ...]:
    return validation.ALLOWED_OTHER.get(ownership, ())


@router.get("/{profile_id}/items/{entity}", response_class=HTMLResponse)
async def item_page(c: ConsoleDep, profile_id: str, entity: str) -> HTMLResponse:
    try:
        return await _item_form(c, profile_id, entity, values=None)
    except NotFound as exc:
        return c.render("message.html", status_code=404, title="Not found", message=exc.message)


@router.post("/{profile_id}/items/{entity}", response_class=HTMLResponse)
async def save_item(c: ConsoleDep, profile_id: str, entity: str) -> Response:
    form = await c.form()
    body: dict[str, Any] | None = None
    try:
        body = forms.item_body(form, entity)
        profile = plain(await routes_profiles.get_profile(c.ctx, profile_id, Response()))
        if any(i["entity"] == entity for i in profile["items"]):
            patch = ItemPatch(
                filter=body["filter"],
                relationships=body["relationships"],
                sync_interval_minutes=body["sync_interval_minutes"],
            )
            await routes_profiles.update_item(c.ctx, profile_id, entity, patch, Response())
        else:
            await routes_profiles.add_item(c.ctx, profile_id, ItemIn.model_validate(body), Response())
    except (OffsyncError, ValidationError, forms.FormError) as exc:
        if isinstance(exc, NotFound) and body is None:
            return c.render("message.html", status_code=404, title="Not found", message=exc.message)
        return await _item_form(c, profile_id, entity, values=body, error=problem_text(exc), field=problem_field(exc))
    return back(_url(profile_id), ok=f"{entity} saved")


@router.post("/{profile_id}/items/{entity}/remove")
async def remove_item(c: ConsoleDep, profile_id: str, entity: str) -> RedirectResponse:
    try:
        await routes_profiles.remove_item(c.ctx, profile_id, entity, Response())
    except OffsyncError as exc:
        return back(_url(profile_id), error=problem_text(exc))
    return back(_url(profile_id), ok=f"{entity} removed")


@router.post("/{profile_id}/add-entity")
async def add_entity(c: ConsoleDep, profile_id: str) -> RedirectResponse:
    form = await c.form()
    entity = str(form.get("entity") or "")
    if not entity:
        return back(_url(profile_id), error="choose an entity to add")
    return RedirectResponse(_url(profile_id, f"/items/{entity}"), status_code=303)


# --- people -----------------------------------------------------------------------------------


async def _add_people(c: Console, profile_id: str, user_ids: list[str]) -> RedirectResponse:
    try:
        await routes_profiles.add_users(c.ctx, profile_id, UsersIn(user_ids=user_ids), Response())
    except Conflict as exc:
        d = exc.details or {}
        if d.get("profile_id"):
            return back(
                _url(profile_id),
                error=exc.message,
                move_user=str(d.get("user_id")),
                move_from=str(d["profile_id"]),
                move_from_name=str(d.get("profile_name", "")),
            )
        return back(_url(profile_id), error=problem_text(exc))
    except (OffsyncError, ValidationError) as exc:
        return back(_url(profile_id), error=problem_text(exc))
    return back(_url(profile_id), ok=f"Added {len(user_ids)} user(s)")


def _user_id_from(text: str) -> str:
    # The search box offers "Name (id)"; an id typed alone works too.
    text = text.strip()
    if text.endswith(")") and "(" in text:
        return text[text.rindex("(") + 1 : -1].strip()
    return text


@router.post("/{profile_id}/users")
async def add_user(c: ConsoleDep, profile_id: str) -> RedirectResponse:
    form = await c.form()
    uid = _user_id_from(str(form.get("user") or ""))
    if not uid:
        return back(_url(profile_id), error="type a user's name or id to add")
    return await _add_people(c, profile_id, [uid])


@router.post("/{profile_id}/team")
async def add_team(c: ConsoleDep, profile_id: str) -> RedirectResponse:
    form = await c.form()
    try:
        team = plain(await routes_org.get_team(c.ctx, str(form.get("team_id") or "")))
    except OffsyncError as exc:
        return back(_url(profile_id), error=problem_text(exc))
    if not team["member_ids"]:
        return back(_url(profile_id), error=f"team {team['name']} has no members")
    profile = plain(await routes_profiles.get_profile(c.ctx, profile_id, Response()))
    todo = [u for u in team["member_ids"] if u not in profile["user_ids"]]
    if not todo:
        return back(_url(profile_id), ok=f"Every member of {team['name']} is already in this profile")
    return await _add_people(c, profile_id, todo)


@router.post("/{profile_id}/users/{user_id}/remove")
async def remove_user(c: ConsoleDep, profile_id: str, user_id: str) -> RedirectResponse:
    try:
        await routes_profiles.remove_user(c.ctx, profile_id, user_id, Response())
    except OffsyncError as exc:
        return back(_url(profile_id), error=problem_text(exc))
    return back(_url(profile_id), ok=f"Removed {user_id}")


@router.post("/{profile_id}/users/{user_id}/move")
async def move_user(c: ConsoleDep, profile_id: str, user_id: str) -> RedirectResponse:
    """Move a user here from the profile they are in: removed there, added here."""
    form = await c.form()
    source = str(form.get("from") or "")
    try:
        await routes_profiles.remove_user(c.ctx, source, user_id, Response())
    except OffsyncError as exc:
        return back(_url(profile_id), error=problem_text(exc))
    return await _add_people(c, profile_id, [user_id])


# --- publish / versions -----------------------------------------------------------------------


async def _published_snapshot(c: Console, profile: dict[str, Any]) -> dict[str, Any]:
    if not profile["published_version"]:
        return {}
    got = plain(await routes_profiles.get_version(c.ctx, profile["id"], profile["published_version"]))
    return dict(got["snapshot"])


def draft_snapshot(profile: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": profile["name"],
        "description": profile["description"],
        "items": profile["items"],
        "user_ids": profile["user_ids"],
    }


@router.get("/{profile_id}/publish", response_class=HTMLResponse)
async def publish_page(c: ConsoleDep, profile_id: str) -> HTMLResponse:
    try:
        profile = plain(await routes_profiles.get_profile(c.ctx, profile_id, Response()))
    except NotFound as exc:
        return c.render("message.html", status_code=404, title="Not found", message=exc.message)
    changes = diff(await _published_snapshot(c, profile), draft_snapshot(profile))
    report = plain(await routes_profiles.validate_profile(c.ctx, profile_id))
    return c.render("publish.html", profile=profile, diff=changes, report=report, describe_filter=forms.describe_filter)


@router.post("/{profile_id}/publish")
async def publish(c: ConsoleDep, profile_id: str) -> RedirectResponse:
    form = await c.form()
    try:
        out = plain(await routes_profiles.publish_profile(c.ctx, profile_id, Response(), form.get("etag") or None))
    except OffsyncError as exc:
        return back(_url(profile_id, "/publish"), error=problem_text(exc))
    return back(_url(profile_id), ok=f"Published version {out['published']['version']}")


@router.get("/{profile_id}/versions", response_class=HTMLResponse)
async def versions_page(c: ConsoleDep, profile_id: str) -> HTMLResponse:
    q = c.request.query_params
    try:
        profile = plain(await routes_profiles.get_profile(c.ctx, profile_id, Response()))
        versions = plain(await routes_profiles.list_versions(c.ctx, profile_id))
        shown = None
        if q.get("from") and q.get("to") and q["from"].isdigit() and q["to"].isdigit():
            shown = plain(await routes_profiles.diff_versions(c.ctx, profile_id, int(q["from"]), int(q["to"])))
    except NotFound as exc:
        return c.render("message.html", status_code=404, title="Not found", message=exc.message)
    names = {u["id"]: u["name"] for u in plain(await routes_org.list_users(c.ctx))}
    return c.render(
        "versions.html",
        profile=profile,
        versions=versions,
        shown=shown,
        names=names,
        describe_filter=forms.describe_filter,
    )
