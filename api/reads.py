"""The read cache: answers of the tally and leaderboard routes, and the scope lookups, kept
while the data they were read from is unchanged.

Freshness is not traded for speed. Every request reads the data version (``data_versions``,
moved by database triggers in the same transaction as any write to the tables those answers
read, whoever the writer is) with a read that *started after the request arrived*, so an
answer always includes every write committed before the request came in, as without a cache.
Concurrent requests share one version read: under load one round trip serves every request
that arrived while the previous one was in flight.

A cached answer is kept only for the version it was computed under; when the version moves,
everything is dropped. Concurrent misses of one key share one computation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast

from cachetools import LRUCache
from fastapi.responses import Response
from prometheus_client import Counter
from pydantic import TypeAdapter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from models.tables import VERSIONED_TABLES

T = TypeVar("T")
P = ParamSpec("P")

CACHE_HITS = Counter("crm_api_read_cache_hits", "API answers served from the read cache")
CACHE_MISSES = Counter(
    "crm_api_read_cache_misses", "API answers computed and kept for their version"
)
VERSION_READS = Counter("crm_api_data_version_reads", "Data version reads (shared by requests)")

# the sum of the shards' counters, and how many shards: a shard row deleted by hand changes
# the answer even when the sum happens to come out the same
VERSION_SQL = "SELECT COALESCE(SUM(version), 0), COUNT(*) FROM data_versions"
VERSION_QUERY = text(VERSION_SQL)


class ReadCache:
    def __init__(self, engine: AsyncEngine, *, enabled: bool = True, max_weight: int = 20_000):
        self.engine = engine
        self.enabled = enabled
        # what the entries may hold, in KiB of encoded answers (``answer_weight``; a scope
        # lookup weighs one): the cache stays within tens of MB however many keys; the least
        # recently used go first
        self._kept: LRUCache[Hashable, tuple[Any, int]] = LRUCache(0)
        self.max_weight = max_weight
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}  # computations under way
        self._started = 0  # version reads started so far
        self._inflight: asyncio.Future[tuple[int, int]] | None = None
        self._inflight_seq = 0
        self._version: tuple[int, int] | None = None  # what the entries were computed under
        self._version_conn: AsyncConnection | None = None
        # connections kept for computations (at most ``keep_connections`` idle at a time)
        self._idle: list[tuple[Any, AsyncConnection]] = []
        self.keep_connections = 8
        self._closed = False
        # PostgreSQL: autocommit (READ COMMITTED per statement). SQLite's engine begins a
        # transaction itself (models/db.py), so there each read is rolled back instead.
        self._autocommit = engine is not None and engine.dialect.name == "postgresql"
        self._version_driver: Any = None  # PostgreSQL: the version connection's asyncpg one
        self.hits = 0
        self.misses = 0

    async def _query_version(self) -> tuple[int, int]:
        """One read on a connection kept for version reads (one is in flight at a time), that
        sees every commit before it began.

        SQLite: SQLAlchemy's read, rolled back after (the engine begins a transaction).

        PostgreSQL: one round trip on the driver's connection in autocommit, with no pool
        checkout, liveness ping, BEGIN or ROLLBACK around it, nor SQLAlchemy's statement layer.
        A broken connection is replaced once."""
        for attempt in (1, 2):
            try:
                conn = self._version_conn
                if conn is None:
                    conn = await self.engine.connect()
                    if self._autocommit:
                        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                        raw = await conn.get_raw_connection()
                        self._version_driver = raw.driver_connection
                    self._version_conn = conn
                if self._version_driver is not None:
                    total, shards = await self._version_driver.fetchrow(VERSION_SQL)
                    return int(total), int(shards)
                ((total, shards),) = (await conn.execute(VERSION_QUERY)).all()
                if not self._autocommit:
                    await conn.rollback()  # SQLite: end the read, or its snapshot stays
                return int(total), int(shards)
            except Exception:
                await self._drop_version_conn()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _drop_version_conn(self, *, broken: bool = True) -> None:
        conn, self._version_conn = self._version_conn, None
        self._version_driver = None
        if conn is not None:
            if broken:
                with contextlib.suppress(Exception):
                    await conn.invalidate()
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        """Give back the kept connections (at shutdown, before the engine goes)."""
        self._closed = True
        await self._drop_version_conn(broken=False)
        idle, self._idle = self._idle, []
        for cm, _conn in idle:
            with contextlib.suppress(Exception):
                await cm.__aexit__(None, None, None)

    async def _read_version(self) -> tuple[int, int]:
        VERSION_READS.inc()
        return self._adopt(await self._query_version())

    def _adopt(self, v: tuple[int, int]) -> tuple[int, int]:
        if v != self._version:
            self._version = v
            self._kept.clear()
            self._pending.clear()
        return v

    async def version(self) -> tuple[int, int] | None:
        """The data version as of a read that began after this call (None: cache off)."""
        if not self.enabled:
            return None
        arrived = self._started
        while True:
            inflight = self._inflight
            if inflight is not None and self._inflight_seq > arrived:
                return await asyncio.shield(inflight)  # began after we arrived: it will do
            if inflight is None:
                self._started += 1
                fut = asyncio.ensure_future(self._read_version())
                self._inflight, self._inflight_seq = fut, self._started
                fut.add_done_callback(self._read_done)
                return await asyncio.shield(fut)
            # a read that began before we arrived may miss a commit we must see: wait for
            # it to end, then take the next one
            await asyncio.wait([inflight])

    def _read_done(self, fut: asyncio.Future[tuple[int, int]]) -> None:
        if self._inflight is fut:
            self._inflight = None
        if not fut.cancelled():
            fut.exception()  # retrieved here, raised to its waiters

    async def _compute(self, compute: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``compute`` on a kept connection (PostgreSQL: autocommit, so each statement sees
        every commit before it began; SQLite: the read is rolled back after). A checkout
        from the pool pinged PostgreSQL first (BEGIN, SELECT 1, ROLLBACK), which cost more
        than a tally's own reads. A kept connection that fails (the server dropped it) is
        thrown away and the computation runs once more on a new one."""
        while True:
            kept = bool(self._idle)
            if kept:
                cm, conn = self._idle.pop()
            else:
                cm = self.engine.connect()
                conn = await cm.__aenter__()
                if self._autocommit:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            try:
                value = await compute(conn)
                if isinstance(conn, AsyncConnection) and conn.in_transaction():
                    await conn.rollback()  # SQLite: end the read, or its snapshot stays
            except Exception:
                if isinstance(conn, AsyncConnection):
                    with contextlib.suppress(Exception):
                        await conn.invalidate()
                with contextlib.suppress(Exception):
                    await cm.__aexit__(None, None, None)
                if kept:
                    continue
                raise
            except BaseException:  # cancelled: the connection's state is unknown
                with contextlib.suppress(Exception):
                    await cm.__aexit__(None, None, None)
                raise
            if len(self._idle) < self.keep_connections and not self._closed:
                self._idle.append((cm, conn))
            else:
                await cm.__aexit__(None, None, None)
            return value

    async def get(
        self,
        version: tuple[int, int] | None,
        key: Hashable,
        compute: Callable[[AsyncConnection], Awaitable[T]],
        weight: Callable[[T], int] = lambda _value: 1,
    ) -> T:
        """The answer for ``key`` under ``version``: cached, or computed on a connection of
        its own (and kept while ``version`` is the newest one read; ``weight``: its size in
        tally documents).

        Entries are keyed by version too, so an answer is only ever reused by a request whose
        own version read returned the version under which the answer was computed."""
        if version is None or version != self._version:
            return await self._compute(compute)  # cache off, or a newer version was read
        vkey = (version, key)
        kept = self._kept.get(vkey)
        if kept is not None:
            self.hits += 1
            CACHE_HITS.inc()
            return cast(T, kept[0])
        fut = self._pending.get(vkey)
        if fut is not None:  # being computed: share it
            self.hits += 1
            CACHE_HITS.inc()
            try:
                return cast(T, await asyncio.shield(fut))
            except BaseException:
                if not fut.done():
                    raise  # this request was cancelled
            # the computation it waited for failed: its own answer (or its own error)
            return await self._compute(compute)
        self.misses += 1
        CACHE_MISSES.inc()
        fut = asyncio.get_running_loop().create_future()
        self._pending[vkey] = fut
        try:
            value = await self._compute(compute)
        except BaseException:
            if self._pending.get(vkey) is fut:
                del self._pending[vkey]
            fut.cancel()  # waiters compute their own
            raise
        fut.set_result(value)
        if self._pending.get(vkey) is fut:  # still this version's: keep it
            del self._pending[vkey]
            w = max(1, weight(value))
            if w <= self.max_weight:
                self._kept[vkey] = (value, w)
        return value

    @property
    def weight(self) -> int:
        return int(self._kept.currsize)

    @property
    def max_weight(self) -> int:
        return int(self._kept.maxsize)

    @max_weight.setter
    def max_weight(self, weight: int) -> None:
        """(Dropping whatever is kept.)"""
        self._kept = LRUCache(weight, getsizeof=lambda entry: entry[1])


