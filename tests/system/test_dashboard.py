"""The supervisors' dashboard in a real browser (Debian's Chromium driven by Playwright).

Events go to the real embedded broker, a real ``crm-tracker worker`` process applies them, the
API runs under uvicorn on a free port, and the page must show the change without a reload.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.auth import mint_token
from config import Settings
from crmtracker.broker import EmbeddedBroker, ensure_topics
from demo import DemoGenerator
from models.db import make_engine
from testkit.broker import isolated_settings, produce
from testkit.browser import chromium, new_page
from testkit.checks import counts
from testkit.db import fresh_database
from testkit.paths import ARTIFACTS
from testkit.process import WorkerProcess
from testkit.serving import ApiThread

pytestmark = pytest.mark.kafka

SECRET = "dashboard-test-secret-" + "y" * 32
TZ = ZoneInfo("Asia/Shanghai")
TOPICS = {  # demo topic roles -> topic names (produce() adds the test's prefix)
    "transactions": "bank.transactions",
    "accounts": "bank.accounts",
    "visits": "crm.visits",
    "clients": "crm.clients",
    "managers": "crm.managers",
}


@dataclass
class Stack:
    settings: Settings
    api: ApiThread
    worker: WorkerProcess
    engine: Any
    demo: DemoGenerator

    def token(self, role: str, **kw: Any) -> str:
        return mint_token(SECRET, role, **kw)

    async def has_route(self, path: str) -> bool:
        async with httpx.AsyncClient(base_url=self.api.base, timeout=10) as c:
            return path in (await c.get("/openapi.json")).json()["paths"]

    async def has_stream(self) -> bool:
        return await self.has_route("/v1/stream")

    async def get(self, path: str, token: str, **params: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.api.base, timeout=10) as c:
            return await c.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def _transaction(client_id: str, manager_id: str, profit: str) -> tuple[str, bytes, bytes]:
    envelope = {
        "event_id": str(uuid.uuid4()),
        "event_type": "transaction.posted",
        "schema_version": 1,
        "occurred_at": datetime.now(TZ).isoformat(timespec="seconds"),
        "source": "dashboard-test",
        "payload": {
            "client_id": client_id,
            "account_id": f"{client_id}-a1",
            "business_line": "intermediary",
            "product": "fee",
            "amount": "5000000.00",
            "simulated_profit": profit,
            "manager_id": manager_id,
        },
    }
    return "bank.transactions", client_id.encode(), json.dumps(envelope).encode()


def _client_below_floor(client_id: str, manager_id: str) -> tuple[str, bytes, bytes]:
    envelope = {
        "event_id": str(uuid.uuid4()),
        "event_type": "client.upserted",
        "schema_version": 1,
        "occurred_at": datetime.now(TZ).isoformat(timespec="seconds"),
        "source": "dashboard-test",
        "payload": {
            "client_id": client_id,
            "manager_id": manager_id,
            "tier": "gold",
            "origin": "marketed",
            "claim_ratio": "0.5",
        },
    }
    return "crm.clients", client_id.encode(), json.dumps(envelope).encode()


async def _settle(engine: Any, worker: WorkerProcess, timeout: float = 60) -> None:
    """Wait until the worker has applied everything sent (nothing held, counts steady)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int, int] | None = None
    steady = 0
    while time.monotonic() < deadline:
        seen = await counts(engine)
        if seen[0] > 0 and seen[2] == 0 and seen == last:
            steady += 1
            if steady >= 3:
                return
        else:
            steady = 0
        last = seen
        await asyncio.sleep(0.4)
    raise AssertionError(f"worker did not settle: {last}\n{worker.log_tail()}")


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with fresh_database("sqlite", tmp_path_factory.mktemp("dash-db")) as url:
        yield url


