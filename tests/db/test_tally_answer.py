"""A manager's tally answer, read on the driver (``models.tally.manager_parts``: the figures,
the balance rows and only the handed-over clients the manager held or holds, in one read),
is byte for byte (``as_of`` aside) the answer composed from the SQLAlchemy reads the rest of
the product uses (``manager_totals`` + ``add_handover_profit``, ``average_documents``,
``target_history``, ``hired_dates``), on a book with hand-overs (moved weighted profit and
deposit base), a manager who left, targets, hiring dates during the periods and nightly
balances; SQLite and PostgreSQL."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

from api.routes.tally import manager_tally_answer
from config import Settings
from crmtracker.compose import api_app
from models.balances import add_handover_profit, average_documents, handover_split
from models.policy import period_range
from models.tally import (
    hired_dates,
    manager_totals,
    period_target,
    tally_document,
    target_document,
    target_history,
)
from testkit.api import SECRET, asgi_client, auth
from testkit.tally_book import apply_book, tally_book

AS_OF = re.compile(rb'"as_of":"[^"]*"')
QUERIES: list[dict[str, str]] = [
    {"period": "month", "at": "2026-09-15"},
    {"period": "month", "at": "2026-10-15"},
    {"period": "month", "at": "2026-11-15"},
    {"period": "month"},  # today's month: a running period
    {"period": "quarter", "at": "2026-10-01"},
    {"period": "year", "at": "2026-06-01"},
    {"period": "week", "at": "2026-10-20"},
    {"period": "day", "at": "2026-11-02"},
    {"from": "2026-08-03", "to": "2026-12-31"},
    {"period": "month", "at": "2027-02-10"},  # after today: nothing counted yet
]


async def _expected(
    conn: Any, settings: Any, mid: str, branch: str, start: date, end: date, today: date
) -> bytes:
    """The answer as the route composed it from the generic reads."""
    totals = await manager_totals(conn, mid, start, end)
    await add_handover_profit(conn, "manager", {mid: totals}, start, end, settings.policy)
    doc = tally_document(("manager_id", mid), start, end, totals, settings.tz)
    doc["branch_id"] = branch
    doc["average_balance"] = (
        await average_documents(conn, "manager", [mid], start, end, today, settings.policy)
    )[mid]
    history = (await target_history(conn, [mid]))[mid]
    hired = (await hired_dates(conn, [mid]))[mid]
    target = period_target(history, start, end, settings.tz, hired)
    doc["target"] = target_document(target, totals["weighted_profit"], start, end, today)
    return manager_tally_answer.encode(doc)


async def test_driver_answers_equal_the_generic_reads(db_url: str, tmp_path: Path) -> None:
    log, snaps = tally_book(5, events=2_500, managers=8, branches=2, clients=80, transfers=14)
    writer = await apply_book(db_url, log, snaps, Settings().policy)
    settings = Settings(
        database_url=db_url, data_dir=tmp_path, auth_secret=SECRET, api_read_cache=False
    )
    app = api_app(settings)
    seen = {"moved": 0, "kept": 0, "balances": 0, "hired": 0, "targets": 0}
    try:
        async with asgi_client(app) as client, writer.connect() as conn:
            api = app.state.settings
            for mid, branch in sorted(log.manager_branch.items()):
                for query in QUERIES:
                    r = await client.get(f"/v1/managers/{mid}/tally", params=query, headers=auth())
                    assert r.status_code == 200, r.text
                    today = datetime.now(api.tz).date()
                    if "from" in query:
                        start, end = (
                            date.fromisoformat(query["from"]),
                            date.fromisoformat(query["to"]),
                        )
                    else:
                        at = date.fromisoformat(query["at"]) if "at" in query else today
                        start, end = period_range(query["period"], at)
                    want = await _expected(conn, api, mid, branch, start, end, today)
                    await conn.rollback()
                    assert AS_OF.sub(b"", r.content) == AS_OF.sub(b"", want), (mid, query)
                    # what the book must exercise for the comparison to mean anything
                    doc = r.json()
                    bare = await manager_totals(conn, mid, start, end)
                    await conn.rollback()
                    seen["moved"] += doc["weighted_profit"] != f"{bare['weighted_profit']:.2f}"
                    kept = await handover_split(
                        conn, "manager", [mid], start, min(end, today), api.policy
                    )
                    await conn.rollback()
                    seen["kept"] += bool(kept.get(mid))
                    seen["balances"] += doc["average_balance"]["liability"] != "0.00"
                    seen["targets"] += doc["target"]["status"] != "no_target"
                    seen["hired"] += doc["target"]["status"] == "no_target" and end >= start
    finally:
        await writer.dispose()
    assert all(seen.values()), seen
