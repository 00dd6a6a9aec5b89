"""Leaderboards: a branch's managers ranked on a metric, and the whole bank for admins."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from api.answers import BranchLeaderboardOut, LeaderboardOut
from api.deps import (
    READERS,
    Admin,
    Reader,
    ReadingDep,
    fast_caller,
    fast_path_route,
    plain_query,
    reading,
)
from api.errors import Forbidden, Invalid
from api.pagination import Cursor, Limit, decode_cursor, encode_cursor
from api.reads import cached_answer
from api.routes.tally import PLAIN_SPAN, DateRange, Span, plain_span
from api.scope import BranchId, BranchInScope, branch_refs
from models.balances import (
    BALANCE_METRICS,
    average_balances,
    average_documents,
    handover_profit_split,
)
from models.policy import money
from models.tables import ManagerRow
from models.tally import (
    METRICS,
    managers_metric,
    metric_value,
    period_totals,
    rank,
    show_metric,
    tally_document,
    zero_totals,
)

router = APIRouter(prefix="/v1", tags=["leaderboards"])

MetricQ = Annotated[
    str,
    Query(
        description="what to rank on: weighted_profit (default), transactions, volume, "
        "volume.<line>, simulated_profit[.<line>], accounts_opened[.<type>], "
        "new_basic_accounts, visits[.<method or kind>], average_deposits, average_loans "
        "(average daily balances)",
        max_length=64,
    ),
]


def _check_metric(metric: str) -> None:
    if metric not in METRICS and metric not in BALANCE_METRICS:
        raise Invalid(
            f"unknown metric {metric!r}; one of: {', '.join([*METRICS, *BALANCE_METRICS])}"
        )


async def _board(
    conn: Any,
    settings: Any,
    managers: list[Any],
    span: Span,
    metric: str,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of managers ranked on the metric (the tables it reads: ``BOARD_READS``)."""
    start = decode_cursor(cursor, "rank") if cursor else 0
    ids = [m.manager_id for m in managers]
    # rank on the metric's own columns; full tallies only for the page shown
    line = BALANCE_METRICS.get(metric)
    if line is not None:  # average daily balances (models/balances.py)
        averages = await average_balances(
            conn, "manager", ids, span.start, span.end, span.today, settings.policy
        )
        found: dict[str, Any] = {m: v[line] for m, v in averages.items() if v[line]}
        zero: Any = Decimal(0)
    else:
        found = await managers_metric(conn, ids, span.start, span.end, metric)
        zero = metric_value(zero_totals(), metric)
        if metric == "weighted_profit":  # with the 增量认领 split of deposit business
            moved = await handover_profit_split(
                conn, "manager", ids, (span.start, span.end), settings.policy
            )
            found = {m: found.get(m, zero) + moved.get(m, zero) for m in {*found, *moved}}
    values: dict[str, Any] = {}
    for m in managers:
        # every active manager is ranked; a departed one only if the period has their work
        if m.manager_id not in found and not m.active:
            continue
        values[m.manager_id] = found.get(m.manager_id, zero)
    ranked = rank(values)
    page = ranked[start : start + limit]
    shown = [mid for _, mid, _ in page]
    totals = await period_totals(conn, "manager", shown, span.start, span.end, settings.policy)
    balances = await average_documents(
        conn, "manager", shown, span.start, span.end, span.today, settings.policy
    )
    info = {m.manager_id: m for m in managers}
    items = []
    for position, manager_id, value in page:
        doc = tally_document(
            ("manager_id", manager_id),
            span.start,
            span.end,
            totals.get(manager_id) or zero_totals(),
            settings.tz,
        )
        doc["average_balance"] = balances[manager_id]
        items.append(
            {
                "rank": position,
                "manager_id": manager_id,
                "name": info[manager_id].name,
                "branch_id": info[manager_id].branch_id,
                "value": money(Decimal(value)) if line is not None else show_metric(metric, value),
                "tally": doc,
            }
        )
    end = start + len(page)
    return {
        "metric": metric,
        "period": {"from": span.start.isoformat(), "to": span.end.isoformat()},
        "items": items,
        "next_cursor": encode_cursor("rank", end) if end < len(ranked) else None,
        "total": len(ranked),
    }


BOARD_READS = ("managers", "manager_daily", "balance_daily", "balance_openings")


@cached_answer(*BOARD_READS, out=BranchLeaderboardOut)
async def branch_board(
    conn: AsyncConnection,
    settings: Any,
    branch_id: str,
    span: Span,
    metric: str,
    limit: int,
    cursor: str | None,
    *,
    managers: list[Any],
) -> dict[str, Any]:
    board = await _board(conn, settings, managers, span, metric, limit, cursor)
    return {"branch_id": branch_id, **board}


@cached_answer(*BOARD_READS, out=LeaderboardOut)
async def bank_board(
    conn: AsyncConnection, settings: Any, span: Span, metric: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    managers = (
        await conn.execute(
            select(ManagerRow.manager_id, ManagerRow.name, ManagerRow.branch_id, ManagerRow.active)
        )
    ).all()
    return await _board(conn, settings, list(managers), span, metric, limit, cursor)


def plain_metric(text: str) -> str | None:
    return text if text in METRICS or text in BALANCE_METRICS else None


def plain_limit(text: str) -> int | None:
    """A page size written as plain digits (no leading zero) within ``Limit``'s bounds."""
    plain = text.isascii() and text.isdigit() and text[0] != "0"
    return int(text) if plain and int(text) <= 1000 else None


async def branch_leaderboard_fast(request: Request) -> Response | None:
    """``branch_leaderboard`` without FastAPI's solving, for a plain first-page request of a
    supervisor or an admin in scope (see ``fast_path_route``); None for any other."""
    branch_id: str = request.path_params["branch_id"]
    query = plain_query(request, metric=plain_metric, limit=plain_limit, **PLAIN_SPAN)
    user = fast_caller(request, READERS)
    if query is None or user is None or user.role == "manager" or len(branch_id) > 128:
        return None
    if not user.can_see_branch(branch_id):
        return None
    read = await reading(request)
    refs = await branch_refs(read, branch_id)
    if not refs:
        return None
    span = plain_span(request, query)
    metric, limit = query.get("metric", "weighted_profit"), query.get("limit", 100)
    return await branch_board(read, branch_id, span, metric, limit, None, managers=list(refs))


async def branch_leaderboard(
    branch_id: BranchId,
    user: Reader,
    managers: BranchInScope,
    reading: ReadingDep,
    span: DateRange,
    metric: MetricQ = "weighted_profit",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """Every manager of the branch ranked on a metric, highest first, ties by manager_id."""
    _check_metric(metric)
    if user.role == "manager":
        raise Forbidden("leaderboards are for supervisors")
    return await branch_board(reading, branch_id, span, metric, limit, cursor, managers=managers)


router.add_api_route(
    "/branches/{branch_id}/leaderboard",
    branch_leaderboard,
    methods=["GET"],
    response_model=BranchLeaderboardOut,
    route_class_override=fast_path_route(branch_leaderboard_fast),
)


@router.get("/leaderboard", response_model=LeaderboardOut)
async def bank_leaderboard(
    user: Admin,
    reading: ReadingDep,
    span: DateRange,
    metric: MetricQ = "weighted_profit",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Response:
    """Every manager of the bank ranked on a metric (admins), highest first, ties by manager_id."""
    _check_metric(metric)
    return await bank_board(reading, span, metric, limit, cursor)
