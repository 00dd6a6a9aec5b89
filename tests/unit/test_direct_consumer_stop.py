"""The direct consumer's stop, against an in-memory partition (the consumer's fetch and commit
replaced, so the order of events is deterministic):

- a stop while a batch is applying waits for that batch: it is applied and its offsets
  committed before the consumer stops;
- a batch fetched once the stop has begun is neither applied nor committed;
- the loop then ends at once, cleanly: faust's service stops the aiokafka consumer
  (``on_stop``) before it cancels the fetch loop, so a fetch in flight ends in
  ``ConsumerStoppedError``, which is a clean stop (exit 0), not a crash;
- a consumer started again from the committed offsets reads what the stopped one left: every
  message applied exactly once over the two runs;
- the same error while running (no stop under way) still stops the worker loudly.

The race itself needs a rebalance at the moment of SIGTERM (it failed the three-worker kill
test once in CI)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ConsumerStoppedError
from aiokafka.structs import ConsumerRecord

from config import Settings
from streams.worker import DirectConsumer

TP = TopicPartition("bank.transactions", 0)
BATCH = 5


class Partition:
    """One partition's messages and its consumer group's committed offset."""

    def __init__(self, n: int) -> None:
        self.records = [
            ConsumerRecord(TP.topic, 0, i, 0, 0, b"k", b"v%d" % i, None, 1, 2, []) for i in range(n)
        ]
        self.committed: int | None = None


class Consumer:
    """The aiokafka consumer's part the loop uses, over a :class:`Partition`."""

    def __init__(self, partition: Partition) -> None:
        self.partition = partition
        self.position = partition.committed or 0
        self.stopped = False
        self.fetches = 0

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def getmany(self, *tps: Any, timeout_ms: int = 0, **_kw: Any) -> dict[Any, Any]:
        if self.stopped:
            raise ConsumerStoppedError()
        await asyncio.sleep(0)  # a fetch yields to the loop (the lane starts its batch)
        self.fetches += 1
        records = self.partition.records[self.position : self.position + BATCH]
        if not records:
            await asyncio.sleep(0.01)
            return {}
        self.position += len(records)
        return {TP: records}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert not self.stopped, "commit on a stopped consumer"
        self.partition.committed = offsets[TP]

    async def stop(self) -> None:
        self.stopped = True


class Pipeline:
    """Records the offsets it is handed; the first batch can be held at a gate."""

    def __init__(self, hold_first: bool = False) -> None:
        self.applied: list[int] = []
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        if not hold_first:
            self.gate.set()

    async def handle(self, messages: list[Any]) -> None:
        self.entered.set()
        await self.gate.wait()
        self.applied.extend(m.offset for m in messages)


def _consumer(tmp_path: Path, partition: Partition, pipeline: Any) -> DirectConsumer:
    settings = Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path)
    dc = DirectConsumer(settings, pipeline=pipeline, topics=[])
    dc.consumer = Consumer(partition)
    return dc


async def test_a_stop_commits_the_batch_in_flight_only_and_a_restart_loses_nothing(
    tmp_path: Path,
) -> None:
    partition = Partition(12)
    first = Pipeline(hold_first=True)
    dc = _consumer(tmp_path, partition, first)
    loop = asyncio.create_task(dc._consume(dc))
    await asyncio.wait_for(first.entered.wait(), 2)  # offsets 0-4 are being applied
    stopping = asyncio.create_task(dc.on_stop())
    await asyncio.sleep(0.05)
    assert not stopping.done(), "the stop must wait for the batch in flight"
    assert partition.committed is None
    first.gate.set()
    # then both end promptly: no further fetch waits for its timeout
    await asyncio.wait_for(stopping, 2)
    assert await asyncio.wait_for(loop, 2) is None
    assert first.applied == [0, 1, 2, 3, 4]
    assert partition.committed == 5  # the applied batch, and nothing after it
    # offsets 5-11 were fetched while 0-4 applied (the lane's next batch waiting), not applied
    assert dc.consumer.fetches >= 3
    assert dc.committed == {TP: 5}

    # a worker started again reads from the committed offset: 5-11, none twice, none lost
    second = Pipeline()
    again = _consumer(tmp_path, partition, second)
    loop = asyncio.create_task(again._consume(again))
    for _ in range(200):
        if partition.committed == 12:
            break
        await asyncio.sleep(0.01)
    await asyncio.wait_for(again.on_stop(), 2)
    await asyncio.wait_for(loop, 2)
    assert second.applied == list(range(5, 12))
    assert sorted(first.applied + second.applied) == list(range(12))
    assert partition.committed == 12


async def test_a_consumer_stopped_while_running_is_still_an_error(tmp_path: Path) -> None:
    partition = Partition(3)
    pipeline = Pipeline()
    dc = _consumer(tmp_path, partition, pipeline)
    await dc.consumer.stop()  # stopped under the loop, no stop of the service under way
    with pytest.raises(ConsumerStoppedError):
        await asyncio.wait_for(dc._consume(dc), 2)
    assert pipeline.applied == [] and partition.committed is None
