"""Live changes for ``GET /v1/stream``: written by the apply step, read by the API.

A writer adds its rows at the end of its transaction, after taking a transaction-scoped lock
(PostgreSQL advisory lock; SQLite has one writer anyway), so row ids are handed out in commit
order: a reader that has seen id N and later asks for ids > N cannot miss a row that commits
late with a smaller id.

A ``tally`` row carries no figures: it names a manager (and branch) and the bank days whose
figures changed, for the reader to read the tally again. The 增量认领 split of deposit
business (models/balances.py) is computed when a tally is read, so a fact credited to one
side of a hand-over changes the other side's figures too: a reader expands each row to the
other sides of its manager's hand-overs (``split_partners``, ``partner_changes``), so both
are told to read again, and what they read agrees with every other view.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.tables import BalanceHolderRow, ManagerRow, StreamEventRow

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


@dataclass(frozen=True, slots=True)
class Partner:
    """The other side of a hand-over: its manager, branch, and the bank days [first, last]
    (last None: from then on) on which the split of the client's deposit business runs."""

    manager_id: str
    branch_id: str | None
    first: date
    last: date | None


async def split_partners(conn: AsyncConnection, policy: Any) -> dict[str, list[Partner]]:
    """Per manager, the other sides of its hand-overs whose split runs (``increment`` mode,
    the previous manager active: as ``models.balances.handover_profit_moves``)."""
    from models.balances import load_segments

    out: dict[str, list[Partner]] = defaultdict(list)
    if policy.handover_mode != "increment":
        return out
    rows = (
        await conn.execute(
            select(BalanceHolderRow.segments).where(BalanceHolderRow.handed_over.is_(True))
        )
    ).all()
    if not rows:
        return out
    active = dict((await conn.execute(select(ManagerRow.manager_id, ManagerRow.active))).all())
    for (text_,) in rows:
        segs = load_segments(text_)
        for i in range(1, len(segs)):
            prev, cur = segs[i - 1], segs[i]
            first = cur[0]
            if first is None or prev[1] == cur[1] or not active.get(prev[1], True):
                continue
            nxt = segs[i + 1][0] if i + 1 < len(segs) else None
            last = nxt - timedelta(days=1) if nxt is not None else None
            out[prev[1]].append(Partner(cur[1], cur[2], first, last))
            out[cur[1]].append(Partner(prev[1], prev[2], first, last))
    return out


def partner_changes(
    data: dict[str, Any], partners: dict[str, list[Partner]]
) -> list[dict[str, Any]]:
    """The ``tally`` data a row's change implies for the other sides of its manager's
    hand-overs: one per partner manager, with the row's days on which the split runs
    (none when no day falls in a hand-over's days); the row's own manager is left out."""
    mine = partners.get(data.get("manager_id") or "")
    if not mine:
        return []
    days = [date.fromisoformat(d) for d in data.get("days", [])]
    found: dict[tuple[str, str | None], set[date]] = defaultdict(set)
    for p in mine:
        if p.manager_id == data.get("manager_id"):
            continue
        hit = {d for d in days if p.first <= d and (p.last is None or d <= p.last)}
        if hit:
            found[(p.manager_id, p.branch_id)] |= hit
    return [
        {
            "manager_id": m,
            "branch_id": b,
            "days": sorted(d.isoformat() for d in ds),
            "at": data.get("at"),
        }
        for (m, b), ds in sorted(found.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
    ]
