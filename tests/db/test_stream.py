"""Live push over a real HTTP server: a branch-scoped client receives its branch's tally
changes within a second of the apply, never another branch's, and resumes after an id."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.auth import mint_token
from config import Settings
from crmtracker.compose import api_app as create_app
from models.db import make_engine
from models.policy import Policy
from models.tables import ClientRow, ManagerRow
from streams.apply import Applier
from testkit.feed import Feed, env, vector_batches
from testkit.serving import serve_in_thread

SECRET = "stream-secret-" + "y" * 40


@pytest.fixture
def api(db_url: str, tmp_path: Path) -> Iterator[str]:
    async def fill() -> None:
        engine = make_engine(db_url, writer=True)
        applier = Applier(engine, Policy())
        for batch in vector_batches():
            await applier.apply(batch)
        await engine.dispose()

    asyncio.run(fill())
    settings = Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET)
    with serve_in_thread(create_app(settings)) as base:
        yield base


async def sse(url: str, headers: dict[str, str], out: list[dict[str, Any]]) -> None:
    """Collect (id, event, data) frames from an SSE response until cancelled."""
    async with (
        httpx.AsyncClient(timeout=None) as client,
        client.stream("GET", url, headers=headers) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        frame: dict[str, Any] = {}
        async for line in r.aiter_lines():
            if not line:
                if frame:
                    frame["received"] = time.monotonic()
                    out.append(frame)
                frame = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                frame[key] = value


async def client_of(db_url: str, branch: str) -> str:
    engine = make_engine(db_url)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(ClientRow.client_id)
                .join(ManagerRow, ManagerRow.manager_id == ClientRow.manager_id)
                .where(ManagerRow.branch_id == branch)
                .order_by(ClientRow.client_id)
                .limit(1)
            )
        ).first()
    await engine.dispose()
    assert row is not None
    return row.client_id  # type: ignore[no-any-return]


def tx(feed: Feed, eid: str, client_id: str) -> Any:
    return feed.msg(
        "bank.transactions",
        env(
            eid,
            "transaction.posted",
            "2026-11-24T10:00:00+08:00",
            client_id=client_id,
            account_id="a",
            business_line="liability",
            amount="10",
            simulated_profit="1.00",
        ),
    )


async def test_branch_scoped_client_gets_its_changes_within_a_second(api: str, db_url: str) -> None:
    b01, b02 = await client_of(db_url, "b01"), await client_of(db_url, "b02")
    sup = {"Authorization": f"Bearer {mint_token(SECRET, 'supervisor', branches=['b01'])}"}
    admin_token = mint_token(SECRET, "admin")
    seen_sup: list[dict[str, Any]] = []
    seen_admin: list[dict[str, Any]] = []
    tasks = [
        asyncio.create_task(sse(f"{api}/v1/stream", sup, seen_sup)),
        # EventSource cannot set headers: the token may ride in the query
        asyncio.create_task(sse(f"{api}/v1/stream?access_token={admin_token}", {}, seen_admin)),
    ]
    try:
        await wait_for(lambda: len(seen_sup) >= 1 and len(seen_admin) >= 1)
        assert seen_sup[0]["event"] == "ready"
        engine = make_engine(db_url, writer=True)
        applier = Applier(engine, Policy())
        feed = Feed()
        await applier.apply([tx(feed, "live-b02", b02)])
        applied_at = time.monotonic()
        await applier.apply([tx(feed, "live-b01", b01)])
        applied_b01 = time.monotonic()
        await engine.dispose()
        await wait_for(lambda: any(f.get("event") == "tally" for f in seen_sup))
        tallies = [f for f in seen_sup if f.get("event") == "tally"]
        assert tallies[0]["received"] - applied_b01 < 1.0
        await asyncio.sleep(0.6)
        branches = {json.loads(f["data"])["branch_id"] for f in seen_sup if f["event"] == "tally"}
        assert branches == {"b01"}
        assert json.loads(tallies[0]["data"])["days"] == ["2026-11-24"]
        admin_branches = [
            json.loads(f["data"])["branch_id"] for f in seen_admin if f["event"] == "tally"
        ]
        assert admin_branches == ["b02", "b01"]
        assert applied_at <= applied_b01
        # resumption: a reconnect after the b02 event gets the b01 one again, in order
        first_id = next(f["id"] for f in seen_admin if f.get("event") == "tally")
        again: list[dict[str, Any]] = []
        resume = asyncio.create_task(
            sse(f"{api}/v1/stream", {**sup, "Last-Event-ID": first_id}, again)
        )
        tasks.append(resume)
        await wait_for(lambda: any(f.get("event") == "tally" for f in again))
        assert [f["id"] for f in again if f.get("event") == "tally"] == [tallies[0]["id"]]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_stream_refuses_bad_callers(api: str) -> None:
    async with httpx.AsyncClient(base_url=api) as c:
        assert (await c.get("/v1/stream")).status_code == 401
        assert (await c.get("/v1/stream?access_token=nope")).status_code == 401
        ops = mint_token(SECRET, "ops")
        assert (await c.get(f"/v1/stream?access_token={ops}")).status_code == 403
        admin = {"Authorization": f"Bearer {mint_token(SECRET, 'admin')}"}
        r = await c.get("/v1/stream", headers={**admin, "Last-Event-ID": "x"})
        assert r.status_code == 422


async def wait_for(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
