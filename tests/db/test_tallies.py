"""Tallies in depth, property-based: for random event logs (testkit/factories.py, written from
the contract alone), every period is the sum of its days, a branch is the sum of its
managers, a replay rebuilds exactly what the live apply built, and the month figures equal
the independent computation."""

from __future__ import annotations

import asyncio
import random
import tempfile
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from models.db import make_engine
from models.policy import Policy
from models.tables import BranchDayRow, ManagerDayRow, ManagerRow
from models.tally import branch_totals, manager_totals, managers_totals, sum_rows
from streams.apply import Applier
from streams.replay import replay
from testkit.checks import assert_tallies, buckets
from testkit.db import Engines, fresh_database
from testkit.factories import generate_log
from testkit.feed import batches_of

FIRST, LAST = date(2026, 8, 1), date(2026, 12, 31)


async def check_log(url: str, seed: int, size: int, ranges: list[tuple[date, date]]) -> None:
    rng = random.Random(seed)
    log = generate_log(
        seed,
        events=size,
        managers=rng.randint(2, 6),
        branches=rng.randint(1, 3),
        clients=rng.randint(12, 40),
        late_clients=rng.randint(0, 4),
        transfers=rng.randint(0, 6),
    )
    engine = make_engine(url, writer=True)
    try:
        applier = Applier(engine, Policy())
        for batch in batches_of(log, rng):
            await applier.apply(batch)
        # the month figures equal the independent computation
        await assert_tallies(engine, log.tallies, log.branches)

        async with engine.connect() as conn:
            managers = (
                await conn.execute(select(ManagerRow.manager_id, ManagerRow.branch_id))
            ).all()
            for start, end in ranges:
                for mid, _ in managers:
                    whole = await manager_totals(conn, mid, start, end)
                    days = [
                        await manager_totals(conn, mid, d, d)
                        for d in (start + timedelta(n) for n in range((end - start).days + 1))
                    ]
                    assert whole == sum_rows(days), (mid, start, end)
                per_manager = await managers_totals(conn, None, start, end)
                for branch in {b for _, b in managers}:
                    mine = [per_manager[m] for m, b in managers if b == branch and m in per_manager]
                    assert await branch_totals(conn, branch, start, end) == sum_rows(mine)

        live = await buckets(engine)
        result = await replay(engine, Policy())
        assert result.corrected == 0
        assert await buckets(engine) == live
        # a partial replay from a date rebuilds the same figures too
        await replay(engine, Policy(), since=date(2026, 10, 15))
        assert await buckets(engine) == live
    finally:
        await engine.dispose()


dates = st.dates(min_value=FIRST, max_value=LAST)
ranges = st.lists(
    st.tuples(dates, st.integers(0, 12)).map(lambda t: (t[0], min(LAST, t[0] + timedelta(t[1])))),
    min_size=1,
    max_size=3,
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 10_000), size=st.integers(20, 400), spans=ranges)
def test_random_logs_sqlite(seed: int, size: int, spans: list[tuple[date, date]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with fresh_database("sqlite", Path(tmp)) as url:
            asyncio.run(check_log(url, seed, size, spans))


@pytest.mark.slow
@pytest.mark.postgres
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), size=st.integers(20, 400), spans=ranges)
def test_random_logs_postgresql(seed: int, size: int, spans: list[tuple[date, date]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with fresh_database("postgresql", Path(tmp)) as url:
            asyncio.run(check_log(url, seed, size, spans))


async def test_replay_while_the_worker_applies(db_url: str, engines: Engines) -> None:
    """A replay running between a live worker's batches never loses or doubles a fact."""
    rng = random.Random(7)
    log = generate_log(7, events=1500, managers=6, branches=2, clients=60, transfers=6)
    worker = engines(db_url, writer=True)
    other = engines(db_url, writer=True)
    applier = Applier(worker, Policy())
    done = asyncio.Event()

    async def apply_all() -> None:
        for batch in batches_of(log, rng):
            await applier.apply(batch)
            await asyncio.sleep(0)
        done.set()

    async def replay_meanwhile() -> int:
        n = 0
        while not done.is_set():
            await replay(other, Policy())
            n += 1
            await asyncio.sleep(0.01)
        return n

    _, replays = await asyncio.gather(apply_all(), replay_meanwhile())
    assert replays >= 1
    await assert_tallies(worker, log.tallies, log.branches)
    live = await buckets(worker)
    await replay(other, Policy())
    assert await buckets(worker) == live


async def test_period_sums_stay_exact_where_floats_would_not(db_url: str, engines: Engines) -> None:
    """The database adds a period's buckets (NUMERIC on PostgreSQL, a Decimal aggregate on
    SQLite, where money is text): sums a float would round come back digit for digit."""
    from sqlalchemy import insert

    engine = engines(db_url)
    days = [date(2026, 10, d) for d in (1, 2, 3)]
    money = [Decimal("0.1"), Decimal("0.2"), Decimal("98765432109876.543210987")]
    async with engine.begin() as conn:
        for model, key in ((ManagerDayRow, "manager_id"), (BranchDayRow, "branch_id")):
            await conn.execute(
                insert(model.__table__),
                [
                    {key: "x1", "day": d, "weighted_profit": v, "volume_asset": v}
                    for d, v in zip(days, money, strict=True)
                ],
            )
    async with engine.connect() as conn:
        want = Decimal("98765432109876.843210987")
        start, end = days[0], days[-1]
        assert (await manager_totals(conn, "x1", start, end))["weighted_profit"] == want
        assert (await branch_totals(conn, "x1", start, end))["volume_asset"] == want
        assert (await managers_totals(conn, None, start, end))["x1"]["weighted_profit"] == want
        assert (await manager_totals(conn, "x1", days[0], days[1]))["volume_asset"] == (
            Decimal("0.3")
        )
        # no bucket in the range: zeros, not NULLs
        nothing = await manager_totals(conn, "x1", date(2027, 1, 1), date(2027, 1, 31))
        assert nothing == sum_rows([])