@pytest.fixture(scope="module")
async def stack(
    broker: EmbeddedBroker, sqlite_db: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Demo roster and some demo traffic, applied by a worker process; the API on a free port."""
    tmp = tmp_path_factory.mktemp("dash")
    settings = isolated_settings(broker.bootstrap, sqlite_db, tmp, auth_secret=SECRET)
    await ensure_topics(settings)
    demo = DemoGenerator(seed=7)
    messages = [*demo.reference_messages(), *demo.next_messages(300)]
    await produce(settings, ((TOPICS[m.topic_role], m.key, m.value) for m in messages))
    worker = WorkerProcess(settings, tmp / "worker.log")
    engine = make_engine(sqlite_db)
    worker.start()
    api = ApiThread(settings)
    try:
        await _settle(engine, worker)
        api.start()
        yield Stack(settings, api, worker, engine, demo)
    finally:
        api.stop()
        worker.stop()
        await engine.dispose()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """One browser for the module (the stack is the module's too)."""
    async with chromium() as b:
        yield b


def _shown(value: str) -> str:
    """What the page must show for a money string: thousand separators, two places."""
    whole, _, frac = value.partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}{int(whole.lstrip('-')):,}.{(frac + '00')[:2]}"


async def test_reminders_arrive_without_a_reload(
    stack: Stack, browser: Any, tmp_path: Path
) -> None:
    """The scheduler fires (and escalates) reminders for the demo's overdue clients; the open
    page lists them, told by the stream's reminder events (or by polling without a stream)."""
    if not await stack.has_route("/v1/reminders"):
        pytest.skip("no reminders on this server")
    token = stack.token("supervisor", branches=["b02"])
    page = await new_page(browser)
    await page.goto(f"{stack.api.base}/dashboard#token={token}")
    await page.locator("#overdue tbody tr").first.wait_for(timeout=15000)
    await page.wait_for_function(
        "() => document.querySelector('#reminders-count')?.textContent === '0'"
    )
    if await stack.has_stream():
        await page.locator("body[data-live=live]").wait_for(timeout=10000)
    scheduler = WorkerProcess(
        stack.settings,
        tmp_path / "scheduler.log",
        command="scheduler",
        env={"CRM_REMINDER_SCAN_SECONDS": "1"},  # scanning every second
    )
    scheduler.start()
    try:
        first = page.locator("#reminders tbody tr").first
        await first.wait_for(timeout=30000)
    finally:
        assert scheduler.stop() is not None, scheduler.log_tail()
    # what the page lists is what the API answers for this token
    want = 0
    for status in ("open", "escalated"):
        answer = (await stack.get("/v1/reminders", token, status=status, limit=1000)).json()
        assert all(i["branch_id"] == "b02" for i in answer["items"])
        want += len(answer["items"])
    await page.wait_for_function(
        "want => document.querySelector('#reminders-count')?.textContent === want",
        arg=f"{want:,}",
        timeout=10000,
    )
    assert await first.locator(".badge").text_content() in {"待处理", "已升级"}
    assert "m-b01" not in await page.locator("#reminders").inner_text()
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()


async def test_leaderboard_follows_new_events_without_a_reload(stack: Stack, browser: Any) -> None:
    admin = stack.token("admin")
    board = (await stack.get("/v1/branches/b01/leaderboard", admin)).json()
    before = {i["manager_id"]: i["value"] for i in board["items"]}
    target = min(before, key=lambda m: (float(before[m]), m))  # the last one climbs to the top

    streaming = await stack.has_stream()
    # a self-marketed client of b01 with a claim ratio below its 0.8 floor: a data-quality
    # exception the supervisor sees (applied as sent)
    await produce(stack.settings, [_client_below_floor("c-floor", target)])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = (await stack.get("/v1/data-quality?branch_id=b01", admin)).json()["items"]
        if any(i["client_id"] == "c-floor" for i in found):
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError(f"the client was not applied\n{stack.worker.log_tail()}")

    page = await new_page(browser)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    await page.goto(f"{stack.api.base}/dashboard?branch=b01#token={admin}")
    quality = page.locator('#quality tbody tr[data-client="c-floor"]')
    await quality.wait_for(timeout=15000)
    assert "0.5 < 0.8" in await quality.inner_text()
    row = page.locator(f'#leaderboard tr[data-manager="{target}"] .value')
    await row.wait_for(timeout=15000)
    assert (await row.text_content()) == _shown(before[target])
    # the token left the address bar and lives in this tab's sessionStorage only
    assert "token" not in page.url
    assert await page.evaluate("sessionStorage.getItem('crm-dashboard-token')") == admin
    assert await page.locator("#live").is_visible()
    if streaming:
        await page.locator("body[data-live=live]").wait_for(timeout=10000)
        assert await page.locator("#live-text").text_content() == "实时"
    else:  # no stream on this server: the page polls and says so
        assert await page.locator("#live-text").text_content() == "重新连接中"

    await page.evaluate("window.__marker = 42")  # gone if the page reloads
    await produce(stack.settings, [_transaction(stack.demo.client_ids[0], target, "888888.88")])
    deadline = time.monotonic() + 30
    after = before[target]
    while time.monotonic() < deadline and after == before[target]:
        await asyncio.sleep(0.3)
        board = (await stack.get("/v1/branches/b01/leaderboard", admin)).json()
        after = next(i["value"] for i in board["items"] if i["manager_id"] == target)
    assert after != before[target], stack.worker.log_tail()
    # the page follows by itself: same document (no reload), new number
    await page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.textContent === want",
        arg=[f'#leaderboard tr[data-manager="{target}"] .value', _shown(after)],
        timeout=5000 if streaming else 15000,
    )
    assert await page.evaluate("window.__marker") == 42
    # the token never travelled in a URL (the fragment stays in the browser; the API calls and
    # the stream carry it in the Authorization header)
    assert any("/v1/branches/b01/leaderboard" in u for u in urls)
    assert not [u for u in urls if admin in u.split("#")[0]]
    if streaming:
        assert any(u.endswith("/v1/stream") for u in urls)
    assert (
        await page.locator(f'#leaderboard tr[data-manager="{target}"] .rank').text_content() == "1"
    )
    await page.locator(f'#leaderboard tr[data-manager="{target}"]').click()
    await page.wait_for_function(
        "id => document.querySelector('#card-name')?.textContent.includes(id)", arg=target
    )
    await page.locator("#card-body .progress").wait_for(timeout=10000)
    # this year is still running: its pace against the pro-rated target, no annual judgement
    await page.locator("#card-body .pace").wait_for(timeout=10000)
    assert await page.locator("#card-body .judgement").count() == 0
    assert "走访" in await page.locator("#card-body .work-log").inner_text()
    # let the "changed" highlight fade before the picture
    await page.wait_for_function(
        "() => !document.getAnimations().some(a => a.animationName === 'flash')", timeout=10000
    )

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()


