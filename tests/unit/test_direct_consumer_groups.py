"""The direct consumer with several pipelines (``apply_concurrency``): lanes, against
in-memory partitions.

- a partition keeps one lane while it stays assigned; new partitions spread over the lanes;
- no barrier: a lane that is slow (or waits for the database) does not stop another lane's
  next batches from being applied and committed, and holds back only its own partitions;
- offsets are committed per partition in order, and only after the batch is applied;
- a fetch with reference records is applied as one group, after every lane has drained;
- a stop and a rebalance wait for every lane; at a stop what is queued is not applied and
  not committed;
- a lane that fails stops the consumer, the error raised, not swallowed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ConsumerStoppedError
from aiokafka.structs import ConsumerRecord

from config import Settings
from streams.worker import DirectConsumer, _Rebalance

TPS = [TopicPartition("bank.transactions", p) for p in range(4)]
CLIENTS = TopicPartition(Settings().topics.clients, 0)


def _record(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])


class Consumer:
    """Partitions of ``per_partition`` records, ``fetch`` of each per ``getmany``; checks
    every commit: never backwards, never past an offset the pipelines have not applied."""

    def __init__(self, tps: list[TopicPartition], per_partition: int, fetch: int) -> None:
        self.records = {tp: [_record(tp, i) for i in range(per_partition)] for tp in tps}
        self.position = dict.fromkeys(tps, 0)
        self.fetch = fetch
        self.applied: set[tuple[str, int, int]] = set()  # filled by the pipelines
        self.commits: list[dict[TopicPartition, int]] = []
        self.committed: dict[TopicPartition, int] = {}
        self.fetches = 0
        self.stopped = False
        self.paused = False  # getmany returns nothing meanwhile

    def assignment(self) -> set[TopicPartition]:
        return set(self.records)

    async def getmany(
        self, *tps: Any, timeout_ms: int = 0, max_records: int = 1000, **_kw: Any
    ) -> dict[Any, Any]:
        if self.stopped:
            raise ConsumerStoppedError()
        out = {}
        for tp in [] if self.paused else (tps or self.records):
            n = min(self.fetch, max_records - sum(len(rs) for rs in out.values()))
            rs = self.records[tp][self.position[tp] : self.position[tp] + n]
            if rs:
                out[tp] = rs
                self.position[tp] += len(rs)
        if out:
            self.fetches += 1
            await asyncio.sleep(0)  # a turn of the loop, as a fetch takes
        else:
            await asyncio.sleep(0.005)
        return out

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            assert offset >= self.committed.get(tp, 0), f"{tp} committed backwards"
            missing = [o for o in range(offset) if (tp.topic, tp.partition, o) not in self.applied]
            assert not missing, f"{tp} committed to {offset} before {missing[:3]} applied"
        self.commits.append(dict(offsets))
        self.committed.update(offsets)

    async def stop(self) -> None:
        self.stopped = True


class Gated:
    """A pipeline whose batches wait at a gate (open unless closed); notes what it applied."""

    def __init__(self, consumer: Consumer, *, open: bool = True) -> None:
        self.consumer = consumer
        self.gate = asyncio.Event()
        if open:
            self.gate.set()
        self.entered = asyncio.Event()
        self.batches: list[list[tuple[str, int, int]]] = []
        self.in_flight = 0

    async def handle(self, messages: list[Any]) -> None:
        self.in_flight += 1
        self.entered.set()
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        batch = [(m.topic, m.partition, m.offset) for m in messages]
        self.batches.append(batch)
        self.consumer.applied.update(batch)

    @property
    def partitions(self) -> set[int]:
        return {p for b in self.batches for _t, p, _o in b}


def _direct(
    tmp_path: Path, consumer: Consumer, pipelines: list[Any], batch_size: int = 2
) -> DirectConsumer:
    settings = Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path, batch_size=batch_size)
    dc = DirectConsumer(settings, pipelines, topics=[])
    dc.consumer = consumer
    return dc


async def _until(check: Any, seconds: float = 2.0) -> None:
    for _ in range(int(seconds / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting")


async def test_a_partition_keeps_its_lane_and_new_ones_spread(tmp_path: Path) -> None:
    consumer = Consumer(TPS, 1, 1)
    dc = _direct(tmp_path, consumer, [Gated(consumer), Gated(consumer)])
    dc._lanes = [object(), object()]  # type: ignore[list-item]  # _split only counts them
    first = dc._split({tp: [_record(tp, 0)] for tp in TPS})
    assert [sorted(tp.partition for tp in sub) for sub in first] == [[0, 2], [1, 3]]
    # a later fetch of some of them: each to the same lane as before
    again = dc._split({TPS[3]: [_record(TPS[3], 1)], TPS[2]: [_record(TPS[2], 1)]})
    assert [list(sub) for sub in again] == [[TPS[2]], [TPS[3]]]
    # another topic's partitions spread on their own
    visits = [TopicPartition("crm.visits", p) for p in range(2)]
    third = dc._split({tp: [_record(tp, 0)] for tp in visits})
    assert [list(sub) for sub in third] == [[visits[0]], [visits[1]]]
    # a revoked partition leaves its lane (the lanes are idle then)
    dc._lanes = []
    await _Rebalance(dc).on_partitions_revoked({TPS[0], TPS[2]})
    assert set(dc._lane_of) == {TPS[1], TPS[3], *visits}


async def test_no_barrier_a_slow_lane_holds_back_only_its_own_partitions(tmp_path: Path) -> None:
    consumer = Consumer(TPS[:2], 12, 2)
    slow, fast = Gated(consumer, open=False), Gated(consumer)
    dc = _direct(tmp_path, consumer, [slow, fast])
    loop = asyncio.create_task(dc._consume(dc))
    await asyncio.wait_for(slow.entered.wait(), 2)
    # the fast lane goes on, batch after batch, each committed, while the slow one still
    # waits on its first (its partitions' records wait in the consumer meanwhile)
    await _until(lambda: consumer.committed.get(TPS[1]) == 12)
    assert len(fast.batches) == 6 and fast.partitions == {1}
    assert slow.batches == [] and TPS[0] not in consumer.committed
    assert [c[TPS[1]] for c in consumer.commits] == [2, 4, 6, 8, 10, 12]  # in order
    assert consumer.position[TPS[0]] == 4  # one batch applied, one waiting: no more read
    slow.gate.set()
    await _until(lambda: consumer.committed == {TPS[0]: 12, TPS[1]: 12})
    assert slow.partitions == {0} and fast.partitions == {1}
    for tp in TPS[:2]:
        assert [c[tp] for c in consumer.commits if tp in c] == [2, 4, 6, 8, 10, 12]
    await asyncio.wait_for(dc.on_stop(), 2)
    assert await asyncio.wait_for(loop, 2) is None


async def test_a_stop_waits_for_every_lane_and_drops_what_is_queued(tmp_path: Path) -> None:
    consumer = Consumer(TPS[:2], 4, 2)  # two fetches: one batch in flight, one queued
    first, second = Gated(consumer, open=False), Gated(consumer, open=False)
    dc = _direct(tmp_path, consumer, [first, second])
    loop = asyncio.create_task(dc._consume(dc))
    await asyncio.wait_for(asyncio.gather(first.entered.wait(), second.entered.wait()), 2)
    await _until(
        lambda: bool(dc._lanes) and all(lane.count for lane in dc._lanes)
    )  # more is queued
    stopping = asyncio.create_task(dc.on_stop())
    second.gate.set()  # one lane's batch in flight done: committed; the stop still waits
    await _until(lambda: TPS[1] in consumer.committed)
    await asyncio.sleep(0.05)
    assert not stopping.done(), "the stop must wait for every lane"
    first.gate.set()
    await asyncio.wait_for(stopping, 2)
    assert await asyncio.wait_for(loop, 2) is None
    # only the batches in flight were applied and committed; the queued ones are read again
    assert len(first.batches) == len(second.batches) == 1
    assert consumer.committed == dc.committed == {TPS[0]: 2, TPS[1]: 2}
    assert consumer.position == {TPS[0]: 4, TPS[1]: 4}


async def test_a_rebalance_waits_for_every_lane_and_what_it_was_given(tmp_path: Path) -> None:
    consumer = Consumer(TPS[:2], 10, 2)
    first, second = Gated(consumer, open=False), Gated(consumer, open=False)
    dc = _direct(tmp_path, consumer, [first, second])
    loop = asyncio.create_task(dc._consume(dc))
    # a batch in flight and one waiting in each lane
    await _until(lambda: bool(dc._lanes) and all(lane.count for lane in dc._lanes))

    async def revoke() -> Any:
        await _Rebalance(dc).on_partitions_revoked(set(TPS[:2]))
        # as it returns, before the fetch loop dispatches anything again
        batches = (len(first.batches), len(second.batches))
        return batches, dict(consumer.committed), dict(dc.committed), dict(dc._lane_of)

    revoking = asyncio.create_task(revoke())
    first.gate.set()
    await asyncio.sleep(0.05)
    assert not revoking.done(), "the revocation must wait for every lane"
    second.gate.set()
    batches, committed, known, lanes = await asyncio.wait_for(revoking, 2)
    # what both lanes were given (in flight and waiting) was applied and committed first,
    # and nothing more was handed to the first lane while the revocation waited for the
    # second (its gate was open: it would have applied it)
    assert batches == (2, 2)
    assert committed == {TPS[0]: 4, TPS[1]: 4}
    assert known == {} and lanes == {}
    await asyncio.wait_for(dc.on_stop(), 2)
    await asyncio.wait_for(loop, 2)


async def test_reference_records_wait_for_every_lane_and_go_as_one_group(tmp_path: Path) -> None:
    """Clients' and managers' records are not split from the facts fetched with them: one
    group applies them first (split apart, a fact beside its client's record would be held),
    after every lane has applied and committed what it was given."""
    consumer = Consumer(TPS[:2], 2, 2)
    first, second = Gated(consumer), Gated(consumer, open=False)
    dc = _direct(tmp_path, consumer, [first, second])
    loop = asyncio.create_task(dc._consume(dc))
    await asyncio.wait_for(second.entered.wait(), 2)
    await _until(lambda: len(first.batches) == 1)
    # clients' records and more facts arrive while the second lane is still busy
    for tp in (*TPS[:2], CLIENTS):
        consumer.records.setdefault(tp, [])
        consumer.position.setdefault(tp, 0)
        consumer.records[tp] += [_record(tp, len(consumer.records[tp]) + i) for i in range(2)]
    await asyncio.sleep(0.05)
    assert len(first.batches) == 1, "the reference fetch must wait for every lane"
    second.gate.set()
    await _until(lambda: consumer.committed == {CLIENTS: 2, TPS[0]: 4, TPS[1]: 4})
    await asyncio.wait_for(dc.on_stop(), 2)
    assert await asyncio.wait_for(loop, 2) is None
    # the clients' records were fetched alone first (reference data first), one group
    assert first.batches[1] == [(CLIENTS.topic, 0, 0), (CLIENTS.topic, 0, 1)]
    # and the facts after them, split by lane again
    assert len(first.batches) == 3 and len(second.batches) == 2
    assert first.partitions == {0, CLIENTS.partition} and second.partitions == {1}
    # a fetch with facts and reference records together is one group in the first pipeline
    consumer = Consumer([CLIENTS, *TPS[:2]], 2, 2)
    first, second = Gated(consumer), Gated(consumer)
    dc = _direct(tmp_path, consumer, [first, second], batch_size=10)
    consumer.getmany = _all_at_once(consumer)  # type: ignore[method-assign]
    loop = asyncio.create_task(dc._consume(dc))
    await _until(lambda: len(consumer.commits) == 1)
    await asyncio.wait_for(dc.on_stop(), 2)
    assert await asyncio.wait_for(loop, 2) is None
    assert second.batches == [] and len(first.batches) == 1 and len(first.batches[0]) == 6


def _all_at_once(consumer: Consumer) -> Any:
    """``getmany`` that returns nothing for the reference-first fetch nor a lane's own one,
    then every partition at once."""
    plain = consumer.getmany

    async def getmany(*tps: Any, **kw: Any) -> dict[Any, Any]:
        if CLIENTS not in tps or len(tps) == 1:
            await asyncio.sleep(0.005)
            return {}
        return await plain(**kw)

    return getmany


async def test_a_lane_that_fails_stops_the_consumer_with_its_error(tmp_path: Path) -> None:
    consumer = Consumer(TPS[:2], 8, 2)

    class Broken(Gated):
        async def handle(self, messages: list[Any]) -> None:
            if self.batches:
                raise RuntimeError("broken lane")
            await super().handle(messages)

    broken, other = Broken(consumer), Gated(consumer)
    dc = _direct(tmp_path, consumer, [broken, other])
    loop = asyncio.create_task(dc._consume(dc))
    with pytest.raises(RuntimeError, match="broken lane"):
        await asyncio.wait_for(loop, 2)
    # the broken lane's partition committed only what it applied; every lane task is gone
    assert consumer.committed.get(TPS[0]) == 2
    assert dc._lanes == []


async def test_a_busy_lane_takes_what_waits_as_one_batch_of_about_batch_size(
    tmp_path: Path,
) -> None:
    consumer = Consumer(TPS[:1], 7, 1)  # a record per fetch
    lane = Gated(consumer, open=False)
    dc = _direct(tmp_path, consumer, [lane, Gated(consumer)])  # batch_size 2
    loop = asyncio.create_task(dc._consume(dc))
    await asyncio.wait_for(lane.entered.wait(), 2)
    # while the first batch is applied, two fetches are merged (up to batch_size), then
    # nothing more is fetched for the lane
    await _until(lambda: consumer.fetches == 3)
    await asyncio.sleep(0.05)
    assert consumer.fetches == 3 and dc._lanes[0].count == 2
    lane.gate.set()
    await _until(lambda: consumer.committed.get(TPS[0]) == 7)
    await asyncio.wait_for(dc.on_stop(), 2)
    assert await asyncio.wait_for(loop, 2) is None
    offsets = [[o for _t, _p, o in batch] for batch in lane.batches]
    assert offsets[:2] == [[0], [1, 2]]
    assert [o for batch in offsets for o in batch] == list(range(7))
    assert all(len(batch) <= 2 for batch in offsets)
