"""Applying end-of-day balances, set-based, inside the batch's database transaction.

The batch apply (streams/apply/applier.py) resolves the snapshots' clients (held, and
claimed in ``events``, while one is unknown) and hands the ``balance.snapshot`` events of
known clients over here, unclaimed: their ``balance_snapshots`` row is their record.

- ``apply_snapshots``: keeps one snapshot per (account, bank date), the one with the latest
  ``occurred_at`` (a resend or an older correction changes nothing), and turns each change
  of an account's carried balance into day deltas of the managers and branches holding the
  client on those days (models/balances.py). A night's batch (each account one day past its
  newest) reads one row per account (``balance_accounts``) and writes two (the snapshot, the
  account's newest day); a late or corrected snapshot reads the account's series to find the
  days it fills (up to the account's next snapshot).
- ``move_clients``: after a transfer changed a client's assignment history, the client's
  carried balance moves from the old holders' days to the new ones'.
- ``rebuild_balances``: replay's part, everything above again from the stored snapshots.

All end in ``write_deltas``: one upsert of the day deltas and one of the year openings.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Container, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec
from sqlalchemy import bindparam, delete, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from models.balances import (
    LINES,
    TIER_ORDER,
    ZERO,
    Deltas,
    Segment,
    add_change,
    client_tiers,
    drop_zeros,
    dump_segments,
    exact_sum,
    holder_segments,
    load_segments,
    outflow,
)
from models.db import list_value, one_of
from models.events import BalanceSnapshot, Event
from models.policy import Policy, to_cny
from models.tables import (
    AssignmentRow,
    BalanceAccountRow,
    BalanceDayRow,
    BalanceHolderRow,
    BalanceOpeningRow,
    BalanceSnapshotRow,
    ClientRow,
    ManagerRow,
)
from reminders.service import fire_alerts

ALERT_SOURCE = "crm-tracker-worker"

Vector = dict[tuple[str, str], Decimal]
"""What one snapshot puts into the carried balances: {(client_id, line): balance}."""

Row = tuple[str, date, str, str, Decimal, datetime, str | None]
"""A ``balance_snapshots`` row (_SNAPSHOT_COLUMNS order): account_id, as_of_date,
client_id, business_line, balance, occurred_at, event_id. An account's newest row is also
what its ``balance_accounts`` row holds."""

Snap = tuple[datetime, str, str, Decimal, str | None]
"""One account's snapshot of a day: (occurred_at, client_id, line, balance, event_id); the
event id is None for the newest day read back from ``balance_accounts``."""


def _vector(row: Snap | None) -> Vector:
    """(occurred_at, client_id, line, balance, event_id) → its contribution."""
    if row is None:
        return {}
    return {(row[1], row[2]): row[3]}


def sqlite_time(at: datetime) -> str:
    """A timestamp as SQLAlchemy stores it on SQLite (UTC, naive, microseconds; as
    streams/apply/ledger.py, which imports this module's callers)."""
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _insert(conn: AsyncConnection, model: Any) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(model)


_ACCOUNT_FIELDS = (
    "account_id",
    "client_id",
    "business_line",
    "last_date",
    "last_balance",
    "last_occurred_at",
)
Account = tuple[str, str, str, date, Decimal, datetime]
"""A ``balance_accounts`` row: (account_id, client_id, business_line, last_date, last_balance,
last_occurred_at)."""


async def _accounts(conn: AsyncConnection, column: str, ids: list[str]) -> Sequence[Account]:
    """``balance_accounts`` rows by client or account id. On PostgreSQL straight from the
    driver (its types are already Decimal, date and aware datetime; its records index as
    tuples): a night reads one row per account, and the ORM's per-row type processing cost
    more than the query."""
    if conn.dialect.name == "postgresql":
        raw = (await conn.get_raw_connection()).driver_connection
        return await raw.fetch(  # type: ignore[union-attr]
            f"SELECT {', '.join(_ACCOUNT_FIELDS)} FROM balance_accounts "
            f"WHERE {column} IN (SELECT unnest($1::varchar[]))",
            ids,
        )
    # SQLite: on the driver too, values read as SQLAlchemy stores them (dates and decimals
    # as text, times as naive UTC text)
    found: Iterable[Sequence[Any]] = await conn.exec_driver_sql(
        f"SELECT {', '.join(_ACCOUNT_FIELDS)} FROM balance_accounts "
        f"WHERE {column} IN (SELECT value FROM json_each(?))",
        (list_value(ids, "sqlite"),),
    )
    times: dict[str, datetime] = {}
    out: list[Account] = []
    for acc, cid, line, day, bal, at in found:
        when = times.get(at)
        if when is None:
            when = times[at] = datetime.fromisoformat(at).replace(tzinfo=UTC)
        out.append((acc, cid, line, date.fromisoformat(day), Decimal(bal), when))
    return out


class SnapshotsApplied(NamedTuple):
    managers: set[str]
    """The managers whose balances changed."""
    duplicates: int
    """Snapshots that changed nothing: a resend of the stored one of their account and
    date, or one older than it (counted with the batch's duplicates)."""


Merged = dict[tuple[str, str, date, date | None], Decimal]
"""(client, line, first day, first day it no longer applies) → change of its carried
balance."""


def _merge(merged: Merged, cid: str, line: str, change: Decimal, start: date) -> None:
    k = (cid, line, start, None)
    got = merged.get(k)
    merged[k] = change if got is None else got + change


async def apply_snapshots(
    conn: AsyncConnection, events: Sequence[Event], policy: Policy, now: datetime
) -> SnapshotsApplied:
    """Apply ``balance.snapshot`` events of known clients. Their ``balance_snapshots`` row
    is their record (they are not claimed in ``events``): a resend finds its own event
    there and changes nothing, as an older correction does (both count as duplicates).
    Fires ``outflow`` alerts (models/balances.py ``outflow``)."""
    today = now.astimezone(policy.tz).date()
    # each snapshot as its row (_SNAPSHOT_COLUMNS order): an account's first of the batch,
    # and the rest of an account that has several (few objects per snapshot: a night is
    # a million of them)
    incoming: dict[str, Row] = {}
    more: dict[str, list[Row]] = {}
    clients: set[str] = set()
    for e in events:
        p = e.payload
        assert isinstance(p, BalanceSnapshot)
        cid = p.client_id
        acc = p.account_id
        row: Row = (
            acc,
            p.as_of_date,
            cid,
            p.business_line,
            to_cny(p.balance, p.currency, policy),
            e.occurred_at,
            e.event_id,
        )
        clients.add(cid)
        if acc not in incoming:
            incoming[acc] = row
        elif acc in more:
            more[acc].append(row)
        else:
            more[acc] = [row]
    if not incoming:
        return SnapshotsApplied(set(), 0)
    dialect = conn.dialect.name
    # every account of the batch's clients as it was before the batch (also what the night
    # needs of the batch's accounts; outflow alerts compare the clients' totals)
    prior_accounts = await _accounts(conn, "client_id", sorted(clients))
    newest: dict[str, Account] = {r[0]: r for r in prior_accounts}
    missing = [a for a in incoming if a not in newest]
    if missing:  # new accounts, or one now reported under another client
        missing.sort()
        for r in await _accounts(conn, "account_id", missing):
            newest[r[0]] = r
    merged: Merged = {}
    changes: list[Change] = []
    snapshot_rows: list[Row] = []
    account_rows: list[Row] = []  # each written account's newest snapshot
    series: dict[str, dict[date, Snap]] = {}
    late: list[str] = []
    incoming_items: dict[str, list[tuple[date, Snap]]] = {}  # an account's several, or late
    for acc, row in incoming.items():
        prior = newest.get(acc)
        if acc not in more and (prior is None or row[1] > prior[3]):
            # a night: one day past the account's newest (or its first one); no series read
            _acc, day, cid, line, bal, _at, _eid = row
            if prior is None:
                if bal:
                    _merge(merged, cid, line, bal, day)
            elif prior[1] == cid and prior[2] == line:
                if bal != prior[4]:
                    _merge(merged, cid, line, bal - prior[4], day)
            else:  # the account moved to another client or line
                if prior[4]:
                    _merge(merged, prior[1], prior[2], -prior[4], day)
                if bal:
                    _merge(merged, cid, line, bal, day)
            snapshot_rows.append(row)
            account_rows.append(row)
            continue
        items = [(r[1], (r[5], r[2], r[3], r[4], r[6])) for r in (row, *more.get(acc, ()))]
        incoming_items[acc] = items
        if prior is not None and min(d for d, _ in items) > prior[3]:
            # several days past the newest (a catch-up): its newest day is all it needs
            series[acc] = {prior[3]: (prior[5], prior[1], prior[2], prior[4], None)}
        else:
            series[acc] = {}
            if prior is not None:
                late.append(acc)
    if late:  # a late or corrected day: the account's whole series
        late.sort()
        rows = await conn.execute(
            select(
                BalanceSnapshotRow.account_id,
                BalanceSnapshotRow.as_of_date,
                BalanceSnapshotRow.occurred_at,
                BalanceSnapshotRow.client_id,
                BalanceSnapshotRow.business_line,
                BalanceSnapshotRow.balance,
                BalanceSnapshotRow.event_id,
            ).where(one_of(BalanceSnapshotRow.account_id, late, dialect))
        )
        for snap in rows.all():
            series[snap.account_id][snap.as_of_date] = (
                snap.occurred_at,
                snap.client_id,
                snap.business_line,
                snap.balance,
                snap.event_id,
            )
    duplicates = 0
    for acc in sorted(series):
        duplicates += _fill(
            acc, series[acc], incoming_items[acc], changes, snapshot_rows, account_rows
        )
    snapshot_rows.sort()  # one lock order for every worker
    account_rows.sort()
    await _upsert_snapshots(conn, snapshot_rows, account_rows, newest)
    await fire_outflows(conn, prior_accounts, newest, account_rows, policy, now)
    for c_cid, c_line, c_change, c_start, c_stop in changes:
        k = (c_cid, c_line, c_start, c_stop)
        merged[k] = merged.get(k, ZERO) + c_change
    if not merged:
        return SnapshotsApplied(set(), duplicates)
    # a night's changes of a client's accounts share their days: one credit per client
    segments = await holders(conn, {k[0] for k in merged}, policy)
    deltas: Deltas = {}
    for (cid, line, start, stop), change in merged.items():
        add_change(deltas, segments[cid], line, change, start, stop)
    await write_deltas(conn, deltas, today)
    return SnapshotsApplied({k[1] for k in deltas if k[0] == "manager"}, duplicates)


Change = tuple[str, str, Decimal, date, date | None]
"""(client, line, change of its carried balance, first day, first day it no longer applies)."""


def _fill(
    acc: str,
    known: dict[date, Snap],
    items: list[tuple[date, Snap]],
    changes: list[Change],
    snapshot_rows: list[Row],
    account_rows: list[Row],
) -> int:
    """An account's incoming days against its known series (late days, corrections, several
    days at once): the changes they make, its rows to write. Returns how many changed
    nothing (a resend, or an older or equally old correction)."""
    days = sorted(known)
    written: dict[date, Snap] = {}
    unchanged = 0
    for day, new in sorted(items, key=lambda x: (x[0], x[1][0])):
        current = known.get(day)
        if current is not None and current[0] >= new[0]:
            unchanged += 1
            continue
        i = bisect.bisect_left(days, day)
        before: Snap | None
        if current is not None:
            before = current
            after = days[i + 1] if i + 1 < len(days) else None
        else:
            before = known[days[i - 1]] if i > 0 else None
            after = days[i] if i < len(days) else None
            days.insert(i, day)
        if before is not None and before[1:3] == new[1:3]:  # same client and line
            if new[3] != before[3]:
                changes.append((new[1], new[2], new[3] - before[3], day, after))
        else:
            old, fresh = _vector(before), _vector(new)
            for key in old.keys() | fresh.keys():
                change = fresh.get(key, ZERO) - old.get(key, ZERO)
                if change:
                    changes.append((key[0], key[1], change, day, after))
        known[day] = new
        written[day] = new
    for day, (at, cid, line, bal, eid) in sorted(written.items()):
        snapshot_rows.append((acc, day, cid, line, bal, at, eid))
    if written and days[-1] in written:
        account_rows.append(snapshot_rows[-1])  # the newest day, written last
    return unchanged


_SNAPSHOT_COLUMNS = (
    ("account_id", "varchar"),
    ("as_of_date", "date"),
    ("client_id", "varchar"),
    ("business_line", "varchar"),
    ("balance", "numeric"),
    ("occurred_at", "timestamptz"),
    ("event_id", "varchar"),
)
# a ``balance_accounts`` column and where it is in a snapshot row (an account's newest)
_ACCOUNT_COLUMNS = (
    ("account_id", "varchar", 0),
    ("client_id", "varchar", 2),
    ("business_line", "varchar", 3),
    ("last_date", "date", 1),
    ("last_balance", "numeric", 4),
    ("last_occurred_at", "timestamptz", 5),
)


def _pg_select(columns: Sequence[tuple[str, str, int]]) -> str:
    """The select list reading ``columns`` (name, type, position) from a JSON array row
    ``r``."""
    return ", ".join(
        f"r->>{i} AS {c}" if t == "varchar" else f"(r->>{i})::{t} AS {c}" for c, t, i in columns
    )


def _pg_upsert(table: str, columns: Sequence[tuple[str, str, int]], key: Sequence[str]) -> str:
    """One INSERT of a JSON document's rows (in its order: one lock order for every worker)
    with ON CONFLICT DO UPDATE of the other columns."""
    names = [c for c, _, _ in columns]
    return (
        f"INSERT INTO {table} ({', '.join(names)}) SELECT {_pg_select(columns)}"
        " FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n"
        + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in names if c not in key)
    )