async def _bump(stack: Stack, token: str, branch: str) -> tuple[str, str]:
    """Send a large transaction for the branch's last manager; (manager, new value)."""
    path = f"/v1/branches/{branch}/leaderboard"
    before = {i["manager_id"]: i["value"] for i in (await stack.get(path, token)).json()["items"]}
    target = min(before, key=lambda m: (float(before[m]), m))
    await produce(stack.settings, [_transaction(stack.demo.client_ids[1], target, "99999.99")])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        items = (await stack.get(path, token)).json()["items"]
        after = next(i["value"] for i in items if i["manager_id"] == target)
        if after != before[target]:
            return target, after
        await asyncio.sleep(0.3)
    raise AssertionError(f"the event was not applied\n{stack.worker.log_tail()}")


async def test_without_the_stream_the_page_polls_and_says_reconnecting(
    stack: Stack, browser: Any
) -> None:
    token = stack.token("supervisor", branches=["b03"])
    page = await new_page(browser)
    await page.route("**/v1/stream*", lambda route: route.abort())  # the stream is down
    await page.goto(f"{stack.api.base}/dashboard#token={token}")
    await page.locator("#leaderboard tbody tr").first.wait_for()
    assert await page.locator("#live-text").text_content() == "重新连接中"
    assert await page.get_attribute("body", "data-live") == "reconnecting"
    target, after = await _bump(stack, token, "b03")
    await page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.textContent === want",
        arg=[f'#leaderboard tr[data-manager="{target}"] .value', _shown(after)],
        timeout=15000,  # polled every 5 s
    )
    if await stack.has_stream():  # the stream comes back: the page says live again
        await page.unroute("**/v1/stream*")
        await page.locator("body[data-live=live]").wait_for(timeout=40000)
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()


async def test_ops_sees_the_lag_panel_only(stack: Stack, browser: Any) -> None:
    token = stack.token("ops")
    page = await new_page(browser)
    real = await stack.has_route("/v1/ops/lag")
    if not real:
        # not on this server yet: answers shaped as CONTRACT.md §3 says, lag growing
        polls = {"n": 0}

        async def fake_lag(route: Any) -> None:
            polls["n"] += 1
            n = polls["n"]
            items = [
                {
                    "group": "crm-tracker",
                    "topic": "bank.transactions",
                    "partition": p,
                    "committed_offset": 100 * n,
                    "end_offset": 100 * n + p * n * 10,
                    "lag": p * n * 10,
                    "status": "OK" if p < 2 else "STALL",
                }
                for p in range(3)
            ]
            body = {"status": "STALL", "items": items, "next_cursor": None}
            await route.fulfill(json=body)

        await page.route("**/v1/ops/lag*", fake_lag)
    await page.goto(f"{stack.api.base}/dashboard#token={token}")
    await page.locator("#lag-panel").wait_for()
    for panel in ("leaderboard", "card", "overdue", "reminders", "quality"):
        assert await page.locator(f"#{panel}-panel").is_hidden()
    row = page.locator("#lag tbody tr").first
    await row.wait_for(timeout=15000)
    badges = await page.locator("#lag tbody .badge").all_text_contents()
    assert badges and set(badges) <= {"OK", "WARN", "REWIND", "STALL", "STOP"}
    # a sparkline drawn from repeated polls (every 5 s), kept in the page
    await page.locator("#lag svg.sparkline polyline").first.wait_for(
        state="attached", timeout=15000
    )
    assert await page.get_attribute("body", "data-live") == "live"  # ops live on the polls
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-ops.png"))
    if not real:
        assert await page.locator("#lag-status").text_content() == "STALL"
        stalled = page.locator("#lag tbody tr.status-stall")
        assert await stalled.count() == 1
        assert await stalled.locator(".num").text_content() == "40"  # 2 × 2 × 10, second poll
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()


