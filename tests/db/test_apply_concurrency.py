"""One worker applying batches in several lanes at once (``apply_concurrency``, PostgreSQL).

- fetches split by partition into two lanes, one of which meets the database away (a
  transient error, then success): the other lane applies and commits its next batches
  meanwhile (no barrier), no offset of the failing lane's partitions is committed before its
  retry succeeds, and the end is exact (the vectors' tallies, nothing held, each message's
  offset committed);
- the hold/release lock and the version shards (``data_versions``, ``reference_versions``,
  one row per backend modulo 16) are taken in one order: a reference write (which locks its
  shard first) and a hold (which takes the hold/release lock, then a bucket upsert locks the
  shard) on the same shard wait for each other instead of deadlocking;
- a deadlock the database breaks anyway (40P01) is transient: the batch is retried, never
  rejected.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ConsumerStoppedError
from aiokafka.structs import ConsumerRecord
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from config import Settings
from models.policy import Policy
from streams.apply import Applier, Incoming
from streams.apply.ledger import Ledger
from streams.worker import DirectConsumer, Pipeline, is_transient
from testkit.checks import assert_tallies, counts
from testkit.db import Engines
from testkit.paths import VECTORS

PARTITIONS = 2
FETCH = 400  # records per partition and fetch


def _records() -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    """The vectors as a broker with two partitions per topic would hold them (by key)."""
    out: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
    for line in (VECTORS / "events.jsonl").read_text().splitlines():
        m = json.loads(line)
        key = m["key"].encode() if m["key"] else None
        tp = TopicPartition(m["topic"], zlib.crc32(key or b"") % PARTITIONS)
        rs = out.setdefault(tp, [])
        value = m["value"].encode()
        rs.append(ConsumerRecord(tp.topic, tp.partition, len(rs), 0, 0, key, value, None, 0, 0, []))
    return out


class Consumer:
    """What the loop uses of the aiokafka consumer, over in-memory partitions; checks every
    commit against the offsets a failing group has not applied yet."""

    def __init__(self, records: dict[TopicPartition, list[Any]], failing: dict[Any, int]) -> None:
        self.records = records
        self.position = dict.fromkeys(records, 0)
        self.committed: dict[TopicPartition, int] = {}
        self.failing = failing
        self.commits_while_failing: dict[TopicPartition, int] = {}
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True

    def assignment(self) -> set[TopicPartition]:
        return set(self.records)

    async def getmany(self, *tps: Any, timeout_ms: int = 0, **_kw: Any) -> dict[Any, Any]:
        if self.stopped:
            raise ConsumerStoppedError()
        out = {}
        for tp in tps or self.records:
            rs = self.records[tp][self.position[tp] : self.position[tp] + FETCH]
            if rs:
                out[tp] = rs
                self.position[tp] += len(rs)
        if not out:
            await asyncio.sleep(0.01)
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            first_failed = self.failing.get(tp)
            assert first_failed is None or offset <= first_failed, (
                f"{tp} committed to {offset} while offset {first_failed} is not applied"
            )
            assert offset >= self.committed.get(tp, 0), "a commit went backwards"
        if self.failing:
            for tp in offsets:
                self.commits_while_failing[tp] = self.commits_while_failing.get(tp, 0) + 1
        self.committed.update(offsets)


class Outage(Applier):
    """A real applier for which the database is away for its first ``failures`` attempts at
    a batch of bank.transactions; notes the failing partitions' first offsets meanwhile."""

    def __init__(self, engine: AsyncEngine, failures: int, failing: dict[Any, int]) -> None:
        super().__init__(engine, Policy())
        self.failures = failures
        self.failing = failing
        self.failed = 0

    async def apply(self, messages: Any) -> Any:
        if self.failures > 0 and any(m.topic == "bank.transactions" for m in messages):
            self.failures -= 1
            self.failed += 1
            for m in messages:
                tp = TopicPartition(m.topic, m.partition)
                self.failing[tp] = min(self.failing.get(tp, m.offset), m.offset)
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        result = await super().apply(messages)
        for m in messages:
            self.failing.pop(TopicPartition(m.topic, m.partition), None)
        return result


async def test_a_lane_that_fails_holds_back_only_its_own_partitions_and_ends_exact(
    pg_url: str, engines: Engines, tmp_path: Path
) -> None:
    engine = engines(pg_url, writer=True)
    failing: dict[Any, int] = {}
    outage = Outage(engine, failures=3, failing=failing)
    records = _records()
    consumer = Consumer(records, failing)

    async def no_deadletter(_m: Incoming, _r: str) -> None:
        return None

    pipelines = [
        Pipeline(outage, no_deadletter, max_backoff=0.2),
        Pipeline(Applier(engine, Policy()), no_deadletter, max_backoff=0.2),
    ]
    settings = Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path, batch_size=FETCH)
    dc = DirectConsumer(settings, pipelines, topics=[])
    dc.consumer = consumer
    ends = {tp: len(rs) for tp, rs in records.items()}
    loop = asyncio.create_task(dc._consume(dc))
    for _ in range(3000):
        if consumer.committed == ends:
            break
        await asyncio.sleep(0.01)
    await asyncio.wait_for(dc.on_stop(), 10)
    await asyncio.wait_for(loop, 10)

    assert outage.failed == 3 and not failing
    # the other lane went on batch after batch (no barrier) while the first one retried
    assert max(consumer.commits_while_failing.values(), default=0) >= 2, (
        "the other lane waited for the failing one"
    )
    assert consumer.committed == ends
    expected = json.loads((VECTORS / "expected.json").read_text())
    await assert_tallies(engine, expected["tallies"], expected["branches"])
    _applied, rejected, held = await counts(engine)
    assert (rejected, held) == (expected["bad"], 0)


