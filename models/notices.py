"""Messages for people (the morning digest, escalation pushes) written to the reminder outbox.

A notice is an outbox row like a ``reminder.*`` event, with event type ``notice.digest`` or
``notice.escalation``, keyed by its recipient, whose body carries the composed message and the
channels it goes to (``routes``); the deliverer fans it out to those channels only (never to
the Kafka topic or the generic webhooks, which keep carrying the ``reminder.*`` events).

- An escalation notice is written in the scan transaction that escalates (never lost).
- The digests of a day are written in one pass, the first scan at or after the digest time
  outside quiet hours (``digest_days`` records it, so however many schedulers run and however
  often they restart, a day has one pass); whoever has nothing to report then gets nothing.
  A digest's ``event_id`` is derived from (recipient, local day) as a second guard.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import one_of
from models.digest import (
    DIGEST,
    ESCALATION,
    Item,
    Message,
    NoticeRules,
    Recipient,
    compose_digest,
    compose_escalation,
    routes,
)
from models.reminders import DUE_COLUMN, _insert
from models.tables import ClientRow, DigestDayRow, ManagerRow, OutboxRow, ReminderRow
from models.visits import overdue_days

NAMESPACE = uuid.UUID("8c4f3a52-3f0e-4c55-9a4e-5b0d1f6c2e21")
OVERDUE_STATUSES = ("open", "acked", "escalated")
"""What a digest lists as overdue (a snoozed reminder sleeps until its snooze runs out)."""


def digest_event_id(recipient_key: str, day: date) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{DIGEST}|{recipient_key}|{day.isoformat()}"))


def notice_row(
    event_type: str,
    event_id: str,
    key: str,
    recipient: Recipient,
    message: Message,
    route: Sequence[str],
    now: datetime,
    rules: NoticeRules,
    source: str,
) -> dict[str, Any]:
    body = {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": now.astimezone(rules.tz).isoformat(),
        "source": source,
        "lang": rules.lang,
        "recipient": recipient.as_dict(),
        "routes": list(route),
        **message.as_dict(),
    }
    return {
        "event_id": event_id,
        "event_type": event_type,
        "reminder_id": None,
        "key": key,
        "body": json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        "created_at": now,
        "dispatched": False,
    }


async def _recipients(conn: AsyncConnection, ids: Iterable[str | None]) -> dict[str, Recipient]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    m = ManagerRow
    rows = (
        await conn.execute(
            select(
                m.manager_id,
                m.branch_id,
                m.name,
                m.email,
                m.wecom_userid,
                m.dingtalk_userid,
            ).where(one_of(m.manager_id, wanted, conn.dialect.name))
        )
    ).all()
    return {r.manager_id: Recipient(**r._asdict()) for r in rows}


async def _client_names(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, str | None]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await conn.execute(
        select(ClientRow.client_id, ClientRow.name).where(
            one_of(ClientRow.client_id, wanted, conn.dialect.name)
        )
    )
    return {r.client_id: r.name for r in rows}


def _supervisor_recipient(
    supervisor_id: str | None, branch_id: str | None, known: dict[str, Recipient]
) -> tuple[str, Recipient]:
    """Who receives a branch's escalations: the supervisor (their own channels when they are
    a known manager, else the branch's robots), or the branch's robots when nobody supervises."""
    if supervisor_id is None:
        key = f"branch:{branch_id}"
        return key, Recipient(manager_id=key, branch_id=branch_id)
    r = known.get(supervisor_id) or Recipient(manager_id=supervisor_id, branch_id=branch_id)
    return supervisor_id, r


async def write_escalation_notices(
    conn: AsyncConnection,
    escalated: Sequence[dict[str, Any]],
    now: datetime,
    rules: NoticeRules,
    channels: Iterable[str],
    *,
    source: str,
) -> int:
    """One immediate message per supervisor for the reminders that just escalated (in the
    caller's transaction: the escalation and its message commit together)."""
    channels = set(channels)
    if not escalated or not channels:
        return 0
    names = await _client_names(conn, (r["client_id"] for r in escalated))
    groups: dict[tuple[str | None, str | None], list[Item]] = defaultdict(list)
    for r in escalated:
        groups[(r["supervisor_id"], r["branch_id"])].append(
            Item(
                client_id=r["client_id"],
                client_name=names.get(r["client_id"]),
                kind=r["kind"],
                due_at=r["due_at"],
                days=overdue_days(r["due_at"], now),
                escalated=False,
                manager_id=r["manager_id"],
            )
        )
    known = await _recipients(conn, (sup for sup, _b in groups))
    # one message per supervisor: their branches' escalations together
    per_key: dict[str, tuple[Recipient, list[Item]]] = {}
    for (sup, branch), items in sorted(groups.items(), key=lambda kv: str(kv[0])):
        key, recipient = _supervisor_recipient(sup, branch, known)
        per_key.setdefault(key, (recipient, []))[1].extend(items)
    rows = []
    for key, (recipient, items) in sorted(per_key.items()):
        route = routes(recipient, channels)
        if not route:
            continue
        msg = compose_escalation(recipient, items, rules)
        rows.append(
            notice_row(
                ESCALATION, str(uuid.uuid4()), key, recipient, msg, route, now, rules, source
            )
        )
    if rows:
        await conn.execute(_insert(conn, OutboxRow), rows)
    return len(rows)


async def write_digests(
    conn: AsyncConnection,
    day: date,
    now: datetime,
    rules: NoticeRules,
    channels: Iterable[str],
    *,
    source: str,
) -> int:
    """The day's digest for everyone who has something in it and has not had it yet (a manager:
    their overdue and coming clients; a supervisor: also what escalated in their branch)."""
    channels = set(channels)
    if not channels:
        return 0
    # the day's run happens once: a concurrent scheduler waits on this key, then skips
    claimed = (
        await conn.execute(
            _insert(conn, DigestDayRow)
            .on_conflict_do_nothing(index_elements=["day"])
            .returning(DigestDayRow.day),
            [{"day": day.isoformat(), "written_at": now, "digests": 0}],
        )
    ).all()
    if not claimed:
        return 0
    day_start = datetime.combine(day, time(0), rules.tz)
    done = set(
        (
            await conn.execute(
                select(OutboxRow.key).where(
                    OutboxRow.event_type == DIGEST, OutboxRow.created_at >= day_start
                )
            )
        ).scalars()
    )
    managers = {
        r.manager_id: r.branch_id
        for r in (
            await conn.execute(
                select(ManagerRow.manager_id, ManagerRow.branch_id).where(
                    ManagerRow.active.is_(True)
                )
            )
        ).all()
        if r.manager_id not in done
    }
    overdue: dict[str, list[Item]] = defaultdict(list)
    team: dict[tuple[str, str | None], list[Item]] = defaultdict(list)
    rows = (
        await conn.execute(
            select(
                ReminderRow.client_id,
                ReminderRow.kind,
                ReminderRow.due_at,
                ReminderRow.status,
                ReminderRow.manager_id,
                ReminderRow.supervisor_id,
                ReminderRow.branch_id,
                ClientRow.name,
            )
            .select_from(ReminderRow)
            .outerjoin(ClientRow, ClientRow.client_id == ReminderRow.client_id)
            .where(ReminderRow.status.in_(OVERDUE_STATUSES), ReminderRow.due_at <= now)
        )
    ).all()
    for r in rows:
        item = Item(
            client_id=r.client_id,
            client_name=r.name,
            kind=r.kind,
            due_at=r.due_at,
            days=overdue_days(r.due_at, now),
            escalated=r.status == "escalated",
            manager_id=r.manager_id,
        )
        if r.manager_id in managers:
            overdue[r.manager_id].append(item)
        if r.status == "escalated" and r.supervisor_id and r.supervisor_id not in done:
            team[(r.supervisor_id, r.branch_id)].append(item)
    coming: dict[str, list[Item]] = defaultdict(list)
    horizon = now + timedelta(days=rules.coming_days)
    for kind, col in DUE_COLUMN.items():
        for cid, name, mid, due in (
            await conn.execute(
                select(ClientRow.client_id, ClientRow.name, ClientRow.manager_id, col).where(
                    and_(col > now, col <= horizon)
                )
            )
        ).all():
            if mid in managers and due is not None:  # (col > now: never None)
                coming[mid].append(Item(cid, name, kind, due, (due - now).days, manager_id=mid))
    team_by_sup: dict[str, tuple[str | None, list[Item]]] = {}
    for (sup, branch), items in sorted(team.items(), key=lambda kv: str(kv[0])):
        team_by_sup.setdefault(sup, (branch, []))[1].extend(items)
    keys = sorted(set(overdue) | set(coming) | set(team_by_sup))
    known = await _recipients(conn, keys)
    out = []
    for key in keys:
        recipient = known.get(key) or Recipient(
            manager_id=key, branch_id=team_by_sup.get(key, (managers.get(key), []))[0]
        )
        route = routes(recipient, channels)
        if not route:
            continue
        msg = compose_digest(
            recipient,
            day,
            overdue.get(key, ()),
            coming.get(key, ()),
            rules,
            team=team_by_sup.get(key, (None, []))[1],
        )
        out.append(
            notice_row(
                DIGEST, digest_event_id(key, day), key, recipient, msg, route, now, rules, source
            )
        )
    if not out:
        return 0
    written = len(
        (
            await conn.execute(
                _insert(conn, OutboxRow)
                .on_conflict_do_nothing(index_elements=["event_id"])
                .returning(OutboxRow.id),
                out,
            )
        ).all()
    )
    await conn.execute(
        update(DigestDayRow).where(DigestDayRow.day == day.isoformat()).values(digests=written)
    )
    return written
