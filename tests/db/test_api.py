"""The HTTP API over a database filled through the real apply step."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import jwt
import pytest

from api.auth import mint_token
from config import Settings
from crmtracker.compose import api_app as create_app
from models.db import make_engine
from models.policy import Policy
from streams.apply import Applier
from testkit.api import SECRET, asgi_client, auth
from testkit.db import fresh_database
from testkit.feed import vector_batches


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One database per module and kind, filled with the vectors by the real apply step."""
    import asyncio

    with fresh_database(request.param, tmp_path_factory.mktemp("api")) as url:

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
    async with asgi_client(app) as c:
        yield c


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


# --- targets, leaderboards, assessment ------------------------------------------------------
async def test_manager_tally_carries_the_prorated_target(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/v1/managers/m036/tally", params={"period": "month", "at": "2026-09-15"}, headers=auth()
    )
    doc = r.json()
    year = await client.get(
        "/v1/managers/m036/tally", params={"period": "year", "at": "2026-09-15"}, headers=auth()
    )
    annual = Decimal(year.json()["target"]["target"])
    assert annual > 0
    target = doc["target"]
    # September: 30 of 365 days of the annual target, exact until shown
    assert target["target"] == str((annual * 30 / 365).quantize(Decimal("0.01"), ROUND_HALF_UP))
    assert target["actual"] == doc["weighted_profit"]
    ratio = Decimal(doc["weighted_profit"]) / (annual * 30 / 365)
    assert Decimal(target["ratio"]) == ratio.quantize(Decimal("0.0001"), ROUND_HALF_UP)
    assert target["status"] == ("met" if ratio >= 1 else "behind")


async def test_branch_tally_has_account_targets(client: httpx.AsyncClient) -> None:
    month = (
        await client.get(
            "/v1/branches/b01/tally", params={"period": "month", "at": "2026-09-15"}, headers=auth()
        )
    ).json()
    names = [(t["name"], t["cadence"]) for t in month["account_targets"]]
    assert names == [
        ("corporate_settlement", "weekly"),
        ("corporate_settlement", "monthly"),
        ("basic_settlement", "monthly"),
    ]
    basic = next(t for t in month["account_targets"] if t["name"] == "basic_settlement")
    assert basic["target"] == "2.00"
    assert basic["actual"] == month["accounts_opened"].get("basic_settlement", 0)
    assert basic["met"] is (basic["actual"] >= 2)
    assert month["account_targets_met"] is all(t["met"] for t in month["account_targets"])
    # September 2026 is over: its ISO weeks by their Thursdays (Sep 3 ... Sep 24), each ≥ 1
    weekly = month["account_targets"][0]
    assert [(u["from"], u["to"]) for u in weekly["units"]] == [
        ("2026-08-31", "2026-09-06"),
        ("2026-09-07", "2026-09-13"),
        ("2026-09-14", "2026-09-20"),
        ("2026-09-21", "2026-09-27"),
    ]
    assert weekly["target"] == "4.00"
    assert weekly["met"] is all(u["actual"] >= 1 for u in weekly["units"])
    assert month["account_targets_status"] in ("met", "behind")
    week = (
        await client.get(
            "/v1/branches/b01/tally", params={"period": "week", "at": "2026-09-15"}, headers=auth()
        )
    ).json()
    assert [(t["name"], t["cadence"], t["target"]) for t in week["account_targets"]] == [
        ("corporate_settlement", "weekly", "1.00")
    ]


