"""Assessment (考核): completion, the 70/30 score, grade and flags for one manager.

The rules themselves are plain functions in ``models.policy``; this module gathers the
figures they need from the database (tallies, target history, credit clients, the latest
evaluation a supervisor entered) and lays the answer out so each number can be explained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from models.decode import decode_event
from models.events import VisitLogged
from models.policy import (
    Policy,
    annual_judgement,
    completion_ratio,
    grade,
    money,
    performance_points,
)
from models.tables import AssignmentRow, ClientRow, EvaluationRow, EventRow
from models.tally import hired_dates, period_target, ratio_text, spans_totals, target_history


def period_label(period: str, start: date) -> str:
    """``2026`` / ``2026-Q4`` / ``2026-11``: the key evaluations are stored under."""
    if period == "year":
        return f"{start.year}"
    if period == "quarter":
        return f"{start.year}-Q{(start.month - 1) // 3 + 1}"
    if period == "month":
        return f"{start.year}-{start.month:02d}"
    raise ValueError(f"assessments are by month, quarter or year, not {period!r}")


@dataclass(frozen=True)
class PostLoanDiscipline:
    credit_clients: int
    not_overdue: int

    @property
    def share(self) -> Decimal:
        # no credit clients: nothing is overdue, the discipline is intact
        if self.credit_clients == 0:
            return Decimal(1)
        return Decimal(self.not_overdue) / Decimal(self.credit_clients)


def _is_check(payload: Any) -> bool:
    return (
        isinstance(payload, VisitLogged)
        and payload.method == "on_site"
        and payload.kind in ("post_loan_check", "surprise")
    )


@dataclass(frozen=True)
class HeldClient:
    client_id: str
    assigned_at: datetime
    """When the holding assignment began."""
    credit_client: bool


async def clients_held_at(conn: AsyncConnection, manager_id: str, at: datetime) -> list[HeldClient]:
    """The clients the manager held at ``at`` by the assignment history (分田到户 as it was
    then, not as it is today), each with its credit status by the client upsert in force at
    ``at`` (the newest one by occurred_at not after it, else the first one)."""
    current = (
        await conn.execute(
            select(ClientRow.client_id, ClientRow.assigned_at, ClientRow.credit_client).where(
                ClientRow.manager_id == manager_id
            )
        )
    ).all()
    ever = (
        await conn.execute(
            select(AssignmentRow.client_id)
            .where(AssignmentRow.manager_id == manager_id, AssignmentRow.assigned_at <= at)
            .distinct()
        )
    ).scalars()
    candidates = sorted({r[0] for r in current} | set(ever))
    if not candidates:
        return []
    histories: dict[str, list[tuple[datetime, str]]] = {}
    for cid, assigned_at, mid in (
        await conn.execute(
            select(AssignmentRow.client_id, AssignmentRow.assigned_at, AssignmentRow.manager_id)
            .where(AssignmentRow.client_id.in_(candidates))
            .order_by(AssignmentRow.client_id, AssignmentRow.assigned_at)
        )
    ).all():
        histories.setdefault(cid, []).append((assigned_at, mid))
    held: dict[str, datetime] = {}
    for cid in candidates:
        rows = histories.get(cid)
        if rows:
            before = [(a, m) for a, m in rows if a <= at]
            if before and before[-1][1] == manager_id:
                held[cid] = before[-1][0]
    # a client without any history row (written before the history existed): its record
    for cid, assigned_at, _credit in current:
        if cid not in histories and assigned_at <= at:
            held[cid] = assigned_at
    if not held:
        return []
    credit: dict[str, bool] = {cid: bool(c) for cid, _a, c in current}
    upserts: dict[str, list[tuple[datetime, bool]]] = {}
    for upserted, occurred_at, value in (
        await conn.execute(
            select(EventRow.client_id, EventRow.occurred_at, EventRow.value)
            .where(EventRow.event_type == "client.upserted", EventRow.client_id.in_(sorted(held)))
            .order_by(EventRow.client_id, EventRow.occurred_at, EventRow.event_id)
        )
    ).all():
        try:
            flag = json.loads(value).get("payload", {}).get("credit_client", False) is True
        except (ValueError, AttributeError):
            continue
        if upserted is not None:  # (the query selects the held clients' records)
            upserts.setdefault(upserted, []).append((occurred_at, flag))
    for cid, versions in upserts.items():
        in_force = [f for o, f in versions if o <= at]
        credit[cid] = in_force[-1] if in_force else versions[0][1]
    return [HeldClient(cid, held[cid], credit.get(cid, False)) for cid in sorted(held)]


async def post_loan_discipline(
    conn: AsyncConnection, held: list[HeldClient], as_of: datetime, policy: Policy
) -> PostLoanDiscipline:
    """Of the credit clients held at ``as_of``, how many were not overdue for a post-loan
    check then: the last on-site check or surprise visit (else the assignment) + interval."""
    credit = [h for h in held if h.credit_client]
    last_checks: dict[str, datetime | None] = {}
    if credit:
        rows = await conn.execute(
            select(ClientRow.client_id, ClientRow.last_post_loan_at).where(
                ClientRow.client_id.in_([h.client_id for h in credit])
            )
        )
        last_checks = {cid: at for cid, at in rows.all()}
    interval = timedelta(days=policy.post_loan_interval_days)
    ok = 0
    for h in credit:
        last_check = last_checks.get(h.client_id)
        if last_check is not None and last_check > as_of:
            # judging a past moment: find the last check made by then in the event log
            last_check = None
            visits = await conn.execute(
                select(EventRow.occurred_at, EventRow.value).where(
                    EventRow.client_id == h.client_id,
                    EventRow.event_type == "visit.logged",
                    EventRow.occurred_at <= as_of,
                )
            )
            for occurred_at, value in visits.all():
                if _is_check(decode_event(value.encode(), policy).payload) and (
                    last_check is None or occurred_at > last_check
                ):
                    last_check = occurred_at
        start = last_check if last_check is not None else h.assigned_at
        if start + interval > as_of:
            ok += 1
    return PostLoanDiscipline(len(credit), ok)


@dataclass(frozen=True)
class WorkLog:
    """及时记载工作日志: the manager's visits of a period and how many were logged late."""

    visits: int
    late: int
    limit_hours: int

    def document(self) -> dict[str, Any]:
        on_time = None if self.visits == 0 else Decimal(self.visits - self.late) / self.visits
        return {
            "what": "visits logged more than limit_hours after they happened (received - occurred)",
            "limit_hours": self.limit_hours,
            "visits": self.visits,
            "late": self.late,
            "on_time_share": ratio_text(on_time),
        }


