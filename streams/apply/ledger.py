"""The write path's database work, one backend per database behind one interface (as
APScheduler keeps its data stores): claim event ids, add to the daily buckets, take named
locks. Every method is one statement (or two) per batch, whatever the batch's size.

- PostgreSQL: arrays bound once and expanded by ``unnest`` (no per-row parameter building),
  transaction-scoped advisory locks so several workers stay exact.
- SQLite: one writer (``BEGIN IMMEDIATE``; this process queues its own transactions), so no
  lock is needed; decimals are text, added exactly by the ``decimal_add`` SQL function
  (``models.db``) inside the upsert.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from models.db import list_value
from models.tables import COUNT_COLUMNS, MONEY_COLUMNS
from streams.apply.credit import Assignment, ClientTerms, ManagerTerms
from streams.apply.terms import Terms, handed_over, load_opened

BUCKET_COLUMNS: tuple[str, ...] = (*MONEY_COLUMNS, *COUNT_COLUMNS)
COLUMN_INDEX = {c: i for i, c in enumerate(BUCKET_COLUMNS)}
_MONEY = len(MONEY_COLUMNS)
BUCKET_TABLES = {
    "manager": ("manager_daily", "manager_id"),
    "branch": ("branch_daily", "branch_id"),
}

CLAIM_COLUMNS = (
    ("event_id", "varchar"),
    ("event_type", "varchar"),
    ("topic", "varchar"),
    ("partition", "int"),
    ("offset", "bigint"),
    ("occurred_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("status", "varchar"),
    ("client_id", "varchar"),
    ("manager_id", "varchar"),
    ("branch_id", "varchar"),
    ("day", "date"),
    ("weighted_profit", "numeric"),
    ("value", "text"),
)
"""An event row as the claim takes it: a tuple in this order."""
_CLAIM_NAMES = ", ".join(f'"{c}"' for c, _ in CLAIM_COLUMNS)

# PostgreSQL: a batch's rows go as one JSON document (msgspec encodes it in C: datetimes in
# RFC 3339, decimals as their exact text), expanded by the server; arrays per column cost
# asyncpg about 5 µs per row in element checks and encoding, the document under 1 µs
_JSON = msgspec.json.Encoder()
_PG_CAST = {"varchar": "", "text": ""}


def _pg_rows(columns: Sequence[tuple[str, str]]) -> str:
    """The select list reading ``columns`` (name, type) from a JSON array row ``r``."""
    return ", ".join(
        f"r->>{i}" if t in _PG_CAST else f"(r->>{i})::{t}" for i, (_c, t) in enumerate(columns)
    )


HOLD_RELEASE_LOCK = 7235002

KEPT_CLIENTS_LIMIT = 500_000
"""Beyond this many clients kept, the terms kept across batches start again from empty."""

ClientEntry = tuple[ClientTerms, list[Assignment] | None, frozenset[str]]
"""A client's terms, its assignment history (None: none) and the managers both name."""

_REFERENCE_VERSION = "SELECT COALESCE(SUM(version), 0) FROM reference_versions"

Deltas = dict[tuple[str, date], dict[int, Any]]
"""(manager or branch id, day) → {column index in ``BUCKET_COLUMNS``: the value to add};
columns the batch did not change are absent."""


def full_row(cells: dict[int, Any]) -> list[Any]:
    """Every column of a bucket delta, in ``BUCKET_COLUMNS`` order."""
    row: list[Any] = [Decimal(0)] * _MONEY + [0] * (len(BUCKET_COLUMNS) - _MONEY)
    for i, v in cells.items():
        row[i] = v
    return row


class KeptTerms:
    """The credit rule's terms as read at one reference version (``reference_versions``,
    migration 0015: triggers move it on every write to what the terms read, by any writer)."""

    __slots__ = ("clients", "managers", "version")

    def __init__(self, version: int) -> None:
        self.version = version
        self.clients: dict[str, ClientEntry] = {}
        self.managers: dict[str, ManagerTerms] = {}