async def test_a_manager_sees_only_their_own_card(stack: Stack, browser: Any) -> None:
    token = stack.token("manager", manager_id="m-b02-01")
    page = await new_page(browser)
    await page.goto(f"{stack.api.base}/dashboard#token={token}")
    await page.wait_for_function(
        "() => document.querySelector('#card-name')?.textContent.includes('m-b02-01')"
    )
    await page.locator("#card-body .stats").first.wait_for()
    assert await page.locator("#leaderboard-panel").is_hidden()
    assert await page.locator("#lag-panel").is_hidden()
    assert "m-b01" not in await page.locator("#board").inner_text()
    # the API refuses another branch to this token, whatever the page asked for
    status = await page.evaluate(
        """async t => (await fetch('/v1/branches/b01/leaderboard',
                {headers: {Authorization: 'Bearer ' + t}})).status""",
        token,
    )
    assert status == 403
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()


async def test_a_supervisor_is_told_no_for_another_branch(stack: Stack, browser: Any) -> None:
    token = stack.token("supervisor", branches=["b02"])
    page = await new_page(browser)
    await page.goto(f"{stack.api.base}/dashboard?branch=b01#token={token}")
    message = page.locator('#leaderboard-panel [data-role="message"]')
    await page.wait_for_function(
        "() => document.querySelector('#leaderboard-panel .message.forbidden')"
    )
    assert (await message.text_content()).startswith("无权查看")
    assert await page.locator("#leaderboard tbody tr").count() == 0
    assert "m-b01" not in await page.locator("#board").inner_text()
    # the token's own branch works from the same page
    options = await page.locator("#branch option").all_text_contents()
    assert "b02" in options
    await page.select_option("#branch", "b02")
    await page.locator('#leaderboard tr[data-manager="m-b02-01"]').wait_for()
    assert await page.locator("#leaderboard-panel .message.forbidden").count() == 0
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()


