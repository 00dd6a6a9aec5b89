"""A manager's visit plan: clients overdue and coming due within a window, by due instant;
and the calendar feed tokens (iCalendar) that let a calendar app subscribe to it."""

from __future__ import annotations

import hashlib
import secrets
from datetime import date, datetime, timedelta
from typing import Any

from icalendar import Calendar, Event
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models.policy import Policy
from models.tables import ClientRow, FeedTokenRow
from models.visits import overdue_days

KIND_LABEL = {"visit": "拜访", "post_loan_check": "贷后检查"}


async def plan(
    conn: AsyncConnection, manager_id: str, now: datetime, days: int, policy: Policy
) -> list[dict[str, Any]]:
    """Every (client, kind) of the manager due by ``now + days``: overdue ones first (they
    are due earliest), by due instant, then client id and kind."""
    horizon = now + timedelta(days=days)
    tz = policy.tz
    rows = (
        await conn.execute(
            select(ClientRow).where(
                ClientRow.manager_id == manager_id,
                or_(
                    ClientRow.next_visit_due <= horizon,
                    and_(
                        ClientRow.credit_client.is_(True), ClientRow.next_post_loan_due <= horizon
                    ),
                ),
            )
        )
    ).all()
    items = []
    for c in rows:
        for kind, due in (("visit", c.next_visit_due), ("post_loan_check", c.next_post_loan_due)):
            if due is None or due > horizon or (kind == "post_loan_check" and not c.credit_client):
                continue
            late = due <= now
            items.append(
                {
                    "client_id": c.client_id,
                    "name": c.name,
                    "tier": c.tier,
                    "credit_client": c.credit_client,
                    "kind": kind,
                    "due_at": due.astimezone(tz).isoformat(),
                    "due_date": due.astimezone(tz).date().isoformat(),
                    "status": "overdue" if late else "due",
                    "overdue_days": overdue_days(due, now) if late else None,
                    "days_left": None
                    if late
                    else (due.astimezone(tz).date() - now.astimezone(tz).date()).days,
                    "_due": due,
                }
            )
    items.sort(key=lambda i: (i["_due"], i["client_id"], i["kind"]))
    for i in items:
        del i["_due"]
    return items


def calendar(manager_id: str, items: list[dict[str, Any]], today: date, stamp: datetime) -> bytes:
    """The plan as iCalendar: one all-day event per (client, kind) on its due day (an overdue
    one on today, saying how late it is). Client ids only: the feed leaves the bank's network
    with the phone's calendar, so names and notes stay out."""
    cal = Calendar()
    cal.add("prodid", "-//crm-tracker//visit plan//ZH")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", f"拜访计划 {manager_id}")
    cal.add("x-published-ttl", "PT1H")
    for i in items:
        day = today if i["status"] == "overdue" else date.fromisoformat(i["due_date"])
        what = KIND_LABEL[i["kind"]]
        late = f"（逾期 {i['overdue_days']} 天）" if i["status"] == "overdue" else ""
        ev = Event()
        ev.add("uid", f"{i['client_id']}-{i['kind']}-{i['due_at']}@crm-tracker")
        ev.add("dtstamp", stamp)
        ev.add("dtstart", day)
        ev.add("dtend", day + timedelta(days=1))
        ev.add("summary", f"{what} {i['client_id']}{late}")
        ev.add(
            "description",
            f"client {i['client_id']} · tier {i['tier'] or '-'} · {i['kind']} due {i['due_at']}",
        )
        ev.add("categories", [i["kind"]])
        ev.add("transp", "TRANSPARENT")
        cal.add_component(ev)
    return cal.to_ical()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def new_feed_token(conn: AsyncConnection, manager_id: str, by: str, now: datetime) -> str:
    """A new feed token for the manager (earlier ones stay valid until revoked)."""
    token = "cal_" + secrets.token_urlsafe(32)
    await conn.execute(
        insert(FeedTokenRow).values(
            token_hash=token_hash(token), manager_id=manager_id, created_at=now, created_by=by
        )
    )
    return token


async def revoke_feed_tokens(conn: AsyncConnection, manager_id: str, now: datetime) -> int:
    res = await conn.execute(
        update(FeedTokenRow)
        .where(FeedTokenRow.manager_id == manager_id, FeedTokenRow.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(res.rowcount or 0)


async def feed_manager(conn: AsyncConnection, token: str) -> str | None:
    """The manager a live (unrevoked) feed token belongs to."""
    return (
        await conn.execute(
            select(FeedTokenRow.manager_id).where(
                FeedTokenRow.token_hash == token_hash(token), FeedTokenRow.revoked_at.is_(None)
            )
        )
    ).scalar_one_or_none()
