"""The visit follow-up routes: client, overdue, reminders, ack, snooze (both databases)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from config import Settings
from crmtracker.compose import api_app as create_app
from testkit.api import SECRET, asgi_client, auth
from testkit.reminders import World, day, iso


@pytest.fixture
async def api(world: World, db_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    w = world
    await w.client("c1", day(-100), manager="m1", tier="diamond")  # due day -70
    await w.client("c2", day(-50), manager="m1", tier="gold", credit_client=True)  # 10 / 40
    await w.client("c3", day(-95), manager="m2", tier="silver")  # due day -5
    await w.client("c4", day(-10), manager="m2", tier="bronze")  # due day 170
    w.clock.t = day(0)
    await w.scheduler.scan_once()
    settings = Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET)
    app = create_app(settings)
    app.state.now = w.clock
    async with asgi_client(app) as c:
        yield c


M1 = {"role": "manager", "manager_id": "m1"}
M2 = {"role": "manager", "manager_id": "m2"}
SUP_B2 = {"role": "supervisor", "branches": ["b2"]}


def h(who: dict[str, Any] | None = None) -> dict[str, str]:
    who = dict(who or {"role": "admin"})
    return auth(who.pop("role"), **who)


async def _reminder_of(api: httpx.AsyncClient, client_id: str) -> dict[str, Any]:
    r = await api.get("/v1/reminders", params={"client_id": client_id}, headers=h())
    [item] = r.json()["items"]
    return item


async def test_client_view(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/clients/c1", headers=h())
    assert r.status_code == 200
    doc = r.json()
    assert doc["client_id"] == "c1" and doc["tier"] == "diamond"
    assert doc["manager"] == {
        "manager_id": "m1",
        "name": None,
        "branch_id": "b1",
        "supervisor_id": "s1",
    }
    assert doc["visit_interval_days"] == 30 and doc["last_visit_at"] is None
    assert doc["next_visit_due"] == iso(day(-70).astimezone(doc_tz()))
    assert doc["overdue_days"] == {"visit": 70, "post_loan_check": None}
    [rem] = doc["open_reminders"]
    assert rem["kind"] == "visit" and rem["status"] == "escalated" and rem["overdue_days"] == 70

    doc = (await api.get("/v1/clients/c2", headers=h(M1))).json()
    assert doc["next_post_loan_due"] is not None and doc["post_loan_interval_days"] == 90
    assert doc["overdue_days"] == {"visit": None, "post_loan_check": None}
    assert doc["open_reminders"] == []


def doc_tz() -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("path", "who", "code"),
    [
        ("/v1/clients/nope", None, 404),
        ("/v1/clients/c3", M1, 403),
        ("/v1/clients/c1", M1, 200),
        ("/v1/clients/c3", SUP_B2, 200),
        ("/v1/clients/c1", SUP_B2, 403),
        ("/v1/clients/c1", {"role": "ops"}, 403),
        ("/v1/overdue?manager_id=m2", M1, 403),
        ("/v1/overdue?branch_id=b1", SUP_B2, 403),
        ("/v1/overdue?kind=lunch", None, 422),
        ("/v1/overdue?limit=0", None, 422),
        ("/v1/overdue?limit=1001", None, 422),
        ("/v1/overdue?cursor=!!", None, 422),
        ("/v1/overdue?cursor=WzEsMl0", None, 422),
        ("/v1/reminders?manager_id=m2", M1, 403),
        ("/v1/reminders?status=sleeping", None, 422),
        ("/v1/reminders?cursor=zzz", None, 422),
        ("/v1/reminders/deliveries", M1, 403),
        ("/v1/reminders/deliveries", {"role": "ops"}, 200),
        ("/v1/reminders/deliveries?status=lost", None, 422),
    ],
)
async def test_status_codes(
    api: httpx.AsyncClient, path: str, who: dict[str, Any] | None, code: int
) -> None:
    r = await api.get(path, headers=h(who))
    assert r.status_code == code, r.text
    assert "detail" in r.json() if code >= 400 else True


async def test_unauthenticated(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/overdue")).status_code == 401
    assert (await api.post("/v1/reminders/1/ack")).status_code == 401


async def test_overdue_worst_first_with_pagination(api: httpx.AsyncClient) -> None:
    r = await api.get("/v1/overdue", headers=h())
    doc = r.json()
    assert set(doc) == {"items", "next_cursor", "total"}
    assert [(i["client_id"], i["kind"], i["overdue_days"]) for i in doc["items"]] == [
        ("c1", "visit", 70),
        ("c3", "visit", 5),
    ]
    assert doc["total"] == 2 and doc["next_cursor"] is None
    assert doc["items"][0]["manager_id"] == "m1" and doc["items"][0]["due_at"].endswith("+08:00")

    first = (await api.get("/v1/overdue", params={"limit": 1}, headers=h())).json()
    assert [i["client_id"] for i in first["items"]] == ["c1"] and first["next_cursor"]
    second = (
        await api.get(
            "/v1/overdue", params={"limit": 1, "cursor": first["next_cursor"]}, headers=h()
        )
    ).json()
    assert [i["client_id"] for i in second["items"]] == ["c3"] and second["next_cursor"] is None

    assert [
        i["client_id"]
        for i in (await api.get("/v1/overdue?branch_id=b2", headers=h())).json()["items"]
    ] == ["c3"]
    assert [
        i["client_id"] for i in (await api.get("/v1/overdue", headers=h(M2))).json()["items"]
    ] == ["c3"]
    assert [
        i["client_id"] for i in (await api.get("/v1/overdue", headers=h(SUP_B2))).json()["items"]
    ] == ["c3"]
    assert (await api.get("/v1/overdue?kind=post_loan_check", headers=h())).json()["total"] == 0


async def test_overdue_ties_and_both_kinds(api: httpx.AsyncClient, world: World) -> None:
    world.clock.t = day(45)  # c2: visit due day 10, post-loan due day 40
    doc = (await api.get("/v1/overdue", params={"manager_id": "m1"}, headers=h())).json()
    assert [(i["client_id"], i["kind"], i["overdue_days"]) for i in doc["items"]] == [
        ("c1", "visit", 115),
        ("c2", "visit", 35),
        ("c2", "post_loan_check", 5),
    ]
    seen = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/overdue", params=params, headers=h())).json()
        seen += [(i["client_id"], i["kind"]) for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [("c1", "visit"), ("c3", "visit"), ("c2", "visit"), ("c2", "post_loan_check")]


async def test_reminder_list_scope_and_pagination(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/v1/reminders", headers=h())).json()
    assert [(i["client_id"], i["status"]) for i in doc["items"]] == [
        ("c1", "escalated"),
        ("c3", "open"),
    ]
    item = doc["items"][0]
    for key in (
        "reminder_id",
        "client_id",
        "manager_id",
        "supervisor_id",
        "kind",
        "due_at",
        "overdue_days",
        "status",
    ):
        assert key in item
    assert (await api.get("/v1/reminders?status=open", headers=h())).json()["total"] == 1
    mine = (await api.get("/v1/reminders", headers=h(M1))).json()
    assert [i["client_id"] for i in mine["items"]] == ["c1"]
    sup = (await api.get("/v1/reminders", headers=h(SUP_B2))).json()
    assert [i["client_id"] for i in sup["items"]] == ["c3"]
    p1 = (await api.get("/v1/reminders?limit=1", headers=h())).json()
    p2 = (await api.get(f"/v1/reminders?limit=1&cursor={p1['next_cursor']}", headers=h())).json()
    assert [i["client_id"] for i in p1["items"] + p2["items"]] == ["c1", "c3"]
    assert p2["next_cursor"] is None and p1["total"] == 2


async def test_ack(api: httpx.AsyncClient, world: World) -> None:
    rid = (await _reminder_of(api, "c1"))["reminder_id"]
    assert (await api.post(f"/v1/reminders/{rid}/ack", headers=h(M2))).status_code == 403
    assert (await api.post(f"/v1/reminders/{rid}/ack", headers=h(SUP_B2))).status_code == 403
    r = await api.post(f"/v1/reminders/{rid}/ack", headers=h(M1))
    assert r.status_code == 200 and r.json()["status"] == "acked"
    assert r.json()["acked_by"] == "m1" and r.json()["escalated_at"] is not None
    assert (await api.post("/v1/reminders/99999/ack", headers=h())).status_code == 404
    assert (await api.post("/v1/reminders/0/ack", headers=h())).status_code == 422
    assert (await api.post("/v1/reminders/abc/ack", headers=h())).status_code == 422

    rid3 = (await _reminder_of(api, "c3"))["reminder_id"]
    assert (await api.post(f"/v1/reminders/{rid3}/ack", headers=h(SUP_B2))).status_code == 200
    await world.visit("c3", day(0), by="m2")
    assert (await _reminder_of(api, "c3"))["status"] == "resolved"
    r = await api.post(f"/v1/reminders/{rid3}/ack", headers=h())
    assert r.status_code == 409 and "resolved" in r.json()["detail"]


async def test_snooze(api: httpx.AsyncClient) -> None:
    rid = (await _reminder_of(api, "c3"))["reminder_id"]
    url = f"/v1/reminders/{rid}/snooze"
    bad = [
        {"until": iso(day(-1))},
        {"until": iso(day(14) + timedelta(seconds=1))},
        {"until": "2026-03-05T10:00:00"},  # no offset
        {"until": "soon"},
        {},
    ]
    for body in bad:
        r = await api.post(url, json=body, headers=h(M2))
        assert r.status_code == 422, (body, r.text)
    assert (await api.post(url, content=b"not json", headers=h(M2))).status_code == 422
    assert (await api.post(url, json={"until": iso(day(3))}, headers=h(M1))).status_code == 403
    r = await api.post(url, json={"until": iso(day(14))}, headers=h(M2))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["status"] == "snoozed" and doc["snoozed_until"].startswith("2026-03-16")
    assert (
        await api.post("/v1/reminders/424242/snooze", json={"until": iso(day(3))}, headers=h())
    ).status_code == 404
