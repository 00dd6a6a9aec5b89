"""Consumer lag, observed from outside the group: what ``GET /v1/ops/lag`` and
``crm-tracker lag`` show, and the ``crm_consumer_lag*`` gauges.

Each sample reads, independently of the workers (so it works when every worker is dead):

- the group's **committed offsets** from the broker (``OffsetFetch`` through the admin client,
  with the partitions listed explicitly: the embedded broker breaks the connection without);
- each partition's **end offset** as the high watermark of a fetch, not ``ListOffsets``
  (the embedded broker under-reports partition ends there; a fetch's high watermark is right
  on every broker). The fetch starts at the committed offset, so it also returns
- the **oldest unprocessed message**: its Kafka timestamp gives the time lag (how long the
  oldest event not yet applied has been waiting); 0 when caught up.

Liveness comes from the ``worker_positions`` rows the workers write every 2 s: a partition is
"alive" when a worker of the group reported it within the window. The observations are kept
in memory of the process that samples (the API), one deque per partition trimmed to the
window: a restarted API judges from fresh observations (first status after two samples).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import Counter, Gauge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from config import KafkaConfig, LagConfig
from models.lag import LagStatus, Observation, evaluate, rate, worst
from models.tables import WorkerPositionRow

log = logging.getLogger("crmtracker.lag")

# Exported by the process that samples (the API); labels as in deploy/prometheus/alerts.yml.
CONSUMER_LAG = Gauge(
    "crm_consumer_lag",
    "End offset minus the group's committed offset",
    ["group", "topic", "partition"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "crm_consumer_lag_seconds",
    "Age of the oldest unprocessed message (its Kafka timestamp), 0 when caught up",
    ["group", "topic", "partition"],
)
CONSUMER_STATUS = Gauge(
    "crm_consumer_status",
    "Lag status as a number: 0 OK, 1 WARN, 2 REWIND, 3 STALL, 4 STOP",
    ["group", "topic", "partition"],
)
LAG_SAMPLED_AT = Gauge(
    "crm_lag_last_sample_timestamp_seconds", "When the lag was last read from the broker"
)
LAG_SAMPLE_FAILURES = Counter("crm_lag_sample_failures", "Lag samples that could not be read")
GROUP_STATUS = Gauge(
    "crm_consumer_group_status", "Worst partition status of the group (as above)", ["group"]
)

Key = tuple[str, str, int]  # group, topic, partition


@dataclass(frozen=True, slots=True)
class Offsets:
    """What one read found for one partition."""

    committed: int | None
    """The group's committed offset; None when it never committed."""
    end: int
    """High watermark from a fetch."""
    start: int
    """Where the group would start without a commit (the log start, ``earliest``)."""
    oldest_timestamp: float | None
    """Kafka timestamp (epoch s) of the first unprocessed message; None when caught up."""


async def read_offsets(
    kafka: KafkaConfig, group: str, topics: list[str], *, timeout: float = 5.0
) -> dict[TopicPartition, Offsets]:
    """Committed offset, end offset and the oldest unprocessed message, per partition."""
    client = kafka.client_args()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=None,  # a reader, not a member: it never joins or commits for the group
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # one record per partition is all a sample needs; brokers still return a whole first
        # batch when it is larger than these limits (KIP-74)
        max_partition_fetch_bytes=1024,
        fetch_max_bytes=1024 * 1024,
        fetch_max_wait_ms=100,
        **client,
    )
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **client)
    try:  # a cancelled sample (API shutdown) must still close both clients
        await consumer.start()
        await admin.start()
        await consumer.topics()  # metadata for every topic
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        if not tps:
            return {}
        offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
        committed: dict[TopicPartition, int | None] = {}
        for tp in tps:
            meta = offsets.get(tp)
            committed[tp] = meta.offset if meta is not None and meta.offset >= 0 else None
        consumer.assign(tps)
        start: dict[TopicPartition, int] = {}
        for tp in tps:
            c = committed[tp]
            if c is None:
                await consumer.seek_to_beginning(tp)
                start[tp] = await consumer.position(tp)
            else:
                consumer.seek(tp, c)
                start[tp] = c
        stamps: dict[TopicPartition, float] = {}

        def waiting(tp: TopicPartition) -> bool:
            end = consumer.highwater(tp)
            return end is None or (end > start[tp] and tp not in stamps)

        deadline = time.monotonic() + timeout
        while any(waiting(tp) for tp in tps) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=len(tps) * 50)
            for tp, records in batch.items():
                if records and tp not in stamps:
                    stamps[tp] = records[0].timestamp / 1000.0
                    consumer.pause(tp)  # one message is all we need from it
        out = {}
        for tp in tps:
            end = consumer.highwater(tp)
            if end is None:
                continue  # no fetch answer in time: no observation this round
            out[tp] = Offsets(committed[tp], end, min(start[tp], end), stamps.get(tp))
        return out
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
        with contextlib.suppress(Exception):
            await consumer.stop()


