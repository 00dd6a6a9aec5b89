"""The dashboard opens a client's visit ledger on a click (Debian's Chromium, Playwright):
the API under uvicorn on a free port, the data applied by the real apply step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.auth import mint_token
from config import Settings
from testkit.browser import new_page
from testkit.ledger import SECRET, audit_rows, fill, note
from testkit.paths import ARTIFACTS
from testkit.serving import ApiThread


async def test_a_click_on_an_overdue_client_opens_its_visits(
    sqlite_url: str, tmp_path: Path, browser: Any
) -> None:
    await fill(sqlite_url)  # c1 (every 10 days) last visited 2026-11-06: overdue
    api = ApiThread(
        Settings(
            database_url=sqlite_url, data_dir=tmp_path, auth_secret=SECRET, lag_sample_seconds=0
        )
    )
    api.start()
    try:
        page = await new_page(browser)
        token = mint_token(SECRET, "supervisor", branches=["b1"])
        await page.goto(f"{api.base}/dashboard#token={token}")
        await page.wait_for_selector("#reminders tbody tr[data-client='c1'], #overdue tbody tr")
        rows = page.locator("#overdue tbody tr[data-client='c1']")
        if await rows.count() == 0:  # not overdue on this clock: open it from the reminders
            rows = page.locator("#reminders tbody tr[data-client='c1']")
        await rows.first.click()
        panel = page.locator("#history-panel")
        await panel.wait_for(state="visible")
        await page.wait_for_selector("#history tbody tr[data-event='v2']")
        events = await page.locator("#history tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.event)"
        )
        assert events == ["v4", "v2", "v3", "v1"]
        assert note(2) in await page.locator("#history tbody tr[data-event='v2']").inner_text()
        assert "上门" in await panel.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-visits.png"), full_page=True)
        assert [a.subject for a in await audit_rows(sqlite_url)] == ["client:c1"]
        assert page.errors == []  # type: ignore[attr-defined]
    finally:
        api.stop()
