"""The direct consumer with several pipelines (``apply_concurrency``): a batch split by
partition into groups applied at once, against in-memory partitions.

- the split keeps each partition whole, in one group, and the groups about equal;
- the groups of a batch run at the same time, each committing its own partitions' offsets
  after its own apply, and the next batch waits for all of them;
- a stop and a rebalance wait for every group in flight (their offsets committed first).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import ConsumerStoppedError
from aiokafka.structs import ConsumerRecord

from config import Settings
from streams.worker import DirectConsumer, _Rebalance, split_by_partition

TPS = [TopicPartition("bank.transactions", p) for p in range(4)]


def _record(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])


def test_the_split_keeps_partitions_whole_and_groups_about_equal() -> None:
    sizes = {TPS[0]: 50, TPS[1]: 30, TPS[2]: 20, TPS[3]: 5}
    records = {tp: [_record(tp, i) for i in range(n)] for tp, n in sizes.items()}
    groups = split_by_partition(records, 2)
    assert len(groups) == 2
    assert sorted(tp for g in groups for tp in g) == sorted(records)
    assert all(g[tp] is records[tp] for g in groups for tp in g)
    assert sorted(sum(len(rs) for rs in g.values()) for g in groups) == [50, 55]
    # never more groups than partitions, never an empty one
    assert split_by_partition({TPS[0]: records[TPS[0]]}, 4) == [{TPS[0]: records[TPS[0]]}]
    assert len(split_by_partition(records, 8)) == 4
    assert split_by_partition(records, 1) == [records]


class Consumer:
    """Two partitions with a batch each; records commits in order."""

    def __init__(self, tps: list[TopicPartition], per_partition: int) -> None:
        self.records = {tp: [_record(tp, i) for i in range(per_partition)] for tp in tps}
        self.fetched = False
        self.commits: list[dict[TopicPartition, int]] = []
        self.stopped = False

    def assignment(self) -> set[TopicPartition]:
        return set(self.records)

    async def getmany(self, *tps: Any, timeout_ms: int = 0, **_kw: Any) -> dict[Any, Any]:
        if self.stopped:
            raise ConsumerStoppedError()
        if tps or self.fetched:
            await asyncio.sleep(0.01)
            return {}
        self.fetched = True
        return dict(self.records)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))

    async def stop(self) -> None:
        self.stopped = True


class Gated:
    """A pipeline that holds its group at a gate until released."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.applied: list[tuple[int, int]] = []

    async def handle(self, messages: list[Any]) -> None:
        self.entered.set()
        await self.gate.wait()
        self.applied.extend((m.partition, m.offset) for m in messages)


def _direct(tmp_path: Path, consumer: Consumer, pipelines: list[Gated]) -> DirectConsumer:
    settings = Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path)
    dc = DirectConsumer(settings, pipelines, topics=[])  # type: ignore[arg-type]
    dc.consumer = consumer
    return dc


async def test_groups_apply_at_once_and_a_stop_waits_for_every_one(tmp_path: Path) -> None:
    consumer = Consumer(TPS[:2], 3)
    first, second = Gated(), Gated()
    dc = _direct(tmp_path, consumer, [first, second])
    loop = asyncio.create_task(dc._consume(dc))
    # both groups are in flight at the same time
    await asyncio.wait_for(asyncio.gather(first.entered.wait(), second.entered.wait()), 2)
    stopping = asyncio.create_task(dc.on_stop())
    second.gate.set()  # one group done: its offsets commit, the stop still waits
    for _ in range(100):
        if consumer.commits:
            break
        await asyncio.sleep(0.01)
    done = {TopicPartition(TPS[0].topic, p) for p, _o in second.applied}
    assert len(done) == 1 and consumer.commits == [dict.fromkeys(done, 3)]
    assert not stopping.done(), "the stop must wait for every group in flight"
    first.gate.set()
    await asyncio.wait_for(stopping, 2)
    assert await asyncio.wait_for(loop, 2) is None
    assert dc.committed == {TPS[0]: 3, TPS[1]: 3}
    assert sorted(first.applied + second.applied) == [(p, o) for p in (0, 1) for o in range(3)]


async def test_a_rebalance_waits_for_every_group_in_flight(tmp_path: Path) -> None:
    consumer = Consumer(TPS[:2], 2)
    first, second = Gated(), Gated()
    dc = _direct(tmp_path, consumer, [first, second])
    loop = asyncio.create_task(dc._consume(dc))
    await asyncio.wait_for(asyncio.gather(first.entered.wait(), second.entered.wait()), 2)
    revoking = asyncio.create_task(_Rebalance(dc).on_partitions_revoked(set(TPS[:2])))
    first.gate.set()
    await asyncio.sleep(0.05)
    assert not revoking.done(), "the revocation must wait for every group in flight"
    second.gate.set()
    await asyncio.wait_for(revoking, 2)
    # both groups committed before the revocation went on (and forgot the partitions)
    assert sorted(tp.partition for c in consumer.commits for tp in c) == [0, 1]
    assert dc.committed == {}
    await asyncio.wait_for(dc.on_stop(), 2)
    await asyncio.wait_for(loop, 2)


async def test_a_batch_with_reference_records_is_applied_as_one_group(tmp_path: Path) -> None:
    """Clients' and managers' records are not split from the facts fetched with them: one
    group applies them first (split apart, a fact beside its client's record would be held)."""
    clients = TopicPartition(Settings().topics.clients, 0)
    consumer = Consumer([clients, *TPS[:2]], 2)
    first, second = Gated(), Gated()
    first.gate.set()
    second.gate.set()
    dc = _direct(tmp_path, consumer, [first, second])
    loop = asyncio.create_task(dc._consume(dc))
    for _ in range(200):
        if consumer.commits:
            break
        await asyncio.sleep(0.01)
    await dc.on_stop()
    assert await asyncio.wait_for(loop, 2) is None
    assert second.applied == [], "nothing may go to a second group beside reference records"
    assert len(first.applied) == 6 and len(consumer.commits) == 1
    # and without reference records the same fetch is split
    consumer, first, second = Consumer(TPS[:2], 2), Gated(), Gated()
    first.gate.set()
    second.gate.set()
    dc = _direct(tmp_path, consumer, [first, second])
    loop = asyncio.create_task(dc._consume(dc))
    for _ in range(200):
        if len(consumer.commits) == 2:
            break
        await asyncio.sleep(0.01)
    await dc.on_stop()
    assert await asyncio.wait_for(loop, 2) is None
    assert len(first.applied) == 2 and len(second.applied) == 2
