"""Tallies of a manager or a branch for a period or a date range."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncConnection

from api.answers import BranchTallyOut, TallyOut
from api.deps import (
    READERS,
    ReadingDep,
    fast_caller,
    fast_path_route,
    plain_date,
    plain_query,
    reading,
)
from api.errors import Invalid
from api.reads import cached_answer
from api.scope import BranchId, BranchInScope, ManagerInScope, manager_ref
from models.balances import average_documents
from models.policy import account_counts_span, branch_account_targets, money, period_range
from models.tally import (
    account_targets_document,
    account_targets_status,
    branch_daily_accounts,
    hired_dates,
    manager_parts,
    period_target,
    period_totals,
    tally_document,
    target_document,
    target_history,
)

router = APIRouter(prefix="/v1", tags=["tallies"])

MAX_RANGE_DAYS = 3660
Period = Literal["day", "week", "month", "quarter", "year"]
PERIODS: frozenset[str] = frozenset(get_args(Period))


def resolve_range(
    period: Period | None, at: date | None, start: date | None, end: date | None, today: date
) -> tuple[date, date]:
    """The inclusive dates a query asks for; 422 when the combination makes no sense."""
    if start is not None or end is not None:
        if period is not None or at is not None:
            raise Invalid("give either period (with at) or from/to, not both")
        if start is None or end is None:
            raise Invalid("from and to go together")
        if start > end:
            raise Invalid("from must not be after to")
        if (end - start).days >= MAX_RANGE_DAYS:
            raise Invalid(f"a range spans at most {MAX_RANGE_DAYS} days")
        return start, end
    return period_range(period or "month", at or today)


PeriodQ = Annotated[Period | None, Query(description="day, week (ISO), month, quarter, year")]
AtQ = Annotated[date | None, Query(description="a date in the period (default: today, bank time)")]
FromQ = Annotated[date | None, Query(alias="from", description="range start (inclusive)")]
ToQ = Annotated[date | None, Query(alias="to", description="range end (inclusive)")]


@dataclass(frozen=True)
class Span:
    """What a query asks for: a named period (or None for a from/to range) and its dates."""

    period: str | None
    start: date
    end: date
    today: date


async def date_range(
    request: Request,
    period: PeriodQ = None,
    at: AtQ = None,
    from_: FromQ = None,
    to: ToQ = None,
) -> Span:
    """The query's inclusive dates, "today" being today in the bank's time zone."""
    today = datetime.now(request.app.state.settings.tz).date()
    start, end = resolve_range(period, at, from_, to, today)
    named = None if from_ is not None else (period or "month")
    return Span(named, start, end, today)


DateRange = Annotated[Span, Depends(date_range)]


def plain_period(text: str) -> str | None:
    return text if text in PERIODS else None


PLAIN_SPAN = {"period": plain_period, "at": plain_date}
"""The parameters of a period query as the fast paths take them (``plain_query``); a from/to
range goes through ``date_range``."""


def plain_span(request: Request, query: dict[str, Any]) -> Span:
    """``date_range`` for a plain period query (``PLAIN_SPAN``): it cannot fail."""
    today = datetime.now(request.app.state.settings.tz).date()
    start, end = period_range(query.get("period") or "month", query.get("at") or today)
    return Span(query.get("period") or "month", start, end, today)


# The answers are kept encoded in the read cache (api/reads.py): the routes send them as
# they were encoded, and declare what they hold for the OpenAPI document.
@cached_answer(
    "managers",
    "manager_daily",
    "manager_targets",
    "balance_daily",
    "balance_openings",
    out=TallyOut,
)
async def manager_tally_answer(
    conn: AsyncConnection, settings: Any, manager_id: str, branch_id: str, span: Span
) -> dict[str, Any]:
    # the figures also read the manager's hiring date from its last ``manager.upserted``
    # event: stored in the same transaction as the ``managers`` row it upserts; what
    # ``period_totals`` and ``average_documents`` give for one manager, read on the driver
    parts = await manager_parts(conn, manager_id, span.start, span.end, span.today, settings.policy)
    got = parts.figures
    totals = got.totals
    if parts.moved:  # the 增量认领 split (``add_handover_profit``)
        totals["weighted_profit"] += parts.moved
    doc = tally_document(("manager_id", manager_id), span.start, span.end, totals, settings.tz)
    doc["branch_id"] = branch_id
    doc["average_balance"] = {line: money(v) for line, v in parts.averages.items()}
    target = period_target(got.history, span.start, span.end, settings.tz, got.hired_at)
    doc["target"] = target_document(
        target, totals["weighted_profit"], span.start, span.end, span.today
    )
    return doc


async def manager_tally_fast(request: Request) -> Response | None:
    """``manager_tally`` without FastAPI's solving, for a plain request in scope (see
    ``fast_path_route``); None for any other."""
    manager_id: str = request.path_params["manager_id"]
    query = plain_query(request, **PLAIN_SPAN)
    user = fast_caller(request, READERS)
    if query is None or user is None or len(manager_id) > 128:
        return None
    if user.role == "manager" and user.manager_id != manager_id:
        return None
    read = await reading(request)
    ref = await manager_ref(read, manager_id)
    if ref is None or not user.can_see_manager(manager_id, ref.branch_id):
        return None
    span = plain_span(request, query)
    return await manager_tally_answer(read, manager_id, ref.branch_id, span)


async def manager_tally(
    manager: ManagerInScope,
    reading: ReadingDep,
    span: DateRange,
) -> Response:
    """A manager's tally for the period containing `at` (or from/to), with the profit target."""
    return await manager_tally_answer(reading, manager.manager_id, manager.branch_id, span)


