"""Reminder storage: due dates on clients, reminders, and the outbox of reminder events.

Everything here runs inside a transaction the caller owns: the worker's apply transaction
(a visit resolves reminders), the scheduler's scan transactions (fire, escalate, un-snooze)
and the API's manager actions. Each reminder change writes its ``reminder.*`` envelope to
``reminder_outbox`` in that same transaction, so an event is never lost between the change
and its delivery (scheduler/delivery.py sends it afterwards).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.balances import ALERT_KINDS
from models.db import one_of
from models.policy import Policy
from models.stream import publish
from models.tables import ClientRow, HeadsUpRow, ManagerRow, OutboxRow, ReminderRow
from models.visits import ACTIVE_STATUSES, ClientClock, due_dates, overdue_days

SCHEMA_VERSION = 1
CHUNK = 2000

DUE_COLUMN = {"visit": ClientRow.next_visit_due, "post_loan_check": ClientRow.next_post_loan_due}


class ReminderError(Exception):
    """Base of the reminder errors the API translates."""


class ReminderNotFound(ReminderError, LookupError):
    def __init__(self, reminder_id: int) -> None:
        super().__init__(f"reminder {reminder_id} not found")


class ReminderResolved(ReminderError):
    def __init__(self, reminder_id: int) -> None:
        super().__init__(f"reminder {reminder_id} is resolved")


def _insert(conn: AsyncConnection, model: Any) -> Any:
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    return mod.insert(model)


# --- the reminder.* envelope ---------------------------------------------------------------
def reminder_payload(r: Any, now: datetime, tz: ZoneInfo) -> dict[str, Any]:
    """The ``reminder.*`` payload (CONTRACT §2) of a reminder row or mapping."""
    get: Callable[[str], Any] = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    due_at: datetime = get("due_at")
    return {
        "reminder_id": get("id"),
        "client_id": get("client_id"),
        "manager_id": get("manager_id"),
        "supervisor_id": get("supervisor_id"),
        "kind": get("kind"),
        "due_at": due_at.astimezone(tz).isoformat(),
        "overdue_days": overdue_days(due_at, now),
        "status": get("status"),
    }


def outbox_rows(
    event_type: str, reminders: Iterable[Any], now: datetime, tz: ZoneInfo, source: str
) -> list[dict[str, Any]]:
    """Outbox rows (one envelope each) for reminders that just changed."""
    rows = []
    for r in reminders:
        payload = reminder_payload(r, now, tz)
        event_id = str(uuid.uuid4())
        envelope = {
            "event_id": event_id,
            "event_type": event_type,
            "schema_version": SCHEMA_VERSION,
            "occurred_at": now.astimezone(tz).isoformat(),
            "source": source,
            "payload": payload,
        }
        rows.append(
            {
                "event_id": event_id,
                "event_type": event_type,
                "reminder_id": payload["reminder_id"],
                "key": payload["manager_id"],
                "body": json.dumps(envelope, separators=(",", ":"), ensure_ascii=False),
                "created_at": now,
                "dispatched": False,
            }
        )
    return rows


async def write_outbox(
    conn: AsyncConnection,
    event_type: str,
    reminders: Sequence[Any],
    now: datetime,
    tz: ZoneInfo,
    source: str,
) -> int:
    if not reminders:
        return 0
    rows = outbox_rows(event_type, reminders, now, tz, source)
    await conn.execute(_insert(conn, OutboxRow), rows)
    # live clients (GET /v1/stream) see the same events, scoped by manager and branch
    await publish(
        conn,
        [
            {
                "kind": "reminder",
                "manager_id": envelope["payload"]["manager_id"],
                "branch_id": _get(r, "branch_id"),
                "at": now,
                "data": {"event_type": event_type, **envelope["payload"]},
            }
            for r, envelope in zip(reminders, (json.loads(x["body"]) for x in rows), strict=True)
        ],
    )
    return len(reminders)


def _get(r: Any, key: str) -> Any:
    return r.get(key) if isinstance(r, dict) else getattr(r, key, None)


REMINDER_COLUMNS = _REMINDER_COLS = (
    ReminderRow.id,
    ReminderRow.client_id,
    ReminderRow.kind,
    ReminderRow.due_at,
    ReminderRow.status,
    ReminderRow.manager_id,
    ReminderRow.supervisor_id,
    ReminderRow.branch_id,
)


# --- due dates -----------------------------------------------------------------------------
@dataclass
class RecomputeResult:
    changed: int = 0
    resolved: int = 0
    reassigned: int = 0


async def recompute_due(
    conn: AsyncConnection,
    client_ids: Iterable[str],
    policy: Policy,
    now: datetime,
    *,
    source: str,
    visits: Mapping[str, tuple[datetime | None, datetime | None]] | None = None,
) -> RecomputeResult:
    """Recompute the due dates of these clients and settle their reminders accordingly.

    A reminder whose due instant is no longer the client's (a qualifying visit, a tier or
    override change, credit withdrawn) is resolved and a ``reminder.resolved`` event goes to
    the outbox; a reminder of a transferred client follows the client to its new manager.
    ``visits``: client → (latest visit, latest post-loan check) of the visits being applied;
    the clients' clocks move forward to them (never back) in the same statement.
    """
    out = RecomputeResult()
    ids = sorted(set(client_ids))
    for start in range(0, len(ids), CHUNK):
        await _recompute_chunk(
            conn, ids[start : start + CHUNK], policy, now, source, out, visits or {}
        )
    return out


async def _recompute_chunk(
    conn: AsyncConnection,
    ids: list[str],
    policy: Policy,
    now: datetime,
    source: str,
    out: RecomputeResult,
    visits: Mapping[str, tuple[datetime | None, datetime | None]],
) -> None:
    c = ClientRow
    rows = (
        await conn.execute(
            select(
                c.client_id,
                c.tier,
                c.credit_client,
                c.visit_interval_days,
                c.assigned_at,
                c.last_visit_at,
                c.last_post_loan_at,
                c.next_visit_due,
                c.next_post_loan_due,
                c.manager_id,
            ).where(one_of(c.client_id, ids, conn.dialect.name))
        )
    ).all()
    dues = {}
    changes = []
    latest_visit: dict[str, datetime | None] = {}  # with this batch's visits
    for r in rows:
        last_visit, last_check = r.last_visit_at, r.last_post_loan_at
        seen, checked = visits.get(r.client_id, (None, None))
        if seen is not None and (last_visit is None or last_visit < seen):
            last_visit = seen
        latest_visit[r.client_id] = last_visit
        if checked is not None and (last_check is None or last_check < checked):
            last_check = checked
        d = due_dates(
            ClientClock(
                r.tier,
                r.credit_client,
                r.visit_interval_days,
                r.assigned_at,
                last_visit,
                last_check,
            ),
            policy,
        )
        dues[r.client_id] = (d, r.manager_id)
        if (d.visit, d.post_loan_check, last_visit, last_check) != (
            r.next_visit_due,
            r.next_post_loan_due,
            r.last_visit_at,
            r.last_post_loan_at,
        ):
            changes.append(
                {
                    "cid": r.client_id,
                    "v": d.visit,
                    "p": d.post_loan_check,
                    "lv": last_visit,
                    "lp": last_check,
                }
            )
    if changes:
        await conn.execute(
            update(ClientRow)
            .where(ClientRow.client_id == bindparam("cid"))
            .values(
                next_visit_due=bindparam("v"),
                next_post_loan_due=bindparam("p"),
                last_visit_at=bindparam("lv"),
                last_post_loan_at=bindparam("lp"),
            ),
            changes,
        )
        out.changed += len(changes)
    active = (
        await conn.execute(
            select(*_REMINDER_COLS)
            .where(
                one_of(ReminderRow.client_id, ids, conn.dialect.name),
                ReminderRow.status.in_(ACTIVE_STATUSES),
            )
            .order_by(ReminderRow.id)
        )
    ).all()
    if not active:
        return
    resolve: list[Any] = []
    moved: list[tuple[Any, str | None]] = []
    for rem in active:
        due, manager_id = dues.get(rem.client_id, (None, None))
        if rem.kind in ALERT_KINDS:  # balances alerts: answered by a visit made after them
            seen = latest_visit.get(rem.client_id)
            if seen is not None and seen >= rem.due_at:
                resolve.append(rem)
            elif due is not None and rem.manager_id != manager_id:
                moved.append((rem, manager_id))
            continue
        if due is None or due.of(rem.kind) != rem.due_at:
            resolve.append(rem)
        elif rem.manager_id != manager_id:
            moved.append((rem, manager_id))
    if resolve:
        # only those still unresolved: a concurrent worker may have resolved some already
        changed = set(
            (
                await conn.execute(
                    update(ReminderRow)
                    .where(
                        ReminderRow.id.in_([r.id for r in resolve]),
                        ReminderRow.status != "resolved",
                    )
                    .values(status="resolved", resolved_at=now, snoozed_until=None, updated_at=now)
                    .returning(ReminderRow.id)
                )
            ).scalars()
        )
        resolve = [r for r in resolve if r.id in changed]
        done = [{**r._asdict(), "status": "resolved"} for r in resolve]
        await write_outbox(conn, "reminder.resolved", done, now, policy.tz, source)
        out.resolved += len(resolve)
    if moved:
        managers = {
            m.manager_id: m
            for m in (
                await conn.execute(
                    select(
                        ManagerRow.manager_id, ManagerRow.supervisor_id, ManagerRow.branch_id
                    ).where(ManagerRow.manager_id.in_(sorted({mid for _r, mid in moved})))
                )
            ).all()
        }
        params = []
        for r, mid in moved:
            m = managers.get(mid)
            params.append(
                {
                    "rid": r.id,
                    "mid": mid,
                    "sid": m.supervisor_id if m else None,
                    "bid": m.branch_id if m else None,
                }
            )
        await conn.execute(
            update(ReminderRow)
            .where(ReminderRow.id == bindparam("rid"))
            .values(
                manager_id=bindparam("mid"),
                supervisor_id=bindparam("sid"),
                branch_id=bindparam("bid"),
                updated_at=now,
            ),
            params,
        )
        out.reassigned += len(moved)


async def recompute_all(
    engine: AsyncEngine, policy: Policy, now: datetime, *, source: str, chunk: int = 5000
) -> RecomputeResult:
    """Recompute every client's due dates (after a policy change), one transaction per chunk."""
    out = RecomputeResult()
    last = ""
    while True:
        async with engine.connect() as conn:
            ids = (
                (
                    await conn.execute(
                        select(ClientRow.client_id)
                        .where(ClientRow.client_id > last)
                        .order_by(ClientRow.client_id)
                        .limit(chunk)
                    )
                )
                .scalars()
                .all()
            )
        if not ids:
            return out
        async with engine.begin() as conn:
            part = await recompute_due(conn, ids, policy, now, source=source)
        out.changed += part.changed
        out.resolved += part.resolved
        out.reassigned += part.reassigned
        last = ids[-1]


