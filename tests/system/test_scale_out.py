"""Scale-out on the real broker: three worker processes share 12 partitions per topic; one
is killed with -9 while events keep coming; the survivors take its partitions over and the
tallies are exact (compared with the independent computation in testkit/factories.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from crmtracker.broker import EmbeddedBroker, ensure_topics
from models.db import make_engine
from models.tables import WorkerPositionRow
from testkit.broker import isolated_settings, produce, wait_for_counts
from testkit.checks import assert_tallies, counts
from testkit.factories import generate_log, valid_events
from testkit.process import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 12


async def reporting(engine: AsyncEngine, group: str, since: datetime) -> dict[tuple[str, int], str]:
    """(topic, partition) → worker that reported it since ``since``."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    WorkerPositionRow.topic, WorkerPositionRow.partition, WorkerPositionRow.worker
                ).where(WorkerPositionRow.group_id == group, WorkerPositionRow.updated_at > since)
            )
        ).all()
    return {(t, p): w for t, p, w in rows}


async def test_three_workers_one_killed_survivors_take_over_exactly(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    log = generate_log(seed=31, events=12_000)
    settings = isolated_settings(
        broker.bootstrap, db_url, tmp_path, topic_partitions=PARTITIONS, batch_size=200
    )
    await ensure_topics(settings)
    messages = [(m.topic, m.key, m.value) for m in log.messages]
    first, rest = messages[: len(messages) * 2 // 5], messages[len(messages) * 2 // 5 :]
    await produce(settings, first)
    valid, bad = valid_events(log.messages)
    inputs = {(t, p) for t in settings.topics.inputs for p in range(PARTITIONS)}
    engine = make_engine(db_url)
    workers = [WorkerProcess(settings, tmp_path / f"worker{i}.log") for i in range(3)]
    try:
        t0 = datetime.now(UTC)
        for w in workers:
            w.start()
        # all three hold partitions (the group has rebalanced over them)
        deadline = time.monotonic() + 60
        while True:
            held = await reporting(engine, settings.group_id, t0)
            owners = {w for tp, w in held.items() if tp in inputs}
            if len(owners) == 3:
                break
            assert time.monotonic() < deadline, f"owners {owners}\n{workers[0].log_tail()}"
            await asyncio.sleep(0.3)
        victim = workers[0]
        assert victim.proc is not None
        victim_name = next(w for w in owners if w.endswith(f":{victim.proc.pid}"))
        victim_tps = {tp for tp, w in held.items() if w == victim_name and tp in inputs}
        assert victim_tps

        # keep producing; kill one worker in the middle of it
        chunk = (len(rest) + 7) // 8
        killed_at: datetime | None = None
        for i in range(8):
            await produce(settings, rest[i * chunk : (i + 1) * chunk])
            if i == 2:
                applied, _r, _h = await counts(engine)
                assert applied < len(valid), "the stream should still be running"
                victim.kill9()
                killed_at = datetime.now(UTC)
            await asyncio.sleep(0.2)
        assert killed_at is not None

        await wait_for_counts(engine, len(valid), bad, 120, workers[1])
        await assert_tallies(engine, log.tallies, log.branches)
        assert await counts(engine) == (len(valid), bad, 0)

        # the survivors own every input partition now, the victim's included
        deadline = time.monotonic() + 30
        while True:
            after = await reporting(engine, settings.group_id, killed_at)
            covered = {tp for tp in after if tp in inputs}
            if covered == inputs:
                break
            assert time.monotonic() < deadline, f"uncovered {sorted(inputs - covered)[:5]}"
            await asyncio.sleep(0.5)
        assert {after[tp] for tp in inputs} <= owners - {victim_name}
        assert {after[tp] for tp in victim_tps} <= owners - {victim_name}
    finally:
        for w in workers[1:]:
            assert w.stop() == 0, w.log_tail()
        workers[0].stop()
        await engine.dispose()
    elapsed = time.monotonic() - started
    print(f"scale-out test on {engine.dialect.name}: {elapsed:.1f}s")
    assert elapsed < 120
