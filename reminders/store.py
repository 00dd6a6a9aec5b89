"""Reminder storage: the clients' clocks and due dates, the reminder and heads-up rows and
their state changes, and what the messages to people read.

Everything here runs inside a transaction the caller owns and writes no event: the changes
return the rows they changed, and reminders/service.py writes their envelopes
(reminders/outbox.py) in the same transaction. The manager actions (ack, snooze) send none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import and_, bindparam, case, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import list_value, one_of
from models.digest import Recipient
from models.policy import Policy
from models.tables import (
    DUE_COLUMN,
    ClientRow,
    DigestDayRow,
    HeadsUpRow,
    ManagerRow,
    OutboxRow,
    ReminderRow,
)
from models.visits import ACTIVE_STATUSES
from reminders.rules import (
    ESCALATING_STATUSES,
    OVERDUE_STATUSES,
    ClientClock,
    DueDates,
    due_dates,
    later,
)

REMINDER_COLUMNS = (
    ReminderRow.id,
    ReminderRow.client_id,
    ReminderRow.kind,
    ReminderRow.due_at,
    ReminderRow.status,
    ReminderRow.manager_id,
    ReminderRow.supervisor_id,
    ReminderRow.branch_id,
)
"""What an envelope and the live stream need of a reminder."""

Cursor = tuple[datetime, str]
"""Where a scan of due clients continues: after this (due instant, client id)."""


class ReminderError(Exception):
    """Base of the reminder errors the API translates."""


class ReminderNotFound(ReminderError, LookupError):
    def __init__(self, reminder_id: int) -> None:
        super().__init__(f"reminder {reminder_id} not found")


class ReminderResolved(ReminderError):
    def __init__(self, reminder_id: int) -> None:
        super().__init__(f"reminder {reminder_id} is resolved")


def insert(conn: AsyncConnection, model: Any) -> Any:
    """INSERT in the connection's dialect (for ON CONFLICT)."""
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    return mod.insert(model)


# --- the clients' clocks -------------------------------------------------------------------
@dataclass
class Clocks:
    """The clients' clocks after :func:`move_clocks`: their due dates and manager, and their
    latest visit (with the visits being applied)."""

    dues: dict[str, tuple[DueDates, str]]
    latest_visit: dict[str, datetime | None]
    changed: int


# Read and written on the driver, one statement each per batch: SQLAlchemy's per-row result
# and bind processing (the UTC conversion of five timestamps a row) cost more than the rest
_CLOCK_COLUMNS = (
    "client_id, tier, credit_client, visit_interval_days, assigned_at, last_visit_at,"
    " last_post_loan_at, next_visit_due, next_post_loan_due, manager_id"
)
_PG_CLOCKS = (
    f"SELECT {_CLOCK_COLUMNS} FROM clients WHERE client_id IN (SELECT unnest($1::varchar[]))"
)
# the changed clocks as one JSON document of [client, visit due, post-loan due, last visit,
# last post-loan check] rows (msgspec writes aware datetimes in RFC 3339, null for None)
_PG_MOVE = (
    "UPDATE clients c SET next_visit_due = (r->>1)::timestamptz,"
    " next_post_loan_due = (r->>2)::timestamptz, last_visit_at = (r->>3)::timestamptz,"
    " last_post_loan_at = (r->>4)::timestamptz"
    " FROM jsonb_array_elements($1::jsonb) r WHERE c.client_id = r->>0"
)
_SQLITE_CLOCKS = (
    f"SELECT {_CLOCK_COLUMNS} FROM clients WHERE client_id IN (SELECT value FROM json_each(?))"
)
_SQLITE_MOVE = (
    "UPDATE clients SET next_visit_due = ?, next_post_loan_due = ?, last_visit_at = ?,"
    " last_post_loan_at = ? WHERE client_id = ?"
)
_JSON = msgspec.json.Encoder()

