"""``crm-tracker lag``: through the running API, and straight from the broker."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from crmtracker.broker import EmbeddedBroker, ensure_topics, free_port
from crmtracker.lagview import format_table
from testkit.broker import isolated_settings, produce
from testkit.process import child_environ


def test_table_has_a_row_per_partition_and_the_group_line() -> None:
    report = {
        "status": "WARN",
        "window_seconds": 60.0,
        "groups": [{"group": "g", "status": "WARN", "lag": 12, "partitions": 2}],
        "items": [
            {
                "group": "g",
                "topic": "bank.transactions",
                "partition": 0,
                "committed_offset": 100,
                "end_offset": 112,
                "lag": 12,
                "time_lag_seconds": 75.2,
                "status": "WARN",
            },
            {
                "group": "g",
                "topic": "bank.transactions",
                "partition": 1,
                "committed_offset": None,
                "end_offset": 0,
                "lag": 0,
                "time_lag_seconds": 0.0,
                "status": "OK",
            },
        ],
    }
    lines = format_table(report).splitlines()
    assert lines[0].split() == [
        "GROUP",
        "TOPIC",
        "PART",
        "COMMITTED",
        "END",
        "LAG",
        "TIME",
        "LAG",
        "STATUS",
    ]
    assert lines[1].split() == ["g", "bank.transactions", "0", "100", "112", "12", "1m15s", "WARN"]
    assert lines[2].split() == ["g", "bank.transactions", "1", "-", "0", "0", "0.0s", "OK"]
    assert lines[-1].startswith("group g: WARN  (total lag 12 over 2 partitions")


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crmtracker", "lag", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env=child_environ(env),
    )


@pytest.mark.kafka
def test_lag_command_direct_and_through_the_api(
    broker: EmbeddedBroker, sqlite_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings(broker.bootstrap, sqlite_url, tmp_path, topic_partitions=2)

    async def setup() -> None:
        await ensure_topics(settings)
        await produce(settings, [("crm.visits", f"c{i}".encode(), b"{}") for i in range(10)])

    asyncio.run(setup())
    env = {**settings.child_env(), "CRM_AUTH_SECRET": "lag-cli-secret-" + "z" * 40}

    # straight from the broker: no worker ever ran, so the group is STOP (exit 2)
    r = _cli("--direct", "--samples", "2", "--interval", "0.2", env=env, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    parts = len(settings.topics.inputs) * 2
    assert f"group {settings.group_id}: STOP  (total lag 10 over {parts} partitions" in r.stdout
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith(settings.group_id)]
    assert len(rows) == parts
    visits = [row for row in rows if row[1] == settings.topics.visits]
    assert sum(int(row[5]) for row in visits) == 10
    assert all(row[-1] == "STOP" for row in visits if row[5] != "0")

    # through the API, which samples on its own every 0.5 s
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "crmtracker", "api", "--port", str(port)],
        cwd=tmp_path,
        env=child_environ({**env, "CRM_LAG_SAMPLE_SECONDS": "0.5"}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and api.poll() is None, "API did not start"
            time.sleep(0.2)
        r = _cli("--url", f"http://127.0.0.1:{port}", "--json", env=env, cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        report = json.loads(r.stdout)
        assert report["total"] == len(report["items"]) == parts
        assert report["status"] == "STOP"
        assert sum(i["lag"] for i in report["items"]) == 10
        # a wrong token is refused by the API, not silently replaced by a direct sample
        r = _cli("--url", f"http://127.0.0.1:{port}", "--token", "nope", env=env, cwd=tmp_path)
        assert r.returncode == 1 and "401" in r.stderr
    finally:
        api.terminate()
        api.wait(10)