# --- what is cached: reads that declare their tables -----------------------------------------
AS_OF = f"as_of:{secrets.token_hex(16)}"
"""Stands in for ``as_of`` in a kept answer: random per process, so no stored text can hold it."""
_AS_OF_JSON = json.dumps(AS_OF).encode()
_AS_OF_CONTEXT = {"as_of": AS_OF}

CACHED_READS: dict[str, CachedRead[Any, Any] | CachedAnswer[Any]] = {}
"""Every cached read by name (its ``tables``: what tests check what it reads against)."""


class UnversionedTable(LookupError):
    """A cached read declared a table whose writes do not move the data version: its answers
    would be served stale. Raised when the module declaring it is imported."""


class Reading(Protocol):
    """What a cached read needs of a request: the cache, the version it reads at (read once,
    after the request arrived) and the settings (api/deps.py ``Reading``)."""

    @property
    def cache(self) -> ReadCache: ...
    @property
    def version(self) -> tuple[int, int] | None: ...
    @property
    def settings(self) -> Any: ...


def _declare(
    cached: CachedRead[Any, Any] | CachedAnswer[Any], name: str, tables: tuple[str, ...]
) -> frozenset[str]:
    if not tables:
        raise UnversionedTable(f"{name}: a cached read declares the tables it reads")
    unknown = sorted(set(tables) - set(VERSIONED_TABLES))
    if unknown:
        raise UnversionedTable(
            f"{name} reads {', '.join(unknown)}, whose writes do not move the data version "
            f"(models.tables.VERSIONED_TABLES: {', '.join(VERSIONED_TABLES)}): it cannot be "
            "cached"
        )
    CACHED_READS[name] = cached
    return frozenset(tables)


