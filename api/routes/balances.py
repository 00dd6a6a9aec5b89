"""Balances: the tier review (clients whose sent tier differs from their standard deposits')."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import ConnDep, Reader, SettingsDep
from api.pagination import Cursor, Limit
from api.routes.clients import decode_key, encode_key
from api.scope import caller_scope, forbid_out_of_scope
from models.balances import tier_review_page

router = APIRouter(prefix="/v1", tags=["balances"])


@router.get("/clients/tier-review")
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
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor")
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
