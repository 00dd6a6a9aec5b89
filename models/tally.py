"""Reading tallies: a period's figures are the sum of its daily buckets.

Sums are exact (``Decimal``) and rounded half-up to two places only when shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.policy import ACCOUNT_TYPES, BUSINESS_LINES, VISIT_KINDS, VISIT_METHODS, money
from models.tables import COUNT_COLUMNS, MONEY_COLUMNS, BranchDayRow, ManagerDayRow


def zero_totals() -> dict[str, Any]:
    totals: dict[str, Any] = {c: Decimal(0) for c in MONEY_COLUMNS}
    totals.update({c: 0 for c in COUNT_COLUMNS})
    return totals


def sum_rows(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    totals = zero_totals()
    for r in rows:
        for c in MONEY_COLUMNS:
            totals[c] += r[c]
        for c in COUNT_COLUMNS:
            totals[c] += r[c]
    return totals


def tally_document(
    owner: tuple[str, str], start: date, end: date, totals: Mapping[str, Any], tz: ZoneInfo
) -> dict[str, Any]:
    """The tally object of CONTRACT.md §3 (zero counts are left out, as in the contract)."""
    accounts = {t: totals[f"accounts_{t}"] for t in ACCOUNT_TYPES if totals[f"accounts_{t}"]}
    visits: dict[str, int] = {"total": totals["visits_total"]}
    for k in (*VISIT_METHODS, *VISIT_KINDS):
        if totals[f"visits_{k}"]:
            visits[k] = totals[f"visits_{k}"]
    return {
        owner[0]: owner[1],
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "transactions": totals["transactions"],
        "volume": {line: money(totals[f"volume_{line}"]) for line in BUSINESS_LINES},
        "simulated_profit": {line: money(totals[f"profit_{line}"]) for line in BUSINESS_LINES},
        "weighted_profit": money(totals["weighted_profit"]),
        "accounts_opened": accounts,
        "accounts_by_origin": {
            "natural": totals["accounts_natural"],
            "marketed": totals["accounts_marketed"],
        },
        "visits": visits,
        "as_of": datetime.now(tz).isoformat(timespec="seconds"),
    }


async def manager_totals(
    conn: AsyncConnection, manager_id: str, start: date, end: date
) -> dict[str, Any]:
    t = ManagerDayRow.__table__
    res = await conn.execute(
        select(t).where(t.c.manager_id == manager_id, t.c.day >= start, t.c.day <= end)
    )
    return sum_rows(res.mappings())


async def branch_totals(
    conn: AsyncConnection, branch_id: str, start: date, end: date
) -> dict[str, Any]:
    t = BranchDayRow.__table__
    res = await conn.execute(
        select(t).where(t.c.branch_id == branch_id, t.c.day >= start, t.c.day <= end)
    )
    return sum_rows(res.mappings())
