"""Engines and migrations for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, event, func, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

MIGRATIONS = Path(__file__).parent / "migrations"


def one_of(col: Any, values: Iterable[Any], dialect: str) -> Any:
    """``col IN (values)`` with the whole list as ONE bound parameter.

    SQLAlchemy's ``in_()`` renders one placeholder per value on every execution, which
    costs more than the query for the apply step's thousand-id lookups. PostgreSQL takes an
    array (``IN (SELECT unnest($1))``), SQLite a JSON list (``IN (SELECT value FROM json_each(?))``).
    """
    return one_of_param(col, None, dialect, list_value(values, dialect))


def one_of_param(col: Any, name: str | None, dialect: str, value: Any = None) -> Any:
    """``one_of`` with a named parameter, for a statement built once and executed with
    ``{name: list_value(values, dialect)}``."""
    if dialect == "postgresql":
        # IN (SELECT unnest(...)), not = ANY(...): a generic plan for ANY may scan the whole
        # table comparing each row with every element; the join keeps the index
        param = bindparam(name, value, type_=postgresql.ARRAY(col.type))
        return col.in_(select(func.unnest(param)))
    return col.in_(
        select(literal_column("value")).select_from(func.json_each(bindparam(name, value)))
    )


def list_value(values: Iterable[Any], dialect: str) -> Any:
    """The bound value of a ``one_of`` list: an array on PostgreSQL, JSON text on SQLite."""
    vals = list(values)
    return vals if dialect == "postgresql" else json.dumps(vals, default=str)


class _DecimalSum:
    """SQLite aggregate ``decimal_sum(text)``: exact sum of decimals kept as text.

    SQLite's own SUM reads text as a float; this one adds ``Decimal`` values and returns the
    sum as text (NULL for no rows), which ``ExactDecimal`` reads back as a ``Decimal``.
    """

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: Any) -> None:
        if value is None:
            return
        d = Decimal(value) if isinstance(value, str) else Decimal(str(value))
        self.total = d if self.total is None else self.total + d

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


def _decimal_add(a: Any, b: Any) -> str | None:
    """SQLite function ``decimal_add(text, text)``: the exact sum of two decimals kept as
    text (NULL counts as 0), as text; the write path's bucket upsert adds with it."""
    if a is None and b is None:
        return None
    total = Decimal(0 if a is None else a if isinstance(a, str) else str(a))
    return str(total + Decimal(0 if b is None else b if isinstance(b, str) else str(b)))


# SQLite's write cost (README, "The write path, second form"): a batch's random inserts into
# the events' and visits' indexes dirty about two pages per event, each written to the WAL at
# the commit. The checkpoint copies them into the database file: every 1,000 pages (SQLite's
# default) it ran after every batch, copying each hot index page once per batch; every 16,384
# pages (64 MiB of WAL) a page that several batches changed is copied once. The writer's page
# cache keeps those indexes in memory (the default 2 MiB re-read them through the kernel each
# batch). Durability is unchanged: WAL with synchronous=NORMAL, a commit is in the WAL file
# before the offset is committed (kept across a killed process, as before).
WAL_AUTOCHECKPOINT_PAGES = 16_384
WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
"""A WAL that a long reader let grow past this is cut back to it after its checkpoint."""
WRITER_CACHE_KIB = 64 * 1024
"""Page cache of a writer engine's connections (readers keep SQLite's 2 MiB)."""


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, writer: bool = False, pool_size: int = 5) -> AsyncEngine:
    """An async engine; ``writer`` engines on SQLite take the write lock when they begin.

    Statement parameters are never put in error messages (``hide_parameters``): they hold
    raw events, whose visit notes and client names must not reach logs or reasons.

    SQLite allows one writer: BEGIN IMMEDIATE makes a second writer wait (busy_timeout)
    instead of failing half-way through a transaction it cannot upgrade.
    """
    if is_sqlite(url):
        db = make_url(url).database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        sync = engine.sync_engine

        @event.listens_for(sync, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # let SQLAlchemy's begin event, not the driver, start transactions
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            if writer:
                cur.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            cur.close()
            # the aggregate lives on the driver's connection, in aiosqlite's own thread
            inner = dbapi_conn._connection  # aiosqlite.Connection
            await_only(inner._execute(inner._conn.create_aggregate, "decimal_sum", 1, _DecimalSum))
            await_only(
                inner._execute(
                    inner._conn.create_function, "decimal_add", 2, _decimal_add, deterministic=True
                )
            )

        @event.listens_for(sync, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        hide_parameters=True,
    )


def upgrade(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations (synchronously; call before starting the loop's work).

    A database already at the one head revision of ``migrations/versions`` is left as it
    is without importing Alembic: its import (Mako, Pygments) and its no-op upgrade cost a
    worker's or API's start 80-130 ms of CPU (measured: a worker's start to its app built,
    0.98 -> 0.90 s). Anything else, or any doubt, takes Alembic's path."""
    if revision == "head" and _at_head(url):
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)


_REVISION = re.compile(r"^revision(?:: str)? = ['\"]([^'\"]+)['\"]$", re.M)
_DOWN_REVISION = re.compile(r"^down_revision(?:: [^=]+)? = (.+)$", re.M)
_QUOTED = re.compile(r"['\"]([^'\"]+)['\"]")


def head_revision(versions: Path = MIGRATIONS / "versions") -> str | None:
    """The one head of the migration scripts (no script names it as its down revision), or
    None when the scripts do not say it plainly (one ``revision = "..."`` and one
    ``down_revision = ...`` line each, a single head)."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for script in versions.glob("*.py"):
        text = script.read_text(encoding="utf-8")
        rev, down = _REVISION.findall(text), _DOWN_REVISION.findall(text)
        if len(rev) != 1 or len(down) != 1 or rev[0] in revisions:
            return None
        revisions.add(rev[0])
        downs.update(_QUOTED.findall(down[0]))
    heads = revisions - downs
    return heads.pop() if len(heads) == 1 and downs <= revisions else None


def _at_head(url: str) -> bool:
    """Whether the database's ``alembic_version`` is the scripts' one head (False when in
    doubt: no head, no table, several rows, a running event loop, any error)."""
    head = head_revision()
    if head is None:
        return False
    try:
        asyncio.get_running_loop()
        return False  # asyncio.run cannot run here: Alembic's env.py knows what to do
    except RuntimeError:
        pass

    async def read() -> list[Any]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as conn:
                return list(await conn.exec_driver_sql("SELECT version_num FROM alembic_version"))
        finally:
            await engine.dispose()

    try:
        rows = asyncio.run(read())
    except Exception:
        return False
    return [tuple(r) for r in rows] == [(head,)]


async def upsert_positions(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    """Record the worker's view of its partitions (committed offset, high watermark)."""
    from sqlalchemy.dialects import postgresql, sqlite

    from models.tables import WorkerPositionRow

    mod = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = mod.insert(WorkerPositionRow)
    stmt = stmt.on_conflict_do_update(
        index_elements=["group_id", "topic", "partition"],
        set_={
            c: stmt.excluded[c] for c in ("committed_offset", "end_offset", "worker", "updated_at")
        },
    )
    async with engine.begin() as conn:
        await conn.execute(stmt, rows)
