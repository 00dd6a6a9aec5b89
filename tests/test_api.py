"""The HTTP API over a database filled through the real apply step."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from api.auth import mint_token
from api.main import create_app
from crmtracker.settings import Settings
from models.db import make_engine
from models.policy import Policy
from streams.apply import Applier
from tests.conftest import _fresh_database
from tests.test_apply import vector_batches

SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per module and kind, filled with the vectors by the real apply step."""
    import asyncio

    for url in _fresh_database(request.param, tmp_path_factory.mktemp("api")):

        async def fill(url: str = url) -> None:
            engine = make_engine(url, writer=True)
            applier = Applier(engine, Policy())
            for batch in vector_batches():
                await applier.apply(batch)
            await engine.dispose()

        asyncio.run(fill())
        yield url


@pytest.fixture
async def client(filled_db: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    db_url = filled_db
    settings = Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            yield c


def auth(role: str = "admin", **kw: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, role, **kw)}"}  # type: ignore[arg-type]


async def test_manager_month_tally_matches_the_contract_shape(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/v1/managers/m036/tally", params={"period": "month", "at": "2026-09-15"}, headers=auth()
    )
    assert r.status_code == 200
    doc = r.json()
    assert doc["manager_id"] == "m036"
    assert doc["period"] == {"from": "2026-09-01", "to": "2026-09-30"}
    assert doc["transactions"] == 38
    assert doc["weighted_profit"] == "1304893.52"
    assert doc["volume"]["asset"] == "24436100.04"
    assert (
        set(doc["volume"])
        == set(doc["simulated_profit"])
        == {"asset", "liability", "intermediary", "off_balance"}
    )
    assert doc["accounts_opened"] == {"payroll": 1}
    assert doc["visits"]["total"] == 7 and doc["visits"]["on_site"] == 3
    assert doc["as_of"].endswith("+08:00")


async def test_range_equals_period_and_defaults(client: httpx.AsyncClient) -> None:
    month = (
        await client.get("/v1/managers/m006/tally?period=month&at=2026-10-09", headers=auth())
    ).json()
    rng = (
        await client.get("/v1/managers/m006/tally?from=2026-10-01&to=2026-10-31", headers=auth())
    ).json()
    assert {k: v for k, v in month.items() if k != "as_of"} == {
        k: v for k, v in rng.items() if k != "as_of"
    }
    q = (
        await client.get("/v1/managers/m006/tally?period=quarter&at=2026-11-30", headers=auth())
    ).json()
    assert q["period"] == {"from": "2026-10-01", "to": "2026-12-31"}
    assert q["transactions"] >= month["transactions"]


async def test_branch_tally(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/branches/b05/tally?period=month&at=2026-09-01", headers=auth())
    assert r.status_code == 200
    assert r.json()["weighted_profit"] == "6936343.84" and r.json()["transactions"] == 216


@pytest.mark.parametrize(
    "query",
    [
        "period=decade",
        "at=2026-13-01",
        "at=yesterday",
        "from=2026-09-30&to=2026-09-01",
        "from=2026-09-01",
        "to=2026-09-01",
        "period=month&from=2026-09-01&to=2026-09-02",
        "from=2000-01-01&to=2030-01-01",
    ],
)
async def test_bad_queries_are_422_never_500(client: httpx.AsyncClient, query: str) -> None:
    r = await client.get(f"/v1/managers/m001/tally?{query}", headers=auth())
    assert r.status_code == 422
    assert "detail" in r.json()


async def test_authentication_and_scope(client: httpx.AsyncClient) -> None:
    url = "/v1/managers/m001/tally"
    assert (await client.get(url)).status_code == 401
    assert (await client.get(url, headers={"Authorization": "Bearer nonsense"})).status_code == 401
    forged = jwt.encode(
        {"sub": "x", "role": "admin", "iat": 0, "exp": 9999999999, "iss": "crm-tracker"},
        "another-key-" + "y" * 40,
        algorithm="HS256",
    )
    assert (await client.get(url, headers={"Authorization": f"Bearer {forged}"})).status_code == 401
    unsigned = jwt.encode(
        {"sub": "x", "role": "admin", "iat": 0, "exp": 9999999999, "iss": "crm-tracker"},
        None,
        algorithm="none",
    )
    assert (
        await client.get(url, headers={"Authorization": f"Bearer {unsigned}"})
    ).status_code == 401
    expired = mint_token(SECRET, "admin", ttl=__import__("datetime").timedelta(seconds=-5))
    assert (
        await client.get(url, headers={"Authorization": f"Bearer {expired}"})
    ).status_code == 401
    assert (await client.get(url, headers=auth("manager", manager_id="m001"))).status_code == 200
    assert (await client.get(url, headers=auth("manager", manager_id="m002"))).status_code == 403
    assert (await client.get(url, headers=auth("supervisor", branches=["b01"]))).status_code == 200
    assert (await client.get(url, headers=auth("supervisor", branches=["b02"]))).status_code == 403
    assert (await client.get(url, headers=auth("ops"))).status_code == 403
    assert (await client.get("/v1/managers/nobody/tally", headers=auth())).status_code == 404
    assert (
        await client.get("/v1/branches/b02/tally", headers=auth("supervisor", branches=["b01"]))
    ).status_code == 403


async def test_rejected_list_is_paginated_with_reasons(client: httpx.AsyncClient) -> None:
    seen: list[dict] = []
    cursor = None
    while True:
        params = {"limit": 70} | ({"cursor": cursor} if cursor else {})
        r = await client.get("/v1/events/rejected", params=params, headers=auth())
        assert r.status_code == 200
        page = r.json()
        assert page["total"] == 200
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 200 and len({i["id"] for i in seen}) == 200
    item = seen[0]
    assert {"topic", "partition", "offset", "reason", "status", "raw"} <= set(item)
    assert item["status"] == "rejected"
    assert item["reason"].startswith(f"{item['topic']}[{item['partition']}]@{item['offset']}: ")
    r = await client.get("/v1/events/rejected", params={"limit": 1001}, headers=auth())
    assert r.status_code == 422
    r = await client.get("/v1/events/rejected", params={"cursor": "%%%"}, headers=auth())
    assert r.status_code == 422
    r = await client.get("/v1/events/rejected", headers=auth("manager", manager_id="m001"))
    assert r.status_code == 403


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 503  # no worker has reported in this test
    assert r.json()["checks"]["database"] == "ok"
