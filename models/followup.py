"""Read models of visit follow-up for the API: a client's visit state, the overdue list,
reminders and their deliveries. Scoping (which managers a caller may see) arrives as plain
filters; the routes decide them from the caller's role.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection

from models.policy import Policy
from models.tables import DUE_COLUMN, ClientRow, DeliveryRow, ManagerRow, OutboxRow, ReminderRow
from models.visits import ACTIVE_STATUSES, REMINDER_KINDS, overdue_days, visit_interval_days


@dataclass(frozen=True)
class Scope:
    """Whose clients a caller may see: everyone (None), some managers, or some branches."""

    manager_ids: frozenset[str] | None = None
    branch_ids: frozenset[str] | None = None


@dataclass
class Page:
    items: list[dict[str, Any]]
    last_key: Any | None
    total: int


def _ts(value: datetime | None, tz: ZoneInfo) -> str | None:
    return value.astimezone(tz).isoformat() if value is not None else None


# --- one client ----------------------------------------------------------------------------
async def client_row(conn: AsyncConnection, client_id: str) -> Any:
    return (
        await conn.execute(
            select(
                ClientRow.__table__,
                ManagerRow.name.label("manager_name"),
                ManagerRow.branch_id.label("manager_branch_id"),
                ManagerRow.supervisor_id.label("supervisor_id"),
            )
            .select_from(ClientRow)
            .outerjoin(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
            .where(ClientRow.client_id == client_id)
        )
    ).first()


async def client_doc(
    conn: AsyncConnection, c: Any, policy: Policy, now: datetime
) -> dict[str, Any]:
    tz = policy.tz
    reminders = (
        await conn.execute(
            select(ReminderRow.__table__)
            .where(ReminderRow.client_id == c.client_id, ReminderRow.status.in_(ACTIVE_STATUSES))
            .order_by(ReminderRow.id)
        )
    ).all()

    def overdue(due: datetime | None) -> int | None:
        return overdue_days(due, now) if due is not None and due <= now else None

    return {
        "client_id": c.client_id,
        "name": c.name,
        "segment": c.segment,
        "tier": c.tier,
        "credit_client": c.credit_client,
        "branch_id": c.branch_id,
        "visit_interval_days": visit_interval_days(c.tier, c.visit_interval_days, policy),
        "visit_interval_override": c.visit_interval_days,
        "post_loan_interval_days": policy.post_loan_interval_days if c.credit_client else None,
        "assigned_at": _ts(c.assigned_at, tz),
        "manager": {
            "manager_id": c.manager_id,
            "name": c.manager_name,
            "branch_id": c.manager_branch_id,
            "supervisor_id": c.supervisor_id,
        },
        "last_visit_at": _ts(c.last_visit_at, tz),
        "last_post_loan_check_at": _ts(c.last_post_loan_at, tz),
        "next_visit_due": _ts(c.next_visit_due, tz),
        "next_post_loan_due": _ts(c.next_post_loan_due, tz),
        "overdue_days": {
            "visit": overdue(c.next_visit_due),
            "post_loan_check": overdue(c.next_post_loan_due),
        },
        "open_reminders": [reminder_item(r, tz, now) for r in reminders],
    }


# --- overdue clients -----------------------------------------------------------------------
async def overdue_page(
    conn: AsyncConnection,
    now: datetime,
    tz: ZoneInfo,
    *,
    scope: Scope,
    kinds: Sequence[str] = REMINDER_KINDS,
    manager_id: str | None = None,
    branch_id: str | None = None,
    after: tuple[datetime, str, str] | None = None,
    limit: int = 100,
) -> Page:
    """Clients whose clock has run out, most overdue first (earliest due), then client id."""
    parts = []
    for kind in kinds:
        col = DUE_COLUMN[kind]
        conds = [col.is_not(None), col <= now]
        if manager_id is not None:
            conds.append(ClientRow.manager_id == manager_id)
        if branch_id is not None:
            conds.append(ManagerRow.branch_id == branch_id)
        if scope.manager_ids is not None:
            conds.append(ClientRow.manager_id.in_(sorted(scope.manager_ids)))
        if scope.branch_ids is not None:
            conds.append(ManagerRow.branch_id.in_(sorted(scope.branch_ids)))
        parts.append(
            select(
                col.label("due_at"),
                ClientRow.client_id.label("client_id"),
                literal(kind).label("kind"),
                ClientRow.manager_id.label("manager_id"),
                ManagerRow.branch_id.label("branch_id"),
                ManagerRow.supervisor_id.label("supervisor_id"),
            )
            .select_from(ClientRow)
            .outerjoin(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
            .where(*conds)
        )
    u = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery("overdue")
    total = (await conn.execute(select(func.count()).select_from(u))).scalar_one()
    q = select(u).order_by(u.c.due_at, u.c.client_id, u.c.kind).limit(limit + 1)
    if after is not None:
        d, cid, kind = after
        q = q.where(
            or_(
                u.c.due_at > d,
                and_(
                    u.c.due_at == d,
                    or_(u.c.client_id > cid, and_(u.c.client_id == cid, u.c.kind > kind)),
                ),
            )
        )
    rows = (await conn.execute(q)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for r in rows:
        due = r.due_at
        if isinstance(due, str):  # a union loses the column type on SQLite
            due = datetime.fromisoformat(due)
        due = due.replace(tzinfo=ZoneInfo("UTC")) if due.tzinfo is None else due
        items.append(
            {
                "client_id": r.client_id,
                "manager_id": r.manager_id,
                "branch_id": r.branch_id,
                "supervisor_id": r.supervisor_id,
                "kind": r.kind,
                "due_at": _ts(due, tz),
                "overdue_days": overdue_days(due, now),
            }
        )
    last = (rows[-1].due_at, rows[-1].client_id, rows[-1].kind) if more and rows else None
    return Page(items, last, total)


# --- reminders -----------------------------------------------------------------------------
def reminder_item(r: Any, tz: ZoneInfo, now: datetime) -> dict[str, Any]:
    """A reminder as listed: the ``reminder.*`` payload fields and its history.

    overdue_days is counted at read time; a resolved reminder's stops at its resolution.
    """
    at = r.resolved_at if r.status == "resolved" and r.resolved_at is not None else now
    return {
        "reminder_id": r.id,
        "client_id": r.client_id,
        "manager_id": r.manager_id,
        "supervisor_id": r.supervisor_id,
        "branch_id": r.branch_id,
        "kind": r.kind,
        "due_at": _ts(r.due_at, tz),
        "overdue_days": overdue_days(r.due_at, at),
        "status": r.status,
        "fired_at": _ts(r.fired_at, tz),
        "escalated_at": _ts(r.escalated_at, tz),
        "acked_at": _ts(r.acked_at, tz),
        "acked_by": r.acked_by,
        "snoozed_until": _ts(r.snoozed_until, tz),
        "resolved_at": _ts(r.resolved_at, tz),
    }


async def reminder_scope_row(conn: AsyncConnection, reminder_id: int) -> Any:
    """The reminder with its manager's current branch (for the caller's scope)."""
    return (
        await conn.execute(
            select(ReminderRow.__table__, ManagerRow.branch_id.label("manager_branch_id"))
            .select_from(ReminderRow)
            .outerjoin(ManagerRow, ManagerRow.manager_id == ReminderRow.manager_id)
            .where(ReminderRow.id == reminder_id)
        )
    ).first()


async def reminder_page(
    conn: AsyncConnection,
    now: datetime,
    tz: ZoneInfo,
    *,
    scope: Scope,
    manager_id: str | None = None,
    statuses: Sequence[str] | None = None,
    kind: str | None = None,
    client_id: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> Page:
    conds: list[Any] = []
    if manager_id is not None:
        conds.append(ReminderRow.manager_id == manager_id)
    if statuses:
        conds.append(ReminderRow.status.in_(list(statuses)))
    if kind is not None:
        conds.append(ReminderRow.kind == kind)
    if client_id is not None:
        conds.append(ReminderRow.client_id == client_id)
    if scope.manager_ids is not None:
        conds.append(ReminderRow.manager_id.in_(sorted(scope.manager_ids)))
    if scope.branch_ids is not None:
        conds.append(ManagerRow.branch_id.in_(sorted(scope.branch_ids)))
    base = (
        select(ReminderRow.__table__)
        .select_from(ReminderRow)
        .outerjoin(ManagerRow, ManagerRow.manager_id == ReminderRow.manager_id)
        .where(*conds)
    )
    total = (await conn.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    if after_id is not None:
        base = base.where(ReminderRow.id > after_id)
    rows = (await conn.execute(base.order_by(ReminderRow.id).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        [reminder_item(r, tz, now) for r in rows], rows[-1].id if more and rows else None, total
    )


# --- deliveries ----------------------------------------------------------------------------
async def delivery_page(
    conn: AsyncConnection,
    tz: ZoneInfo,
    *,
    status: str | None = None,
    target: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> Page:
    conds: list[Any] = []
    if status is not None:
        conds.append(DeliveryRow.status == status)
    if target is not None:
        conds.append(DeliveryRow.target == target)
    total = (
        await conn.execute(select(func.count()).select_from(DeliveryRow).where(*conds))
    ).scalar_one()
    if after_id is not None:
        conds.append(DeliveryRow.id > after_id)
    rows = (
        await conn.execute(
            select(
                DeliveryRow.__table__,
                OutboxRow.event_id,
                OutboxRow.event_type,
                OutboxRow.reminder_id,
            )
            .select_from(DeliveryRow)
            .join(OutboxRow, OutboxRow.id == DeliveryRow.outbox_id)
            .where(*conds)
            .order_by(DeliveryRow.id)
            .limit(limit + 1)
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": r.id,
            "event_id": r.event_id,
            "event_type": r.event_type,
            "reminder_id": r.reminder_id,
            "target": r.target,
            "status": r.status,
            "attempts": r.attempts,
            "last_error": r.last_error,
            "next_attempt_at": _ts(r.next_attempt_at, tz) if r.status == "pending" else None,
            "delivered_at": _ts(r.delivered_at, tz),
            "created_at": _ts(r.created_at, tz),
        }
        for r in rows
    ]
    return Page(items, rows[-1].id if more and rows else None, total)
