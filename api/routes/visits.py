"""The visit ledger (拜访记录台账): a client's visits, and the visits a manager made.

Notes are confidential: they are shown only to the client's manager, the supervisors of that
manager's branch and admins; every answer that carries notes writes one audit entry per
client whose notes it shows (``visit_notes.read``: who, which client, when, how many).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from sqlalchemy.ext.asyncio import AsyncConnection

from api.answers import Page, VisitOut
from api.auth import Principal
from api.deps import ConnDep, Reader, SettingsDep
from api.errors import Invalid
from api.pagination import Cursor, Limit
from api.routes.clients import NowDep, decode_key, encode_key
from api.scope import ClientInScope, ManagerInScope
from models import visit_ledger
from models.audit import record

router = APIRouter(prefix="/v1", tags=["visits"])

MAX_RANGE_DAYS = 3660


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    key = decode_key(cursor)
    try:
        at, eid = key
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not isinstance(eid, str):
            raise ValueError
        return when, eid
    except (TypeError, ValueError):
        raise Invalid("invalid cursor") from None


def may_read_notes(user: Principal, client_manager_id: str | None, branch_id: str | None) -> bool:
    """The client's manager, the supervisors of its branch, admins."""
    if client_manager_id is None:
        return user.role == "admin"
    return user.can_see_manager(client_manager_id, branch_id)


async def answer(
    conn: AsyncConnection,
    request: Request,
    user: Principal,
    page: visit_ledger.VisitPage,
    now: datetime,
) -> dict[str, Any]:
    """The page as JSON; notes opened where the caller may read them, each client's read of
    notes audited (committed before the answer leaves)."""
    settings = request.app.state.settings
    cipher = request.app.state.notes_cipher
    items = []
    read: dict[str, int] = {}
    for r in page.rows:
        allowed = may_read_notes(user, r.client_manager_id, r.client_branch_id)
        notes = visit_ledger.open_notes(cipher, r.notes_sealed) if allowed else None
        if notes is not None:
            read[r.client_id] = read.get(r.client_id, 0) + 1
        items.append(
            {
                "event_id": r.event_id,
                "occurred_at": r.occurred_at.astimezone(settings.tz).isoformat(),
                "client_id": r.client_id,
                "manager_id": r.manager_id,
                "method": r.method,
                "kind": r.kind,
                "duration_minutes": r.duration_minutes,
                "notes": notes,
                "notes_withheld": r.notes_sealed is not None and not allowed,
            }
        )
    await conn.rollback()  # the read ends; the audit entries are a write of their own
    if read:
        remote = request.client.host if request.client else None
        for client_id in sorted(read):
            await record(
                conn,
                actor=user.subject,
                role=user.role,
                action="visit_notes.read",
                subject=f"client:{client_id}",
                detail={"visits_with_notes": read[client_id], "route": request.url.path},
                remote_addr=remote,
                at=now,
            )
        await conn.commit()
    next_cursor = encode_key(list(page.last_key)) if page.last_key is not None else None
    return {"items": items, "next_cursor": next_cursor, "total": page.total}


@router.get("/clients/{client_id}/visits", response_model=Page[VisitOut])
async def client_visits(
    c: ClientInScope,
    user: Reader,
    conn: ConnDep,
    request: Request,
    now: NowDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Every visit of the client (each visit event once), newest first, with notes (the
    client's manager, their supervisors and admins; each answer with notes is audited)."""
    page = await visit_ledger.client_page(conn, c.client_id, _after(cursor), limit)
    return await answer(conn, request, user, page, now)


def day_start(d: date, settings: Any) -> datetime:
    return datetime.combine(d, time(0), settings.tz)


@router.get("/managers/{manager_id}/visits", response_model=Page[VisitOut])
async def manager_visits(
    ref: ManagerInScope,
    user: Reader,
    conn: ConnDep,
    request: Request,
    settings: SettingsDep,
    now: NowDep,
    from_: Annotated[
        date | None, Query(alias="from", description="first day (inclusive, bank time)")
    ] = None,
    to: Annotated[date | None, Query(description="last day (inclusive, bank time)")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The visits the manager made (as the visitor), newest first, optionally within
    ``from``..``to``. Notes of a client the caller may not read (another manager's client,
    for a manager) are withheld: ``notes`` null, ``notes_withheld`` true."""
    if from_ is not None and to is not None:
        if from_ > to:
            raise Invalid("from must not be after to")
        if (to - from_).days >= MAX_RANGE_DAYS:
            raise Invalid(f"a range spans at most {MAX_RANGE_DAYS} days")
    start = day_start(from_, settings) if from_ is not None else None
    end = None
    if to is not None and to < date.max:
        end = day_start(to + timedelta(days=1), settings)
    page = await visit_ledger.manager_page(conn, ref.manager_id, start, end, _after(cursor), limit)
    return await answer(conn, request, user, page, now)
