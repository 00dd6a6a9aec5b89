"""Trend series: exact daily and monthly points, running totals, the pro-rated target."""

from __future__ import annotations

import httpx

from testkit.book import auth


async def test_daily_and_monthly_series(api: httpx.AsyncClient) -> None:
    h = auth("manager", manager_id="m1")
    doc = (await api.get("/v1/managers/m1/series", headers=h)).json()  # this month (NOW)
    assert doc["period"] == {"from": "2026-11-01", "to": "2026-11-30"} and doc["step"] == "day"
    pts = {p["from"]: p for p in doc["points"]}
    assert len(pts) == 30
    assert pts["2026-11-03"]["value"] == "1600.00"
    assert pts["2026-11-05"]["value"] == "9.01" and pts["2026-11-05"]["cumulative"] == "1609.01"
    assert pts["2026-11-19"]["cumulative"] == "1875.67"  # 1600 + 9.009 + 266.664, once
    assert pts["2026-11-30"]["cumulative"] == "1875.67"
    # target 365,000 a year: 1,000 a day
    assert doc["target"] == "30000.00" and pts["2026-11-10"]["target_to_date"] == "10000.00"

    doc = (
        await api.get("/v1/managers/m1/series?step=month&from=2026-01-01&to=2026-12-31", headers=h)
    ).json()
    assert [p["from"][:7] for p in doc["points"]] == [f"2026-{m:02d}" for m in range(1, 13)]
    by = {p["from"][:7]: p for p in doc["points"]}
    assert by["2026-10"]["value"] == "4000.00" and by["2026-11"]["value"] == "1875.67"
    assert by["2026-12"]["cumulative"] == "5875.67" and doc["target"] == "365000.00"

    sup = auth("supervisor", branches=["b1"])
    b = (
        await api.get(
            "/v1/branches/b1/series?metric=transactions&from=2026-11-01&to=2026-11-30", headers=sup
        )
    ).json()
    assert b["points"][-1]["cumulative"] == 3 and b["target"] is None
    for q in (
        "?metric=nope",
        "?from=2026-11-05&to=2026-11-01",
        "?from=2020-01-01&to=2026-01-01",
        "?step=week",
        "?from=9999-12-01",
    ):
        r = await api.get("/v1/managers/m1/series" + q, headers=h)
        assert r.status_code == 422, q
    assert (await api.get("/v1/branches/b1/series", headers=h)).status_code == 403
