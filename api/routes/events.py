"""Messages that were rejected (dead-lettered) or are held waiting for reference data."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from sqlalchemy import ColumnElement, func, select

from api.answers import Page, RejectedOut
from api.deps import Admin, ConnDep
from api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from models.tables import RejectedRow

router = APIRouter(prefix="/v1", tags=["events"])


def _item(r: Any) -> dict[str, Any]:
    raw_bytes = base64.b64decode(r.value_b64) if r.value_b64 is not None else None
    try:
        raw = raw_bytes.decode("utf-8") if raw_bytes is not None else None
    except UnicodeDecodeError:
        raw = None
    return {
        "id": r.id,
        "topic": r.topic,
        "partition": r.partition,
        "offset": r.offset,
        "key": r.key,
        "status": r.status,
        "reason": r.reason,
        "event_id": r.event_id,
        "event_type": r.event_type,
        "raw": raw,
        "raw_base64": r.value_b64,
        "received_at": r.received_at.isoformat(),
        "released_at": r.released_at.isoformat() if r.released_at else None,
    }


@router.get("/events/rejected", response_model=Page[RejectedOut])
async def rejected_events(
    user: Admin,
    conn: ConnDep,
    status_: Annotated[
        Literal["rejected", "held", "released"] | None,
        Query(alias="status", description="default: rejected and held"),
    ] = None,
    topic: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Dead-lettered and held events with their reasons and raw messages (oldest first)."""
    conds: list[ColumnElement[bool]] = (
        [RejectedRow.status == status_]
        if status_
        else [RejectedRow.status.in_(("rejected", "held"))]
    )
    if topic:
        conds.append(RejectedRow.topic == topic)
    total = (await conn.execute(select(func.count()).where(*conds))).scalar_one()
    if cursor:
        conds.append(RejectedRow.id > decode_cursor(cursor, "id"))
    rows = (
        await conn.execute(
            select(RejectedRow.__table__).where(*conds).order_by(RejectedRow.id).limit(limit + 1)
        )
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [_item(r) for r in rows],
        "next_cursor": encode_cursor("id", rows[-1].id) if more and rows else None,
        "total": total,
    }