_SNAPSHOT_NAMES = tuple(c for c, _ in _SNAPSHOT_COLUMNS)
_ACCOUNT_NAMES = tuple(c for c, _, _ in _ACCOUNT_COLUMNS)
_PG_SNAPSHOTS = _pg_upsert(
    "balance_snapshots",
    [(c, t, i) for i, (c, t) in enumerate(_SNAPSHOT_COLUMNS)],
    ("account_id", "as_of_date"),
)
_PG_ACCOUNTS = _pg_upsert("balance_accounts", _ACCOUNT_COLUMNS, ("account_id",))
# accounts already stored (the batch read them under its clients' locks): a plain UPDATE,
# cheaper than an INSERT that conflicts on every row
_PG_ACCOUNTS_UPDATE = (
    "UPDATE balance_accounts AS a SET "
    + ", ".join(f"{c} = u.{c}" for c in _ACCOUNT_NAMES[1:])
    + f" FROM (SELECT {_pg_select(_ACCOUNT_COLUMNS)} FROM jsonb_array_elements($1::jsonb) r) u"
    " WHERE a.account_id = u.account_id"
)


def _sq_upsert(table: str, names: Sequence[str], key: Sequence[str]) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
        + ", ".join(f"{c} = excluded.{c}" for c in names if c not in key)
    )