ClockRow = tuple[
    str,
    str | None,
    bool,
    int | None,
    datetime,
    datetime | None,
    datetime | None,
    datetime | None,
    datetime | None,
    str,
]
"""A client's clock as read (``_CLOCK_COLUMNS``), times aware."""


async def _driver(conn: AsyncConnection) -> Any:
    """The PostgreSQL driver's (asyncpg) connection under ``conn``, in its transaction."""
    return (await conn.get_raw_connection()).driver_connection


def _from_sqlite(at: str | None) -> datetime | None:
    """A timestamp as SQLAlchemy stores it on SQLite (naive UTC text), aware."""
    return None if at is None else datetime.fromisoformat(at).replace(tzinfo=UTC)


def _to_sqlite(at: datetime | None) -> str | None:
    """An aware timestamp in SQLAlchemy's SQLite storage form (naive UTC, microseconds)."""
    if at is None:
        return None
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


async def _read_clocks(conn: AsyncConnection, ids: Sequence[str]) -> list[ClockRow]:
    if conn.dialect.name == "postgresql":
        clocks: list[ClockRow] = await (await _driver(conn)).fetch(_PG_CLOCKS, list(ids))
        return clocks  # records, unpacked as tuples
    found: Iterable[Sequence[Any]] = await conn.exec_driver_sql(
        _SQLITE_CLOCKS, (list_value(ids, "sqlite"),)
    )
    return [
        (
            cid,
            tier,
            bool(credit),
            interval,
            datetime.fromisoformat(assigned).replace(tzinfo=UTC),
            _from_sqlite(lv),
            _from_sqlite(lp),
            _from_sqlite(nv),
            _from_sqlite(np),
            mid,
        )
        for cid, tier, credit, interval, assigned, lv, lp, nv, np, mid in found
    ]


async def _write_clocks(conn: AsyncConnection, changes: list[tuple[Any, ...]]) -> None:
    """``changes``: (client, visit due, post-loan due, last visit, last post-loan check)."""
    if conn.dialect.name == "postgresql":
        await (await _driver(conn)).execute(_PG_MOVE, _JSON.encode(changes).decode())
        return
    rows = [
        (_to_sqlite(v), _to_sqlite(p), _to_sqlite(lv), _to_sqlite(lp), cid)
        for cid, v, p, lv, lp in changes
    ]
    await conn.exec_driver_sql(_SQLITE_MOVE, rows)


async def move_clocks(
    conn: AsyncConnection,
    ids: Sequence[str],
    policy: Policy,
    visits: Mapping[str, tuple[datetime | None, datetime | None]],
) -> Clocks:
    """Recompute these clients' due dates, their clocks moved forward (never back) to
    ``visits`` (client → latest visit, latest post-loan check); one update for those that
    changed."""
    out = Clocks({}, {}, 0)
    changes: list[tuple[Any, ...]] = []
    no_visit = (None, None)
    for cid, tier, credit, interval, assigned, lv, lp, nv, np, mid in await _read_clocks(conn, ids):
        seen, checked = visits.get(cid, no_visit)
        last_visit = later(lv, seen)
        last_check = later(lp, checked)
        out.latest_visit[cid] = last_visit
        d = due_dates(ClientClock(tier, credit, interval, assigned, last_visit, last_check), policy)
        out.dues[cid] = (d, mid)
        if d.visit != nv or d.post_loan_check != np or last_visit != lv or last_check != lp:
            changes.append((cid, d.visit, d.post_loan_check, last_visit, last_check))
    if changes:
        await _write_clocks(conn, changes)
        out.changed = len(changes)
    return out


async def client_ids_after(conn: AsyncConnection, last: str, limit: int) -> list[str]:
    """The next ``limit`` client ids after ``last``, in order."""
    return list(
        (
            await conn.execute(
                select(ClientRow.client_id)
                .where(ClientRow.client_id > last)
                .order_by(ClientRow.client_id)
                .limit(limit)
            )
        ).scalars()
    )


