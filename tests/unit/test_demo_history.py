"""The demo's year of history: generated day by day in the past, sent before the live traffic
(through the same send path), and, end to end, applied by the worker of `up --demo`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from crmtracker.broker import free_port
from demo import DemoGenerator, run_demo
from testkit.process import child_environ

TZ = ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 3, 15, 0, tzinfo=TZ)


def test_history_is_a_day_at_a_time_in_the_past() -> None:
    gen = DemoGenerator(now=lambda: NOW)
    days = list(gen.history_messages(14, per_weekday=20, per_weekend=5))
    assert len(days) == 14
    seen = []
    ids: set[str] = set()
    for back, msgs in zip(range(14, 0, -1), days, strict=True):
        day = (NOW - timedelta(days=back)).date()
        assert len(msgs) == (20 if day.weekday() < 5 else 5)
        for m in msgs:
            try:
                env = json.loads(m.value)
                at = datetime.fromisoformat(env["occurred_at"])
            except (ValueError, KeyError, TypeError):
                continue  # the odd malformed message, as in the live traffic
            if env["event_type"] == "visit.logged" and at.date() < day:
                continue  # a visit logged late, for an earlier day
            if env["event_id"] in ids:
                continue  # a resend of an earlier day's message
            ids.add(env["event_id"])
            assert at.date() == day and 9 <= at.hour < 18, env["occurred_at"]
            seen.append(at)
    assert seen and max(seen) < NOW
    # the live clock is back afterwards
    (live,) = [json.loads(m.value) for m in gen.next_messages(1)]
    assert datetime.fromisoformat(live["occurred_at"]).date() == NOW.date()


async def test_run_demo_sends_the_roster_a_year_back_then_history_then_live() -> None:
    sent: list[tuple[str, bytes]] = []
    logs: list[str] = []
    stop = asyncio.Event()

    async def send(topic: str, key: bytes, value: bytes) -> None:
        sent.append((topic, value))

    gen = DemoGenerator(now=lambda: NOW)
    n_history = sum(len(d) for d in DemoGenerator(now=lambda: NOW).history_messages(5))

    def topic_for(role: str) -> str:
        return role

    task = asyncio.create_task(
        run_demo(send, topic_for, stop=stop, rate=0, generator=gen, log=logs.append, history_days=5)
    )
    await asyncio.sleep(0.5)
    stop.set()
    await task
    ref = [json.loads(v) for t, v in sent if t in ("managers", "clients")]
    assert ref and all(r["occurred_at"].startswith("2026-11-28") for r in ref)
    assert len(sent) == len(ref) + n_history
    assert any("backfilling 5 days of history" in x for x in logs)
    assert any(f"history sent: {n_history} messages" in x for x in logs)


@pytest.mark.kafka
def test_up_demo_backfills_history_through_kafka(tmp_path: Path) -> None:
    api_port, kafka_port = free_port(), free_port()
    env = child_environ({})
    env.pop("CRM_DATABASE_URL", None)
    env.pop("CRM_KAFKA_BOOTSTRAP", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crmtracker",
            "up",
            "--demo",
            "--demo-rate",
            "2",
            "--demo-history-days",
            "45",
            "--port",
            str(api_port),
            "--kafka-port",
            str(kafka_port),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        token = None
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        out_stream = proc.stdout
        threading.Thread(target=lambda: lines.extend(out_stream), daemon=True).start()
        applied = False
        while time.monotonic() < deadline and proc.poll() is None:
            for line in list(lines):
                if token is None and "dashboard" in line and "#token=" in line:
                    token = line.split("#token=", 1)[1].split()[0]
            if token and any("history sent" in x for x in lines):
                h = {"Authorization": f"Bearer {token}"}
                today = datetime.now(TZ).date()
                start = (today - timedelta(days=44)).isoformat()
                r = httpx.get(
                    f"http://127.0.0.1:{api_port}/v1/branches/b01/series",
                    params={"from": start, "to": today.isoformat(), "metric": "transactions"},
                    headers=h,
                    timeout=5,
                )
                if r.status_code == 200:
                    points = r.json()["points"]
                    busy = [p for p in points[:-1] if p["value"] > 0]
                    if len(busy) >= 40:  # every past day (weekends too) has business
                        applied = True
                        break
            time.sleep(0.5)
        out = "".join(lines)
        assert applied, out[-3000:]
        assert "backfilling 45 days of history through Kafka" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