class CachedRead(Generic[P, T]):
    """``read(conn, *args)`` kept in the read cache under ``(name, *args)`` while the data
    version is unchanged; called as ``await cached(reading, *args)``."""

    def __init__(
        self, read: Callable[Concatenate[AsyncConnection, P], Awaitable[T]], tables: tuple[str, ...]
    ):
        self.name = f"{read.__module__}.{read.__qualname__}"
        self.tables = _declare(self, self.name, tables)
        self.read = read

    async def __call__(self, reading: Reading, *args: P.args, **kwargs: P.kwargs) -> T:
        """``kwargs`` reach ``read`` but not the key: values that follow from ``args`` under
        the same version (a branch's managers, already looked up by the request)."""
        read = self.read
        return await reading.cache.get(
            reading.version, (self.name, *args), lambda conn: read(conn, *args, **kwargs)
        )


class CachedAnswer(Generic[P]):
    """A route's whole answer, computed by ``compute(conn, settings, *args)``, checked against
    ``out`` and encoded to JSON once (a kept leaderboard page is ~100 tallies: validating and
    encoding it again for every request cost more than the rest of the request), with a
    stand-in for every ``as_of`` that each request replaces with its own time: its version
    read confirmed the figures current then."""

    def __init__(
        self,
        compute: Callable[Concatenate[AsyncConnection, Any, P], Awaitable[Any]],
        tables: tuple[str, ...],
        out: Any,
    ):
        self.name = f"{compute.__module__}.{compute.__qualname__}"
        self.tables = _declare(self, self.name, tables)
        self.read = compute
        self.adapter: TypeAdapter[Any] = TypeAdapter(out)

    def encode(self, doc: Any) -> bytes:
        """The answer as sent (what FastAPI would send for the route's ``response_model``),
        with the ``as_of`` stand-in."""
        return self.adapter.dump_json(
            self.adapter.validate_python(doc), by_alias=True, context=_AS_OF_CONTEXT
        )

    async def __call__(self, reading: Reading, *args: P.args, **kwargs: P.kwargs) -> Response:
        settings = reading.settings
        compute, encode = self.read, self.encode

        async def encoded(conn: AsyncConnection) -> bytes:
            return encode(await compute(conn, settings, *args, **kwargs))

        body = await reading.cache.get(reading.version, (self.name, *args), encoded, answer_weight)
        as_of = datetime.now(settings.tz).isoformat(timespec="seconds")
        return Response(
            body.replace(_AS_OF_JSON, json.dumps(as_of).encode()), media_type="application/json"
        )


def cached_read(
    *tables: str,
) -> Callable[[Callable[Concatenate[AsyncConnection, P], Awaitable[T]]], CachedRead[P, T]]:
    """Keep a read's value in the read cache; ``tables``: every table it reads, each one of
    ``VERSIONED_TABLES`` (else ``UnversionedTable`` at import)."""
    return lambda read: CachedRead(read, tables)


def cached_answer(
    *tables: str, out: Any
) -> Callable[[Callable[Concatenate[AsyncConnection, Any, P], Awaitable[Any]]], CachedAnswer[P]]:
    """Keep a route's answer encoded in the read cache (see ``CachedAnswer``); ``tables`` as
    for ``cached_read``, ``out``: the answer's type (the route's ``response_model``)."""
    return lambda compute: CachedAnswer(compute, tables, out)


def answer_weight(body: bytes) -> int:
    """An encoded answer's weight in the cache: one per KiB (a tally is about one)."""
    return 1 + len(body) // 1024