class Ledger:
    """The statements a batch needs; ``for_dialect`` picks the database's backend.

    It keeps the credit rule's terms across batches: each read of them first reads the
    reference version (after the batch's locks, so with what other workers committed), and
    what was kept at another version is not used. What a transaction reads is kept only
    once it has committed (it may have read its own writes)."""

    dialect: str
    _kept: KeptTerms | None = None
    _staged: KeptTerms | None = None

    @staticmethod
    def for_dialect(dialect: str) -> Ledger:
        return PostgresLedger() if dialect == "postgresql" else SqliteLedger()

    def insert(self, model: Any) -> Any:
        """The dialect's INSERT (with ON CONFLICT) for a table."""
        return (postgresql if self.dialect == "postgresql" else sqlite).insert(model)

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[None]:
        """Around a batch's transaction (entered before it begins, left after its commit)."""
        async with self._serial():
            self._staged = None
            try:
                yield
            except BaseException:
                self._staged = None
                raise
            self._keep_staged()

    @contextlib.asynccontextmanager
    async def _serial(self) -> AsyncIterator[None]:
        """Whatever this process must serialise itself."""
        yield

    def _keep_staged(self) -> None:
        """The transaction committed: what it read of the terms is kept."""
        staged, self._staged = self._staged, None
        if staged is None:
            return
        kept = self._kept
        if kept is None or kept.version != staged.version:
            self._kept = staged
            return
        kept.clients.update(staged.clients)
        kept.managers.update(staged.managers)
        if len(kept.clients) > KEPT_CLIENTS_LIMIT:
            self._kept = None

    async def claim(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> set[str]:
        """Insert event rows (``CLAIM_COLUMNS`` order); return the ids that were new."""
        raise NotImplementedError

    async def add(self, conn: AsyncConnection, table: str, deltas: Deltas) -> None:
        """Add to the daily buckets of ``table`` (``manager`` or ``branch``), one statement."""
        raise NotImplementedError

    async def load_terms(
        self, conn: AsyncConnection, client_ids: Iterable[str], named_managers: Iterable[str]
    ) -> Terms:
        """What the credit rule reads for these clients' facts: the clients, their histories
        and every manager a fact of theirs may be credited to (any manager of a history, the
        clients' current ones, and those the facts name). Only what is not kept at the
        current reference version is read."""
        version = await self._reference_version(conn)
        staged = self._staged
        if staged is None or staged.version != version:
            staged = self._staged = KeptTerms(version)
        kept = self._kept if self._kept is not None and self._kept.version == version else None
        terms = Terms()
        wanted = set(named_managers)
        missing: list[str] = []
        for cid in set(client_ids):
            entry = staged.clients.get(cid) or (kept.clients.get(cid) if kept else None)
            if entry is None:
                missing.append(cid)
                continue
            terms.clients[cid], history, names = entry
            if history:
                terms.history[cid] = history
            wanted |= names
        if missing:
            missing.sort()
            for cid, entry in (await self._read_clients(conn, missing)).items():
                staged.clients[cid] = entry
                terms.clients[cid], history, names = entry
                if history:
                    terms.history[cid] = history
                wanted |= names
        unknown: list[str] = []
        for mid in wanted:
            m = staged.managers.get(mid) or (kept.managers.get(mid) if kept else None)
            if m is None:
                unknown.append(mid)
            else:
                terms.managers[mid] = m
        if unknown:
            unknown.sort()
            read = await self._read_managers(conn, unknown)
            staged.managers.update(read)
            terms.managers.update(read)
        # accounts are written by the batches themselves: read each time (handed-over only)
        terms.opened = await load_opened(conn, handed_over(terms.history))
        return terms

    async def _reference_version(self, conn: AsyncConnection) -> int:
        res = await conn.exec_driver_sql(_REFERENCE_VERSION)
        return int(res.scalar_one())

    async def _read_clients(
        self, conn: AsyncConnection, client_ids: list[str]
    ) -> dict[str, ClientEntry]:
        """The clients' terms and histories, read from the database."""
        raise NotImplementedError

    async def _read_managers(
        self, conn: AsyncConnection, manager_ids: list[str]
    ) -> dict[str, ManagerTerms]:
        raise NotImplementedError

    async def lock_keys(self, conn: AsyncConnection, keys: Iterable[str]) -> None:
        """Transaction-scoped named locks, taken in one order (several workers)."""

    async def lock_hold_release(self, conn: AsyncConnection) -> None:
        """Serialise 'hold an event' against 'release held events' across workers."""


class PostgresLedger(Ledger):
    dialect = "postgresql"

    # rows in the document's order (WITH ORDINALITY): event id order, one lock order. The
    # last column (the message's JSON text, most of a row's bytes) goes beside the document
    # as a text array, zipped to its rows by ROWS FROM: inside the document it was escaped
    # by the worker, parsed into jsonb and copied out again by the server (about 1.5-3 µs
    # of server CPU per row at 5,000 rows, and a little of the worker's)
    _CLAIM = (
        f"INSERT INTO events ({_CLAIM_NAMES}) SELECT {_pg_rows(CLAIM_COLUMNS[:-1])}, v"
        " FROM ROWS FROM (jsonb_array_elements($1::jsonb), unnest($2::text[]))"
        " WITH ORDINALITY AS e(r, v, n) ORDER BY n"
        " ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
    )
    assert CLAIM_COLUMNS[-1][0] == "value"  # the one column sent beside the document

    def __init__(self) -> None:
        # the batch's changed cells go as (key, day, column, value) rows of one document; the
        # database pivots them into rows, sums per (key, day) and adds them in key order.
        # OFFSET 0 keeps the cells' subquery as it is: pulled up, each FILTER read its column
        # index out of the JSON again (one per bucket column per cell: 0.3 µs of the server's
        # CPU per event of the 0.75 the two upserts cost)
        self._upserts = {}
        for name, (table, key) in BUCKET_TABLES.items():
            sums = [
                f"COALESCE(sum(v) FILTER (WHERE i = {i}), 0)" + ("" if i < _MONEY else "::int")
                for i in range(len(BUCKET_COLUMNS))
            ]
            self._upserts[name] = (
                f"INSERT INTO {table} ({key}, day, {', '.join(BUCKET_COLUMNS)}) "
                f"SELECT k, d, {', '.join(sums)} "
                "FROM (SELECT r->>0 AS k, (r->>1)::date AS d, (r->>2)::int AS i,"
                " (r->>3)::numeric AS v FROM jsonb_array_elements($1::jsonb) r OFFSET 0) t "
                f"GROUP BY k, d ORDER BY k, d ON CONFLICT ({key}, day) DO UPDATE SET "
                + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in BUCKET_COLUMNS)
            )

    @staticmethod
    async def _driver(conn: AsyncConnection) -> Any:
        driver: Any = (await conn.get_raw_connection()).driver_connection
        if conn.in_transaction() and not driver.is_in_transaction():
            # SQLAlchemy's asyncpg adapter sends BEGIN with its own first statement: one sent
            # on the driver before would run outside the transaction (its xact locks gone)
            await conn.exec_driver_sql("SELECT 1")
        return driver

    async def claim(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> set[str]:
        if not rows:
            return set()
        rows.sort()  # by event id: the same lock order in every worker
        doc = _JSON.encode([r[:-1] for r in rows]).decode()
        found = await (await self._driver(conn)).fetch(self._CLAIM, doc, [r[-1] for r in rows])
        return {r[0] for r in found}

    async def add(self, conn: AsyncConnection, table: str, deltas: Deltas) -> None:
        if not deltas:
            return
        cells = [(k, d, i, v) for (k, d), row in deltas.items() for i, v in row.items()]
        # rows are inserted in (key, day) order (ORDER BY): one lock order, no deadlocks
        await (await self._driver(conn)).execute(self._upserts[table], _JSON.encode(cells).decode())

    _TERMS = (
        "SELECT c.client_id, c.manager_id, c.claim_ratio, c.origin,"
        " array_agg(a.assigned_at ORDER BY a.assigned_at) FILTER (WHERE a.client_id IS NOT NULL),"
        " array_agg(a.manager_id ORDER BY a.assigned_at) FILTER (WHERE a.client_id IS NOT NULL)"
        " FROM clients c LEFT JOIN client_assignments a ON a.client_id = c.client_id"
        " WHERE c.client_id IN (SELECT unnest($1::varchar[]))"
        " GROUP BY c.client_id, c.manager_id, c.claim_ratio, c.origin"
    )
    _MANAGERS = (
        "SELECT manager_id, branch_id, active FROM managers"
        " WHERE manager_id IN (SELECT unnest($1::varchar[]))"
    )

    # on the driver: a client with its history in one row, then the managers (SQLAlchemy's
    # per-row result processing cost more than the rest of the batch)
    async def _read_clients(
        self, conn: AsyncConnection, client_ids: list[str]
    ) -> dict[str, ClientEntry]:
        out: dict[str, ClientEntry] = {}
        for cid, mid, ratio, origin, ats, mids in await (await self._driver(conn)).fetch(
            self._TERMS, client_ids
        ):
            history = list(zip(ats, mids, strict=True)) if ats else None
            out[cid] = (ClientTerms(mid, ratio, origin), history, frozenset((mid, *(mids or ()))))
        return out

    async def _read_managers(
        self, conn: AsyncConnection, manager_ids: list[str]
    ) -> dict[str, ManagerTerms]:
        rows = await (await self._driver(conn)).fetch(self._MANAGERS, manager_ids)
        return {mid: ManagerTerms(bid, bool(active)) for mid, bid, active in rows}

    _LOCK_KEYS = (
        "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(x, 0) AS k"
        " FROM jsonb_array_elements_text($1::jsonb) x ORDER BY 1) s"
    )

    async def lock_keys(self, conn: AsyncConnection, keys: Iterable[str]) -> None:
        wanted = sorted(set(keys))
        if not wanted:
            return
        await (await self._driver(conn)).execute(self._LOCK_KEYS, _JSON.encode(wanted).decode())

    # one lock order: this backend's version shards (0006, 0015: the triggers of a reference
    # write lock them before this lock, the bucket upserts after it) first, left unchanged
    _HOLD_RELEASE = (
        "INSERT INTO data_versions (shard, version) VALUES (pg_backend_pid() % 16, 0)"
        " ON CONFLICT (shard) DO UPDATE SET version = data_versions.version;"
        " INSERT INTO reference_versions (shard, version) VALUES (pg_backend_pid() % 16, 0)"
        " ON CONFLICT (shard) DO UPDATE SET version = reference_versions.version;"
        f" SELECT pg_advisory_xact_lock({HOLD_RELEASE_LOCK})"
    )

    async def lock_hold_release(self, conn: AsyncConnection) -> None:
        await (await self._driver(conn)).execute(self._HOLD_RELEASE)


def sqlite_time(at: datetime | None) -> str | None:
    """A timestamp as SQLAlchemy stores it on SQLite (UTC, naive, microseconds)."""
    if at is None:
        return None
    # the UTC time's text without its "+00:00" (cheaper than replacing the tzinfo first)
    return at.astimezone(UTC).isoformat(" ", "microseconds")[:-6]


class SqliteLedger(Ledger):
    dialect = "sqlite"

    _EXISTING = "SELECT event_id FROM events WHERE event_id IN (SELECT value FROM json_each(?))"
    _LAST_ROWID = "SELECT max(rowid) FROM events"
    _SINCE = "SELECT event_id FROM events WHERE rowid > ?"
    _INSERT = "INSERT INTO events ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING".format(
        cols=", ".join(f'"{c}"' for c, _ in CLAIM_COLUMNS),
        marks=", ".join("?" * len(CLAIM_COLUMNS)),
    )

    def __init__(self) -> None:
        # SQLite has one writer: queue this process's transactions instead of busy-waiting
        self._lock = asyncio.Lock()
        self._upserts = {}
        for name, (table, key) in BUCKET_TABLES.items():
            # a Python call per column and row costs: only where the batch changed the figure
            sets = [
                f"{c} = CASE excluded.{c} WHEN '0' THEN {c} ELSE decimal_add({c}, excluded.{c}) END"
                for c in MONEY_COLUMNS
            ]
            sets += [f"{c} = {c} + excluded.{c}" for c in COUNT_COLUMNS]
            self._upserts[name] = (
                f"INSERT INTO {table} ({key}, day, {', '.join(BUCKET_COLUMNS)}) "
                f"VALUES ({', '.join('?' * (len(BUCKET_COLUMNS) + 2))}) "
                f"ON CONFLICT ({key}, day) DO UPDATE SET {', '.join(sets)}"
            )

    @contextlib.asynccontextmanager
    async def _serial(self) -> AsyncIterator[None]:
        async with self._lock:
            yield

    _CLIENTS = (
        "SELECT client_id, manager_id, claim_ratio, origin FROM clients"
        " WHERE client_id IN (SELECT value FROM json_each(?))"
    )
    _HISTORY = (
        "SELECT client_id, assigned_at, manager_id FROM client_assignments"
        " WHERE client_id IN (SELECT value FROM json_each(?)) ORDER BY client_id, assigned_at"
    )
    _MANAGERS = (
        "SELECT manager_id, branch_id, active FROM managers"
        " WHERE manager_id IN (SELECT value FROM json_each(?))"
    )

    # on the driver, values read as SQLAlchemy stores them (decimals as text, times as naive
    # UTC text); a driver result's rows typed as what they are (SQLAlchemy's stubs give
    # CursorResult[Any] rows of one column)
    async def _read_clients(
        self, conn: AsyncConnection, client_ids: list[str]
    ) -> dict[str, ClientEntry]:
        ids = list_value(client_ids, "sqlite")
        clients: Iterable[Sequence[Any]] = await conn.exec_driver_sql(self._CLIENTS, (ids,))
        found = {
            cid: ClientTerms(mid, None if ratio is None else Decimal(ratio), origin)
            for cid, mid, ratio, origin in clients
        }
        histories: dict[str, list[Assignment]] = {}
        if found:
            known = list_value(sorted(found), "sqlite")
            history: Iterable[Sequence[Any]] = await conn.exec_driver_sql(self._HISTORY, (known,))
            for cid, at, mid in history:
                when = datetime.fromisoformat(at).replace(tzinfo=UTC)
                histories.setdefault(cid, []).append((when, mid))
        out: dict[str, ClientEntry] = {}
        for cid, ct in found.items():
            h = histories.get(cid)
            out[cid] = (ct, h, frozenset((ct.manager_id, *(m for _a, m in h or ()))))
        return out

    async def _read_managers(
        self, conn: AsyncConnection, manager_ids: list[str]
    ) -> dict[str, ManagerTerms]:
        ids = list_value(manager_ids, "sqlite")
        found: Iterable[Sequence[Any]] = await conn.exec_driver_sql(self._MANAGERS, (ids,))
        return {mid: ManagerTerms(bid, bool(active)) for mid, bid, active in found}

    async def claim(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> set[str]:
        if not rows:
            return set()
        # The single writer holds the write lock. Insert every row, ids already there left
        # as they are (ON CONFLICT DO NOTHING): when the count of rows inserted is the
        # batch's, every id was new (a batch without resends: no lookup of its ids); else the
        # new ones are the rows past the table's last rowid before the insert (SQLite gives
        # a new row the largest rowid + 1 while that is below 2^63 - 1; far from it here).
        last = (await conn.exec_driver_sql(self._LAST_ROWID)).scalar()
        if last is not None and last >= _ROWID_FAR:
            return await self._claim_by_lookup(conn, rows)
        received: dict[Any, str | None] = {}  # one receive time per batch: converted once
        # inserted in event id order: neighbours in the primary key's b-tree
        stored = [_sqlite_event(r, received) for r in sorted(rows)]
        res = await conn.exec_driver_sql(self._INSERT, stored)
        if res.rowcount == len(stored):
            return {r[0] for r in stored}
        since = await conn.exec_driver_sql(self._SINCE, (last or 0,))
        return {r[0] for r in since}

    async def _claim_by_lookup(
        self, conn: AsyncConnection, rows: list[tuple[Any, ...]]
    ) -> set[str]:
        """The claim reading the ids already there first (rowids no longer ascending)."""
        ids = [r[0] for r in rows]
        res = await conn.exec_driver_sql(self._EXISTING, (list_value(ids, "sqlite"),))
        existing = {r[0] for r in res}
        received: dict[Any, str | None] = {}
        new = [_sqlite_event(r, received) for r in sorted(rows) if r[0] not in existing]
        if new:
            await conn.exec_driver_sql(self._INSERT, new)
        return {r[0] for r in new}

    async def add(self, conn: AsyncConnection, table: str, deltas: Deltas) -> None:
        if not deltas:
            return
        # (key, day, every column): money as text, '0' where the batch changed nothing (what
        # str(Decimal(0)) gives; the upsert leaves those as they are); only the changed
        # cells converted (up_e2e's batches touch ~2,500 buckets each: 3 µs less a row)
        rows = []
        for k in sorted(deltas):
            row: list[Any] = [k[0], k[1].isoformat(), *_SQLITE_UNCHANGED]
            for i, v in deltas[k].items():
                row[i + 2] = str(v) if i < _MONEY else v
            rows.append(tuple(row))
        await conn.exec_driver_sql(self._upserts[table], rows)


_SQLITE_UNCHANGED: tuple[Any, ...] = ("0",) * _MONEY + (0,) * (len(BUCKET_COLUMNS) - _MONEY)
"""A bucket row's columns on SQLite before the batch's changes: money as text, counts."""

_ROWID_FAR = 1 << 62
"""Past this last rowid the claim reads the ids already there (new rowids may be random)."""


def _sqlite_event(r: tuple[Any, ...], received_as: dict[Any, str | None]) -> tuple[Any, ...]:
    """An event row with SQLite's storage forms (times, day, decimal as text)."""
    eid, et, topic, part, off, occurred, received, status, cid, mid, bid, day, wp, value = r
    stored = received_as.get(received)
    if stored is None:
        stored = received_as[received] = sqlite_time(received)
    return (
        eid,
        et,
        topic,
        part,
        off,
        sqlite_time(occurred),
        stored,
        status,
        cid,
        mid,
        bid,
        day.isoformat() if day is not None else None,
        str(wp) if wp is not None else None,
        value,
    )