# --- reminder rows -------------------------------------------------------------------------
class ActiveReminder(NamedTuple):
    """A reminder as :func:`active_reminders` reads it (``REMINDER_COLUMNS``)."""

    id: int
    client_id: str
    kind: str
    due_at: datetime
    status: str
    manager_id: str
    supervisor_id: str | None
    branch_id: str | None


_ACTIVE = (
    "SELECT id, client_id, kind, due_at, status, manager_id, supervisor_id, branch_id"
    " FROM reminders WHERE client_id IN ({ids}) AND status IN ({statuses}) ORDER BY id"
).replace("{statuses}", ", ".join(f"'{s}'" for s in ACTIVE_STATUSES))
_PG_ACTIVE = _ACTIVE.format(ids="SELECT unnest($1::varchar[])")
_SQLITE_ACTIVE = _ACTIVE.format(ids="SELECT value FROM json_each(?)")


async def active_reminders(
    conn: AsyncConnection, client_ids: Sequence[str]
) -> list[ActiveReminder]:
    """The reminders of these clients that still ask for something, by id (on the driver,
    as the clocks)."""
    if conn.dialect.name == "postgresql":
        driver = await _driver(conn)
        return [ActiveReminder(*r) for r in await driver.fetch(_PG_ACTIVE, list(client_ids))]
    found: Iterable[Sequence[Any]] = await conn.exec_driver_sql(
        _SQLITE_ACTIVE, (list_value(client_ids, "sqlite"),)
    )
    return [
        ActiveReminder(rid, cid, kind, datetime.fromisoformat(due).replace(tzinfo=UTC), *rest)
        for rid, cid, kind, due, *rest in found
    ]


async def resolve(conn: AsyncConnection, reminders: Sequence[Any], now: datetime) -> list[Any]:
    """Resolve these reminders; returns those this call resolved (a concurrent worker may
    have resolved some already), as mappings with their new status."""
    if not reminders:
        return []
    changed = set(
        (
            await conn.execute(
                update(ReminderRow)
                .where(
                    ReminderRow.id.in_([r.id for r in reminders]),
                    ReminderRow.status != "resolved",
                )
                .values(status="resolved", resolved_at=now, snoozed_until=None, updated_at=now)
                .returning(ReminderRow.id)
            )
        ).scalars()
    )
    return [{**r._asdict(), "status": "resolved"} for r in reminders if r.id in changed]


