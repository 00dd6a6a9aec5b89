"""The weekly branch report for the Monday meeting (周例会): last week per manager, as XLSX.

One row per manager of the branch (active ones, and departed ones with work in the week):
weighted profit (exact, rounded once; with the hand-over split, as the tallies),
transactions, accounts opened (all, corporate settlement, basic), visits, coverage of their
clients and overdue counts (as of when the report is made), reminders fired, acknowledged
and escalated in the week; then the branch row (its own exact totals, rounded once) and the
branch's weekly account target.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from models import client_book
from models.policy import ACCOUNT_TYPES, Policy, branch_account_targets, money
from models.tables import ManagerRow, ReminderRow
from models.tally import account_targets_document, branch_daily_accounts, period_totals

COLUMNS: list[tuple[str, str]] = [
    ("manager_id", "客户经理 manager"),
    ("name", "姓名 name"),
    ("weighted_profit", "加权模拟利润 weighted profit"),
    ("transactions", "交易笔数 transactions"),
    ("accounts", "开户 accounts"),
    ("accounts_corporate_settlement", "对公结算户 corporate settlement"),
    ("accounts_basic_settlement", "基本户 basic"),
    ("visits", "走访 visits"),
    ("clients", "管户 clients"),
    ("coverage", "走访覆盖率 coverage"),
    ("overdue_visit", "逾期未访 overdue visits"),
    ("overdue_post_loan_check", "贷后逾期 overdue checks"),
    ("reminders_fired", "提醒 fired"),
    ("reminders_acked", "已确认 acked"),
    ("reminders_escalated", "已升级 escalated"),
]


def last_week(today: date) -> date:
    """Monday of the ISO week before the one holding ``today``."""
    return today - timedelta(days=today.weekday() + 7)


@dataclass
class WeeklyReport:
    branch_id: str
    start: date
    end: date
    rows: list[dict[str, Any]]
    branch: dict[str, Any]
    account_targets: list[dict[str, Any]]
    made_at: datetime


async def _reminder_counts(
    conn: AsyncConnection, ids: list[str], lo: datetime, hi: datetime
) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for what, col in (
        ("fired", ReminderRow.fired_at),
        ("acked", ReminderRow.acked_at),
        ("escalated", ReminderRow.escalated_at),
    ):
        rows = await conn.execute(
            select(ReminderRow.manager_id, func.count())
            .where(ReminderRow.manager_id.in_(ids), col >= lo, col < hi)
            .group_by(ReminderRow.manager_id)
        )
        for m, n in rows.all():
            out[(m, what)] = int(n)
    return out


async def weekly(
    conn: AsyncConnection,
    branch_id: str,
    week_start: date,
    policy: Policy,
    now: datetime,
    progress: Callable[[int, int], None] | None = None,
) -> WeeklyReport | None:
    """The report of the ISO week starting ``week_start`` (a Monday); None: no such branch."""
    tz = policy.tz
    start = week_start - timedelta(days=week_start.weekday())
    end = start + timedelta(days=6)
    managers = (
        await conn.execute(
            select(ManagerRow.manager_id, ManagerRow.name, ManagerRow.active)
            .where(ManagerRow.branch_id == branch_id)
            .order_by(ManagerRow.manager_id)
        )
    ).all()
    if not managers:
        return None
    ids = [m.manager_id for m in managers]
    steps = 4
    tick = progress or (lambda _done, _total: None)
    # the figures every view shows: the buckets with the hand-over split (as the tallies)
    totals = await period_totals(conn, "manager", ids, start, end, policy)
    tick(1, steps)
    coverage = await client_book.coverage(conn, ids, start, end, tz, now)
    tick(2, steps)
    lo = datetime.combine(start, time(0), tz)
    reminders = await _reminder_counts(conn, ids, lo, lo + timedelta(days=7))
    tick(3, steps)
    rows = []
    for m in managers:
        t = totals[m.manager_id]
        cov = coverage[m.manager_id]
        if not m.active and t["transactions"] == 0 and t["visits_total"] == 0 and cov.clients == 0:
            continue  # departed, nothing in the week
        rows.append(_row(m.manager_id, m.name, t, cov, reminders, policy))
    b = (await period_totals(conn, "branch", [branch_id], start, end, policy))[branch_id]
    whole = client_book.Coverage()
    for c in coverage.values():
        whole.add(c)
    counts = {
        (branch_id, k): sum(reminders.get((m, k), 0) for m in ids)
        for k in ("fired", "acked", "escalated")
    }
    branch = _row(branch_id, "(支行合计 branch)", b, whole, counts, policy)
    daily = await branch_daily_accounts(conn, branch_id, start, end)
    today = now.astimezone(tz).date()
    targets = account_targets_document(
        branch_account_targets("week", start, end, daily, policy, today)
    )
    tick(4, steps)
    return WeeklyReport(branch_id, start, end, rows, branch, targets, now)


def _row(
    key: str,
    name: str | None,
    t: dict[str, Any],
    cov: client_book.Coverage,
    reminders: dict[tuple[str, str], int],
    policy: Policy,
) -> dict[str, Any]:
    corporate = sum(t.get(f"accounts_{a}", 0) for a in policy.corporate_settlement_types)
    opened = sum(t.get(f"accounts_{a}", 0) for a in ACCOUNT_TYPES)
    doc = cov.document()
    return {
        "manager_id": key,
        "name": name,
        "weighted_profit": Decimal(money(t["weighted_profit"])),
        "transactions": t["transactions"],
        "accounts": opened,
        "accounts_corporate_settlement": corporate,
        "accounts_basic_settlement": t.get("accounts_basic_settlement", 0),
        "visits": t["visits_total"],
        "clients": cov.clients,
        "coverage": Decimal(doc["coverage"]) if doc["coverage"] is not None else None,
        "overdue_visit": cov.overdue_visit,
        "overdue_post_loan_check": cov.overdue_post_loan_check,
        "reminders_fired": reminders.get((key, "fired"), 0),
        "reminders_acked": reminders.get((key, "acked"), 0),
        "reminders_escalated": reminders.get((key, "escalated"), 0),
    }


def workbook(report: WeeklyReport, tz_name: str) -> bytes:
    wb = Workbook()
    ws = wb.active
    ws.title = "周报 weekly"
    bold = Font(bold=True)
    ws.append([f"支行周报 Weekly branch report · {report.branch_id}"])
    ws["A1"].font = Font(bold=True, size=14)
    ws.append(["周 week", f"{report.start.isoformat()} – {report.end.isoformat()}"])
    ws.append(["生成 made at", report.made_at.isoformat(timespec="seconds"), tz_name])
    ws.append(["覆盖率与逾期为生成时状态 coverage and overdue as of when the report was made"])
    ws.append([])
    header_row = ws.max_row + 1
    ws.append([label for _, label in COLUMNS])
    for cell in ws[header_row]:
        cell.font = bold
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        cell.fill = PatternFill("solid", fgColor="F3DCDC")
    for r in [*report.rows, report.branch]:
        ws.append([r[k] for k, _ in COLUMNS])
        row = ws[ws.max_row]
        row[2].number_format = "#,##0.00"
        row[9].number_format = "0.00%"
        if r is report.branch:
            for cell in row:
                cell.font = bold
    ws.freeze_panes = ws.cell(row=header_row + 1, column=3)
    for i, width in enumerate((12, 14, 18, 10, 8, 10, 8, 8, 8, 10, 10, 10, 8, 8, 8), start=1):
        ws.column_dimensions[ws.cell(row=1, column=i).column_letter].width = width
    t = wb.create_sheet("开户目标 targets")
    t.append(
        [
            "目标 target",
            "周期 cadence",
            "目标数 target",
            "实际 actual",
            "完成率 ratio",
            "状态 status",
        ]
    )
    for cell in t[1]:
        cell.font = bold
    for a in report.account_targets:
        t.append(
            [
                a["name"],
                a["cadence"],
                Decimal(a["target"]),
                a["actual"],
                Decimal(a["ratio"]) if a["ratio"] is not None else None,
                a["status"],
            ]
        )
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
