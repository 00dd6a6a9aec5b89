"""Live changes for ``GET /v1/stream``: written by the apply step, read by the API.

A writer adds its rows at the end of its transaction, after taking a transaction-scoped lock
(PostgreSQL advisory lock; SQLite has one writer anyway), so row ids are handed out in commit
order: a reader that has seen id N and later asks for ids > N cannot miss a row that commits
late with a smaller id.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import msgspec
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.tables import StreamEventRow

STREAM_LOCK = 7235003

_JSON = msgspec.json.Encoder()
_PG_PUBLISH = (
    "INSERT INTO stream_events (at, kind, manager_id, branch_id, data)"
    " SELECT (r->>0)::timestamptz, r->>1, r->>2, r->>3, r->>4"
    " FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n"
)


async def publish(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Add stream rows (``kind``, ``manager_id``, ``branch_id``, ``data`` dict, ``at``)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        # on the driver: the lock, then the rows as one JSON document inserted in its order
        # (ids handed out in the list's order, as the executemany did)
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.execute(f"SELECT pg_advisory_xact_lock({STREAM_LOCK})")  # type: ignore[union-attr]
        doc = [
            (
                r["at"],
                r["kind"],
                r.get("manager_id"),
                r.get("branch_id"),
                json.dumps(r["data"], ensure_ascii=False, default=str),
            )
            for r in rows
        ]
        await driver.execute(_PG_PUBLISH, _JSON.encode(doc).decode())  # type: ignore[union-attr]
        return
    await conn.execute(
        insert(StreamEventRow),
        [
            {
                "at": r["at"],
                "kind": r["kind"],
                "manager_id": r.get("manager_id"),
                "branch_id": r.get("branch_id"),
                "data": json.dumps(r["data"], ensure_ascii=False, default=str),
            }
            for r in rows
        ],
    )


def tally_changes(
    entries: Iterable[tuple[str, str, date, Any]], at: datetime
) -> list[dict[str, Any]]:
    """One ``tally`` row per manager whose days changed (with the days)."""
    days: dict[tuple[str, str], set[date]] = defaultdict(set)
    for manager_id, branch_id, day, _ in entries:
        days[(manager_id, branch_id)].add(day)
    return [
        {
            "kind": "tally",
            "manager_id": m,
            "branch_id": b,
            "at": at,
            "data": {
                "manager_id": m,
                "branch_id": b,
                "days": sorted(d.isoformat() for d in ds),
                "at": at.isoformat(),
            },
        }
        for (m, b), ds in sorted(days.items())
    ]


async def read_after(conn: AsyncConnection, after: int, limit: int = 500) -> list[Any]:
    return list(
        (
            await conn.execute(
                select(StreamEventRow)
                .where(StreamEventRow.id > after)
                .order_by(StreamEventRow.id)
                .limit(limit)
            )
        ).all()
    )


async def last_id(conn: AsyncConnection) -> int:
    row = (
        await conn.execute(select(StreamEventRow.id).order_by(StreamEventRow.id.desc()).limit(1))
    ).first()
    return row.id if row else 0


async def prune(conn: AsyncConnection, before: datetime) -> int:
    res = await conn.execute(delete(StreamEventRow).where(StreamEventRow.at < before))
    return res.rowcount or 0
