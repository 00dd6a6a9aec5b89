"""Ops on the real broker: lag statuses as the group runs, stalls, stops and rewinds; the
worker's and the API's Prometheus metrics against the events sent."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from api.auth import mint_token
from config import Settings
from crmtracker import compose
from crmtracker.broker import EmbeddedBroker, ensure_topics, free_port
from crmtracker.compose import api_app as create_app
from streams.lag import LagMonitor
from testkit.api import asgi_client
from testkit.broker import isolated_settings, wait_for_counts
from testkit.db import Engines, fresh_database
from testkit.factories import generate_log, valid_events
from testkit.process import WorkerProcess

pytestmark = pytest.mark.kafka


@pytest.fixture
def pg_url(tmp_path: Path) -> Iterator[str]:
    with fresh_database("postgresql", tmp_path) as url:
        yield url


async def produce_tracking(
    settings: Settings, messages: list[tuple[str, bytes | None, bytes | None]]
) -> dict[tuple[str, int], int]:
    """Send; return the end offset (last offset + 1) of every partition written, as the
    broker acknowledged it: an oracle independent of the lag code."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    ends: dict[tuple[str, int], int] = {}
    try:
        futures = [
            await producer.send(settings.topic_prefix + t, key=k, value=v) for t, k, v in messages
        ]
        for f in futures:
            md = await f
            key = (md.topic, md.partition)
            ends[key] = max(ends.get(key, 0), md.offset + 1)
    finally:
        await producer.stop()
    return ends


def items_by_tp(report: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(i["topic"], i["partition"]): i for i in report["items"]}


