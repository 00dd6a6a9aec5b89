"""Report routes: the assessment table of a branch, and the weekly branch report (XLSX).

Every report route (these, leaderboards, tallies, the overdue list, the client book, the
plan, coverage) also answers as CSV or XLSX with ``?format=csv|xlsx`` or ``Accept``
(api/export.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api.answers import BranchAssessmentOut
from api.deps import ConnDep, Reader, SettingsDep
from api.errors import Invalid, NotFound
from api.export import XLSX
from api.pagination import Cursor, Limit
from api.routes.assessment import AtQ, PeriodQ
from api.routes.book import _offset, paged
from api.routes.clients import NowDep
from api.scope import BranchId, BranchInScope
from models import reports
from models.assessment import assess
from models.policy import period_range

router = APIRouter(prefix="/v1", tags=["reports"])


@router.get("/branches/{branch_id}/assessment", response_model=BranchAssessmentOut)
async def branch_assessment(
    branch_id: BranchId,
    managers: BranchInScope,
    conn: ConnDep,
    settings: SettingsDep,
    period: PeriodQ = "year",
    at: AtQ = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The assessment table (考核表) of the branch: each manager's assessment for the period
    (completion, points, total, grade, flags), by manager id; departed managers included."""
    shape = ["assessment", branch_id, period, at.isoformat() if at else None]
    offset = _offset(cursor, shape)
    now = datetime.now(UTC)
    start, end = period_range(period, at or now.astimezone(settings.tz).date())
    items = []
    for m in managers[offset : offset + limit]:
        doc = await assess(conn, m.manager_id, period, start, end, settings.policy, now)
        items.append({"manager_id": m.manager_id, "name": m.name, "active": m.active, **doc})
    page = paged([{}] * len(managers), offset, limit, shape)
    page["items"] = items
    return {
        "branch_id": branch_id,
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        **page,
    }


@router.get(
    "/branches/{branch_id}/reports/weekly",
    response_class=Response,
    responses={200: {"content": {XLSX: {"example": "(an XLSX workbook)"}}}},
)
async def weekly_report(
    branch_id: BranchId,
    user: Reader,
    managers: BranchInScope,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    at: Annotated[
        date | None, Query(description="a day of the week to report (default: last week)")
    ] = None,
) -> Response:
    """The weekly branch report for the Monday meeting, as XLSX: per manager, the week's
    weighted profit, transactions, accounts, visits, coverage, overdue counts and reminders
    fired / acked / escalated; the branch row and its weekly account target."""
    week = at or reports.last_week(now.astimezone(settings.tz).date())
    try:
        report = await reports.weekly(conn, branch_id, week, settings.policy, now)
    except OverflowError:
        raise Invalid("at is out of range") from None
    if report is None:  # (BranchInScope has answered 404 already)
        raise NotFound("branch", branch_id)
    body = reports.workbook(report, settings.tz.key)
    name = f"weekly-{branch_id}-{report.start.isoformat()}.xlsx"
    return Response(
        body,
        media_type=XLSX,
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": "no-store",
        },
    )
