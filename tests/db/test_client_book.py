"""The client book and visit coverage (走访覆盖率), on both databases, by the real apply step."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx

from config import Settings
from crmtracker.compose import api_app as create_app
from models.policy import Policy
from streams.apply import Applier
from testkit.api import asgi_client
from testkit.book import NOW, SECRET, TZ, auth, fill_book
from testkit.db import Engines
from testkit.feed import Feed, env


async def test_book_items_sorting_filters_and_pages(api: httpx.AsyncClient) -> None:
    h = auth("manager", manager_id="m1")
    body = (await api.get("/v1/managers/m1/clients", headers=h)).json()
    assert [i["client_id"] for i in body["items"]] == ["c1", "c2"] and body["total"] == 2
    c1, c2 = body["items"]
    assert c1["tier"] == "gold" and c1["credit_client"] is True
    assert c1["claim_ratio"] == "0.8000" and c2["claim_ratio"] == "1.0000"
    # 1000 × 2.0 × 0.8 + 333.33 × 1.0 × 0.8 = 1866.664 (October's 5000 not in November)
    assert c1["weighted_profit_month"] == "1866.66"
    assert c2["weighted_profit_month"] == "9.01"  # 10.01 × 0.9 = 9.009
    assert c1["last_visit_at"] == "2026-11-10T10:00:00+08:00"
    assert c1["next_visit_due"] == "2027-01-09T10:00:00+08:00"
    assert c1["overdue_days"] == {"visit": None, "post_loan_check": 232}
    assert c1["next_post_loan_due"] == "2026-04-02T09:00:00+08:00"
    assert c2["last_visit_at"] is None
    assert c2["next_visit_due"] == "2026-06-30T09:00:00+08:00"
    assert c2["overdue_days"]["visit"] == 143 and c2["next_post_loan_due"] is None
    assert c1["month"] == {"from": "2026-11-01", "to": "2026-11-30"}

    async def ids(q: str) -> list[str]:
        r = await api.get("/v1/managers/m1/clients" + q, headers=h)
        assert r.status_code == 200, r.text
        return [i["client_id"] for i in r.json()["items"]]

    assert await ids("?sort=weighted_profit_month&order=desc") == ["c1", "c2"]
    assert await ids("?sort=weighted_profit_month") == ["c2", "c1"]
    assert await ids("?sort=tier") == ["c1", "c2"]
    assert await ids("?sort=overdue_days&order=desc") == ["c1", "c2"]  # 232 days, 143
    assert await ids("?sort=overdue_days") == ["c2", "c1"]
    assert await ids("?sort=last_visit_at&order=desc") == ["c1", "c2"]  # missing last
    assert await ids("?credit=true") == ["c1"]
    assert await ids("?tier=bronze") == ["c2"]
    assert await ids("?segment=corporate") == ["c1"]
    assert await ids("?q=acm") == ["c1"]
    assert await ids("?overdue=false") == []
    r = (await api.get("/v1/managers/m1/clients?limit=1&sort=tier&order=desc", headers=h)).json()
    assert [i["client_id"] for i in r["items"]] == ["c2"] and r["total"] == 2
    r2 = await api.get(
        f"/v1/managers/m1/clients?limit=1&sort=tier&order=desc&cursor={r['next_cursor']}",
        headers=h,
    )
    assert [i["client_id"] for i in r2.json()["items"]] == ["c1"]
    assert r2.json()["next_cursor"] is None
    # a cursor belongs to its query
    bad = await api.get(f"/v1/managers/m1/clients?limit=1&cursor={r['next_cursor']}", headers=h)
    assert bad.status_code == 422
    for q in ("?sort=nope", "?order=up", "?tier=tin", "?credit=maybe", "?limit=0", "?cursor=xx"):
        assert (await api.get("/v1/managers/m1/clients" + q, headers=h)).status_code == 422, q
    other = await api.get("/v1/managers/m1/clients", headers=auth("manager", manager_id="m2"))
    assert other.status_code == 403


async def test_coverage_of_a_manager_and_a_branch(api: httpx.AsyncClient) -> None:
    q = "?from=2026-11-01&to=2026-11-30"
    m1 = (
        await api.get("/v1/managers/m1/coverage" + q, headers=auth("manager", manager_id="m1"))
    ).json()
    assert m1["clients"] == 2 and m1["covered"] == 1 and m1["coverage"] == "0.5000"
    assert m1["never_visited"] == 1
    assert m1["overdue"] == {"visit": 1, "post_loan_check": 1}
    assert m1["visits"] == 2 and m1["visits_per_client"] == "1.00"  # m1 also visited c3
    b1 = (
        await api.get("/v1/branches/b1/coverage" + q, headers=auth("supervisor", branches=["b1"]))
    ).json()
    assert b1["clients"] == 3 and b1["covered"] == 2 and b1["coverage"] == "0.6667"
    assert b1["visits"] == 3 and b1["visits_per_client"] == "1.00"
    assert [m["manager_id"] for m in b1["managers"]] == ["m1", "m2"]
    assert b1["managers"][1]["coverage"] == "1.0000"
    r = await api.get("/v1/branches/b1/coverage" + q, headers=auth("supervisor", branches=["b2"]))
    assert r.status_code == 403
    r = await api.get(
        "/v1/branches/b1/coverage?from=2026-11-30&to=2026-11-01", headers=auth("admin")
    )
    assert r.status_code == 422


async def test_a_departed_managers_clients_go_to_the_supervisor_at_once(
    db_url: str, tmp_path: Path, engines: Engines
) -> None:
    from scheduler.service import ReminderScheduler

    await fill_book(db_url)
    engine = engines(db_url, writer=True)
    # m2 leaves: c3 (diamond, 30 days, last visit 2026-11-11) is due 2026-12-11
    leave = env(
        "m2-left",
        "manager.upserted",
        "2026-11-21T09:00:00+08:00",
        manager_id="m2",
        branch_id="b1",
        active=False,
        supervisor_id="s-b1",
    )
    # and m1 (still here) gets c5, due on the same day as c3
    c5 = env(
        "c5",
        "client.upserted",
        "2026-12-01T10:00:00+08:00",
        client_id="c5",
        manager_id="m1",
        visit_interval_days=10,
    )
    feed = Feed()
    await Applier(engine, Policy()).apply(
        [feed.msg("crm.managers", leave), feed.msg("crm.clients", c5)]
    )
    settings = Settings(
        database_url=db_url, data_dir=tmp_path, auth_secret=SECRET, lag_sample_seconds=0
    )
    app = create_app(settings)
    app.state.now = lambda: NOW
    async with asgi_client(app) as c:
        r = await c.get("/v1/branches/b1/unassigned", headers=auth("supervisor", branches=["b1"]))
        assert r.status_code == 200, r.text
        (item,) = r.json()["items"]
        assert item["client_id"] == "c3" and item["manager_id"] == "m2"
        assert item["next_visit_due"] == "2026-12-11T10:00:00+08:00"
        for role in (auth("supervisor", branches=["b2"]), auth("manager", manager_id="m1")):
            assert (await c.get("/v1/branches/b1/unassigned", headers=role)).status_code == 403

    # two hours after c3 (m2's, departed) and c5 (m1's) came due: c3's reminder goes to the
    # supervisor at once; c5's waits out the grace period
    at = datetime(2026, 12, 11, 12, 0, tzinfo=TZ)
    await ReminderScheduler(settings, engine, targets=[], now=lambda: at).scan_once()
    from sqlalchemy import select

    from models.tables import ReminderRow

    async with engine.connect() as conn:
        rows = {(r.client_id, r.kind): r for r in (await conn.execute(select(ReminderRow))).all()}
    assert rows[("c3", "visit")].status == "escalated"
    assert rows[("c3", "visit")].supervisor_id == "s-b1"
    assert rows[("c5", "visit")].status == "open"
    assert rows[("c5", "visit")].escalated_at is None