async def work_log_promptness(
    conn: AsyncConnection, manager_id: str, start: date, end: date, policy: Policy
) -> WorkLog:
    """The manager's visits dated in [start, end] (bank days) and how many of them reached
    the product more than ``work_log_late_hours`` after they happened."""
    limit = timedelta(hours=policy.work_log_late_hours)
    rows = (
        await conn.execute(
            select(EventRow.occurred_at, EventRow.received_at).where(
                EventRow.event_type == "visit.logged",
                EventRow.manager_id == manager_id,
                EventRow.day >= start,
                EventRow.day <= end,
            )
        )
    ).all()
    late = sum(1 for occurred, received in rows if received - occurred > limit)
    return WorkLog(len(rows), late, policy.work_log_late_hours)


async def latest_evaluation(conn: AsyncConnection, manager_id: str, label: str) -> Any | None:
    return (
        await conn.execute(
            select(EvaluationRow)
            .where(EvaluationRow.manager_id == manager_id, EvaluationRow.period == label)
            .order_by(EvaluationRow.version.desc())
            .limit(1)
        )
    ).first()


def evaluation_document(row: Any) -> dict[str, Any]:
    return {
        "period": row.period,
        "version": row.version,
        "points": money(row.points),
        "parts": json.loads(row.parts) if row.parts else None,
        "reasons": row.reasons,
        "entered_by": row.entered_by,
        "entered_at": row.entered_at.isoformat(),
    }


def _days(lo: date, hi: date) -> int:
    return max(0, (hi - lo).days + 1)


def share_of_year_worked(year: int, hired_at: date | None) -> Decimal:
    """The share of ``year`` a manager was employed (1 when hired_at is unknown or earlier)."""
    y0, y1 = date(year, 1, 1), date(year, 12, 31)
    if hired_at is None or hired_at <= y0:
        return Decimal(1)
    return Decimal(_days(hired_at, y1)) / Decimal(_days(y0, y1))