async def reassign(
    conn: AsyncConnection, moved: Sequence[tuple[Any, str | None]], now: datetime
) -> int:
    """Reminders that follow their client to its new manager (with that manager's supervisor
    and branch)."""
    if not moved:
        return 0
    managers = {
        m.manager_id: m
        for m in (
            await conn.execute(
                select(ManagerRow.manager_id, ManagerRow.supervisor_id, ManagerRow.branch_id).where(
                    ManagerRow.manager_id.in_(sorted({mid for _r, mid in moved}))
                )
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
    return len(moved)


async def due_clients(
    conn: AsyncConnection,
    kind: str,
    *,
    after_due: datetime | None,
    until: datetime,
    sent: type[ReminderRow] | type[HeadsUpRow],
    after: Cursor | None,
    limit: int,
    lock: bool,
) -> list[Any]:
    """The next ``limit`` clients (in due order, after ``after``) whose clock of this kind
    runs out in (``after_due``, ``until``] with no ``sent`` row (reminder or heads-up) for
    that due instant yet, with their manager, supervisor and branch.

    ``lock`` (PostgreSQL): lock the clients until the caller commits, so a worker moving a
    due date at the same moment either waits (and then resolves what was fired) or has
    committed first (and PostgreSQL re-checks the condition on the new row version); a client
    a worker holds is skipped, and the next scan takes it if it is still due. (SQLite: writers
    take the database lock in turn; nothing to do.)
    """
    col = DUE_COLUMN[kind]
    conds = [
        col.is_not(None),
        col <= until,
        ~exists().where(
            sent.client_id == ClientRow.client_id, sent.kind == kind, sent.due_at == col
        ),
    ]
    if after_due is not None:
        conds.append(col > after_due)
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
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update(of=ClientRow, skip_locked=True)
    return list((await conn.execute(query)).all())


async def holders(conn: AsyncConnection, client_ids: Iterable[str]) -> dict[str, Any]:
    """Each client's manager, with that manager's supervisor and branch."""
    ids = sorted(set(client_ids))
    return {
        r.client_id: r
        for r in (
            await conn.execute(
                select(
                    ClientRow.client_id,
                    ClientRow.manager_id,
                    ManagerRow.supervisor_id,
                    ManagerRow.branch_id,
                )
                .select_from(ClientRow)
                .outerjoin(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
                .where(one_of(ClientRow.client_id, ids, conn.dialect.name))
            )
        ).all()
    }


def new_reminder(
    client_id: str, kind: str, due_at: datetime, holder: Any, now: datetime
) -> dict[str, Any]:
    """The row of a reminder firing now, for the client's manager."""
    return {
        "client_id": client_id,
        "kind": kind,
        "due_at": due_at,
        "status": "open",
        "manager_id": holder.manager_id,
        "supervisor_id": holder.supervisor_id,
        "branch_id": holder.branch_id,
        "fired_at": now,
        "updated_at": now,
    }


async def add_reminders(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> list[dict]:
    """Insert reminders; one per (client, kind, due instant): those another caller created
    first are left out. Returns the ones created, by id."""
    if not rows:
        return []
    stmt = (
        insert(conn, ReminderRow)
        .on_conflict_do_nothing(index_elements=["client_id", "kind", "due_at"])
        .returning(*REMINDER_COLUMNS)
    )
    return sorted((r._asdict() for r in (await conn.execute(stmt, rows)).all()), key=_by_id)


async def add_heads_ups(
    conn: AsyncConnection, kind: str, due: Sequence[Any], now: datetime
) -> list[dict]:
    """Record the heads-ups of these due clients, one per (client, kind, due instant); returns
    those recorded now as payload mappings (no reminder yet: id null, status ``upcoming``),
    in due order."""
    if not due:
        return []
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
        insert(conn, HeadsUpRow)
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
    return sent


def _by_id(r: dict[str, Any]) -> Any:
    return r["id"]


def _supervisor_now() -> Any:
    """The manager's current supervisor (falls back to the one stored on the reminder)."""
    return func.coalesce(
        select(ManagerRow.supervisor_id)
        .where(ManagerRow.manager_id == ReminderRow.manager_id)
        .scalar_subquery(),
        ReminderRow.supervisor_id,
    )


async def _change_first(conn: AsyncConnection, cond: Any, limit: int, **values: Any) -> list[dict]:
    """Change the first ``limit`` reminders (by id) meeting ``cond``; returns them, by id.
    The condition is repeated on the updated rows: PostgreSQL re-checks it after waiting for
    a concurrent scheduler's lock, so no reminder changes twice."""
    ids = select(ReminderRow.id).where(cond).order_by(ReminderRow.id).limit(limit)
    stmt = (
        update(ReminderRow)
        .where(ReminderRow.id.in_(ids.scalar_subquery()), cond)
        .values(**values)
        .returning(*REMINDER_COLUMNS)
    )
    return sorted((r._asdict() for r in (await conn.execute(stmt)).all()), key=_by_id)


async def escalate(
    conn: AsyncConnection, now: datetime, cutoff: datetime, *, limit: int
) -> list[dict]:
    """Escalate reminders still unanswered and due at or before ``cutoff``: the same reminder
    is updated, once (``escalated_at`` is set only while it is null), and goes to the
    manager's current supervisor. A reminder of a departed manager (marked inactive) goes at
    its due instant: no one is left to act on it during the grace period."""
    departed = (
        select(ManagerRow.manager_id)
        .where(ManagerRow.manager_id == ReminderRow.manager_id, ManagerRow.active.is_(False))
        .exists()
    )
    cond = and_(
        ReminderRow.status.in_(ESCALATING_STATUSES),
        ReminderRow.escalated_at.is_(None),
        or_(ReminderRow.due_at <= cutoff, and_(ReminderRow.due_at <= now, departed)),
    )
    return await _change_first(
        conn,
        cond,
        limit,
        status="escalated",
        escalated_at=now,
        updated_at=now,
        supervisor_id=_supervisor_now(),
    )


async def unsnooze(conn: AsyncConnection, now: datetime, *, limit: int) -> list[dict]:
    """Wake snoozed reminders whose snooze ran out (back to open, or to escalated)."""
    cond = and_(ReminderRow.status == "snoozed", ReminderRow.snoozed_until <= now)
    return await _change_first(
        conn,
        cond,
        limit,
        status=case((ReminderRow.escalated_at.is_(None), "open"), else_="escalated"),
        snoozed_until=None,
        updated_at=now,
    )


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


# --- what messages to people read ----------------------------------------------------------
async def recipients(conn: AsyncConnection, ids: Iterable[str | None]) -> dict[str, Recipient]:
    """Known managers (and supervisors who are managers) with their channels' addresses."""
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


async def client_names(conn: AsyncConnection, ids: Iterable[str]) -> dict[str, str | None]:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    rows = await conn.execute(
        select(ClientRow.client_id, ClientRow.name).where(
            one_of(ClientRow.client_id, wanted, conn.dialect.name)
        )
    )
    return {r.client_id: r.name for r in rows}


async def claim_digest_day(conn: AsyncConnection, day: date, now: datetime) -> bool:
    """Claim the day's digest pass; False when it was claimed before (a concurrent scheduler
    waits on this key, then gets False)."""
    claimed = (
        await conn.execute(
            insert(conn, DigestDayRow)
            .on_conflict_do_nothing(index_elements=["day"])
            .returning(DigestDayRow.day),
            [{"day": day.isoformat(), "written_at": now, "digests": 0}],
        )
    ).all()
    return bool(claimed)


async def record_digest_day(conn: AsyncConnection, day: date, written: int) -> None:
    await conn.execute(
        update(DigestDayRow).where(DigestDayRow.day == day.isoformat()).values(digests=written)
    )


async def digested_since(conn: AsyncConnection, event_type: str, start: datetime) -> set[str]:
    """The recipients who were sent a notice of this type since ``start``."""
    return set(
        (
            await conn.execute(
                select(OutboxRow.key).where(
                    OutboxRow.event_type == event_type, OutboxRow.created_at >= start
                )
            )
        ).scalars()
    )


async def active_managers(conn: AsyncConnection) -> dict[str, str | None]:
    """Manager → branch, of the managers in service."""
    rows = await conn.execute(
        select(ManagerRow.manager_id, ManagerRow.branch_id).where(ManagerRow.active.is_(True))
    )
    return {r.manager_id: r.branch_id for r in rows.all()}


async def overdue_reminders(conn: AsyncConnection, now: datetime) -> list[Any]:
    """The reminders a digest lists as overdue at ``now``, with their client's name."""
    return list(
        (
            await conn.execute(
                select(*REMINDER_COLUMNS, ClientRow.name)
                .select_from(ReminderRow)
                .outerjoin(ClientRow, ClientRow.client_id == ReminderRow.client_id)
                .where(ReminderRow.status.in_(OVERDUE_STATUSES), ReminderRow.due_at <= now)
            )
        ).all()
    )


async def coming_due(
    conn: AsyncConnection, kind: str, now: datetime, horizon: datetime
) -> list[Any]:
    """(client id, name, manager id, due instant) of the clients whose clock of this kind
    runs out after ``now`` and by ``horizon``."""
    col = DUE_COLUMN[kind]
    return list(
        (
            await conn.execute(
                select(ClientRow.client_id, ClientRow.name, ClientRow.manager_id, col).where(
                    and_(col > now, col <= horizon)
                )
            )
        ).all()
    )
