"""Reminders: list, acknowledge, snooze; and the state of their deliveries (ops)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AwareDatetime, BaseModel

from api.answers import DeliveryOut, Page, ReminderOut
from api.auth import Principal
from api.deps import ConnDep, Reader, SettingsDep, require_roles
from api.errors import Conflict, Invalid, NotFound
from api.routes.clients import NowDep, decode_key, encode_key
from api.scope import ReminderInScope, caller_scope, forbid_out_of_scope
from models.audit import record
from models.followup import delivery_page, reminder_item, reminder_page
from reminders import store as reminders
from reminders.rules import snooze_bound

router = APIRouter(prefix="/v1", tags=["reminders"])

OpsOrAdmin = Annotated[Principal, Depends(require_roles("ops", "admin"))]
ReminderId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def encode_cursor(last_id: int) -> str:
    return encode_key({"after": last_id})


def decode_cursor(cursor: str) -> int:
    """The id a cursor carries; 422 for anything else."""
    key = decode_key(cursor)
    after = key.get("after") if isinstance(key, dict) else None
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise Invalid("invalid cursor")
    return after


class SnoozeIn(BaseModel):
    until: AwareDatetime
    """RFC 3339 with an offset; after now and at most ``max_snooze_days`` ahead."""


@router.get("/reminders/deliveries", response_model=Page[DeliveryOut])
async def list_deliveries(
    user: OpsOrAdmin,
    conn: ConnDep,
    settings: SettingsDep,
    status_: Annotated[
        Literal["pending", "delivered", "failed"] | None, Query(alias="status")
    ] = None,
    target: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Reminder deliveries: events to the topic and to webhooks, and the digests and
    escalation pushes to people (targets ``email``, ``wecom:<branch>``, ``dingtalk:<branch>``):
    attempts, last error, status."""
    page = await delivery_page(
        conn,
        settings.tz,
        status=status_,
        target=target,
        after_id=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
    return {
        "items": page.items,
        "next_cursor": encode_cursor(page.last_key) if page.last_key is not None else None,
        "total": page.total,
    }


@router.get("/reminders", response_model=Page[ReminderOut])
async def list_reminders(
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    manager_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    status_: Annotated[
        Literal["open", "acked", "snoozed", "escalated", "resolved"] | None,
        Query(alias="status"),
    ] = None,
    kind: Literal["visit", "post_loan_check", "outflow", "tier_drop"] | None = None,
    client_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Reminders in the caller's scope, oldest first (stable: by reminder id)."""
    await forbid_out_of_scope(conn, user, manager_id, None)
    page = await reminder_page(
        conn,
        now,
        settings.tz,
        scope=caller_scope(user),
        manager_id=manager_id,
        statuses=(status_,) if status_ else None,
        kind=kind,
        client_id=client_id,
        after_id=decode_cursor(cursor) if cursor else None,
        limit=limit,
    )
    return {
        "items": page.items,
        "next_cursor": encode_cursor(page.last_key) if page.last_key is not None else None,
        "total": page.total,
    }


def audit(
    user: Principal, action: str, reminder_id: int, request: Request, now: Any, **detail: Any
) -> dict[str, Any]:
    return {
        "actor": user.subject,
        "role": user.role,
        "action": action,
        "subject": f"reminder:{reminder_id}",
        "detail": detail or None,
        "remote_addr": request.client.host if request.client else None,
        "at": now,
    }


async def _write(conn: ConnDep, reminder_id: int, action: Any, entry: dict[str, Any]) -> Any:
    """Run the action on the reminder and its audit entry in one transaction."""
    try:
        row = await action
        await record(conn, **entry)
        await conn.commit()
        return row
    except reminders.ReminderNotFound:
        await conn.rollback()
        raise NotFound("reminder", reminder_id) from None
    except reminders.ReminderResolved as exc:
        await conn.rollback()
        raise Conflict(str(exc)) from None


@router.post("/reminders/{reminder_id}/ack", response_model=ReminderOut)
async def ack_reminder(
    reminder_id: ReminderInScope,
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    request: Request,
) -> dict[str, Any]:
    """Acknowledge a reminder (its manager, their supervisor, or an admin); 409 if resolved."""
    row = await _write(
        conn,
        reminder_id,
        reminders.ack(conn, reminder_id, user.subject, now),
        audit(user, "reminder.acked", reminder_id, request, now),
    )
    return reminder_item(row, settings.tz, now)


@router.post("/reminders/{reminder_id}/snooze", response_model=ReminderOut)
async def snooze_reminder(
    reminder_id: ReminderInScope,
    body: SnoozeIn,
    request: Request,
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
) -> dict[str, Any]:
    """Snooze a reminder until a later instant, at most max_snooze_days ahead."""
    if body.until <= now:
        raise Invalid("until must be in the future")
    bound = snooze_bound(now, settings.policy)
    if body.until > bound:
        raise Invalid(
            f"until must be at most {settings.policy.max_snooze_days} days ahead "
            f"({bound.astimezone(settings.tz).isoformat()})"
        )
    row = await _write(
        conn,
        reminder_id,
        reminders.snooze(conn, reminder_id, body.until, now),
        audit(user, "reminder.snoozed", reminder_id, request, now, until=body.until.isoformat()),
    )
    return reminder_item(row, settings.tz, now)
