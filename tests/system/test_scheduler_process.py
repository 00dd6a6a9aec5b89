"""``crm-tracker scheduler`` as a real process: fires, publishes, calls the webhook, stops on
SIGTERM."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crmtracker.broker import EmbeddedBroker, ensure_topics
from models.db import make_engine
from models.policy import Policy
from scheduler.delivery import verify
from streams.apply import Applier
from testkit.broker import isolated_settings, read_topic
from testkit.feed import Feed, env
from testkit.hooks import HOOK_SECRET, Receiver
from testkit.process import Child, child_environ


@pytest.mark.kafka
async def test_scheduler_command(
    broker: EmbeddedBroker,
    sqlite_url: str,
    tmp_path: Path,
    receiver: tuple[Receiver, str],
) -> None:
    rec, url = receiver
    settings = isolated_settings(broker.bootstrap, sqlite_url, tmp_path)
    await ensure_topics(settings)
    engine = make_engine(sqlite_url, writer=True)
    feed = Feed()
    long_ago = (datetime.now(UTC) - timedelta(days=181)).isoformat()  # bronze: due a day ago
    await Applier(engine, Policy()).apply(
        [
            feed.msg(
                "crm.managers",
                env("e1", "manager.upserted", long_ago, manager_id="m1", branch_id="b1"),
            ),
            feed.msg(
                "crm.clients",
                env(
                    "e2",
                    "client.upserted",
                    long_ago,
                    client_id="c1",
                    manager_id="m1",
                    tier="bronze",
                ),
            ),
        ]
    )
    await engine.dispose()

    child_env = {
        **settings.child_env(),
        "CRM_WEBHOOK_URLS": json.dumps([url]),
        "CRM_WEBHOOK_SECRET": HOOK_SECRET,
        "CRM_REMINDER_SCAN_SECONDS": "1",
        "CRM_REMINDER_DELIVER_SECONDS": "0.5",
    }
    log = tmp_path / "scheduler.log"
    proc = Child("scheduler", child_env, log)
    try:
        for _ in range(300):
            if rec.received:
                break
            await asyncio.sleep(0.1)
        assert rec.received, log.read_text()
        records = await read_topic(settings, "crm.reminders", want=1)
    finally:
        code = proc.stop(20)
    assert code == 0, log.read_text()
    headers, body = rec.received[0]
    assert verify(HOOK_SECRET, body, headers["X-CRM-Signature"])
    doc = json.loads(body)
    assert doc["event_type"] == "reminder.fired" and doc["payload"]["client_id"] == "c1"
    assert [json.loads(r.value) for r in records] == [doc]
    assert records[0].key == b"m1"
    assert "Traceback" not in log.read_text()


def test_reminders_recompute_command(sqlite_url: str, tmp_path: Path) -> None:
    """After a policy change: ``crm-tracker reminders recompute`` moves every due date."""
    import asyncio

    from sqlalchemy import select

    from models.tables import ClientRow

    async def seed() -> None:
        engine = make_engine(sqlite_url, writer=True)
        feed = Feed()
        at = "2026-01-01T00:00:00+00:00"
        await Applier(engine, Policy()).apply(
            [
                feed.msg(
                    "crm.managers",
                    env("e1", "manager.upserted", at, manager_id="m1", branch_id="b1"),
                ),
                feed.msg(
                    "crm.clients",
                    env("e2", "client.upserted", at, client_id="c1", manager_id="m1", tier="gold"),
                ),
            ]
        )
        await engine.dispose()

    async def due() -> datetime:
        engine = make_engine(sqlite_url)
        async with engine.connect() as conn:
            value = (await conn.execute(select(ClientRow.next_visit_due))).scalar_one()
        await engine.dispose()
        return value

    asyncio.run(seed())
    assert asyncio.run(due()) == datetime(2026, 3, 2, tzinfo=UTC)  # gold: 60 days
    # tier intervals cannot be changed through the environment on this branch (the policy
    # file is another piece of work): a cleared due date stands in for a stale one
    import sqlite3

    db = sqlite3.connect(sqlite_url.split("///", 1)[1])
    db.execute("UPDATE clients SET next_visit_due = NULL")
    db.commit()
    db.close()
    env_ = child_environ({"CRM_DATABASE_URL": sqlite_url, "CRM_DATA_DIR": str(tmp_path)})
    done = subprocess.run(
        [sys.executable, "-m", "crmtracker", "reminders", "recompute"],
        env=env_,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1 clients changed" in done.stderr
    assert asyncio.run(due()) == datetime(2026, 3, 2, tzinfo=UTC)