_SQ_SNAPSHOTS = _sq_upsert("balance_snapshots", _SNAPSHOT_NAMES, ("account_id", "as_of_date"))

_SQ_ACCOUNTS = _sq_upsert(  # in a snapshot row's order
    "balance_accounts",
    [c for c, _t, _i in sorted(_ACCOUNT_COLUMNS, key=lambda c: c[2])],
    ("account_id",),
)
# the three in one statement (data-modifying WITH queries run once each, to completion);
# an empty document writes nothing
_PG_WRITE = (
    f"WITH s AS ({_PG_SNAPSHOTS}), u AS ({_PG_ACCOUNTS_UPDATE.replace('$1', '$2')}),"
    f" f AS ({_PG_ACCOUNTS.replace('$1', '$3')}) SELECT 1"
)
# PostgreSQL: rows go as one JSON document (msgspec encodes it in C: dates and datetimes in
# ISO 8601 / RFC 3339, decimals as their exact text), expanded by the server; arrays per
# column cost asyncpg several µs per row in element checks and encoding
_JSON = msgspec.json.Encoder()


async def _upsert_snapshots(
    conn: AsyncConnection,
    snapshot_tuples: Sequence[Row],
    account_tuples: Sequence[Row],
    stored: Container[str] = (),
) -> None:
    """The batch's winning snapshots and the accounts' newest days (each account's newest
    snapshot row; ``stored``: the accounts that have a row): on PostgreSQL one statement (a
    JSON document per table and kind, no per-row parameters), else executemany."""
    if conn.dialect.name == "postgresql":
        raw = (await conn.get_raw_connection()).driver_connection
        known = [r for r in account_tuples if r[0] in stored]
        fresh = [r for r in account_tuples if r[0] not in stored] if known else account_tuples
        if snapshot_tuples or account_tuples:
            await raw.execute(  # type: ignore[union-attr]
                _PG_WRITE,
                *(_JSON.encode(rows).decode() for rows in (snapshot_tuples, known, fresh)),
            )
        return
    # SQLite: on the driver, in SQLAlchemy's storage forms (one writer: executemany)
    stamps: dict[datetime, str] = {}

    def stamp(at: datetime) -> str:
        got = stamps.get(at)
        if got is None:
            got = stamps[at] = sqlite_time(at)
        return got

    if snapshot_tuples:
        await conn.exec_driver_sql(
            _SQ_SNAPSHOTS,
            [
                (acc, day.isoformat(), cid, line, str(bal), stamp(at), eid)
                for acc, day, cid, line, bal, at, eid in snapshot_tuples
            ],
        )
    if account_tuples:
        await conn.exec_driver_sql(
            _SQ_ACCOUNTS,
            [
                (acc, day.isoformat(), cid, line, str(bal), stamp(at))
                for acc, day, cid, line, bal, at, _eid in account_tuples
            ],
        )


