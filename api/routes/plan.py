"""A manager's visit plan, as JSON and as an iCalendar feed a calendar app subscribes to."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from api.answers import FeedTokenOut, FeedTokensRevokedOut, Page, PlanItemOut
from api.deps import ConnDep, Reader, SettingsDep
from api.errors import Invalid, Unauthorized
from api.pagination import Cursor, Limit
from api.routes.book import _offset, paged
from api.routes.clients import NowDep
from api.scope import ManagerInScope
from models import plan as plans
from models.audit import record

router = APIRouter(prefix="/v1", tags=["visit plan"])

Days = Annotated[int, Query(description="the window: 7 or 30 days from now")]


def window(days: int) -> int:
    if days not in (7, 30):
        raise Invalid("days must be 7 or 30")
    return days


@router.get("/managers/{manager_id}/plan", response_model=Page[PlanItemOut])
async def manager_plan(
    ref: ManagerInScope,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    days: Days = 7,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Clients overdue and coming due within `days` (7 or 30), by due instant: visits and
    post-loan checks (`kind`), `status` `overdue` (with `overdue_days`) or `due` (`days_left`)."""
    shape = ["plan", window(days)]
    offset = _offset(cursor, shape)
    items = await plans.plan(conn, ref.manager_id, now, days, settings.policy)
    return paged(items, offset, limit, shape)


def _feed_url(request: Request, token: str) -> str:
    return str(request.url_for("plan_feed", token=token))


@router.post("/managers/{manager_id}/feed-token", response_model=FeedTokenOut)
async def create_feed_token(
    ref: ManagerInScope, user: Reader, conn: ConnDep, request: Request, now: NowDep
) -> dict[str, Any]:
    """A new calendar feed token for the manager's plan (the manager, their supervisor or an
    admin): shown once, kept only as a hash; subscribe to `url` from Outlook or a phone."""
    await conn.rollback()
    token = await plans.new_feed_token(conn, ref.manager_id, user.subject, now)
    await record(
        conn,
        actor=user.subject,
        role=user.role,
        action="feed_token.created",
        subject=f"manager:{ref.manager_id}",
        remote_addr=request.client.host if request.client else None,
        at=now,
    )
    await conn.commit()
    return {"manager_id": ref.manager_id, "token": token, "url": _feed_url(request, token)}


@router.delete("/managers/{manager_id}/feed-token", response_model=FeedTokensRevokedOut)
async def revoke_feed_tokens(
    ref: ManagerInScope, user: Reader, conn: ConnDep, request: Request, now: NowDep
) -> dict[str, Any]:
    """Revoke every calendar feed token of the manager (a lost phone, a departure)."""
    await conn.rollback()
    n = await plans.revoke_feed_tokens(conn, ref.manager_id, now)
    await record(
        conn,
        actor=user.subject,
        role=user.role,
        action="feed_token.revoked",
        subject=f"manager:{ref.manager_id}",
        detail={"revoked": n},
        remote_addr=request.client.host if request.client else None,
        at=now,
    )
    await conn.commit()
    return {"manager_id": ref.manager_id, "revoked": n}


@router.get(
    "/calendar/{token}.ics",
    name="plan_feed",
    response_class=Response,
    responses={
        200: {"content": {"text/calendar": {"example": "BEGIN:VCALENDAR\r\n...END:VCALENDAR\r\n"}}},
        401: {"description": "unknown or revoked feed token"},
    },
)
async def plan_feed(
    token: Annotated[str, Path(min_length=8, max_length=128)],
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    days: Days = 30,
) -> Response:
    """The manager's plan for the next `days` (default 30) as iCalendar. The feed token in
    the path is the credential (calendar apps cannot send a bearer token); unknown or revoked: 401."""
    window(days)
    manager_id = await plans.feed_manager(conn, token)
    if manager_id is None:
        raise Unauthorized("unknown or revoked feed token", challenge=False)
    items = await plans.plan(conn, manager_id, now, days, settings.policy)
    body = plans.calendar(manager_id, items, now.astimezone(settings.tz).date(), now)
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={"Cache-Control": "no-store", "Content-Disposition": 'inline; filename="plan.ics"'},
    )
