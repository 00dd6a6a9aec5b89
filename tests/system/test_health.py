"""Liveness, API readiness and pipeline readiness, with and without a worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from config import Settings
from crmtracker import compose
from crmtracker.broker import EmbeddedBroker, ensure_topics
from crmtracker.compose import api_app as create_app
from testkit.api import asgi_client
from testkit.broker import isolated_settings, produce
from testkit.process import WorkerProcess


@asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with asgi_client(app, "http://t") as c:
        yield c


async def test_api_readiness_follows_its_database(tmp_path: Path) -> None:
    down = Settings(
        database_url="postgresql://postgres@127.0.0.1:5432/crm_no_such_database",
        data_dir=tmp_path,
        kafka_bootstrap="127.0.0.1:1",
        lag_sample_seconds=0,
    )
    async with api_client(down) as c:
        assert (await c.get("/healthz")).status_code == 200  # liveness ignores dependencies
        r = await c.get("/readyz/api")
        assert r.status_code == 503 and r.json()["checks"]["database"].startswith("unavailable")
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["broker"].startswith("unreachable")


@pytest.mark.kafka
async def test_pipeline_ready_only_with_a_live_worker_caught_up(
    broker: EmbeddedBroker, sqlite_url: str, tmp_path: Path
) -> None:
    settings = isolated_settings(
        broker.bootstrap, sqlite_url, tmp_path, lag_sample_seconds=0.5, ready_max_lag=5
    )
    await ensure_topics(settings)
    await produce(settings, [("crm.visits", f"c{i}".encode(), b"not json") for i in range(20)])
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    async with api_client(settings) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["checks"]["worker"] == "no worker has reported in the last 30 s"
        r = await c.get("/readyz/api")
        assert r.status_code == 200  # the API serves reads while the pipeline is down
        worker.start()
        try:
            deadline = time.monotonic() + 60
            while True:
                r = await c.get("/readyz")
                if r.status_code == 200:
                    break
                assert time.monotonic() < deadline, (r.json(), worker.log_tail())
                await asyncio.sleep(0.5)
            assert r.json()["checks"]["worker"] == "caught up (lag 0, broker)"
        finally:
            assert worker.stop() == 0, worker.log_tail()


async def test_lag_when_the_broker_cannot_be_read(tmp_path: Path, sqlite_url: str) -> None:
    from prometheus_client import REGISTRY

    from api.auth import mint_token

    settings = Settings(
        database_url=sqlite_url,
        data_dir=tmp_path,
        kafka_bootstrap="127.0.0.1:1",
        lag_sample_seconds=0,
        auth_secret="health-test-secret-" + "h" * 40,
    )
    failures = REGISTRY.get_sample_value("crm_lag_sample_failures_total") or 0.0
    ops = {"Authorization": f"Bearer {mint_token(compose.signing_secret(settings), 'ops')}"}
    async with api_client(settings) as c:
        r = await c.get("/v1/ops/lag", headers=ops)
        assert r.status_code == 503
        assert r.json()["detail"].startswith("cannot read offsets from the broker")
    assert REGISTRY.get_sample_value("crm_lag_sample_failures_total") == failures + 1


async def test_lag_falls_back_to_the_workers_reports(tmp_path: Path, sqlite_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from api.auth import mint_token
    from models.db import make_engine, upsert_positions

    settings = Settings(
        database_url=sqlite_url,
        data_dir=tmp_path,
        kafka_bootstrap="127.0.0.1:1",
        lag_sample_seconds=0,
        auth_secret="health-test-secret-" + "h" * 40,
    )
    now = datetime.now(UTC)
    rows = [
        (settings.topics.visits, 0, 40, 50, now),  # reported just now
        (settings.topics.visits, 1, 7, 7, now - timedelta(minutes=10)),  # long ago
        ("crm-tracker-__assignor-__leader", 0, None, 0, now),  # faust's own: not an input
    ]
    engine = make_engine(sqlite_url, writer=True)
    await upsert_positions(
        engine,
        [
            {
                "group_id": settings.group_id,
                "topic": t,
                "partition": p,
                "committed_offset": c,
                "end_offset": e,
                "worker": "w:1",
                "updated_at": at,
            }
            for t, p, c, e, at in rows
        ],
    )
    await engine.dispose()
    ops = {"Authorization": f"Bearer {mint_token(compose.signing_secret(settings), 'ops')}"}
    async with api_client(settings) as c:
        r = await c.get("/v1/ops/lag", headers=ops)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "worker reports"
    assert body["error"] and "Error" in body["error"]
    items = {i["partition"]: i for i in body["items"]}
    assert set(items) == {0, 1}
    assert (items[0]["committed_offset"], items[0]["end_offset"], items[0]["lag"]) == (40, 50, 10)
    assert items[0]["consumer_alive"] is True and items[0]["time_lag_seconds"] is None
    assert items[1]["lag"] == 0 and items[1]["consumer_alive"] is False


async def test_sampler_stops_when_cancelled_as_a_sample_fails(tmp_path: Path) -> None:
    """The cancellation arrives just as a sample fails: asyncio.wait_for then hands back the
    sample's error instead of the cancellation, which the loop suppresses. The sampler must
    stop anyway (an API shutdown hung on this)."""
    import asyncio

    from streams.lag import LagMonitor

    runs = 0

    class FailingAsCancelled(LagMonitor):
        async def sample(self) -> None:
            nonlocal runs
            runs += 1
            task.cancel()  # the shutdown's cancel lands in the same loop turn ...
            raise RuntimeError("connection refused")  # ... as the sample fails

    monitor = FailingAsCancelled(Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1"))
    task = asyncio.create_task(monitor.run(0.05))
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done and task.cancelled() and runs == 1
