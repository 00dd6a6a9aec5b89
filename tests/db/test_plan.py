"""The visit plan (7 / 30 days) and its iCalendar feed with a revocable per-manager token."""

from __future__ import annotations

from datetime import date

import httpx
from icalendar import Calendar
from sqlalchemy import select

from models.db import make_engine
from models.tables import AuditRow, FeedTokenRow
from testkit.book import auth


async def test_plan_windows(api: httpx.AsyncClient) -> None:
    h = auth("manager", manager_id="m1")
    body = (await api.get("/v1/managers/m1/plan?days=7", headers=h)).json()
    got = [(i["client_id"], i["kind"], i["status"], i["overdue_days"]) for i in body["items"]]
    # by due instant: c1's post-loan check (2026-04-02), then c2's visit (2026-06-30)
    assert got == [("c1", "post_loan_check", "overdue", 232), ("c2", "visit", "overdue", 143)]
    assert body["total"] == 2 and body["next_cursor"] is None
    sup = auth("supervisor", branches=["b1"])
    assert (await api.get("/v1/managers/m2/plan?days=7", headers=sup)).json()["items"] == []
    (c3,) = (await api.get("/v1/managers/m2/plan?days=30", headers=sup)).json()["items"]
    assert c3["client_id"] == "c3" and c3["status"] == "due" and c3["days_left"] == 21
    assert c3["due_at"] == "2026-12-11T10:00:00+08:00"
    for q in ("?days=14", "?days=x", "?days=7&limit=0"):
        assert (await api.get("/v1/managers/m1/plan" + q, headers=h)).status_code == 422, q
    assert (
        await api.get("/v1/managers/m1/plan", headers=auth("manager", manager_id="m2"))
    ).status_code == 403
    page = (await api.get("/v1/managers/m1/plan?days=7&limit=1", headers=h)).json()
    nxt = await api.get(
        f"/v1/managers/m1/plan?days=7&limit=1&cursor={page['next_cursor']}", headers=h
    )
    assert [i["client_id"] for i in page["items"] + nxt.json()["items"]] == ["c1", "c2"]


async def test_calendar_feed_holds_the_plan_and_is_revocable(
    api: httpx.AsyncClient,
    db_url: str,
) -> None:
    h = auth("manager", manager_id="m1")
    assert (
        await api.post("/v1/managers/m1/feed-token", headers=auth("manager", manager_id="m2"))
    ).status_code == 403
    r = await api.post("/v1/managers/m1/feed-token", headers=h)
    assert r.status_code == 200, r.text
    token, url = r.json()["token"], r.json()["url"]
    assert url.endswith(f"/v1/calendar/{token}.ics")
    feed = await api.get(f"/v1/calendar/{token}.ics")  # no bearer: the token is the key
    assert feed.status_code == 200
    assert feed.headers["content-type"].startswith("text/calendar")
    cal = Calendar.from_ical(feed.content)
    events = [c for c in cal.walk("VEVENT")]
    plan = (await api.get("/v1/managers/m1/plan?days=30", headers=h)).json()["items"]
    assert len(events) == len(plan) == 2
    for ev, item in zip(events, plan, strict=True):
        assert item["client_id"] in str(ev["summary"])
        assert str(ev["uid"]).startswith(f"{item['client_id']}-{item['kind']}-")
        assert ev.decoded("dtstart") == date(2026, 11, 20)  # overdue: on today
        assert "逾期" in str(ev["summary"])
    assert "Acme" not in feed.text  # client names stay out of the feed

    # a supervisor revokes (a lost phone): the feed is gone, a new token works
    sup = auth("supervisor", branches=["b1"])
    r = await api.delete("/v1/managers/m1/feed-token", headers=sup)
    assert r.json() == {"manager_id": "m1", "revoked": 1}
    assert (await api.get(f"/v1/calendar/{token}.ics")).status_code == 401
    assert (await api.get("/v1/calendar/cal_nothing-here.ics")).status_code == 401
    again = (await api.post("/v1/managers/m1/feed-token", headers=sup)).json()["token"]
    assert (await api.get(f"/v1/calendar/{again}.ics")).status_code == 200

    engine = make_engine(db_url)
    async with engine.connect() as conn:
        hashes = (await conn.execute(select(FeedTokenRow.token_hash))).scalars().all()
        actions = (
            (await conn.execute(select(AuditRow.action).order_by(AuditRow.id))).scalars().all()
        )
    await engine.dispose()
    assert token not in hashes and len(hashes) == 2  # kept as hashes only
    assert actions == ["feed_token.created", "feed_token.revoked", "feed_token.created"]