async def test_sign_in_box_language_wan_and_bank_today(stack: Stack, browser: Any) -> None:
    admin = stack.token("admin")
    page = await new_page(browser, timezone_id="Pacific/Honolulu")  # a day behind Shanghai at times
    await page.goto(f"{stack.api.base}/dashboard")
    await page.locator("#signin").wait_for()
    await page.fill("#token", "not-a-token")
    await page.click("#signin-form button")
    assert await page.locator("#signin-error").text_content() == "令牌格式不正确。"
    expired = mint_token(SECRET, "admin", ttl=timedelta(seconds=-60))
    await page.fill("#token", expired)
    await page.click("#signin-form button")
    assert "过期" in await page.locator("#signin-error").text_content()
    await page.fill("#token", admin)
    await page.click("#signin-form button")
    first = page.locator("#leaderboard tbody tr .value").first
    await first.wait_for()
    # "today" is the bank's date, not the browser's
    assert await page.input_value("#at") == datetime.now(TZ).date().isoformat()
    # 万元: money in units of 10,000 yuan, rounded half-up to two places
    raw = await first.get_attribute("data-raw")
    await page.check("#wan")
    await page.wait_for_function(
        "want => document.querySelector('#leaderboard tbody tr .value')?.textContent === want",
        arg=_wan(raw),
    )
    # English labels
    await page.click("#lang")
    assert await page.locator("#leaderboard-title").text_content() == "Branch leaderboard"
    await page.wait_for_function(
        "() => document.querySelector('#value-head')?.textContent === 'Weighted profit (×10k CNY)'"
    )
    await page.wait_for_function(
        "() => document.querySelector('#card-body .sub')?.textContent.startsWith('This month')"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-en.png"))
    assert await page.locator("#live-text").text_content() in ("live", "reconnecting")
    await page.click("#lang")
    assert await page.locator("#leaderboard-title").text_content() == "支行排行榜"
    # signing out forgets the token
    await page.select_option("#branch", "b03")  # remembered for the next visit ...
    await page.click("#signout")
    await page.locator("#signin").wait_for()
    assert await page.evaluate("sessionStorage.getItem('crm-dashboard-token')") is None
    # ... but not imposed on a token without that branch
    await page.fill("#token", stack.token("supervisor", branches=["b02"]))
    await page.click("#signin-form button")
    await page.locator('#leaderboard tr[data-manager="m-b02-01"]').wait_for()
    assert await page.input_value("#branch") == "b02"
    assert await page.locator("#leaderboard-panel .message.forbidden").count() == 0
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()


async def test_wall_mode_and_a_narrow_screen(stack: Stack, browser: Any) -> None:
    token = stack.token("supervisor", branches=["b01", "b03"])
    page = await new_page(browser, viewport={"width": 390, "height": 800})
    await page.goto(f"{stack.api.base}/dashboard#token={token}")
    await page.locator("#leaderboard tbody tr").first.wait_for()
    await page.locator("#overdue tbody tr").first.wait_for()
    assert await page.locator("#branch option").all_text_contents() == ["b01", "b03"]
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-narrow.png"), full_page=True)
    await page.set_viewport_size({"width": 1920, "height": 1080})
    await page.click("#wall")
    assert await page.evaluate("document.body.classList.contains('wall')")
    assert await page.locator("#controls").is_hidden()
    size = await page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert size >= 20
    await page.screenshot(path=str(ARTIFACTS / "dashboard-wall.png"))
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()


async def test_formatting_functions(stack: Stack, browser: Any) -> None:
    page = await new_page(browser)
    await page.goto(f"{stack.api.base}/dashboard")
    got = await page.evaluate(
        """async () => {
            const f = await import('/dashboard/format.js');
            const at = new Date('2026-11-24T17:30:00Z');  // 01:30 on the 25th in Shanghai
            return {
                money: f.formatMoney('1234567.89'),
                negative: f.formatMoney('-1234.5'),
                small: f.formatMoney('7'),
                wan: f.formatMoney('1234567.89', {wan: true}),
                wanHalf: f.formatMoney('50.00', {wan: true}),
                wanNeg: f.formatMoney('-15000.00', {wan: true}),
                huge: f.formatMoney('123456789012345678.99'),
                count: f.formatCount(1234567),
                ratio: f.formatRatio('0.4567'),
                sum: f.sumMoney(['0.10', '0.20', '1000000.01']),
                today: f.todayIn('Asia/Shanghai', at),
                todayLA: f.todayIn('America/Los_Angeles', at),
                week: f.isoWeek('2026-11-23'),
                week1: f.isoWeek('2026-12-28'),
                week2: f.isoWeek('2027-01-01'),
                month: f.periodLabel('month', {from: '2026-11-01', to: '2026-11-30'}, 'zh'),
                quarter: f.periodLabel('quarter', {from: '2026-10-01', to: '2026-12-31'}, 'en'),
                weekZh: f.periodLabel('week', {from: '2026-11-23', to: '2026-11-29'}, 'zh'),
                asOf: f.asOfLabel('2026-11-22T10:15:00+08:00'),
                due: f.dateIn('Asia/Shanghai', '2026-11-20T16:30:00+00:00'),
            };
        }"""
    )
    assert got == {
        "money": "1,234,567.89",
        "negative": "-1,234.50",
        "small": "7.00",
        "wan": "123.46",
        "wanHalf": "0.01",
        "wanNeg": "-1.50",
        "huge": "123,456,789,012,345,678.99",
        "count": "1,234,567",
        "ratio": "45.67%",
        "sum": "1000000.31",
        "today": "2026-11-25",
        "todayLA": "2026-11-24",
        "week": {"year": 2026, "week": 48},
        "week1": {"year": 2026, "week": 53},
        "week2": {"year": 2026, "week": 53},
        "month": "2026年11月",
        "quarter": "Q4 2026",
        "weekZh": "2026年第48周（11月23日–11月29日）",
        "asOf": "2026-11-22 10:15:00 (UTC+08:00)",
        "due": "2026-11-21",
    }
    await page.context.close()


def _wan(value: str) -> str:
    """Money in 万元 as the page must show it (half-up, two places, separators)."""
    from decimal import ROUND_HALF_UP, Decimal

    wan = (Decimal(value) / 10000).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"{wan:,.2f}"