async def fire_outflows(
    conn: AsyncConnection,
    before: Sequence[Account],
    stored: dict[str, Account],
    after: Sequence[Row],
    policy: Policy,
    now: datetime,
) -> int:
    """大额资金流出: per client whose newest bank date moved on, its deposits (the carried
    balances of its liability accounts) at the newest date before the batch against the
    newest after it; a fall past the policy's share or amount fires one ``outflow`` alert
    for that date (one per client and date: a redelivered batch fires nothing new).

    ``before``: every stored account of the batch's clients; ``stored``: the stored row of
    each account the batch writes (if any); ``after``: the accounts' newest snapshots
    written. A client's accounts after the batch are its stored ones with the written ones
    in place (an account written under another client stays counted under its stored one
    here); an account's written newest day is never before its stored one."""
    was_day: dict[str, date] = {}  # per client before the batch: its newest day
    was: dict[str, Decimal] = {}  # and its deposits
    for _acc, cid, line, day, bal, _at in before:
        if cid not in was_day:
            was_day[cid] = day
            was[cid] = bal if line == "liability" else ZERO
            continue
        if day > was_day[cid]:
            was_day[cid] = day
        if line == "liability":
            was[cid] += bal
    if not was:
        return 0  # a client's first balances are no fall
    new_day: dict[str, date] = {}  # per client after the batch: its newest day
    change: dict[str, Decimal] = {}  # and the change of its deposits
    for acc, day, cid, line, bal, _at, _eid in after:
        if cid not in was:
            continue
        if cid not in new_day:
            new_day[cid] = day
            change[cid] = ZERO
        elif day > new_day[cid]:
            new_day[cid] = day
        if line == "liability":
            change[cid] += bal
        old = stored.get(acc)
        if old is not None and old[1] == cid and old[2] == "liability":
            change[cid] -= old[4]
    fired: list[tuple[str, date]] = []
    for cid, day in new_day.items():
        if day <= was_day[cid]:
            continue  # a late or corrected past day: no alert for the past
        if outflow(was[cid], was[cid] + change[cid], policy):
            fired.append((cid, day))
    if fired:
        fired.sort()
        await fire_alerts(conn, "outflow", fired, policy, now, source=ALERT_SOURCE)
    return len(fired)


