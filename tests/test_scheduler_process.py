"""``crm-tracker scheduler`` as a real process: fires, publishes, calls the webhook, stops on
SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
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
from tests.kafka_helpers import ROOT, isolated_settings, read_topic
from tests.test_apply import Feed, env
from tests.test_reminder_delivery import HOOK_SECRET, Receiver, receiver  # noqa: F401


def _start(child_env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "crmtracker", "scheduler"],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


@pytest.mark.kafka
async def test_scheduler_command(
    broker: EmbeddedBroker,
    sqlite_url: str,
    tmp_path: Path,
    receiver: tuple[Receiver, str],  # noqa: F811
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
        **os.environ,
        **settings.child_env(),
        "PYTHONPATH": str(ROOT),
        "CRM_WEBHOOK_URLS": json.dumps([url]),
        "CRM_WEBHOOK_SECRET": HOOK_SECRET,
        "CRM_REMINDER_SCAN_SECONDS": "1",
        "CRM_REMINDER_DELIVER_SECONDS": "0.5",
    }
    log = tmp_path / "scheduler.log"
    proc = _start(child_env, log)
    try:
        for _ in range(300):
            if rec.received:
                break
            await asyncio.sleep(0.1)
        assert rec.received, log.read_text()
        records = await read_topic(settings, "crm.reminders", want=1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
    assert code == 0, log.read_text()
    headers, body = rec.received[0]
    assert verify(HOOK_SECRET, body, headers["X-CRM-Signature"])
    doc = json.loads(body)
    assert doc["event_type"] == "reminder.fired" and doc["payload"]["client_id"] == "c1"
    assert [json.loads(r.value) for r in records] == [doc]
    assert records[0].key == b"m1"
    assert "Traceback" not in log.read_text()
