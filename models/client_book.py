"""A manager's client book and visit coverage (走访覆盖率), for the API and the reports.

The book: every client the manager holds with tier, credit status, claim ratio, last visits,
next due dates, days overdue and the weighted profit credited to the manager for the client
this month (exact: the sum of the ``weighted_profit`` stored with each applied transaction,
with the hand-over split of deposit business as in the tallies).

Coverage, as of now: the share of clients visited within their interval (a last visit on
record and the ordinary clock not yet run out), overdue counts by kind, and visits made per
client over a period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.balances import handover_profit_clients
from models.policy import TIERS, Policy, claim_ratio, money
from models.tables import ClientRow, EventRow, ExactDecimal, ManagerRow, VisitRow
from models.visits import overdue_days, visit_interval_days

RATIO = Decimal("0.0001")
SORTS = (
    "client_id",
    "name",
    "tier",
    "last_visit_at",
    "next_visit_due",
    "next_post_loan_due",
    "overdue_days",
    "weighted_profit_month",
    "claim_ratio",
)


def ratio(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(RATIO, rounding=ROUND_HALF_UP))


def _ts(value: datetime | None, tz: ZoneInfo) -> str | None:
    return value.astimezone(tz).isoformat() if value is not None else None


def month_bounds(today: date, tz: ZoneInfo) -> tuple[date, date]:
    first = today.replace(day=1)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return first, nxt - timedelta(days=1)


async def profit_by_client(
    conn: AsyncConnection, manager_ids: list[str], start: date, end: date, policy: Policy
) -> dict[tuple[str, str], Decimal]:
    """(manager, client) → exact weighted profit credited over [start, end] (bank days),
    with the hand-over split of deposit business (as the tallies)."""
    if not manager_ids:
        return {}
    moved = await handover_profit_clients(conn, manager_ids, (start, end), policy)
    fn = func.sum if conn.dialect.name == "postgresql" else func.decimal_sum
    rows = await conn.execute(
        select(
            EventRow.manager_id,
            EventRow.client_id,
            fn(EventRow.weighted_profit, type_=ExactDecimal()),
        )
        .where(
            EventRow.manager_id.in_(manager_ids),
            EventRow.status == "applied",
            EventRow.event_type == "transaction.posted",
            EventRow.day >= start,
            EventRow.day <= end,
        )
        .group_by(EventRow.manager_id, EventRow.client_id)
    )
    # (the query selects transactions of the given managers, and a transaction names its client)
    out = {(m, c): Decimal(v or 0) for m, c, v in rows.all() if m is not None and c is not None}
    for key, v in moved.items():
        out[key] = out.get(key, Decimal(0)) + v
    return out


def overdue_of(due: datetime | None, now: datetime) -> int | None:
    return overdue_days(due, now) if due is not None and due <= now else None


async def book(
    conn: AsyncConnection, manager_id: str, policy: Policy, now: datetime
) -> list[dict[str, Any]]:
    """Every client the manager holds, in client id order."""
    tz = policy.tz
    start, end = month_bounds(now.astimezone(tz).date(), tz)
    profit = await profit_by_client(conn, [manager_id], start, end, policy)
    rows = (
        await conn.execute(
            select(ClientRow)
            .where(ClientRow.manager_id == manager_id)
            .order_by(ClientRow.client_id)
        )
    ).all()
    items = []
    for c in rows:
        visit_over = overdue_of(c.next_visit_due, now)
        check_over = overdue_of(c.next_post_loan_due, now) if c.credit_client else None
        worst = max((d for d in (visit_over, check_over) if d is not None), default=None)
        items.append(
            {
                "client_id": c.client_id,
                "name": c.name,
                "segment": c.segment,
                "tier": c.tier,
                "credit_client": c.credit_client,
                "bad_credit": getattr(c, "bad_credit", None),
                "origin": c.origin,
                "claim_ratio": ratio(claim_ratio(c.claim_ratio, c.origin, False, None, policy)),
                "claim_ratio_set": c.claim_ratio is not None,
                "branch_id": c.branch_id,
                "assigned_at": _ts(c.assigned_at, tz),
                "visit_interval_days": visit_interval_days(c.tier, c.visit_interval_days, policy),
                "last_visit_at": _ts(c.last_visit_at, tz),
                "last_post_loan_check_at": _ts(c.last_post_loan_at, tz),
                "next_visit_due": _ts(c.next_visit_due, tz),
                "next_post_loan_due": _ts(c.next_post_loan_due, tz) if c.credit_client else None,
                "overdue_days": {"visit": visit_over, "post_loan_check": check_over},
                "overdue_days_max": worst,
                "weighted_profit_month": money(profit.get((manager_id, c.client_id), Decimal(0))),
                "month": {"from": start.isoformat(), "to": end.isoformat()},
            }
        )
    return items


def _sort_key(field: str) -> Any:
    tier_rank = {t: i for i, t in enumerate(TIERS)}

    def key(item: dict[str, Any]) -> Any:
        if field == "tier":
            v: Any = tier_rank.get(item["tier"], len(TIERS))
        elif field == "overdue_days":
            v = item["overdue_days_max"]
        elif field in ("weighted_profit_month", "claim_ratio"):
            v = Decimal(item[field]) if item[field] is not None else None
        else:
            v = item[field]
        return v

    return key


def sort_and_filter(
    items: list[dict[str, Any]],
    *,
    sort: str = "client_id",
    descending: bool = False,
    tier: str | None = None,
    credit: bool | None = None,
    overdue: bool | None = None,
    segment: str | None = None,
    q: str | None = None,
) -> list[dict[str, Any]]:
    """Filter, then sort on a field (missing values last either way), ties by client id."""
    out = [
        i
        for i in items
        if (tier is None or i["tier"] == tier)
        and (credit is None or i["credit_client"] == credit)
        and (overdue is None or (i["overdue_days_max"] is not None) == overdue)
        and (segment is None or i["segment"] == segment)
        and (
            q is None
            or q.lower() in i["client_id"].lower()
            or (i["name"] is not None and q.lower() in i["name"].lower())
        )
    ]
    key = _sort_key(sort)
    present = [i for i in out if key(i) is not None]
    missing = [i for i in out if key(i) is None]
    present.sort(key=lambda i: i["client_id"])
    present.sort(key=key, reverse=descending)
    missing.sort(key=lambda i: i["client_id"])
    return present + missing


# --- coverage ---------------------------------------------------------------------------------
@dataclass
class Coverage:
    clients: int = 0
    covered: int = 0
    never_visited: int = 0
    overdue_visit: int = 0
    overdue_post_loan_check: int = 0
    credit_clients: int = 0
    visits: int = 0

    def add(self, other: Coverage) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def document(self) -> dict[str, Any]:
        share = Decimal(self.covered) / Decimal(self.clients) if self.clients else None
        per_client = Decimal(self.visits) / Decimal(self.clients) if self.clients else None
        return {
            "clients": self.clients,
            "covered": self.covered,
            "coverage": ratio(share),
            "never_visited": self.never_visited,
            "overdue": {
                "visit": self.overdue_visit,
                "post_loan_check": self.overdue_post_loan_check,
            },
            "credit_clients": self.credit_clients,
            "visits": self.visits,
            "visits_per_client": None
            if per_client is None
            else str(per_client.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)),
        }


async def coverage(
    conn: AsyncConnection,
    manager_ids: list[str],
    start: date,
    end: date,
    tz: ZoneInfo,
    now: datetime,
) -> dict[str, Coverage]:
    """Per manager: coverage of the clients held now, and visits made over [start, end]."""
    out = {m: Coverage() for m in manager_ids}
    if not manager_ids:
        return out
    rows = await conn.execute(
        select(
            ClientRow.manager_id,
            ClientRow.credit_client,
            ClientRow.last_visit_at,
            ClientRow.next_visit_due,
            ClientRow.next_post_loan_due,
        ).where(ClientRow.manager_id.in_(manager_ids))
    )
    for m, credit, last, due, check_due in rows.all():
        c = out[m]
        c.clients += 1
        if last is None:
            c.never_visited += 1
        elif due is not None and due > now:
            c.covered += 1
        if due is not None and due <= now:
            c.overdue_visit += 1
        if credit:
            c.credit_clients += 1
            if check_due is not None and check_due <= now:
                c.overdue_post_loan_check += 1
    lo = datetime.combine(start, time(0), tz)
    hi = datetime.combine(end, time.max, tz)
    applied = (
        select(EventRow.event_id)
        .where(EventRow.event_id == VisitRow.event_id, EventRow.status == "applied")
        .exists()
    )
    counts = await conn.execute(
        select(VisitRow.manager_id, func.count())
        .where(
            and_(
                VisitRow.manager_id.in_(manager_ids),
                VisitRow.occurred_at >= lo,
                VisitRow.occurred_at <= hi,
                applied,
            )
        )
        .group_by(VisitRow.manager_id)
    )
    for m, n in counts.all():
        out[m].visits += int(n)
    return out


async def branch_managers(conn: AsyncConnection, branch_id: str) -> list[Any]:
    return list(
        (
            await conn.execute(
                select(ManagerRow.manager_id, ManagerRow.name, ManagerRow.active)
                .where(ManagerRow.branch_id == branch_id)
                .order_by(ManagerRow.manager_id)
            )
        ).all()
    )
