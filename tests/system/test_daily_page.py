"""The dashboard's daily-work views in Debian's Chromium (Playwright): trend charts drawn by
plotly.js (served from the installed package) from the series routes, coverage, a departed
manager's clients, and the weekly report downloaded."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import openpyxl

from api.auth import mint_token
from config import Settings
from models.db import make_engine
from models.policy import Policy
from streams.apply import Applier
from testkit.browser import new_page
from testkit.feed import Feed, env, tx
from testkit.paths import ARTIFACTS
from testkit.serving import ApiThread

SECRET = "daily-page-secret-" + "d" * 40
TZ = ZoneInfo("Asia/Shanghai")


async def fill(url: str) -> None:
    now = datetime.now(TZ)
    first = now.replace(day=1, hour=0, minute=0, second=1, microsecond=0)
    year_ago = (first - timedelta(days=300)).replace(day=1)
    feed = Feed()
    applier = Applier(make_engine(url, writer=True), Policy())
    t0 = (year_ago - timedelta(days=5)).isoformat()
    await applier.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    "m1",
                    "manager.upserted",
                    t0,
                    manager_id="m1",
                    branch_id="b1",
                    name="王经理",
                    annual_profit_target="3650000",
                ),
            ),
            feed.msg(
                "crm.managers",
                env("m2", "manager.upserted", t0, manager_id="m2", branch_id="b1", active=False),
            ),
            feed.msg(
                "crm.clients",
                env("c1", "client.upserted", t0, client_id="c1", manager_id="m1", tier="gold"),
            ),
            feed.msg(
                "crm.clients",
                env("c2", "client.upserted", t0, client_id="c2", manager_id="m2", tier="silver"),
            ),
        ]
    )
    msgs = [
        feed.msg(
            "bank.transactions", tx("now1", first.isoformat(), "c1", "intermediary", "4321.50")
        ),
        feed.msg("bank.transactions", tx("old1", year_ago.isoformat(), "c1", "liability", "12000")),
        feed.msg(
            "crm.visits",
            env(
                "v1",
                "visit.logged",
                first.isoformat(),
                client_id="c1",
                manager_id="m1",
                method="on_site",
                kind="routine",
            ),
        ),
    ]
    for i in range(1, 10):  # something in each of the last months
        at = (first - timedelta(days=31 * i - 10)).isoformat()
        msgs.append(feed.msg("bank.transactions", tx(f"m{i}", at, "c1", "asset", f"{1000 * i}.10")))
    await applier.apply(msgs)
    await applier.engine.dispose()


async def test_charts_coverage_departures_and_the_weekly_report(
    sqlite_url: str,
    tmp_path: Path,
    browser: Any,
) -> None:
    await fill(sqlite_url)
    api = ApiThread(
        Settings(
            database_url=sqlite_url, data_dir=tmp_path, auth_secret=SECRET, lag_sample_seconds=0
        )
    )
    api.start()
    try:
        token = mint_token(SECRET, "supervisor", branches=["b1"])
        async with httpx.AsyncClient(base_url=api.base) as c:
            h = {"Authorization": f"Bearer {token}"}
            series = (await c.get("/v1/branches/b1/series", headers=h)).json()
            months = (
                await c.get(
                    "/v1/branches/b1/series",
                    headers=h,
                    params={
                        "step": "month",
                        "from": series["period"]["from"][:5] + "01-01",
                        "to": series["period"]["to"],
                    },
                )
            ).json()
            js = await c.get("/dashboard/plotly.min.js")
            assert js.status_code == 200 and js.headers["content-type"].startswith(
                "text/javascript"
            )
        page = await new_page(browser)
        await page.goto(f"{api.base}/dashboard#token={token}")
        await page.wait_for_selector("#chart-burnup .main-svg")
        await page.wait_for_selector("#chart-months .main-svg")
        # the burn-up is drawn from the series: its points, the API's figures
        drawn = await page.evaluate("document.getElementById('chart-burnup').data[0].y")
        today = datetime.now(TZ).date().isoformat()
        want = [Decimal(p["cumulative"]) for p in series["points"] if p["from"] <= today]
        assert [Decimal(str(v)) for v in drawn] == want
        assert want[0] == Decimal("8643.00")  # 4321.50 × 2.0
        target = await page.evaluate("document.getElementById('chart-burnup').data[1].y")
        assert [Decimal(str(v)) for v in target] == [
            Decimal(p["target_to_date"]) for p in series["points"]
        ]
        bars = await page.evaluate("document.getElementById('chart-months').data[0].y")
        assert len(bars) == 12 and Decimal(str(bars[-1])) == Decimal("8643.00")
        assert Decimal(str(sum(bars))) > 0 and months["points"]
        # a manager's daily bars after a click in the leaderboard
        await page.click("#leaderboard tbody tr[data-manager='m1']")
        await page.wait_for_selector("#chart-daily .main-svg")
        daily = await page.evaluate("document.getElementById('chart-daily').data[0].y")
        assert Decimal(str(daily[0])) == Decimal("8643.00")
        # coverage, and the departed manager's client waiting for reassignment
        await page.wait_for_selector("#coverage tbody tr")
        assert "50" in await page.inner_text("#coverage-share")  # 1 of 2 clients visited
        await page.wait_for_selector("#unassigned tbody tr[data-client='c2']")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-trends.png"), full_page=True)
        # the weekly report, downloaded from the page
        async with page.expect_download() as info:
            await page.click("#weekly-report")
        download = await info.value
        assert download.suggested_filename.startswith("weekly-b1-")
        saved = tmp_path / download.suggested_filename
        await download.save_as(saved)
        wb = openpyxl.load_workbook(io.BytesIO(saved.read_bytes()))
        values = list(wb.worksheets[0].iter_rows(values_only=True))
        assert values[0][0].endswith("b1")
        assert any(v and v[0] == "m1" for v in values)
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        api.stop()
