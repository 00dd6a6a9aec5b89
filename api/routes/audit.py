"""The audit log, for admins: who entered evaluations, acted on reminders, minted tokens."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import func, select

from api.answers import AuditEntryOut, Page
from api.deps import Admin, ConnDep
from api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from models.tables import AuditRow

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit", response_model=Page[AuditEntryOut])
async def audit_log(
    user: Admin,
    conn: ConnDep,
    action: Annotated[str | None, Query(max_length=64)] = None,
    actor: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Audit entries, newest first, filtered by action or actor."""
    conds = []
    if action:
        conds.append(AuditRow.action == action)
    if actor:
        conds.append(AuditRow.actor == actor)
    total = (
        await conn.execute(select(func.count()).select_from(AuditRow).where(*conds))
    ).scalar_one()
    if cursor:
        conds.append(AuditRow.id < decode_cursor(cursor, "audit"))
    rows = (
        await conn.execute(
            select(AuditRow.__table__).where(*conds).order_by(AuditRow.id.desc()).limit(limit + 1)
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [
            {
                "id": r.id,
                "at": r.at.isoformat(),
                "actor": r.actor,
                "role": r.role,
                "action": r.action,
                "subject": r.subject,
                "detail": json.loads(r.detail) if r.detail else None,
                "remote_addr": r.remote_addr,
            }
            for r in rows
        ],
        "next_cursor": encode_cursor("audit", rows[-1].id) if more and rows else None,
        "total": total,
    }
