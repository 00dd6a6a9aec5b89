"""Balances: a client's 日均, and the tier review (clients whose sent tier differs from the one
their standard deposits give)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from api.answers import ClientBalancesOut, TierReviewOut
from api.deps import ConnDep, Reader, SettingsDep
from api.errors import Invalid
from api.pagination import Cursor, Limit
from api.routes.clients import decode_key, encode_key
from api.routes.tally import DateRange
from api.scope import ClientInScope, caller_scope, forbid_out_of_scope
from models.balances import client_averages, counted_days, tier_review_page
from models.policy import money
from models.tables import BalanceAccountRow

router = APIRouter(prefix="/v1", tags=["balances"])


@router.get("/clients/tier-review", response_model=TierReviewOut)
async def tier_review(
    user: Reader,
    conn: ConnDep,
    settings: SettingsDep,
    manager_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    branch_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Clients in the caller's scope whose sent tier differs from the tier their standard
    deposits give (标准存款: the last half-year's average daily balances × the policy's
    coefficients; bad credit → bronze; relationships under half a year are not classified),
    in client_id order. Items: client_id, name, manager_id, branch_id, tier (sent),
    computed_tier, standard_deposits, average_deposits, average_loans, relationship_days,
    bad_credit, window. ``total`` is left out: it would compute every client."""
    await forbid_out_of_scope(conn, user, manager_id, branch_id)
    after = decode_key(cursor) if cursor else None
    if after is not None and not isinstance(after, str):
        raise Invalid("invalid cursor")
    scope = caller_scope(user)
    managers = None if manager_id is None else {manager_id}
    if scope.manager_ids is not None:
        managers = set(scope.manager_ids) & managers if managers else set(scope.manager_ids)
    branches = None if branch_id is None else {branch_id}
    if scope.branch_ids is not None:
        branches = set(scope.branch_ids) & branches if branches else set(scope.branch_ids)
    today = datetime.now(settings.tz).date()
    items, last = await tier_review_page(
        conn,
        settings.policy,
        today,
        manager_ids=managers,
        branch_ids=branches,
        after=after,
        limit=limit,
    )
    return {
        "items": items,
        "next_cursor": encode_key(last) if last is not None else None,
    }


@router.get("/clients/{client_id}/balances", response_model=ClientBalancesOut)
async def client_balances(
    c: ClientInScope,
    conn: ConnDep,
    span: DateRange,
) -> dict[str, Any]:
    """The client's average daily balance (日均) per line for the period containing `at` (or
    from/to; a running period: its days up to today), from its accounts' end-of-day balances,
    last known balance carried forward; and each account's newest snapshot."""
    found = await client_averages(conn, [c.client_id], span.start, span.end, span.today)
    _last, days = counted_days(span.start, span.end, span.today)
    accounts = (
        await conn.execute(
            select(
                BalanceAccountRow.account_id,
                BalanceAccountRow.business_line,
                BalanceAccountRow.last_date,
                BalanceAccountRow.last_balance,
            )
            .where(BalanceAccountRow.client_id == c.client_id)
            .order_by(BalanceAccountRow.account_id)
        )
    ).all()
    return {
        "client_id": c.client_id,
        "period": {"from": span.start.isoformat(), "to": span.end.isoformat()},
        "days": days,
        "average_balance": {line: money(v) for line, v in found[c.client_id].items()},
        "accounts": [
            {
                "account_id": a.account_id,
                "business_line": a.business_line,
                "as_of_date": a.last_date.isoformat(),
                "balance": money(a.last_balance),
            }
            for a in accounts
        ],
    }
