"""The embedded broker in tests: settings of their own (topic prefix, consumer group),
producing to and reading from topics, waiting for the worker's counts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from testkit.checks import counts
from testkit.process import WorkerProcess


def isolated_settings(bootstrap: str, db_url: str, data_dir: Path, **extra: Any) -> Settings:
    """Settings with a topic prefix and consumer group of their own."""
    tag = uuid.uuid4().hex[:10]
    return Settings(
        kafka_bootstrap=bootstrap,
        database_url=db_url,
        data_dir=data_dir,
        topic_prefix=f"t{tag}.",
        group_id=f"crm-test-{tag}",
        kafka_session_timeout=2.0,
        kafka_heartbeat_interval=0.5,
        **extra,
    )


async def produce(
    settings: Settings, messages: Iterable[tuple[str, bytes | None, bytes | None]]
) -> int:
    """Send (topic, key, value) in order with a real client; returns how many."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    n = 0
    try:
        futures = []
        for topic, key, value in messages:
            futures.append(await producer.send(settings.topic_prefix + topic, key=key, value=value))
            n += 1
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()
    return n


async def wait_for_counts(
    engine: AsyncEngine,
    applied: int,
    rejected: int,
    timeout: float,
    worker: WorkerProcess | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    seen: tuple[int, int, int] = (0, 0, 0)
    while time.monotonic() < deadline:
        seen = await counts(engine)
        if seen[0] >= applied and seen[1] >= rejected and seen[2] == 0:
            return
        await asyncio.sleep(0.5)
    tail = worker.log_tail() if worker else ""
    raise AssertionError(
        f"timed out: (applied, rejected, held) = {seen}, want ({applied}, {rejected}, 0)\n{tail}"
    )


async def read_topic(settings: Settings, topic: str, want: int, timeout: float = 30) -> list[Any]:
    consumer = AIOKafkaConsumer(
        settings.topic_prefix + topic,
        bootstrap_servers=settings.bootstrap,
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out
