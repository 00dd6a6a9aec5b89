"""Branch new-account targets week by week, through the real apply step and the branch tally
route, on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.auth import mint_token
from config import Settings
from crmtracker.compose import api_app as create_app
from models.db import make_engine
from models.policy import Policy
from streams.apply import Applier
from testkit.api import asgi_client
from testkit.feed import Feed, env

SECRET = "accounts-secret-" + "a" * 40


async def test_a_month_with_a_week_lacking_an_account_is_behind(
    db_url: str, tmp_path: Path
) -> None:
    """Branch ba, November 2026 (over by the time of the test run, 2026-12 or later).
    Accounts opened (bank time): general settlement ×2 on Nov 3, basic ×1 on Nov 10, basic
    ×2 on Nov 25, and a payroll account (not a corporate settlement type) on Nov 18.
    ISO weeks of November by their Thursdays: 2-8 (2), 9-15 (1), 16-22 (0: payroll does not
    count), 23-29 (2). Monthly: corporate settlement 5 ≥ 4 met, basic 3 ≥ 2 met. Weekly:
    16-22 is short → the weekly rule, and so the month, is behind. The week Nov 30 - Dec 6
    belongs to December (Thursday Dec 3) and is not judged here."""
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    "ma-up",
                    "manager.upserted",
                    "2026-01-01T09:00:00+08:00",
                    manager_id="ma",
                    branch_id="ba",
                ),
            )
        ]
    )
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    "ca-up",
                    "client.upserted",
                    "2026-01-01T09:00:00+08:00",
                    client_id="ca",
                    manager_id="ma",
                ),
            )
        ]
    )

    def opened(n: int, day: str, kind: str) -> Any:
        return feed.msg(
            "bank.accounts",
            env(
                f"acc{n}",
                "account.opened",
                f"2026-11-{day}T10:00:00+08:00",
                client_id="ca",
                account_id=f"a{n}",
                account_type=kind,
            ),
        )

    await applier.apply(
        [
            opened(1, "03", "general_settlement"),
            opened(2, "03", "general_settlement"),
            opened(3, "10", "basic_settlement"),
            opened(4, "18", "payroll"),
            opened(5, "25", "basic_settlement"),
            opened(6, "25", "basic_settlement"),
        ]
    )
    await engine.dispose()
    app = create_app(Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET))
    headers = {"Authorization": f"Bearer {mint_token(SECRET, 'supervisor', branches=['ba'])}"}
    async with asgi_client(app) as c:
        r = await c.get(
            "/v1/branches/ba/tally",
            params={"period": "month", "at": "2026-11-15"},
            headers=headers,
        )
    assert r.status_code == 200, r.text
    doc = r.json()
    weekly, corp, basic = doc["account_targets"]
    assert [(u["from"], u["actual"], u["status"]) for u in weekly["units"]] == [
        ("2026-11-02", 2, "met"),
        ("2026-11-09", 1, "met"),
        ("2026-11-16", 0, "behind"),
        ("2026-11-23", 2, "met"),
    ]
    assert (weekly["status"], weekly["met"]) == ("behind", False)
    assert (corp["actual"], corp["target"], corp["met"]) == (5, "4.00", True)
    assert (basic["actual"], basic["target"], basic["met"]) == (3, "2.00", True)
    assert doc["account_targets_met"] is False
    assert doc["account_targets_status"] == "behind"
