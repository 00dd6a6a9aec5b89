"""Reading the figures back from the database and comparing them with expected ones."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from models.policy import Policy, period_range
from models.tables import BranchDayRow, EventRow, ManagerDayRow, RejectedRow
from models.tally import branch_totals, manager_totals, tally_document


async def counts(engine: AsyncEngine) -> tuple[int, int, int]:
    """(applied events, rejected messages, held messages)."""
    async with engine.connect() as conn:
        applied = (
            await conn.execute(
                select(func.count()).select_from(EventRow).where(EventRow.status == "applied")
            )
        ).scalar_one()
        by_status = dict(
            (
                await conn.execute(
                    select(RejectedRow.status, func.count()).group_by(RejectedRow.status)
                )
            ).all()
        )
    return applied, by_status.get("rejected", 0), by_status.get("held", 0)


async def month_doc(engine: AsyncEngine, key: str, branch: bool = False) -> dict[str, Any]:
    owner, ym = key.split("|")
    start, end = period_range("month", date(int(ym[:4]), int(ym[5:]), 1))
    async with engine.connect() as conn:
        totals = await (branch_totals if branch else manager_totals)(conn, owner, start, end)
    return tally_document(("id", owner), start, end, totals, Policy().tz)


async def assert_tallies(
    engine: AsyncEngine, tallies: dict[str, dict[str, Any]], branches: dict[str, dict[str, Any]]
) -> None:
    wrong = []
    for key, figures in tallies.items():
        doc = await month_doc(engine, key)
        got = {k: doc[k] for k in figures}
        if got != figures:
            wrong.append((key, figures, got))
    for key, figures in branches.items():
        doc = await month_doc(engine, key, branch=True)
        got = {k: doc[k] for k in figures}
        if got != figures:
            wrong.append((key, figures, got))
    assert not wrong, f"{len(wrong)} figures differ, first: {wrong[:2]}"


async def buckets(engine: Any) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every non-empty day bucket (a fact moved away by a late transfer leaves zeros)."""
    async with engine.connect() as conn:
        out = []
        for model in (ManagerDayRow, BranchDayRow):
            rows = (await conn.execute(select(model))).all()
            out.append(sorted(tuple(r) for r in rows if any(v for v in tuple(r)[2:])))
    return out[0], out[1]
