"""Daily and monthly series of a manager's or a branch's figures, for the trend charts.

Each point is exact (the day buckets summed as decimals; the weighted profit with the
hand-over split of deposit business, as the tallies), with the running total
(``cumulative``, for a burn-up) and, where the manager(s) have a profit target, the target
pro-rated to that point (``target_to_date``: the target of the range's days up to it).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.balances import handover_profit_days
from models.policy import money
from models.tables import COUNT_COLUMNS, MONEY_COLUMNS, BranchDayRow, ManagerDayRow
from models.tally import (
    METRICS,
    metric_value,
    period_target,
    show_metric,
    target_history,
    zero_totals,
)

COLUMNS = (*MONEY_COLUMNS, *COUNT_COLUMNS)


async def _days(
    conn: AsyncConnection, model: Any, key_col: str, key: str, start: date, end: date
) -> dict[date, dict[str, Any]]:
    table = model.__table__
    rows = await conn.execute(
        select(table).where(table.c[key_col] == key, table.c.day >= start, table.c.day <= end)
    )
    return {r["day"]: dict(r) for r in rows.mappings()}


def _buckets(start: date, end: date, step: str) -> list[tuple[date, date]]:
    out = []
    d = start
    while d <= end:
        if step == "day":
            hi = d
        else:
            nxt = (d.replace(day=1) + timedelta(days=32)).replace(day=1)
            hi = min(end, nxt - timedelta(days=1))
        out.append((d, hi))
        if hi >= end:
            break
        d = hi + timedelta(days=1)
    return out


async def series(
    conn: AsyncConnection,
    *,
    manager_ids: list[str],
    branch_id: str | None,
    metric: str,
    start: date,
    end: date,
    step: str,
    tz: ZoneInfo,
    policy: Any,
) -> dict[str, Any]:
    if branch_id is not None:
        scope, owner = "branch", branch_id
        days = await _days(conn, BranchDayRow, "branch_id", branch_id, start, end)
    else:
        scope, owner = "manager", manager_ids[0]
        days = await _days(conn, ManagerDayRow, "manager_id", owner, start, end)
    # the weighted profit as the tallies show it: each day with its hand-over split
    moved = (
        await handover_profit_days(conn, scope, owner, (start, end), policy)
        if metric == "weighted_profit"
        else {}
    )
    money_metric = METRICS[metric][0] == "money"
    histories = await target_history(conn, manager_ids) if metric == "weighted_profit" else {}

    def target(lo: date, hi: date) -> Decimal | None:
        parts = [period_target(h, lo, hi, tz) for h in histories.values()]
        known = [p for p in parts if p is not None]
        return sum(known, Decimal(0)) if known else None

    points = []
    running: Decimal | int = Decimal(0) if money_metric else 0
    for lo, hi in _buckets(start, end, step):
        totals = zero_totals()
        d = lo
        while d <= hi:
            row = days.get(d)
            if row is not None:
                for c in COLUMNS:
                    totals[c] += row[c]
            totals["weighted_profit"] += moved.get(d, Decimal(0))
            d += timedelta(days=1)
        value = metric_value(totals, metric)
        running += value
        to_date = target(start, hi) if histories else None
        points.append(
            {
                "from": lo.isoformat(),
                "to": hi.isoformat(),
                "value": show_metric(metric, value),
                "cumulative": show_metric(metric, running),
                "target_to_date": money(to_date) if to_date is not None else None,
            }
        )
    whole = target(start, end) if histories else None
    return {
        "metric": metric,
        "step": step,
        "period": {"from": start.isoformat(), "to": end.isoformat()},
        "target": money(whole) if whole is not None else None,
        "points": points,
    }