async def test_leaderboard_ranks_every_manager_of_the_branch(client: httpx.AsyncClient) -> None:
    params = {"period": "month", "at": "2026-09-15"}
    r = await client.get("/v1/branches/b01/leaderboard", params=params, headers=auth())
    assert r.status_code == 200
    board = r.json()
    items = board["items"]
    assert board["total"] == len(items) and board["next_cursor"] is None
    assert [i["rank"] for i in items] == list(range(1, len(items) + 1))
    keys = [(-Decimal(i["value"]), i["manager_id"]) for i in items]
    assert keys == sorted(keys)
    for i in items:
        assert i["value"] == i["tally"]["weighted_profit"]
        one = await client.get(
            f"/v1/managers/{i['manager_id']}/tally", params=params, headers=auth()
        )
        assert one.json()["weighted_profit"] == i["value"]
    # pages of two walk the same order
    seen, cursor = [], None
    while True:
        page = await client.get(
            "/v1/branches/b01/leaderboard",
            params={**params, "limit": 2, **({"cursor": cursor} if cursor else {})},
            headers=auth(),
        )
        seen += [i["manager_id"] for i in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [i["manager_id"] for i in items]


async def test_leaderboard_metrics_ties_and_errors(client: httpx.AsyncClient) -> None:
    params = {"period": "month", "at": "2026-09-15"}
    r = await client.get(
        "/v1/branches/b01/leaderboard", params={**params, "metric": "visits"}, headers=auth()
    )
    items = r.json()["items"]
    assert all(isinstance(i["value"], int) for i in items)
    assert [(-i["value"], i["manager_id"]) for i in items] == sorted(
        (-i["value"], i["manager_id"]) for i in items
    )
    for metric in ("transactions", "volume.asset", "accounts_opened", "new_basic_accounts"):
        r = await client.get(
            "/v1/branches/b01/leaderboard", params={**params, "metric": metric}, headers=auth()
        )
        assert r.status_code == 200, metric
    bad = await client.get(
        "/v1/branches/b01/leaderboard", params={**params, "metric": "nope"}, headers=auth()
    )
    assert bad.status_code == 422 and "weighted_profit" in bad.json()["detail"]
    assert (
        await client.get("/v1/branches/b01/leaderboard", params={"cursor": "zzz"}, headers=auth())
    ).status_code == 422
    sup = auth("supervisor", branches=["b02"])
    assert (await client.get("/v1/branches/b01/leaderboard", headers=sup)).status_code == 403
    mgr = auth("manager", manager_id="m006")
    assert (await client.get("/v1/branches/b01/leaderboard", headers=mgr)).status_code == 403
    assert (await client.get("/v1/branches/zz/leaderboard", headers=auth())).status_code == 404
    bank = await client.get("/v1/leaderboard", params=params, headers=auth())
    assert bank.status_code == 200 and bank.json()["total"] == 40
    assert (await client.get("/v1/leaderboard", headers=sup)).status_code == 403


async def test_evaluation_is_versioned_audited_and_scoped(client: httpx.AsyncClient) -> None:
    body = {"period": "year", "at": "2026-09-15", "points": "24.00", "reasons": "first"}
    # m036 is in branch b05
    other = auth("supervisor", branches=["b01"])
    assert (
        await client.put("/v1/managers/m036/evaluation", json=body, headers=other)
    ).status_code == 403
    own = auth("manager", manager_id="m036")
    assert (
        await client.put("/v1/managers/m036/evaluation", json=body, headers=own)
    ).status_code == 403
    sup = auth("supervisor", branches=["b05"])
    for bad in ({**body, "points": "31"}, {**body, "points": "-1"}, {**body, "reasons": ""}):
        r = await client.put("/v1/managers/m036/evaluation", json=bad, headers=sup)
        assert r.status_code == 422, bad
    first = await client.put("/v1/managers/m036/evaluation", json=body, headers=sup)
    second = await client.put(
        "/v1/managers/m036/evaluation",
        json={**body, "points": "26.50", "reasons": "corrected"},
        headers=sup,
    )
    assert first.status_code == second.status_code == 200
    v1, v2 = first.json()["version"], second.json()["version"]
    assert v2 == v1 + 1
    hist = await client.get(
        "/v1/managers/m036/evaluation", params={"period": "year", "at": "2026-01-01"}, headers=sup
    )
    assert [i["version"] for i in hist.json()["items"]][:2] == [v2, v1]
    a = await client.get(
        "/v1/managers/m036/assessment", params={"period": "year", "at": "2026-09-15"}, headers=sup
    )
    doc = a.json()
    assert doc["evaluation"]["source"] == "supervisor"
    assert doc["evaluation_points"] == "26.50"
    assert Decimal(doc["total_score"]) == Decimal(doc["performance_points"]) + Decimal("26.50")
    assert (
        await client.get("/v1/managers/m036/assessment", params={"period": "week"}, headers=sup)
    ).status_code == 422
    assert (await client.get("/v1/managers/nobody/assessment", headers=auth())).status_code == 404
