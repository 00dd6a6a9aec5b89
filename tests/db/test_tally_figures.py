"""A manager's tally answer reads its figures on the driver (``models.tally.manager_figures``):
the same totals, target history and ``hired_at`` as the SQLAlchemy reads the rest of the
product uses, on both databases."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from models.policy import Policy
from models.tally import hired_dates, manager_figures, manager_totals, target_history
from streams.apply import Applier
from testkit.db import Engines
from testkit.feed import Feed, client_upsert, deposit_profit, manager_upsert

SPANS = [
    (date(2025, 1, 1), date(2025, 12, 31)),
    (date(2025, 11, 1), date(2025, 11, 30)),
    (date(2025, 11, 15), date(2025, 11, 15)),
    (date(2026, 3, 1), date(2026, 3, 31)),
    (date(2024, 1, 1), date(2024, 1, 31)),  # no bucket
]


async def test_driver_reads_match_the_sqlalchemy_reads(db_url: str, engines: Engines) -> None:
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply(
        [
            manager_upsert(feed, "m-1", "2025-03-01T09:00:00+08:00", "mh", "1200000.50"),
            manager_upsert(
                feed, "m-2", "2025-09-01T09:00:00+08:00", "mh", "1500000", hired_at="2025-09-01"
            ),
            manager_upsert(feed, "m-3", "2025-09-01T09:00:00+08:00", "mo", "900000"),
        ]
    )
    # an older upsert arriving late is not the one in force
    await applier.apply(
        [manager_upsert(feed, "m-0", "2025-01-01T09:00:00+08:00", "mh", "1", hired_at="2020-01-01")]
    )
    await applier.apply([client_upsert(feed, "ch", "mh", "2025-03-01T09:00:00+08:00")])
    await applier.apply(
        [
            deposit_profit(feed, "t1", "2025-11-15T10:00:00+08:00", "ch", "200000.01"),
            deposit_profit(feed, "t2", "2025-11-15T11:00:00+08:00", "ch", "0.10"),
            deposit_profit(feed, "t3", "2026-03-15T10:00:00+08:00", "ch", "600000"),
        ]
    )
    async with engine.connect() as conn:
        for mid in ("mh", "mo", "nobody"):
            history = (await target_history(conn, [mid]))[mid]
            hired = (await hired_dates(conn, [mid]))[mid]
            for start, end in SPANS:
                got = await manager_figures(conn, mid, start, end)
                assert got.totals == await manager_totals(conn, mid, start, end)
                assert got.history == history
                assert got.hired_at == hired
        nov = await manager_figures(conn, "mh", date(2025, 11, 1), date(2025, 11, 30))
        assert nov.totals["transactions"] == 2
        assert nov.totals["weighted_profit"] == Decimal("200000.11")
        assert nov.hired_at == date(2025, 9, 1)
        assert [t for _, t in nov.history] == [Decimal(1), Decimal("1200000.50"), 1500000]