async def until_status(
    monitor: LagMonitor, want: str, timeout: float, worker: WorkerProcess | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        await monitor.sample()
        report = monitor.report()
        if report["status"] == want:
            return report
        await asyncio.sleep(0.4)
    tail = worker.log_tail() if worker else ""
    statuses = Counter(i["status"] for i in report.get("items", []))
    raise AssertionError(f"status {report.get('status')} ({statuses}), want {want}\n{tail}")


async def test_lag_statuses_follow_the_group(
    broker: EmbeddedBroker, pg_url: str, tmp_path: Path, engines: Engines
) -> None:
    window = 4.0
    settings = isolated_settings(
        broker.bootstrap, pg_url, tmp_path, lag_window_seconds=window, topic_partitions=3
    )
    await ensure_topics(settings)
    log = generate_log(seed=5, events=1500, late_clients=0, transfers=0)
    msgs = [(m.topic, m.key, m.value) for m in log.messages]
    ends = await produce_tracking(settings, msgs)
    valid, bad = valid_events(log.messages)
    engine = engines(pg_url)
    monitor = LagMonitor(settings, engine)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    try:
        # no worker yet: nothing committed, nobody alive, the whole log is lag
        report = await until_status(monitor, "STOP", 10)
        by_tp = items_by_tp(report)
        assert len(by_tp) == len(settings.topics.inputs) * 3
        for (topic, part), end in ends.items():
            assert by_tp[(topic, part)]["end_offset"] == end
            assert by_tp[(topic, part)]["committed_offset"] is None
            assert by_tp[(topic, part)]["lag"] == end
            assert by_tp[(topic, part)]["time_lag_seconds"] > 0
        assert report["groups"][0]["lag"] == len(msgs)

        # the worker catches up: lag 0 everywhere, OK
        worker.start()
        await wait_for_counts(engine, len(valid), bad, 120, worker)
        await until_status(monitor, "OK", 30, worker)
        # the last commit may trail the apply by a second, the first report by two
        await _until_caught_up(monitor, 20)
        by_tp = items_by_tp(monitor.report())
        for tp, end in ends.items():
            assert by_tp[tp]["committed_offset"] == by_tp[tp]["end_offset"] == end
            assert by_tp[tp]["consumer_alive"] is True

        # the database blocks the apply step (table lock): the worker is alive, reports its
        # positions, but cannot move its offsets while lag grows: STALL
        lock = await asyncpg.connect(pg_url.replace("postgresql+asyncpg", "postgresql"))
        tx = lock.transaction()
        await tx.start()
        await lock.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        more = generate_log(seed=6, events=300, late_clients=0, transfers=0)
        ends2 = await produce_tracking(settings, [(m.topic, m.key, m.value) for m in more.messages])
        report = await until_status(monitor, "STALL", 20, worker)
        stalled = [i for i in report["items"] if i["status"] == "STALL"]
        assert stalled and all(i["lag"] > 0 and i["consumer_alive"] for i in stalled)
        for i in stalled:
            assert i["end_offset"] == ends2[(i["topic"], i["partition"])]

        # the lock goes: the worker catches up and the status returns to OK
        await tx.rollback()
        await lock.close()
        await until_status(monitor, "OK", 40, worker)

        # the group goes away while events keep coming: STOP once the window passes
        assert worker.stop() == 0, worker.log_tail()
        await produce_tracking(settings, [(m.topic, m.key, m.value) for m in log.messages[:50]])
        report = await until_status(monitor, "STOP", 20)
        assert any(i["lag"] > 0 and i["consumer_alive"] is False for i in report["items"])

    finally:
        worker.stop()


async def _until_caught_up(monitor: LagMonitor, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await monitor.sample()
        if all(i["lag"] == 0 and i["consumer_alive"] for i in monitor.report()["items"]):
            return
        await asyncio.sleep(0.4)
    raise AssertionError(f"still lagging: {monitor.report()['items']}")


async def test_rewound_offset_is_rewind(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = isolated_settings(
        broker.bootstrap, "sqlite:///unused", tmp_path, lag_window_seconds=30, topic_partitions=1
    )
    await ensure_topics(settings)
    topic = settings.topics.visits
    await produce_tracking(settings, [("crm.visits", b"k", b"{}")] * 20)
    tp = TopicPartition(topic, 0)
    # any consumer of the group: commit 15, then go back to 3 (an offset reset)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap,
        group_id=settings.group_id,
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    monitor = LagMonitor(settings)  # no database: liveness unknown
    try:
        deadline = time.monotonic() + 15
        while tp not in consumer.assignment() and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200)
        await consumer.commit({tp: 15})
        await monitor.sample()
        await monitor.sample()
        item = items_by_tp(monitor.report())[(topic, 0)]
        assert (item["committed_offset"], item["end_offset"], item["lag"]) == (15, 20, 5)
        assert item["consumer_alive"] is None
        await consumer.commit({tp: 3})
        await monitor.sample()
        report = monitor.report()
        assert items_by_tp(report)[(topic, 0)]["status"] == "REWIND"
        assert items_by_tp(report)[(topic, 0)]["lag"] == 17
        assert report["status"] == "REWIND"
    finally:
        await consumer.stop()


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return parse(r.read().decode())


def parse(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """sample name → labels → value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
async def settings_api(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path
) -> AsyncIterator[Settings]:
    settings = isolated_settings(
        broker.bootstrap,
        db_url,
        tmp_path,
        metrics_port=free_port(),
        auth_secret="ops-test-secret-" + "y" * 40,
        lag_sample_seconds=0,
    )
    await ensure_topics(settings)
    yield settings


async def test_metrics_count_what_was_sent(
    settings_api: Settings, tmp_path: Path, engines: Engines
) -> None:
    settings = settings_api
    log = generate_log(seed=9, events=3000)
    await produce_tracking(settings, [(m.topic, m.key, m.value) for m in log.messages])
    valid, bad = valid_events(log.messages)
    by_type = Counter(e["event_type"] for e in valid)
    engine = engines(settings.db_url)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    try:
        await wait_for_counts(engine, len(valid), bad, 120, worker)
        # the worker's own endpoint: counters of this process
        m = scrape(f"http://127.0.0.1:{settings.metrics_port}/metrics")
        applied = {dict(k)["event_type"]: v for k, v in m["crm_events_applied_total"].items()}
        assert applied == dict(by_type)
        assert sum(m["crm_events_rejected_total"].values()) == bad
        assert m["crm_batch_apply_seconds_count"][()] >= 1
        facts = sum(n for t, n in by_type.items() if not t.endswith(".upserted"))
        assert m["crm_end_to_end_seconds_count"][()] == facts  # reference data has no latency
        assert m["crm_worker_rebalances_total"][()] >= 1
        assert m["crm_events_held_total"][()] == m["crm_events_released_total"][()]

        # the API: stored counts from the database, lag sampled from the broker
        app = create_app(settings)
        secret = compose.signing_secret(settings)
        ops = {"Authorization": f"Bearer {mint_token(secret, 'ops')}"}
        manager = {"Authorization": f"Bearer {mint_token(secret, 'manager', manager_id='m')}"}
        async with asgi_client(app, "http://t") as c:
            assert (await c.get("/metrics")).status_code == 401
            assert (await c.get("/metrics", headers=manager)).status_code == 403
            assert (await c.get("/v1/ops/lag", headers=manager)).status_code == 403
            deadline = time.monotonic() + 30
            while True:
                r = await c.get("/v1/ops/lag", params={"refresh": "true"}, headers=ops)
                assert r.status_code == 200, r.text
                lag = r.json()
                if lag["groups"][0]["lag"] == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert set(lag) >= {"items", "next_cursor", "total", "status"}
            assert lag["total"] == len(settings.topics.inputs) * settings.topic_partitions
            for item in lag["items"]:
                assert {
                    "group",
                    "topic",
                    "partition",
                    "committed_offset",
                    "end_offset",
                    "lag",
                    "status",
                } <= set(item)
                assert item["lag"] == 0
            page = (await c.get("/v1/ops/lag", params={"limit": 7}, headers=ops)).json()
            assert len(page["items"]) == 7 and page["next_cursor"] == "7"
            r = await c.get("/metrics", headers=ops)
            assert r.status_code == 200
            api = parse(r.text)
        stored = {
            dict(k)["event_type"]: v
            for k, v in api["crm_events_stored"].items()
            if dict(k)["status"] == "applied"
        }
        assert stored == dict(by_type)
        problems = {dict(k)["status"]: v for k, v in api["crm_problem_messages_stored"].items()}
        assert problems.get("rejected", 0) == bad
        assert problems.get("held", 0) == 0
        lags = {
            dict(k)["topic"]: v
            for k, v in api["crm_consumer_lag"].items()
            if dict(k)["group"] == settings.group_id
        }
        assert set(lags) == set(settings.topics.inputs) and not any(lags.values())
    finally:
        assert worker.stop() == 0, worker.log_tail()


async def test_metrics_can_be_public(settings_api: Settings) -> None:
    settings = settings_api.model_copy(update={"metrics_public": True})
    app = create_app(settings)
    async with asgi_client(app, "http://t") as c:
        r = await c.get("/metrics")
        assert r.status_code == 200
        assert "crm_events_stored" in r.text or "python_info" in r.text
        assert (await c.get("/v1/ops/lag")).status_code == 401


async def test_warn_when_the_group_falls_behind(
    broker: EmbeddedBroker, sqlite_url: str, tmp_path: Path, engines: Engines
) -> None:
    """A worker throttled (stopped most of the time with SIGSTOP) while events pour in
    faster than it can apply them: its offsets advance, but the lag only grows: WARN."""
    # batches of 1000 (the throttle below is sized for them): with the default 4000 a
    # worker's 40 ms awake can commit a whole batch, so the lag falls now and then
    settings = isolated_settings(
        broker.bootstrap,
        sqlite_url,
        tmp_path,
        lag_window_seconds=6.0,
        topic_partitions=1,
        batch_size=1000,
    )
    await ensure_topics(settings)
    log = generate_log(seed=8, events=12_000, late_clients=0, transfers=0)
    # the log, then the same again (resends: the idempotent apply skips them, slowly enough)
    msgs = [(m.topic, m.key, m.value) for m in log.messages] * 2
    engine = engines(sqlite_url)
    monitor = LagMonitor(settings, engine)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    stop = asyncio.Event()

    async def throttle() -> None:
        assert worker.proc is not None
        while not stop.is_set():
            worker.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(0.5)
            worker.proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.04)  # a fast worker keeps up with more than this

    async def pour() -> None:
        for i in range(0, len(msgs), 300):
            await produce_tracking(settings, msgs[i : i + 300])
            await asyncio.sleep(0.1)

    try:
        await _until_caught_up(monitor, 30)  # joined, reported, nothing to do yet
        throttler = asyncio.create_task(throttle())
        pourer = asyncio.create_task(pour())
        seen: list[tuple[str, int]] = []
        warned: dict[str, Any] | None = None
        # samples further apart than the workers' commit interval (1 s): each sees a commit
        while warned is None and not pourer.done():
            await monitor.sample()
            items = monitor.report()["items"]
            seen.append((monitor.report()["status"], sum(i["lag"] for i in items)))
            warned = next((i for i in items if i["status"] == "WARN"), None)
            await asyncio.sleep(1.0)
        stop.set()
        await throttler
        await pourer
        assert warned is not None, f"(status, lag) seen: {seen}\n{worker.log_tail()}"
        assert warned["lag"] > 0
        # unthrottled, it catches up: OK again
        await until_status(monitor, "OK", 60, worker)
    finally:
        stop.set()
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGCONT)
        worker.stop()
