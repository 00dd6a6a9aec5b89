"""A manager's client book, visit coverage (走访覆盖率) of a manager and of a branch, and the
clients a departed (inactive) manager left behind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.answers import (
    BookClientOut,
    BranchCoverageOut,
    ManagerCoverageOut,
    Page,
    UnassignedClientOut,
)
from api.deps import ConnDep, SettingsDep
from api.errors import Invalid
from api.pagination import Cursor, Limit
from api.routes.clients import NowDep, decode_key, encode_key
from api.routes.tally import DateRange
from api.scope import BranchId, BranchInScope, ManagerInScope
from models import client_book

router = APIRouter(prefix="/v1", tags=["client book"])

Sort = Literal[
    "client_id",
    "name",
    "tier",
    "last_visit_at",
    "next_visit_due",
    "next_post_loan_due",
    "overdue_days",
    "weighted_profit_month",
    "claim_ratio",
]


def _offset(cursor: str | None, shape: list[Any]) -> int:
    if not cursor:
        return 0
    key = decode_key(cursor)
    if (
        not isinstance(key, dict)
        or key.get("shape") != shape
        or not isinstance(key.get("offset"), int)
        or isinstance(key.get("offset"), bool)
        or key["offset"] < 0
    ):
        raise Invalid("invalid cursor")
    return int(key["offset"])


def paged(items: list[dict[str, Any]], offset: int, limit: int, shape: list[Any]) -> dict[str, Any]:
    page = items[offset : offset + limit]
    more = offset + limit < len(items)
    return {
        "items": page,
        "next_cursor": encode_key({"shape": shape, "offset": offset + limit}) if more else None,
        "total": len(items),
    }


@router.get("/managers/{manager_id}/clients", response_model=Page[BookClientOut])
async def manager_clients(
    ref: ManagerInScope,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    sort: Sort = "client_id",
    order: Literal["asc", "desc"] = "asc",
    tier: Literal["diamond", "platinum", "gold", "silver", "bronze"] | None = None,
    credit: bool | None = None,
    overdue: Annotated[bool | None, Query(description="only overdue (true) or not (false)")] = None,
    segment: Literal["corporate", "retail"] | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The manager's client book: tier, credit, claim ratio, last visits, next due dates,
    days overdue, this month's weighted profit; sorted (missing values last, ties by client
    id) and filtered."""
    shape = [sort, order, tier, credit, overdue, segment, q]
    offset = _offset(cursor, shape)
    items = await client_book.book(conn, ref.manager_id, settings.policy, now)
    items = client_book.sort_and_filter(
        items,
        sort=sort,
        descending=order == "desc",
        tier=tier,
        credit=credit,
        overdue=overdue,
        segment=segment,
        q=q,
    )
    return paged(items, offset, limit, shape)


def _span_doc(span: Any) -> dict[str, str]:
    return {"from": span.start.isoformat(), "to": span.end.isoformat()}


@router.get("/managers/{manager_id}/coverage", response_model=ManagerCoverageOut)
async def manager_coverage(
    ref: ManagerInScope, conn: ConnDep, settings: SettingsDep, now: NowDep, span: DateRange
) -> dict[str, Any]:
    """Visit coverage (走访覆盖率) of the manager's clients now, and visits per client over
    the period (default this month)."""
    cov = await client_book.coverage(conn, [ref.manager_id], span.start, span.end, settings.tz, now)
    return {
        "manager_id": ref.manager_id,
        "branch_id": ref.branch_id,
        "period": _span_doc(span),
        "as_of": now.astimezone(settings.tz).isoformat(),
        **cov[ref.manager_id].document(),
    }


@router.get("/branches/{branch_id}/coverage", response_model=BranchCoverageOut)
async def branch_coverage(
    branch_id: BranchId,
    managers: BranchInScope,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    span: DateRange,
) -> dict[str, Any]:
    """Visit coverage of the branch (its managers' clients) and of each manager."""
    ids = [m.manager_id for m in managers]
    per = await client_book.coverage(conn, ids, span.start, span.end, settings.tz, now)
    total = client_book.Coverage()
    for c in per.values():
        total.add(c)
    return {
        "branch_id": branch_id,
        "period": _span_doc(span),
        "as_of": now.astimezone(settings.tz).isoformat(),
        **total.document(),
        "managers": [
            {
                "manager_id": m.manager_id,
                "name": m.name,
                "active": m.active,
                **per[m.manager_id].document(),
            }
            for m in managers
        ],
    }


@router.get("/branches/{branch_id}/unassigned", response_model=Page[UnassignedClientOut])
async def branch_unassigned(
    branch_id: BranchId,
    managers: BranchInScope,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The clients of the branch's departed managers (marked inactive), waiting to be
    reassigned: most urgent first (earliest due instant of either kind), then client id.
    Their reminders go to the supervisor at once (no grace period)."""
    shape = ["unassigned", branch_id]
    offset = _offset(cursor, shape)
    items = []
    for m in managers:
        if m.active:
            continue
        for c in await client_book.book(conn, m.manager_id, settings.policy, now):
            items.append({**c, "manager_id": m.manager_id, "manager_name": m.name})

    def urgency(i: dict[str, Any]) -> tuple[int, str, str]:
        dues = [d for d in (i["next_visit_due"], i["next_post_loan_due"]) if d is not None]
        first = min(dues, key=lambda d: datetime.fromisoformat(d)) if dues else None
        stamp = datetime.fromisoformat(first).astimezone(UTC).isoformat() if first else ""
        return (0 if first else 1, stamp, i["client_id"])

    items.sort(key=urgency)
    return paged(items, offset, limit, shape)