async def _same_shard_pair(engine: AsyncEngine) -> tuple[AsyncConnection, AsyncConnection]:
    """Two connections whose backends write the same version shard (pid modulo 16): among 17
    connections two always do."""
    opened: list[AsyncConnection] = []
    by_shard: dict[int, AsyncConnection] = {}
    for _ in range(17):
        conn = await engine.connect()
        opened.append(conn)
        shard = (await conn.execute(text("SELECT pg_backend_pid() % 16"))).scalar_one()
        await conn.rollback()
        if shard in by_shard:
            pair = (by_shard[shard], conn)
            for other in opened:
                if other not in pair:
                    await other.close()
            return pair
        by_shard[shard] = conn
    raise AssertionError("17 backends on 16 shards")


async def test_a_reference_write_and_a_hold_on_one_shard_wait_instead_of_deadlocking(
    pg_url: str, engines: Engines
) -> None:
    engine = engines(pg_url, writer=True, pool_size=20)
    ledger = Ledger.for_dialect("postgresql")
    first, second = await _same_shard_pair(engine)
    # A: a reference write (the managers' trigger locks A's version shard), then the lock
    await first.begin()
    await first.execute(text("UPDATE managers SET active = active WHERE false"))
    # B: the lock first, then a bucket upsert (the buckets' trigger locks the same shard)
    await second.begin()

    async def hold() -> None:
        await ledger.lock_hold_release(second)
        await second.execute(
            text("UPDATE manager_daily SET transactions = transactions WHERE false")
        )

    b = asyncio.create_task(hold())
    await asyncio.sleep(0.3)  # B waits (for the shard A holds) or holds the lock
    await asyncio.wait_for(ledger.lock_hold_release(first), 10)
    await first.commit()
    await asyncio.wait_for(b, 10)
    await second.commit()
    for conn in (first, second):
        await conn.close()


async def _deadlock(engine: AsyncEngine, raw: bool) -> BaseException:
    """A real deadlock (two advisory locks taken in opposite orders); the error of the
    transaction the database breaks, through SQLAlchemy or on the driver's connection."""
    a, b = await engine.connect(), await engine.connect()
    for conn in (a, b):
        await conn.begin()
        await conn.execute(text("SELECT 1"))  # the transaction begins (BEGIN sent)

    async def lock(conn: AsyncConnection, key: int) -> None:
        sql = f"SELECT pg_advisory_xact_lock({key})"
        if raw:
            await (await conn.get_raw_connection()).driver_connection.execute(sql)
        else:
            await conn.execute(text(sql))

    await lock(a, 1)
    await lock(b, 2)
    results = await asyncio.gather(lock(a, 2), lock(b, 1), return_exceptions=True)
    for conn in (a, b):
        await conn.rollback()
        await conn.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results
    return errors[0]


@pytest.mark.parametrize("raw", [False, True], ids=["sqlalchemy", "driver"])
async def test_a_deadlock_is_transient_and_the_batch_is_retried(
    pg_url: str, engines: Engines, raw: bool
) -> None:
    engine = engines(pg_url, writer=True)
    error = await _deadlock(engine, raw)
    orig = error.orig if isinstance(error, DBAPIError) else error
    assert getattr(orig, "sqlstate", None) == "40P01"
    assert is_transient(error)

    class Deadlocked(Applier):
        def __init__(self) -> None:
            super().__init__(engine, Policy())
            self.attempts = 0

        async def apply(self, messages: Any) -> Any:
            self.attempts += 1
            if self.attempts == 1:
                raise error
            return await super().apply(messages)

    rejected: list[Incoming] = []

    async def deadletter(m: Incoming, _r: str) -> None:
        rejected.append(m)

    applier = Deadlocked()
    value = json.dumps(
        {
            "event_id": "m-1",
            "event_type": "manager.upserted",
            "schema_version": 1,
            "occurred_at": "2026-11-01T00:00:00+08:00",
            "payload": {"manager_id": "m", "branch_id": "b"},
        }
    ).encode()
    await Pipeline(applier, deadletter, max_backoff=0.05).handle(
        [Incoming("crm.managers", 0, 0, b"m", value)]
    )
    assert applier.attempts == 2 and rejected == []
    assert await counts(engine) == (1, 0, 0)


async def test_the_named_locks_hold_to_the_commit_when_they_come_first(
    pg_url: str, engines: Engines
) -> None:
    """A batch of facts only sends the named locks as its first statement, on the driver's
    connection: they must be taken inside the transaction (held to its commit), not in one
    of their own that ends with the statement."""
    engine = engines(pg_url, writer=True)
    ledger = Ledger.for_dialect("postgresql")
    probe = text("SELECT pg_try_advisory_xact_lock(hashtextextended('c:locked', 0))")
    async with engine.begin() as conn:
        await ledger.lock_keys(conn, ["c:locked"])
        async with engine.begin() as other:
            assert (await other.execute(probe)).scalar_one() is False
    async with engine.begin() as other:
        assert (await other.execute(probe)).scalar_one() is True