async def assess(
    conn: AsyncConnection,
    manager_id: str,
    period: str,
    start: date,
    end: date,
    policy: Policy,
    now: datetime,
) -> dict[str, Any]:
    """The assessment of one manager for a month, quarter or year (DOMAIN.md "Assessment").

    A period that is over is settled: completion against its target, and for a year the
    annual judgement (rules §15). A period still running is never judged: ``pace`` compares
    the weighted profit so far with the target pro-rated to the days elapsed.
    """
    tz = policy.tz
    today = now.astimezone(tz).date()
    history = (await target_history(conn, [manager_id]))[manager_id]
    hired = (await hired_dates(conn, [manager_id]))[manager_id]
    # the weighted profit as the tally shows it (with the hand-over split), for the period
    # and for each year the annual judgement reads (below): the split read once
    lookback = max(
        policy.reappoint_mid_years,
        policy.reappoint_low_years,
        policy.demote_mid_years,
        policy.demote_low_years,
        policy.reminder_mid_years,
    )
    shown = 3
    last_year = end.year if datetime(end.year + 1, 1, 1, tzinfo=tz) <= now else end.year - 1
    years = list(range(last_year - lookback - shown + 2, last_year + 1))
    spans = [(start, end)] + [(date(y, 1, 1), date(y, 12, 31)) for y in years]
    figures = [
        t[manager_id] for t in await spans_totals(conn, "manager", [manager_id], spans, policy)
    ]
    actual = figures[0]["weighted_profit"]
    target = period_target(history, start, end, tz, hired)
    ratio = completion_ratio(actual, target)
    perf = performance_points(ratio, policy)
    settled = end < today

    label = period_label(period, start)
    entered = await latest_evaluation(conn, manager_id, label)
    period_end = datetime.combine(end + timedelta(days=1), time(0), tzinfo=tz)
    as_of = min(now, period_end)
    held = await clients_held_at(conn, manager_id, as_of)
    discipline = await post_loan_discipline(conn, held, as_of, policy)
    derived = policy.evaluation_points * discipline.share
    if entered is not None:
        # never more than the policy's weight (the policy may have changed since)
        evaluation_points = min(entered.points, policy.evaluation_points)
        evaluation: dict[str, Any] = {"source": "supervisor", **evaluation_document(entered)}
    else:
        evaluation_points = derived
        evaluation = {"source": "derived", "points": money(derived)}
    evaluation["derived_signal"] = {
        "what": "share of credit clients whose post-loan check was not overdue",
        "as_of": as_of.astimezone(tz).isoformat(timespec="seconds"),
        "credit_clients": discipline.credit_clients,
        "not_overdue": discipline.not_overdue,
        "share": ratio_text(discipline.share),
        "points": money(derived),
    }
    evaluation["work_log"] = (
        await work_log_promptness(conn, manager_id, start, min(end, today), policy)
    ).document()

    pace = None
    if not settled:
        elapsed_to = min(end, today)
        expected = period_target(history, start, elapsed_to, tz, hired) if start <= today else None
        pace = {
            "elapsed": {"from": start.isoformat(), "to": elapsed_to.isoformat()}
            if start <= today
            else None,
            "expected_to_date": money(expected) if expected is not None else None,
            "ratio": ratio_text(completion_ratio(actual, expected)),
            "on_pace": None if expected is None else actual >= expected,
        }

    # annual judgement: settled years only, each from its own run of earlier years
    judged: list[Decimal | None] = []
    yearly_doc: list[dict[str, Any]] = []
    for year, y_figures in zip(years, figures[1:], strict=True):
        y0, y1 = date(year, 1, 1), date(year, 12, 31)
        y_target = period_target(history, y0, y1, tz, hired)
        y_actual = y_figures["weighted_profit"]
        y_ratio = completion_ratio(y_actual, y_target)
        worked = share_of_year_worked(year, hired)
        not_judged = None
        if y_ratio is None:
            not_judged = "no target"
        elif worked < policy.judgement_min_share_of_year:
            not_judged = "less than half a year worked (新行员为半年以上)"
        judged.append(None if not_judged else y_ratio)
        yearly_doc.append(
            {
                "year": year,
                "target": money(y_target) if y_target is not None else None,
                "actual": money(y_actual),
                "completion_ratio": ratio_text(y_ratio),
                "judgement": annual_judgement(judged, policy),
                "not_judged": not_judged,
            }
        )
    flags: list[str] = []
    if period == "year" and settled and yearly_doc and yearly_doc[-1]["year"] == end.year:
        judgement = yearly_doc[-1]["judgement"]
        if judgement is not None:
            flags.append(judgement)
    credit_clients = sum(1 for h in held if h.credit_client)
    return {
        "manager_id": manager_id,
        "period": {"from": start.isoformat(), "to": end.isoformat(), "label": label},
        "settled": settled,
        "hired_at": hired.isoformat() if hired is not None else None,
        "target": money(target) if target is not None else None,
        "weighted_profit": money(actual),
        "completion_ratio": ratio_text(ratio),
        "completion_cap": str(policy.completion_cap),
        "performance_points": money(perf),
        "evaluation_points": money(evaluation_points),
        "evaluation": evaluation,
        "total_score": money(perf + evaluation_points),
        "pace": pace,
        "credit_clients": credit_clients,
        "grade": grade(credit_clients, policy),
        "flags": flags,
        "annual_completion": yearly_doc[-shown:],
        "as_of": now.astimezone(tz).isoformat(timespec="seconds"),
    }