async def check_tiers(
    conn: AsyncConnection, policy: Policy, now: datetime, *, limit: int = 2000
) -> list[dict[str, Any]]:
    """客户等级下降: recompute the tier of up to ``limit`` clients with balances not checked
    yet today (bank date); a tier lower than the one computed at the previous check fires a
    ``tier_drop`` alert for yesterday's close. Returns the alerts fired."""
    today = now.astimezone(policy.tz).date()
    rows = (
        await conn.execute(
            select(BalanceHolderRow.client_id, BalanceHolderRow.computed_tier, ClientRow.bad_credit)
            .join(ClientRow, ClientRow.client_id == BalanceHolderRow.client_id)
            .where(
                or_(BalanceHolderRow.tier_checked.is_(None), BalanceHolderRow.tier_checked < today)
            )
            .order_by(BalanceHolderRow.client_id)
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    tiers = await client_tiers(conn, rows, policy, today)
    drops = []
    for r in rows:
        new = tiers[r.client_id]["computed_tier"]
        old = r.computed_tier
        if old is not None and new is not None and TIER_ORDER.index(new) > TIER_ORDER.index(old):
            drops.append((r.client_id, today - timedelta(days=1)))
    await conn.execute(
        update(BalanceHolderRow)
        .where(BalanceHolderRow.client_id == bindparam("cid"))
        .values(computed_tier=bindparam("tier"), tier_checked=bindparam("today")),
        [
            {"cid": r.client_id, "tier": tiers[r.client_id]["computed_tier"], "today": today}
            for r in rows
        ],
    )
    if not drops:
        return []
    return await fire_alerts(conn, "tier_drop", drops, policy, now, source=ALERT_SOURCE)


async def _history(
    conn: AsyncConnection, client_ids: Sequence[str]
) -> dict[str, list[tuple[datetime, str]]]:
    out: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    rows = await conn.execute(
        select(AssignmentRow.client_id, AssignmentRow.assigned_at, AssignmentRow.manager_id)
        .where(one_of(AssignmentRow.client_id, client_ids, conn.dialect.name))
        .order_by(AssignmentRow.client_id, AssignmentRow.assigned_at)
    )
    for cid, at, mid in rows.all():
        out[cid].append((at, mid))
    return out


async def _segments_now(
    conn: AsyncConnection, client_ids: Sequence[str], policy: Policy
) -> dict[str, Sequence[Segment]]:
    """The holders by the assignment history as it stands (branches as they are now)."""
    history = await _history(conn, client_ids)
    mids = sorted({m for h in history.values() for _, m in h})
    branches: dict[str, str | None] = {}
    if mids:
        rows = await conn.execute(
            select(ManagerRow.manager_id, ManagerRow.branch_id).where(
                one_of(ManagerRow.manager_id, mids, conn.dialect.name)
            )
        )
        branches = dict(rows.all())
    return {c: holder_segments(history.get(c, []), branches, policy.tz) for c in client_ids}


async def holders(
    conn: AsyncConnection, client_ids: Iterable[str], policy: Policy
) -> dict[str, Sequence[Segment]]:
    """The holders the stored deltas credit, per client (recorded on a client's first
    balance, moved by ``move_clients``)."""
    ids = sorted(set(client_ids))
    found: Iterable[Sequence[Any]]
    if conn.dialect.name == "postgresql":  # straight from the driver, as ``_accounts``
        raw = (await conn.get_raw_connection()).driver_connection
        found = await raw.fetch(  # type: ignore[union-attr]
            "SELECT client_id, segments FROM balance_holders"
            " WHERE client_id IN (SELECT unnest($1::varchar[]))",
            ids,
        )
    else:
        found = await conn.exec_driver_sql(
            "SELECT client_id, segments FROM balance_holders"
            " WHERE client_id IN (SELECT value FROM json_each(?))",
            (list_value(ids, "sqlite"),),
        )
    stored: dict[str, Sequence[Segment]] = {cid: load_segments(segs) for cid, segs in found}
    missing = [c for c in ids if c not in stored]
    if missing:
        fresh = await _segments_now(conn, missing, policy)
        await conn.execute(
            _insert(conn, BalanceHolderRow).on_conflict_do_nothing(),
            [
                {
                    "client_id": c,
                    "segments": dump_segments(fresh[c]),
                    "handed_over": len(fresh[c]) > 1,
                }
                for c in missing
            ],
        )
        stored.update(fresh)
    return stored


async def move_clients(
    conn: AsyncConnection, client_ids: Iterable[str], policy: Policy, today: date
) -> set[str]:
    """After a transfer: move each client's carried balance to the holders its assignment
    history now gives (days credited before and after differ only where the holder did).
    Returns the managers whose balances changed."""
    ids = sorted(set(client_ids))
    if not ids:
        return set()
    dialect = conn.dialect.name
    stored = {
        cid: segs
        for cid, segs in (
            await conn.execute(
                select(BalanceHolderRow.client_id, BalanceHolderRow.segments).where(
                    one_of(BalanceHolderRow.client_id, ids, dialect)
                )
            )
        ).all()
    }
    if not stored:
        return set()
    now = await _segments_now(conn, sorted(stored), policy)
    moved = [c for c in sorted(stored) if dump_segments(now[c]) != stored[c]]
    if not moved:
        return set()
    # every snapshot of the accounts the moved clients ever held, each account's in date
    # order: a snapshot adds its balance from its day on to the holders of its client, and
    # takes back the account's previous one, of whatever client that was (as
    # ``rebuild_balances``); only what a moved client's holders were credited moves
    held = select(BalanceSnapshotRow.account_id).where(
        one_of(BalanceSnapshotRow.client_id, moved, dialect)
    )
    rows = await conn.execute(
        select(
            BalanceSnapshotRow.client_id,
            BalanceSnapshotRow.account_id,
            BalanceSnapshotRow.as_of_date,
            BalanceSnapshotRow.business_line,
            BalanceSnapshotRow.balance,
        )
        .where(BalanceSnapshotRow.account_id.in_(held))
        .order_by(BalanceSnapshotRow.account_id, BalanceSnapshotRow.as_of_date)
    )
    moving = set(moved)
    deltas: Deltas = {}
    previous: dict[str, tuple[str, str, Decimal]] = {}  # account → (client, line, balance)
    for cid, acc, day, line, bal in rows.all():
        steps = []
        if cid in moving:
            steps.append((cid, line, bal))
        prior = previous.get(acc)
        if prior is not None and prior[0] in moving:
            steps.append((prior[0], prior[1], -prior[2]))
        for owner, step_line, amount in steps:
            add_change(deltas, load_segments(stored[owner]), step_line, -amount, day, None)
            add_change(deltas, now[owner], step_line, amount, day, None)
        previous[acc] = (cid, line, bal)
    stmt = _insert(conn, BalanceHolderRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=["client_id"],
        set_={"segments": stmt.excluded.segments, "handed_over": stmt.excluded.handed_over},
    )
    await conn.execute(
        stmt,
        [
            {"client_id": c, "segments": dump_segments(now[c]), "handed_over": len(now[c]) > 1}
            for c in moved
        ],
    )
    deltas = drop_zeros(deltas)
    await write_deltas(conn, deltas, today)
    return {k[1] for k in deltas if k[0] == "manager"}


async def rebuild_balances(conn: AsyncConnection, policy: Policy, today: date) -> int:
    """Replay's part: rebuild every stored change, year opening, holder segment and account
    newest day from the stored snapshots and the assignment history as it stands (the
    alerts' state, ``computed_tier`` and ``tier_checked``, stays). Returns the change rows
    written."""
    dialect = conn.dialect.name
    await conn.execute(delete(BalanceDayRow))
    await conn.execute(delete(BalanceOpeningRow))
    await conn.execute(delete(BalanceAccountRow))
    clients = sorted(
        set((await conn.execute(select(BalanceSnapshotRow.client_id).distinct())).scalars())
    )
    segments = await _segments_now(conn, clients, policy) if clients else {}
    stored = set((await conn.execute(select(BalanceHolderRow.client_id))).scalars())
    holder_rows = [
        {
            "client_id": c,
            "segments": dump_segments(segments[c]),
            "handed_over": len(segments[c]) > 1,
        }
        for c in clients
    ]
    gone = sorted(stored - set(clients))
    if gone:
        await conn.execute(
            delete(BalanceHolderRow).where(one_of(BalanceHolderRow.client_id, gone, dialect))
        )
    if holder_rows:
        stmt = _insert(conn, BalanceHolderRow)
        stmt = stmt.on_conflict_do_update(
            index_elements=["client_id"],
            set_={"segments": stmt.excluded.segments, "handed_over": stmt.excluded.handed_over},
        )
        await conn.execute(stmt, holder_rows)
    deltas: Deltas = {}
    accounts: list[Row] = []
    previous: Row | None = None  # the account's last row read
    rows = await conn.stream(
        select(*(BalanceSnapshotRow.__table__.c[c] for c in _SNAPSHOT_NAMES)).order_by(
            BalanceSnapshotRow.account_id, BalanceSnapshotRow.as_of_date
        )
    )
    async for row in rows:
        acc, day, cid, line, bal, at, eid = row
        if previous is not None and previous[0] == acc:
            add_change(deltas, segments[previous[2]], previous[3], -previous[4], day, None)
        elif previous is not None:
            accounts.append(previous)
        add_change(deltas, segments[cid], line, bal, day, None)
        previous = (acc, day, cid, line, bal, at, eid)
    if previous is not None:
        accounts.append(previous)
    await _upsert_snapshots(conn, [], accounts)
    deltas = drop_zeros(deltas)
    await write_deltas(conn, deltas, today)
    return len(deltas)


# --- writing ---------------------------------------------------------------------------------
_PG_DAILY = (  # rows in the document's (sorted) order: one lock order for every worker
    "INSERT INTO balance_daily (scope, owner_id, day, liability, asset) "
    "SELECT r->>0, r->>1, (r->>2)::date, (r->>3)::numeric, (r->>4)::numeric"
    " FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n"
    " ON CONFLICT (scope, owner_id, day) DO UPDATE SET "
    "liability = balance_daily.liability + excluded.liability, "
    "asset = balance_daily.asset + excluded.asset"
)
# the day changes, and the stored openings of their owners read in the same statement (the
# openings as they were: the day changes touch none)
_PG_DAILY_OPENINGS = (
    f"WITH d AS ({_PG_DAILY}) SELECT scope, owner_id, year, liability, asset"
    " FROM balance_openings WHERE owner_id IN (SELECT unnest($2::varchar[]))"
)
_PG_OPENING_ADD = (  # rows in the document's (sorted) order: one lock order for every worker
    "INSERT INTO balance_openings (scope, owner_id, year, liability, asset) "
    "SELECT r->>0, r->>1, (r->>2)::integer, (r->>3)::numeric, (r->>4)::numeric"
    " FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(r, n) ORDER BY n"
    " ON CONFLICT (scope, owner_id, year) DO UPDATE SET "
    "liability = balance_openings.liability + excluded.liability, "
    "asset = balance_openings.asset + excluded.asset"
)
_PG_OPENING = text(
    "INSERT INTO balance_openings (scope, owner_id, year, liability, asset) "
    "SELECT CAST(:scope AS varchar), CAST(:owner AS varchar), CAST(:year AS integer), "
    "COALESCE(SUM(liability), 0), COALESCE(SUM(asset), 0) FROM balance_daily "
    "WHERE scope = :scope AND owner_id = :owner AND day < :jan1 "
    "ON CONFLICT (scope, owner_id, year) DO UPDATE SET "
    "liability = balance_openings.liability + CAST(:liability AS numeric), "
    "asset = balance_openings.asset + CAST(:asset AS numeric)"
)


async def write_deltas(conn: AsyncConnection, deltas: Deltas, today: date) -> None:
    """Add day deltas to ``balance_daily`` and keep every year opening they precede exact.

    The openings written: every year after the earliest changed day up to next year (and
    any later one already stored). A new opening row is the sum of every stored change
    before its 1 January (once per owner and year); an existing one gains the batch's part.
    """
    deltas = drop_zeros(deltas)
    if not deltas:
        return
    keys = sorted(deltas)  # one lock order for every worker
    dialect = conn.dialect.name
    per_owner: dict[tuple[str, str], list[tuple[date, dict[str, Decimal]]]] = defaultdict(list)
    for scope, owner, day in keys:
        per_owner[(scope, owner)].append((day, deltas[(scope, owner, day)]))
    owners = sorted({o for _, o in per_owner})
    found: Iterable[Any]
    if dialect == "postgresql":
        raw = await conn.get_raw_connection()
        found = await raw.driver_connection.fetch(  # type: ignore[union-attr]
            _PG_DAILY_OPENINGS,
            _JSON.encode([(*k, deltas[k]["liability"], deltas[k]["asset"]) for k in keys]).decode(),
            owners,
        )
    else:
        await _sqlite_add_daily(conn, deltas, keys)
        found = (
            await conn.execute(
                select(
                    BalanceOpeningRow.scope,
                    BalanceOpeningRow.owner_id,
                    BalanceOpeningRow.year,
                    BalanceOpeningRow.liability,
                    BalanceOpeningRow.asset,
                ).where(one_of(BalanceOpeningRow.owner_id, owners, dialect))
            )
        ).all()
    # --- year openings
    stored: dict[tuple[str, str, int], dict[str, Decimal]] = {}
    stored_years: dict[tuple[str, str], set[int]] = defaultdict(set)
    for scope, owner, year, liability, asset in found:
        stored[(scope, owner, year)] = {"liability": liability, "asset": asset}
        stored_years[(scope, owner)].add(year)
    wanted: list[tuple[str, str, int, dict[str, Decimal]]] = []
    for (scope, owner), days in sorted(per_owner.items()):
        first = min(d for d, _ in days).year
        horizon = max(max(d for d, _ in days).year, today.year) + 1
        years = set(range(first + 1, horizon + 1))
        years |= {y for y in stored_years.get((scope, owner), ()) if y > first}
        for year in sorted(years):
            jan1 = date(year, 1, 1)
            part = {line: ZERO for line in LINES}
            for d, v in days:
                if d < jan1:
                    for line in LINES:
                        part[line] += v[line]
            wanted.append((scope, owner, year, part))
    if dialect == "postgresql":
        # stored openings gain the batch's part (one UPDATE over arrays); a new one sums
        # every stored change before its year, once per owner and year
        known = [w for w in wanted if w[:3] in stored]
        if known:
            raw = await conn.get_raw_connection()
            await raw.driver_connection.execute(  # type: ignore[union-attr]
                _PG_OPENING_ADD,
                _JSON.encode(
                    [(s, o, y, p["liability"], p["asset"]) for s, o, y, p in known]
                ).decode(),
            )
        fresh = [w for w in wanted if w[:3] not in stored]
        if fresh:
            await conn.execute(
                _PG_OPENING,
                [
                    {
                        "scope": s,
                        "owner": o,
                        "year": y,
                        "jan1": date(y, 1, 1),
                        "liability": p["liability"],
                        "asset": p["asset"],
                    }
                    for s, o, y, p in fresh
                ],
            )
        return
    rows = []
    for scope, owner, year, part in wanted:
        old = stored.get((scope, owner, year))
        if old is None:  # the sum of every stored change before its year (this batch's too)
            summed = (
                await conn.execute(
                    select(
                        exact_sum(BalanceDayRow.liability, dialect),
                        exact_sum(BalanceDayRow.asset, dialect),
                    ).where(
                        BalanceDayRow.scope == scope,
                        BalanceDayRow.owner_id == owner,
                        BalanceDayRow.day < date(year, 1, 1),
                    )
                )
            ).one()
            value = {"liability": summed[0] or ZERO, "asset": summed[1] or ZERO}
        else:
            value = {line: old[line] + part[line] for line in LINES}
        rows.append({"scope": scope, "owner_id": owner, "year": year, **value})
    stmt = _insert(conn, BalanceOpeningRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=["scope", "owner_id", "year"],
        set_={"liability": stmt.excluded.liability, "asset": stmt.excluded.asset},
    )
    await conn.execute(stmt, rows)


_SQ_DAILY = (
    "INSERT INTO balance_daily (scope, owner_id, day, liability, asset) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (scope, owner_id, day) DO UPDATE SET"
    " liability = decimal_add(liability, excluded.liability),"
    " asset = decimal_add(asset, excluded.asset)"
)


async def _sqlite_add_daily(
    conn: AsyncConnection, deltas: Deltas, keys: list[tuple[str, str, date]]
) -> None:
    """SQLite keeps decimals as text: added exactly by ``decimal_add`` (models/db.py) in the
    upsert, on the driver in SQLAlchemy's storage forms."""
    await conn.exec_driver_sql(
        _SQ_DAILY,
        [
            (k[0], k[1], k[2].isoformat(), str(deltas[k]["liability"]), str(deltas[k]["asset"]))
            for k in keys
        ],
    )
