"""Regenerate ``api/examples.json``: one real answer per route, taken from an API over the
contract vectors (lists cut to one item), shown as the route's example in the OpenAPI.

    python -m api.make_examples [VECTORS_DIR]   # writes api/examples.json
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).with_name("examples.json")
ROOT = Path(__file__).resolve().parents[1]
SECRET = "examples-" + "e" * 40

# (method, OpenAPI path, concrete path, body)
CALLS: list[tuple[str, str, str, Any]] = [
    ("GET", "/healthz", "/healthz", None),
    (
        "GET",
        "/v1/managers/{manager_id}/tally",
        "/v1/managers/m036/tally?period=month&at=2026-09-15",
        None,
    ),
    (
        "GET",
        "/v1/branches/{branch_id}/tally",
        "/v1/branches/b05/tally?period=month&at=2026-09-15",
        None,
    ),
    (
        "GET",
        "/v1/branches/{branch_id}/leaderboard",
        "/v1/branches/b05/leaderboard?period=month&at=2026-09-15&limit=1",
        None,
    ),
    ("GET", "/v1/leaderboard", "/v1/leaderboard?period=month&at=2026-09-15&limit=1", None),
    (
        "GET",
        "/v1/managers/{manager_id}/assessment",
        "/v1/managers/m036/assessment?period=year&at=2026-09-15",
        None,
    ),
    (
        "PUT",
        "/v1/managers/{manager_id}/evaluation",
        "/v1/managers/m036/evaluation",
        {
            "period": "year",
            "at": "2026-09-15",
            "points": "27.50",
            "reasons": "Work log complete; one post-loan check late.",
        },
    ),
    (
        "GET",
        "/v1/managers/{manager_id}/evaluation",
        "/v1/managers/m036/evaluation?period=year&at=2026-09-15",
        None,
    ),
    ("GET", "/v1/events/rejected", "/v1/events/rejected?limit=1", None),
    ("GET", "/v1/audit", "/v1/audit?limit=1", None),
    ("GET", "/v1/clients/{client_id}", "/v1/clients/{client}", None),
    ("GET", "/v1/overdue", "/v1/overdue?branch_id=b05&limit=1", None),
    ("GET", "/v1/clients/tier-review", "/v1/clients/tier-review?limit=1", None),
    (
        "GET",
        "/v1/clients/{client_id}/balances",
        "/v1/clients/c0092/balances?period=month&at=2026-10-15",
        None,
    ),
    ("GET", "/v1/reminders", "/v1/reminders?manager_id=m036&limit=1", None),
    ("POST", "/v1/reminders/{reminder_id}/ack", "/v1/reminders/{reminder}/ack", None),
    ("GET", "/v1/reminders/deliveries", "/v1/reminders/deliveries?limit=1", None),
    ("GET", "/v1/clients/{client_id}/visits", "/v1/clients/{client}/visits?limit=1", None),
    (
        "GET",
        "/v1/managers/{manager_id}/visits",
        "/v1/managers/m036/visits?from=2026-09-01&to=2026-09-30&limit=1",
        None,
    ),
    (
        "GET",
        "/v1/managers/{manager_id}/clients",
        "/v1/managers/m036/clients?sort=overdue_days&order=desc&limit=1",
        None,
    ),
    ("GET", "/v1/managers/{manager_id}/coverage", "/v1/managers/m036/coverage", None),
    ("GET", "/v1/branches/{branch_id}/coverage", "/v1/branches/b05/coverage", None),
    ("GET", "/v1/branches/{branch_id}/unassigned", "/v1/branches/b05/unassigned", None),
    ("GET", "/v1/managers/{manager_id}/plan", "/v1/managers/m036/plan?days=30&limit=1", None),
    ("POST", "/v1/managers/{manager_id}/feed-token", "/v1/managers/m036/feed-token", None),
    ("DELETE", "/v1/managers/{manager_id}/feed-token", "/v1/managers/m036/feed-token", None),
    (
        "GET",
        "/v1/branches/{branch_id}/assessment",
        "/v1/branches/b05/assessment?period=year&at=2026-09-15&limit=1",
        None,
    ),
    (
        "GET",
        "/v1/managers/{manager_id}/series",
        "/v1/managers/m036/series?from=2026-09-01&to=2026-09-03",
        None,
    ),
    (
        "GET",
        "/v1/branches/{branch_id}/series",
        "/v1/branches/b05/series?step=month&from=2026-07-01&to=2026-09-30",
        None,
    ),
]


def _cut(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        doc = {**doc, "items": doc["items"][:1]}
    return doc


async def _collect(vectors_dir: Path) -> dict[str, Any]:
    import httpx
    from sqlalchemy import select

    from api.auth import mint_token
    from api.main import create_app
    from config import Settings
    from models import visit_ledger
    from models.db import make_engine, upgrade
    from models.policy import Policy
    from models.tables import ClientRow, ReminderRow
    from scheduler.service import ReminderScheduler
    from streams.apply import Applier, Incoming

    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite+aiosqlite:///{tmp / 'examples.sqlite3'}"
    upgrade(url)
    engine = make_engine(url, writer=True)
    offsets: dict[str, int] = {}
    vectors = vectors_dir / "events.jsonl"
    msgs = []
    for line in vectors.read_text().splitlines():
        m = json.loads(line)
        off = offsets[m["topic"]] = offsets.get(m["topic"], -1) + 1
        key = m["key"].encode() if m["key"] else None
        msgs.append(Incoming(m["topic"], 0, off, key, m["value"].encode()))
    settings = Settings(database_url=url, data_dir=tmp, auth_secret=SECRET)
    visit_ledger.use_settings(settings)  # the API below opens the notes with the same key
    applier = Applier(engine, Policy())
    for topic in (
        "crm.managers",
        "crm.clients",
        "bank.transactions",
        "bank.accounts",
        "crm.visits",
    ):
        await applier.apply([m for m in msgs if m.topic == topic])
    balances = vectors_dir / "balances.jsonl"
    if balances.exists():  # end-of-day balances of 8 clients (日均 in the examples)
        lines = balances.read_text().splitlines()
        await applier.apply(
            [
                Incoming(m["topic"], 0, i, m["key"].encode(), m["value"].encode())
                for i, m in enumerate(map(json.loads, lines))
            ]
        )
    await ReminderScheduler(settings.scheduler, engine, targets=[]).scan_once()
    async with engine.connect() as conn:
        client = (
            (await conn.execute(select(ClientRow.client_id).where(ClientRow.manager_id == "m036")))
            .scalars()
            .first()
        )
        reminder = (
            (await conn.execute(select(ReminderRow.id).where(ReminderRow.manager_id == "m036")))
            .scalars()
            .first()
        )
    await engine.dispose()
    app = create_app(
        settings.api,
        engine=lambda: make_engine(url, pool_size=20),
        secret=SECRET,
        notes_cipher=visit_ledger.cipher_for(settings),
    )
    out: dict[str, Any] = {}
    headers = {"Authorization": f"Bearer {mint_token(SECRET, 'admin')}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
            for method, path, concrete, body in CALLS:
                url_ = concrete.format(client=client, reminder=reminder)
                r = await c.request(method, url_, json=body, headers=headers)
                r.raise_for_status()
                out[f"{method} {path}"] = _cut(r.json())
    return out


def main() -> int:
    vectors = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "vectors"
    examples = asyncio.run(_collect(vectors))
    EXAMPLES.write_text(json.dumps(examples, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(examples)} examples to {EXAMPLES}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