router.add_api_route(
    "/managers/{manager_id}/tally",
    manager_tally,
    methods=["GET"],
    response_model=TallyOut,
    route_class_override=fast_path_route(manager_tally_fast),
)


@router.get("/branches/{branch_id}/tally", response_model=BranchTallyOut)
async def branch_tally(
    branch_id: BranchId,
    managers: BranchInScope,
    reading: ReadingDep,
    span: DateRange,
) -> Response:
    """A branch's tally (exact sums over its events), its account targets and profit target."""
    return await branch_tally_answer(reading, branch_id, span, managers=managers)


@cached_answer(
    "managers",
    "manager_targets",
    "branch_daily",
    "balance_daily",
    "balance_openings",
    out=BranchTallyOut,
)
async def branch_tally_answer(
    conn: AsyncConnection, settings: Any, branch_id: str, span: Span, *, managers: list[Any]
) -> dict[str, Any]:
    totals = (
        await period_totals(conn, "branch", [branch_id], span.start, span.end, settings.policy)
    )[branch_id]
    doc = tally_document(("branch_id", branch_id), span.start, span.end, totals, settings.tz)
    doc["average_balance"] = (
        await average_documents(
            conn, "branch", [branch_id], span.start, span.end, span.today, settings.policy
        )
    )[branch_id]
    lo, hi = account_counts_span(span.period, span.start, span.end)
    daily = await branch_daily_accounts(conn, branch_id, lo, hi)
    targets = branch_account_targets(
        span.period, span.start, span.end, daily, settings.policy, span.today
    )
    doc["account_targets"] = account_targets_document(targets)
    doc["account_targets_met"] = all(t.met for t in targets)
    doc["account_targets_status"] = account_targets_status(targets)
    # the branch's profit target: the sum of its managers' targets for the period
    ids = [m.manager_id for m in managers]
    histories = await target_history(conn, ids)
    hired = await hired_dates(conn, ids)
    parts = [
        period_target(h, span.start, span.end, settings.tz, hired[mid])
        for mid, h in histories.items()
    ]
    known = [p for p in parts if p is not None]
    doc["target"] = target_document(
        sum(known, Decimal(0)) if known else None,
        totals["weighted_profit"],
        span.start,
        span.end,
        span.today,
    )
    doc["managers"] = len(managers)
    return doc
