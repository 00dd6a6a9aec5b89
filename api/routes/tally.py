"""Tallies of a manager or a branch for a period or a date range."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import select

from api.deps import ConnDep, Reader, SettingsDep
from models.policy import period_range
from models.tables import ManagerRow
from models.tally import branch_totals, manager_totals, tally_document

router = APIRouter(prefix="/v1", tags=["tallies"])

MAX_RANGE_DAYS = 3660
Period = Literal["day", "week", "month", "quarter", "year"]


def resolve_range(
    period: Period | None, at: date | None, start: date | None, end: date | None, today: date
) -> tuple[date, date]:
    """The inclusive dates a query asks for; 422 when the combination makes no sense."""
    if start is not None or end is not None:
        if period is not None or at is not None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "give either period (with at) or from/to, not both",
            )
        if start is None or end is None:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "from and to go together")
        if start > end:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "from must not be after to")
        if (end - start).days >= MAX_RANGE_DAYS:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"a range spans at most {MAX_RANGE_DAYS} days",
            )
        return start, end
    return period_range(period or "month", at or today)


PeriodQ = Annotated[Period | None, Query(description="day, week (ISO), month, quarter, year")]
AtQ = Annotated[date | None, Query(description="a date in the period (default: today, bank time)")]
FromQ = Annotated[date | None, Query(alias="from", description="range start (inclusive)")]
ToQ = Annotated[date | None, Query(alias="to", description="range end (inclusive)")]


def date_range(
    settings: SettingsDep,
    period: PeriodQ = None,
    at: AtQ = None,
    from_: FromQ = None,
    to: ToQ = None,
) -> tuple[date, date]:
    """The query's inclusive dates, "today" being today in the bank's time zone."""
    return resolve_range(period, at, from_, to, datetime.now(settings.tz).date())


DateRange = Annotated[tuple[date, date], Depends(date_range)]


@router.get("/managers/{manager_id}/tally")
async def manager_tally(
    manager_id: str,
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    dates: DateRange,
) -> dict[str, Any]:
    """A manager's tally for the period containing `at`, or for the range from/to."""
    if user.role == "manager" and user.manager_id != manager_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "managers see their own tally only")
    row = (
        await conn.execute(select(ManagerRow.branch_id).where(ManagerRow.manager_id == manager_id))
    ).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"manager {manager_id} not found")
    if not user.can_see_manager(manager_id, row.branch_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "manager is outside your branches")
    start, end = dates
    totals = await manager_totals(conn, manager_id, start, end)
    doc = tally_document(("manager_id", manager_id), start, end, totals, settings.tz)
    doc["branch_id"] = row.branch_id
    return doc


@router.get("/branches/{branch_id}/tally")
async def branch_tally(
    branch_id: str,
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    dates: DateRange,
) -> dict[str, Any]:
    """A branch's tally: exact sums over the events credited to its managers."""
    if not user.can_see_branch(branch_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "branch is outside your scope")
    known = (
        await conn.execute(select(ManagerRow.manager_id).where(ManagerRow.branch_id == branch_id))
    ).first()
    if known is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"branch {branch_id} not found")
    start, end = dates
    totals = await branch_totals(conn, branch_id, start, end)
    return tally_document(("branch_id", branch_id), start, end, totals, settings.tz)
