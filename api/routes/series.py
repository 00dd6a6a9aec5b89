"""Trend series of a manager or a branch: a metric per day (or month) over a range."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from api.answers import BranchSeriesOut, ManagerSeriesOut
from api.deps import ConnDep, SettingsDep
from api.errors import Invalid
from api.routes.clients import NowDep
from api.scope import BranchId, BranchInScope, ManagerInScope
from models.series import series
from models.tally import METRICS

router = APIRouter(prefix="/v1", tags=["trends"])

MAX_DAYS = 800  # a daily series of two years and a bit; monthly: 10 years
MetricQ = Annotated[str, Query(max_length=64, description="a tally metric (as the leaderboard)")]
FromQ = Annotated[date | None, Query(alias="from", description="first day (default: month start)")]
ToQ = Annotated[date | None, Query(alias="to", description="last day (default: month end)")]
Step = Annotated[Literal["day", "month"], Query(description="a point per day or per month")]


def _range(start: date | None, end: date | None, step: str, today: date) -> tuple[date, date]:
    first = today.replace(day=1)
    start = start or first
    if end is None:
        try:
            end = (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        except OverflowError:
            end = date.max
    if end.year > 9998:
        raise Invalid("dates run to 9998-12-31")
    if start > end:
        raise Invalid("from must not be after to")
    limit = MAX_DAYS if step == "day" else 3660
    if (end - start).days >= limit:
        raise Invalid(f"a {step} series spans at most {limit} days")
    return start, end


def _metric(metric: str) -> str:
    if metric not in METRICS:
        raise Invalid(f"unknown metric {metric!r}; one of {', '.join(sorted(METRICS))}")
    return metric


@router.get("/managers/{manager_id}/series", response_model=ManagerSeriesOut)
async def manager_series(
    ref: ManagerInScope,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    metric: MetricQ = "weighted_profit",
    from_: FromQ = None,
    to: ToQ = None,
    step: Step = "day",
) -> dict[str, Any]:
    """The manager's metric per day (or month) over from..to (default this month), with the
    running total and the pro-rated profit target to each point (weighted profit)."""
    start, end = _range(from_, to, step, now.astimezone(settings.tz).date())
    doc = await series(
        conn,
        manager_ids=[ref.manager_id],
        branch_id=None,
        metric=_metric(metric),
        start=start,
        end=end,
        step=step,
        tz=settings.tz,
        policy=settings.policy,
    )
    return {"manager_id": ref.manager_id, **doc}


@router.get("/branches/{branch_id}/series", response_model=BranchSeriesOut)
async def branch_series(
    branch_id: BranchId,
    managers: BranchInScope,
    conn: ConnDep,
    settings: SettingsDep,
    now: NowDep,
    metric: MetricQ = "weighted_profit",
    from_: FromQ = None,
    to: ToQ = None,
    step: Step = "day",
) -> dict[str, Any]:
    """The branch's metric per day (or month): exact sums over its events; the target is the
    sum of its managers' targets, pro-rated (the burn-up's line)."""
    start, end = _range(from_, to, step, now.astimezone(settings.tz).date())
    doc = await series(
        conn,
        manager_ids=[m.manager_id for m in managers],
        branch_id=branch_id,
        metric=_metric(metric),
        start=start,
        end=end,
        step=step,
        tz=settings.tz,
        policy=settings.policy,
    )
    return {"branch_id": branch_id, **doc}
