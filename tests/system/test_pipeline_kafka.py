"""End to end on the real broker: bytes produced by a third-party client, the worker process,
the database (SQLite and PostgreSQL), compared with an independent computation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from config import Settings
from crmtracker.broker import EmbeddedBroker, ensure_topics
from models.db import make_engine
from testkit.broker import isolated_settings, produce, read_topic, wait_for_counts
from testkit.checks import assert_tallies, counts
from testkit.db import Engines
from testkit.factories import generate_log, load_vectors, valid_events
from testkit.paths import VECTORS
from testkit.process import WorkerProcess

pytestmark = pytest.mark.kafka


async def _run_log(
    broker: EmbeddedBroker,
    db_url: str,
    tmp_path: Path,
    log,
    *,
    partitions: int = 4,
    timeout: float = 240,
    consumer: str = "direct",
) -> None:
    settings = isolated_settings(
        broker.bootstrap, db_url, tmp_path, topic_partitions=partitions, consumer=consumer
    )
    await ensure_topics(settings)
    # events published before the first worker starts must be applied (earliest offset)
    await produce(settings, ((m.topic, m.key, m.value) for m in log.messages))
    valid, bad = valid_events(log.messages)
    assert bad == log.bad
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    engine = make_engine(db_url)
    worker.start()
    try:
        await wait_for_counts(engine, len(valid), log.bad, timeout, worker)
        await assert_tallies(engine, log.tallies, log.branches)
        await _assert_group_members(settings)
        dead = await read_topic(settings, "crm.deadletter", log.bad)
        assert len(dead) >= log.bad
        record = json.loads(dead[0].value)
        assert {"topic", "partition", "offset", "reason", "time", "value_base64"} <= set(record)
        await asyncio.sleep(1)  # nothing more arrives: no double counting after catch-up
        assert await counts(engine) == (len(valid), log.bad, 0)
    finally:
        assert worker.stop() == 0, worker.log_tail()
        await engine.dispose()


async def _assert_group_members(settings: Settings) -> None:
    """Who reads, seen from the broker: with ``direct`` the batch consumer is the group's only
    member and faust's own consumer joins nothing (no ``<group>.faust`` member, no leader
    topic of faust's assignor); with ``agents`` faust's consumer is the member."""
    group = settings.group_id
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
        members = {}
        for g in (group, f"{group}.faust"):
            (answer,) = await admin.describe_consumer_groups([g])
            (described,) = answer.groups
            members[g] = [
                m[0] for m in described[5]
            ]  # (error, group, state, type, protocol, members)
    finally:
        await admin.close()
    leader_topics = {t for t in topics if t.startswith(group) and "__assignor-__leader" in t}
    (member,) = members[group]
    assert members[f"{group}.faust"] == []
    if settings.consumer == "direct":
        assert member.startswith("crm-tracker-worker-"), member
        assert leader_topics == set()
    else:
        assert member.startswith("faust-"), member
        assert leader_topics == {f"{group}-__assignor-__leader"}


async def test_vectors_through_the_broker(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> None:
    await _run_log(broker, db_url, tmp_path, load_vectors(VECTORS))


async def test_the_faust_agent_path_is_exact_too(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> None:
    """``CRM_CONSUMER=agents`` (a faust agent per topic) against the same oracle."""
    log = generate_log(seed=13, events=5_000)
    await _run_log(broker, db_url, tmp_path, log, consumer="agents")


async def test_generated_log_of_20000_events(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> None:
    log = generate_log(seed=11, events=20_000)
    await _run_log(broker, db_url, tmp_path, log)


async def test_kill_9_twice_mid_stream_loses_and_doubles_nothing(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path, engines: Engines
) -> None:
    log = generate_log(seed=23, events=20_000)
    settings = isolated_settings(broker.bootstrap, db_url, tmp_path, batch_size=200)
    await ensure_topics(settings)
    await produce(settings, ((m.topic, m.key, m.value) for m in log.messages))
    valid, _bad = valid_events(log.messages)
    engine = engines(db_url)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        for fraction in (0.15, 0.55):
            worker.start()
            for _ in range(600):
                applied, _r, _h = await counts(engine)
                if applied >= fraction * len(valid):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"worker made no progress\n{worker.log_tail()}")
            worker.kill9()
        worker.start()
        await wait_for_counts(engine, len(valid), log.bad, 240, worker)
        await assert_tallies(engine, log.tallies, log.branches)
    finally:
        worker.stop()
