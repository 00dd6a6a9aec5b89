"""The claim of event ids (``streams/apply/ledger.py``): exactly the ids not already in
``events`` come back, whatever the mix of new and known ids, on both databases; SQLite's
claim (insert first, the new rows found by count or by rowid) and its fallback when rowids
are near their end; the SQLite writer's engine settings."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from models import db as mdb
from models.db import make_engine
from streams.apply.ledger import Ledger, SqliteLedger

AT = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


def row(n: int) -> tuple[Any, ...]:
    """An events row in ``CLAIM_COLUMNS`` order."""
    return (
        f"e-{n:04d}",
        "transaction.posted",
        "crm.transactions",
        n % 8,
        n,
        AT,
        AT,
        "applied",
        "c1",
        "m1",
        "b1",
        date(2026, 3, 4),
        Decimal("1.25"),
        "{}",
    )


async def _claim(engine: Any, ledger: Ledger, *batches: list[int]) -> list[list[str]]:
    """Claim each list of ids in turn inside one transaction; the ids each claim got."""
    out = []
    async with engine.begin() as conn:
        for ids in batches:
            out.append(sorted(await ledger.claim(conn, [row(n) for n in ids])))
    return out


async def test_claim_returns_exactly_the_new_ids(db_url: str) -> None:
    engine = make_engine(db_url, writer=True)
    ledger = Ledger.for_dialect(engine.dialect.name)
    try:
        assert await _claim(engine, ledger, [3, 1, 2]) == [["e-0001", "e-0002", "e-0003"]]
        # known ids among new ones, in any order; all known; then new in the same transaction
        assert await _claim(engine, ledger, [2, 5, 4, 1], [5, 3], [7]) == [
            ["e-0004", "e-0005"],
            [],
            ["e-0007"],
        ]
        async with engine.connect() as conn:
            stored = await conn.execute(text("SELECT event_id FROM events ORDER BY event_id"))
            assert [r[0] for r in stored] == [f"e-{n:04d}" for n in (1, 2, 3, 4, 5, 7)]
    finally:
        await engine.dispose()


async def test_sqlite_claim_near_the_last_rowid_reads_the_known_ids(sqlite_url: str) -> None:
    """Past 2^62 the claim no longer trusts ascending rowids: it reads the known ids first."""
    engine = make_engine(sqlite_url, writer=True)
    ledger = SqliteLedger()
    try:
        async with engine.begin() as conn:
            await ledger.claim(conn, [row(1)])
            await conn.execute(text("UPDATE events SET rowid = :r"), {"r": (1 << 63) - 1})
        assert await _claim(engine, ledger, [1, 2, 3], [3, 4]) == [
            ["e-0002", "e-0003"],
            ["e-0004"],
        ]
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM events"))).scalar() == 4
    finally:
        await engine.dispose()


async def test_sqlite_writer_settings(sqlite_url: str) -> None:
    """WAL with synchronous=NORMAL (durability as before); the larger checkpoint interval
    and the writer's page cache."""
    writer, reader = make_engine(sqlite_url, writer=True), make_engine(sqlite_url)
    try:
        for engine, cache in ((writer, -mdb.WRITER_CACHE_KIB), (reader, -2000)):
            async with engine.connect() as conn:
                got = [
                    (await conn.exec_driver_sql(f"PRAGMA {p}")).scalar()
                    for p in (
                        "journal_mode",
                        "synchronous",
                        "wal_autocheckpoint",
                        "journal_size_limit",
                        "cache_size",
                    )
                ]
            assert got == [
                "wal",
                1,  # NORMAL
                mdb.WAL_AUTOCHECKPOINT_PAGES,
                mdb.WAL_SIZE_LIMIT_BYTES,
                cache,
            ]
    finally:
        await writer.dispose()
        await reader.dispose()
