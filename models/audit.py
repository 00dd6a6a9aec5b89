"""The audit log: who did what, when, from where (written in the action's transaction)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from models.tables import AuditRow


async def record(
    conn: AsyncConnection,
    *,
    actor: str,
    role: str,
    action: str,
    subject: str | None = None,
    detail: dict[str, Any] | None = None,
    remote_addr: str | None = None,
    at: datetime | None = None,
) -> None:
    """Add one audit entry; never put client names or visit notes in ``detail``."""
    await conn.execute(
        insert(AuditRow).values(
            at=at or datetime.now(UTC),
            actor=actor,
            role=role,
            action=action,
            subject=subject,
            detail=json.dumps(detail, default=str, ensure_ascii=False) if detail else None,
            remote_addr=remote_addr,
        )
    )
