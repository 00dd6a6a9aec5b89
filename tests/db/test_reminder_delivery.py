"""Delivering reminder events: a real HTTP webhook receiver (signed, retried, failures
visible) and the real broker's ``crm.reminders`` topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from config import Settings
from crmtracker.broker import EmbeddedBroker, ensure_topics
from crmtracker.compose import api_app as create_app
from models.tables import DeliveryRow
from scheduler.delivery import SIGNATURE_HEADER, WebhookTarget, sign, verify
from scheduler.service import ReminderScheduler, default_targets
from testkit.api import SECRET, asgi_client, auth
from testkit.broker import isolated_settings, read_topic
from testkit.hooks import HOOK_SECRET, Receiver
from testkit.reminders import World, day


def test_signature_round_trip() -> None:
    body = b'{"event_id":"x"}'
    s = sign("k", body)
    assert s.startswith("sha256=") and len(s) == 7 + 64
    assert verify("k", body, s)
    assert not verify("other", body, s) and not verify("k", body + b" ", s)
    assert not verify("k", body, None)


async def _overdue_world(w: World, n: int) -> None:
    for i in range(n):
        await w.client(f"c{i}", day(-35), manager="m1" if i % 2 else "m2")
    w.clock.t = day(0)
    assert (await w.scheduler.scan_once()).total_fired == n


async def _deliveries(w: World) -> list[Any]:
    async with w.engine.connect() as conn:
        return list(
            (await conn.execute(select(DeliveryRow.__table__).order_by(DeliveryRow.id))).all()
        )


def _failures() -> float:
    return REGISTRY.get_sample_value("crm_webhook_failures_total") or 0.0


async def test_webhook_gets_every_event_signed_and_retries(
    world: World,
    receiver: tuple[Receiver, str],
    db_url: str,
    tmp_path: Path,
) -> None:
    w = world
    rec, url = receiver
    rec.fail_first = 3
    await _overdue_world(w, 4)
    await w.visit("c1", day(0.5), by="m1")  # resolves one: a reminder.resolved event
    settings = Settings(
        database_url=db_url, data_dir=tmp_path, webhook_backoff_seconds=60, webhook_max_attempts=10
    )
    sched = ReminderScheduler(
        settings, w.engine, now=w.clock, targets=[WebhookTarget(url, HOOK_SECRET)]
    )
    before = _failures()
    r = await sched.deliver_once()
    assert r.dispatched == 5 and r.delivered == 2 and r.retrying == 3
    rows = await _deliveries(w)
    assert sorted(d.attempts for d in rows) == [1, 1, 1, 1, 1]
    assert {d.last_error for d in rows if d.status == "pending"} == {"RuntimeError: HTTP 500"}
    # not due again before the backoff is over
    w.clock.t += timedelta(seconds=30)
    assert (await sched.deliver_once()).delivered == 0
    w.clock.t += timedelta(seconds=31)
    r = await sched.deliver_once()
    assert r.delivered == 3 and r.retrying == 0
    await sched.stop()

    assert _failures() - before == 3 and rec.failures == 3
    events = await w.outbox()
    assert len(rec.received) == len(events) == 5
    got = {}
    for headers, body in rec.received:
        assert verify(HOOK_SECRET, body, headers[SIGNATURE_HEADER])
        assert headers["Content-Type"] == "application/json"
        doc = json.loads(body)
        assert headers["X-CRM-Event-Id"] == doc["event_id"]
        got[doc["event_id"]] = doc
    assert got == {e["event_id"]: e for e in events}
    types = sorted(e["event_type"] for e in events)
    assert types == ["reminder.fired"] * 4 + ["reminder.resolved"]
    rows = await _deliveries(w)
    assert {d.status for d in rows} == {"delivered"}
    assert sorted(d.attempts for d in rows) == [1, 1, 2, 2, 2]


async def test_a_failing_webhook_loses_nothing_and_shows_in_the_api(
    world: World,
    receiver: tuple[Receiver, str],
    db_url: str,
    tmp_path: Path,
) -> None:
    w = world
    rec, url = receiver
    rec.fail_first = 10**6
    await _overdue_world(w, 2)
    settings = Settings(
        database_url=db_url,
        data_dir=tmp_path,
        auth_secret=SECRET,
        webhook_backoff_seconds=1,
        webhook_max_attempts=3,
    )
    sched = ReminderScheduler(
        settings, w.engine, now=w.clock, targets=[WebhookTarget(url, HOOK_SECRET)]
    )
    for _ in range(5):
        await sched.deliver_once()
        w.clock.t += timedelta(seconds=10)
    await sched.stop()
    assert rec.failures == 6 and rec.received == []

    app = create_app(settings)
    async with asgi_client(app, "http://t") as api:
        r = await api.get(
            "/v1/reminders/deliveries", params={"status": "failed"}, headers=auth("ops")
        )
        assert r.status_code == 200
        doc = r.json()
        assert doc["total"] == 2
        for item in doc["items"]:
            assert item["attempts"] == 3 and item["status"] == "failed"
            assert item["last_error"] == "RuntimeError: HTTP 500"
            assert item["target"] == url and item["event_type"] == "reminder.fired"
        pending = await api.get(
            "/v1/reminders/deliveries", params={"status": "pending"}, headers=auth("admin")
        )
        assert pending.json()["total"] == 0


@pytest.mark.kafka
async def test_reminders_reach_the_topic(
    broker: EmbeddedBroker,
    world: World,
    db_url: str,
    tmp_path: Path,
) -> None:
    w = world
    settings = isolated_settings(broker.bootstrap, db_url, tmp_path)
    await ensure_topics(settings)
    await _overdue_world(w, 3)
    await w.visit("c0", day(0.5), by="m2")
    sched = ReminderScheduler(settings, w.engine, now=w.clock, targets=default_targets(settings))
    try:
        r = await sched.deliver_once()
        assert r.delivered == 4, r
    finally:
        await sched.stop()
    records = await read_topic(settings, "crm.reminders", want=4)
    assert len(records) == 4
    events = {e["event_id"]: e for e in await w.outbox()}
    for rec in records:
        doc = json.loads(rec.value)
        assert doc == events[doc["event_id"]]
        assert rec.key.decode() == doc["payload"]["manager_id"]
    assert sorted(json.loads(r.value)["event_type"] for r in records) == [
        "reminder.fired",
        "reminder.fired",
        "reminder.fired",
        "reminder.resolved",
    ]


class _Hangs:
    """A target that takes the events and never answers (the process dies meanwhile)."""

    name = "kafka"

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        self.started.set()
        await asyncio.Event().wait()

    async def close(self) -> None:
        pass


class _Records:
    name = "kafka"

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        self.bodies.append(body)

    async def close(self) -> None:
        pass


async def test_a_scheduler_dying_mid_delivery_loses_nothing(
    world: World,
    db_url: str,
    tmp_path: Path,
) -> None:
    w = world
    await _overdue_world(w, 3)
    settings = Settings(database_url=db_url, data_dir=tmp_path)
    hangs = _Hangs()
    dying = ReminderScheduler(settings, w.engine, now=w.clock, targets=[hangs])
    task = asyncio.create_task(dying.deliver_once())
    await asyncio.wait_for(hangs.started.wait(), 10)
    task.cancel()  # the process is gone: its rows stay claimed until the lease runs out
    with contextlib.suppress(asyncio.CancelledError):
        await task
    records = _Records()
    other = ReminderScheduler(settings, w.engine, now=w.clock, targets=[records])
    assert (await other.deliver_once()).delivered == 0  # leased to the dead one
    w.clock.t += timedelta(seconds=61)
    assert (await other.deliver_once()).delivered == 3
    assert sorted(json.loads(b)["event_id"] for b in records.bodies) == sorted(
        e["event_id"] for e in await w.outbox()
    )