async def worker_reports(engine: AsyncEngine, group: str, since: datetime) -> set[Key] | None:
    """Partitions a worker of the group reported since ``since``; None if unknown."""
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(WorkerPositionRow.topic, WorkerPositionRow.partition).where(
                        WorkerPositionRow.group_id == group, WorkerPositionRow.updated_at >= since
                    )
                )
            ).all()
    except Exception as exc:
        log.debug("worker_positions unavailable: %s", exc)
        return None
    return {(group, t, p) for t, p in rows}


def _time_lag(latest: Observation, oldest_ts: float | None) -> float | None:
    """Seconds the oldest unprocessed event has waited; 0 caught up, None unknown."""
    if latest.lag == 0:
        return 0.0
    if oldest_ts is None:
        return None  # the fetch did not bring the record back in time
    return round(max(0.0, latest.at - oldest_ts), 3)


class LagMonitor:
    """Samples the group's offsets and keeps a sliding window of observations per partition."""

    def __init__(self, config: LagConfig, engine: AsyncEngine | None = None) -> None:
        self.kafka = config.kafka
        self.engine = engine
        self.window = config.lag_window_seconds
        self.groups = [config.kafka.group_id]
        self.topics = config.topics.inputs
        self.history: dict[Key, deque[Observation]] = {}
        self.oldest: dict[Key, float | None] = {}
        self.sampled_at: float | None = None
        """When observations were last added (from the broker, or the workers' reports)."""
        self.source: str | None = None
        self.last_error: str | None = None

    async def sample(self) -> None:
        """One pass: read the broker (and liveness), append an observation per partition.

        When the broker cannot be read, the workers' own reports (``worker_positions``) stand
        in, and ``error`` says why; with neither, it raises.
        """
        now = time.time()
        try:
            for group in self.groups:
                offsets = await read_offsets(self.kafka, group, self.topics)
                reported = None
                if self.engine is not None:
                    since = datetime.fromtimestamp(now - self.window, UTC)
                    reported = await worker_reports(self.engine, group, since)
                for tp, o in offsets.items():
                    key = (group, tp.topic, tp.partition)
                    alive = None if reported is None else key in reported
                    obs = Observation(now, o.committed, o.end, alive, start=o.start)
                    self._add(key, obs, o.oldest_timestamp)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            LAG_SAMPLE_FAILURES.inc()
            log.warning("lag sample failed: %s", self.last_error)
            if not await self._from_worker_reports(now):
                raise
            self.source = "worker reports"
        else:
            self.last_error = None
            self.source = "broker"
            LAG_SAMPLED_AT.set(now)
        self.sampled_at = now
        self._export(now)

    async def _from_worker_reports(self, now: float) -> bool:
        """Observations from what the workers last reported; False when there is none."""
        if self.engine is None:
            return False
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(
                    select(WorkerPositionRow).where(
                        WorkerPositionRow.group_id.in_(self.groups),
                        WorkerPositionRow.topic.in_(self.topics),
                    )
                )
                rows = result.all()
        except Exception as exc:
            log.debug("worker_positions unavailable: %s", exc)
            return False
        for r in rows:
            alive = r.updated_at.timestamp() >= now - self.window
            end = r.end_offset if r.end_offset is not None else (r.committed_offset or 0)
            obs = Observation(now, r.committed_offset, end, alive)
            self._add((r.group_id, r.topic, r.partition), obs, None)
        return bool(rows)

    def _add(self, key: Key, obs: Observation, oldest_ts: float | None) -> None:
        hist = self.history.setdefault(key, deque())
        hist.append(obs)
        # keep three windows: enough to tell when the offset last moved (models/lag.py judges
        # STOP after two windows when liveness is unknown)
        while len(hist) > 2 and hist[1].at < obs.at - 3 * self.window:
            hist.popleft()
        self.oldest[key] = oldest_ts if obs.lag > 0 else None

    def partitions(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        items = []
        for key in sorted(self.history):
            hist = self.history[key]
            latest = hist[-1]
            status = evaluate(list(hist), now, self.window)
            ts = self.oldest.get(key)
            r = rate(list(hist), now, self.window)
            items.append(
                {
                    "group": key[0],
                    "topic": key[1],
                    "partition": key[2],
                    "committed_offset": latest.committed,
                    "end_offset": latest.end,
                    "lag": latest.lag,
                    "time_lag_seconds": _time_lag(latest, ts),
                    "rate_per_second": round(r, 3) if r is not None else None,
                    "consumer_alive": latest.alive,
                    "status": status.value,
                    "observed_at": datetime.fromtimestamp(latest.at, UTC).isoformat(),
                    "observations": len([o for o in hist if o.at >= now - self.window]),
                }
            )
        return items

    def report(self, now: float | None = None) -> dict[str, Any]:
        """The ``GET /v1/ops/lag`` answer (items of every partition, group statuses)."""
        items = self.partitions(now)
        groups = []
        for group in self.groups:
            mine = [i for i in items if i["group"] == group]
            groups.append(
                {
                    "group": group,
                    "status": worst(LagStatus(i["status"]) for i in mine).value,
                    "lag": sum(i["lag"] for i in mine),
                    "max_time_lag_seconds": max(
                        (i["time_lag_seconds"] or 0.0 for i in mine), default=0.0
                    ),
                    "partitions": len(mine),
                }
            )
        return {
            "status": worst(LagStatus(g["status"]) for g in groups).value,
            "groups": groups,
            "window_seconds": self.window,
            "sampled_at": (
                datetime.fromtimestamp(self.sampled_at, UTC).isoformat()
                if self.sampled_at
                else None
            ),
            "source": self.source,
            "error": self.last_error,
            "items": items,
            "next_cursor": None,
            "total": len(items),
        }

    def _export(self, now: float) -> None:
        for item in self.partitions(now):
            labels = (item["group"], item["topic"], str(item["partition"]))
            CONSUMER_LAG.labels(*labels).set(item["lag"])
            if item["time_lag_seconds"] is not None:
                CONSUMER_LAG_SECONDS.labels(*labels).set(item["time_lag_seconds"])
            CONSUMER_STATUS.labels(*labels).set(LagStatus(item["status"]).severity)
        for g in self.report(now)["groups"]:
            GROUP_STATUS.labels(g["group"]).set(LagStatus(g["status"]).severity)

    async def run(self, interval: float, stop: asyncio.Event | None = None) -> None:
        """Sample every ``interval`` seconds until cancelled (the API lifespan task)."""
        task = asyncio.current_task()
        while stop is None or not stop.is_set():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sample(), timeout=max(10.0, interval * 2))
            if task is not None and task.cancelling():
                # a client library turned our cancellation into its own error: stop anyway
                raise asyncio.CancelledError
            await asyncio.sleep(interval)


__all__ = ["LagMonitor", "read_offsets"]