# --- the scan ------------------------------------------------------------------------------
async def fire_due(
    conn: AsyncConnection,
    kind: str,
    now: datetime,
    policy: Policy,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
    source: str,
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """Fire reminders for the next ``limit`` clients (in due order, after ``after``) whose
    clock of this kind has run out and that have no reminder for that due instant yet.

    Returns the reminders this call created (another scheduler may have created the rest:
    ON CONFLICT DO NOTHING keeps one per (client, kind, due_at)) and where to continue.
    """
    col = DUE_COLUMN[kind]
    conds = [
        col.is_not(None),
        col <= now,
        ~exists().where(
            ReminderRow.client_id == ClientRow.client_id,
            ReminderRow.kind == kind,
            ReminderRow.due_at == col,
        ),
    ]
    if after is not None:
        conds.append(or_(col > after[0], and_(col == after[0], ClientRow.client_id > after[1])))
    query = (
        select(
            ClientRow.client_id,
            col.label("due_at"),
            ClientRow.manager_id,
            ManagerRow.supervisor_id,
            ManagerRow.branch_id,
        )
        .select_from(ClientRow)
        .outerjoin(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
        .where(*conds)
        .order_by(col, ClientRow.client_id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        # Lock the clients until the reminders commit: a worker moving a due date at the same
        # moment either waits for us (and then resolves the reminder we fired) or has
        # committed first (and PostgreSQL re-checks the due condition on the new row version).
        # A client a worker holds is skipped; the next scan fires it if it is still due.
        # (SQLite: writers take the database lock in turn; nothing to do.)
        query = query.with_for_update(of=ClientRow, skip_locked=True)
    due = (await conn.execute(query)).all()
    if not due:
        return [], None
    rows = [
        {
            "client_id": d.client_id,
            "kind": kind,
            "due_at": d.due_at,
            "status": "open",
            "manager_id": d.manager_id,
            "supervisor_id": d.supervisor_id,
            "branch_id": d.branch_id,
            "fired_at": now,
            "updated_at": now,
        }
        for d in due
    ]
    stmt = (
        _insert(conn, ReminderRow)
        .on_conflict_do_nothing(index_elements=["client_id", "kind", "due_at"])
        .returning(*_REMINDER_COLS)
    )
    created = [r._asdict() for r in (await conn.execute(stmt, rows)).all()]
    created.sort(key=lambda r: r["id"])
    await write_outbox(conn, "reminder.fired", created, now, policy.tz, source)
    last = due[-1]
    return created, (last.due_at, last.client_id)


async def heads_up_due(
    conn: AsyncConnection,
    kind: str,
    now: datetime,
    policy: Policy,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
    source: str,
) -> tuple[list[dict[str, Any]], tuple[datetime, str] | None]:
    """ "Due in N days" notices (``reminder.heads_up``, policy ``heads_up_enabled``): one per
    (client, kind, due instant) coming due within ``heads_up_days``; same paging as
    :func:`fire_due`. The payload has no reminder yet (``reminder_id`` null, status
    ``upcoming``, negative ``overdue_days``)."""
    col = DUE_COLUMN[kind]
    conds = [
        col.is_not(None),
        col > now,
        col <= now + timedelta(days=policy.heads_up_days),
        ~exists().where(
            HeadsUpRow.client_id == ClientRow.client_id,
            HeadsUpRow.kind == kind,
            HeadsUpRow.due_at == col,
        ),
    ]
    if after is not None:
        conds.append(or_(col > after[0], and_(col == after[0], ClientRow.client_id > after[1])))
    due = (
        await conn.execute(
            select(
                ClientRow.client_id,
                col.label("due_at"),
                ClientRow.manager_id,
                ManagerRow.supervisor_id,
            )
            .select_from(ClientRow)
            .outerjoin(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
            .where(*conds)
            .order_by(col, ClientRow.client_id)
            .limit(limit)
        )
    ).all()
    if not due:
        return [], None
    rows = [
        {
            "client_id": d.client_id,
            "kind": kind,
            "due_at": d.due_at,
            "manager_id": d.manager_id,
            "sent_at": now,
        }
        for d in due
    ]
    supervisors = {d.client_id: d.supervisor_id for d in due}
    stmt = (
        _insert(conn, HeadsUpRow)
        .on_conflict_do_nothing(index_elements=["client_id", "kind", "due_at"])
        .returning(HeadsUpRow.client_id, HeadsUpRow.kind, HeadsUpRow.due_at, HeadsUpRow.manager_id)
    )
    sent = [
        {
            **r._asdict(),
            "id": None,
            "status": "upcoming",
            "supervisor_id": supervisors.get(r.client_id),
        }
        for r in (await conn.execute(stmt, rows)).all()
    ]
    sent.sort(key=lambda r: (r["due_at"], r["client_id"]))
    await write_outbox(conn, "reminder.heads_up", sent, now, policy.tz, source)
    last = due[-1]
    return sent, (last.due_at, last.client_id)


def _supervisor_now() -> Any:
    """The manager's current supervisor (falls back to the one stored on the reminder)."""
    return func.coalesce(
        select(ManagerRow.supervisor_id)
        .where(ManagerRow.manager_id == ReminderRow.manager_id)
        .scalar_subquery(),
        ReminderRow.supervisor_id,
    )


async def escalate_due(
    conn: AsyncConnection, now: datetime, policy: Policy, *, limit: int, source: str
) -> list[dict[str, Any]]:
    """Escalate reminders still unresolved a grace period after their due instant: the same
    reminder is updated, once (``escalated_at`` is set only while it is null).

    A reminder of a departed manager (marked inactive) goes to the supervisor at once: no
    one is left to act on it during the grace period (the scan that fires it escalates it).
    """
    grace = timedelta(days=policy.escalation_grace_days)
    departed = (
        select(ManagerRow.manager_id)
        .where(ManagerRow.manager_id == ReminderRow.manager_id, ManagerRow.active.is_(False))
        .exists()
    )
    cond = and_(
        ReminderRow.status.in_(("open", "acked")),
        ReminderRow.escalated_at.is_(None),
        or_(ReminderRow.due_at <= now - grace, and_(ReminderRow.due_at <= now, departed)),
    )
    ids = select(ReminderRow.id).where(cond).order_by(ReminderRow.id).limit(limit)
    # the condition is repeated on the updated rows: PostgreSQL re-checks it after waiting
    # for a concurrent scheduler's lock, so a reminder is never escalated twice
    stmt = (
        update(ReminderRow)
        .where(ReminderRow.id.in_(ids.scalar_subquery()), cond)
        .values(
            status="escalated", escalated_at=now, updated_at=now, supervisor_id=_supervisor_now()
        )
        .returning(*_REMINDER_COLS)
    )
    done = sorted((r._asdict() for r in (await conn.execute(stmt)).all()), key=lambda r: r["id"])
    await write_outbox(conn, "reminder.escalated", done, now, policy.tz, source)
    return done


async def unsnooze_due(
    conn: AsyncConnection, now: datetime, policy: Policy, *, limit: int, source: str
) -> list[dict[str, Any]]:
    """Wake snoozed reminders whose snooze ran out; they fire again (``reminder.fired``)."""
    cond = and_(ReminderRow.status == "snoozed", ReminderRow.snoozed_until <= now)
    ids = select(ReminderRow.id).where(cond).order_by(ReminderRow.id).limit(limit)
    stmt = (
        update(ReminderRow)
        .where(ReminderRow.id.in_(ids.scalar_subquery()), cond)
        .values(
            status=case((ReminderRow.escalated_at.is_(None), "open"), else_="escalated"),
            snoozed_until=None,
            updated_at=now,
        )
        .returning(*_REMINDER_COLS)
    )
    woken = sorted((r._asdict() for r in (await conn.execute(stmt)).all()), key=lambda r: r["id"])
    await write_outbox(conn, "reminder.fired", woken, now, policy.tz, source)
    return woken


# --- manager actions -----------------------------------------------------------------------
async def get_reminder(conn: AsyncConnection, reminder_id: int) -> Any:
    row = (
        await conn.execute(select(ReminderRow.__table__).where(ReminderRow.id == reminder_id))
    ).first()
    if row is None:
        raise ReminderNotFound(reminder_id)
    return row


async def _settle(conn: AsyncConnection, reminder_id: int, now: datetime, **values: Any) -> Any:
    """Move a reminder that is not resolved yet; NotFound / Resolved otherwise."""
    row = (
        await conn.execute(
            update(ReminderRow)
            .where(ReminderRow.id == reminder_id, ReminderRow.status != "resolved")
            .values(updated_at=now, **values)
            .returning(*ReminderRow.__table__.c)
        )
    ).first()
    if row is None:
        await get_reminder(conn, reminder_id)  # raises NotFound if it does not exist
        raise ReminderResolved(reminder_id)
    return row


async def ack(conn: AsyncConnection, reminder_id: int, by: str, now: datetime) -> Any:
    """Acknowledge: the manager has seen it (an escalated reminder keeps its escalation)."""
    return await _settle(
        conn, reminder_id, now, status="acked", acked_at=now, acked_by=by, snoozed_until=None
    )


async def snooze(conn: AsyncConnection, reminder_id: int, until: datetime, now: datetime) -> Any:
    return await _settle(conn, reminder_id, now, status="snoozed", snoozed_until=until)
