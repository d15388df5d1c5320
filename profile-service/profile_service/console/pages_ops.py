"""Console pages for operations: the device registry (kept by sync-service in gateway.devices,
read here read-only), the sync error ledger and conflicts (through the records API, whose
re-apply and dismiss are the same code an API caller runs), and live figures."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from offsync_shared.auth import ADMIN_AUDIENCE, issue_token
from profile_service.console.web import PREFIX, Console, ConsoleDep, back
from profile_service.device_registry import read_devices

router = APIRouter(prefix=PREFIX, include_in_schema=False)


def _records_client(c: Console) -> httpx.AsyncClient:
    s = c.ctx.settings
    token = issue_token(s.jwt_secret, c.user_id, ADMIN_AUDIENCE, ttl_seconds=120, issuer=s.jwt_issuer)
    return httpx.AsyncClient(
        base_url=s.records_base(),  # type: ignore[attr-defined]
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _error_text(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except Exception:
        return f"the records API answered {resp.status_code}"


@router.get("/devices", response_class=HTMLResponse)
async def devices_page(c: ConsoleDep, user: str = "") -> HTMLResponse:
    async with c.ctx.read() as conn:
        devices = await read_devices(conn, user or None)
    return c.render("devices.html", devices=devices, user=user, now=datetime.now(UTC))


async def _records_list(c: Console, path: str, filters: dict[str, str]) -> tuple[list[dict[str, Any]], str]:
    """Up to 200 entries of a records API list, with the filters that are set; or why there are none."""
    params = {k: v for k, v in filters.items() if v}
    try:
        async with _records_client(c) as client:
            resp = await client.get(path, params={**params, "limit": 200})
    except httpx.HTTPError as exc:
        return [], f"the records API is unreachable ({type(exc).__name__})"
    if resp.status_code != 200:
        return [], _error_text(resp)
    items: list[dict[str, Any]] = resp.json()["items"]
    return items, ""


@router.get("/sync-errors", response_class=HTMLResponse)
async def sync_errors_page(
    c: ConsoleDep, user_id: str = "", entity: str = "", code: str = "", status: str = "open"
) -> HTMLResponse:
    filters = {"user_id": user_id, "entity": entity, "code": code, "status": status}
    items, problem = await _records_list(c, "/v1/sync-errors", filters)
    return c.render(
        "sync_errors.html",
        items=list(reversed(items)),
        filters=filters,
        error=problem or c.request.query_params.get("error", ""),
    )


async def _act(c: Console, path: str, body: dict[str, Any] | None = None) -> str:
    try:
        async with _records_client(c) as client:
            resp = await client.post(path, json=body or {})
    except httpx.HTTPError as exc:
        return f"the records API is unreachable ({type(exc).__name__})"
    return "" if resp.status_code < 300 else _error_text(resp)


@router.post("/sync-errors/{error_id}/retry")
async def retry(c: ConsoleDep, error_id: int) -> RedirectResponse:
    form = await c.form()
    problem = await _act(c, f"/v1/sync-errors/{error_id}/reapply", {"force": form.get("force") == "on"})
    if problem:
        return back(f"{PREFIX}/sync-errors?status=", error=problem)
    return back(f"{PREFIX}/sync-errors?status=", ok=f"Change #{error_id} re-applied")


@router.post("/sync-errors/{error_id}/dismiss")
async def dismiss(c: ConsoleDep, error_id: int) -> RedirectResponse:
    problem = await _act(c, f"/v1/sync-errors/{error_id}/dismiss")
    if problem:
        return back(f"{PREFIX}/sync-errors", error=problem)
    return back(f"{PREFIX}/sync-errors", ok=f"Change #{error_id} dismissed")


@router.get("/conflicts", response_class=HTMLResponse)
async def conflicts_page(c: ConsoleDep, entity: str = "", user_id: str = "") -> HTMLResponse:
    filters = {"entity": entity, "user_id": user_id}
    items, problem = await _records_list(c, "/v1/conflicts", filters)
    return c.render("conflicts.html", items=list(reversed(items)), filters=filters, error=problem)


# --- live figures -----------------------------------------------------------------------------

LIVE_METRICS = (
    "offsync_connected_devices",
    "offsync_sync_ops_delivered_total",
    "offsync_sync_uploads_answered_total",
)


PUBLISH_METRICS = (
    'offsync_stage_seconds_sum{stage="record_commit_to_op"}',
    'offsync_stage_seconds_count{stage="record_commit_to_op"}',
)


def parse_metrics(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """Sums of the named series in a Prometheus text exposition. A bare name sums every label
    set; ``name{label="v"}`` only the series whose labels start with that one."""
    out = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        for key in names:
            if key == name or ("{" in key and line.startswith(key[:-1])):
                try:
                    out[key] += float(line.rsplit(" ", 1)[1])
                except ValueError:
                    continue
    return out


@router.get("/live", response_class=HTMLResponse)
async def live_page(c: ConsoleDep) -> HTMLResponse:
    return c.render("live.html", figures=await _figures(c))


@router.get("/live.json")
async def live_json(c: ConsoleDep) -> JSONResponse:
    return JSONResponse(await _figures(c))


async def _figures(c: Console) -> dict[str, Any]:
    figures: dict[str, Any] = {"at": time.time()}
    s = c.ctx.settings
    async with httpx.AsyncClient(timeout=3) as client:
        for flag, base, names in (
            ("gateway", s.sync_base(), LIVE_METRICS),  # type: ignore[attr-defined]
            ("publisher", s.publish_base(), PUBLISH_METRICS),  # type: ignore[attr-defined]
        ):
            try:
                resp = await client.get(f"{base}/metrics")
                figures.update(parse_metrics(resp.text, names))
                figures[flag] = True
            except httpx.HTTPError:
                figures[flag] = False
    async with c.ctx.read() as conn:
        devices = await read_devices(conn)
    online = [d for d in devices if d["online_now"]]
    figures["online_devices"] = len(online)
    # Upload backlog: changes the devices said they still hold, plus batches awaiting an answer.
    figures["upload_backlog"] = sum(int(d["pending_uploads"] or 0) for d in online)
    return figures
