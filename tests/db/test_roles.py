"""Every route × every role × in and out of scope: the status code is right.

The database holds the contract vectors (applied by the real apply step) and the reminders
a scheduler scan fires for them. Manager m036 works in branch b05; "own" callers are m036
and b05's supervisor, "other" ones are m006 and b01's supervisor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy import select

from api.auth import mint_token
from config import Settings
from crmtracker.compose import api_app as create_app
from models.db import make_engine
from models.policy import Policy
from models.tables import ClientRow, ReminderRow
from scheduler.service import ReminderScheduler
from streams.apply import Applier
from testkit.api import asgi_client
from testkit.db import fresh_database
from testkit.feed import vector_batches

SECRET = "roles-secret-" + "z" * 40
ROLES = ("anon", "bad", "own_manager", "other_manager", "own_sup", "other_sup", "ops", "admin")


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    with fresh_database("sqlite", tmp_path_factory.mktemp("roles")) as url:

        async def fill(url: str = url) -> dict[str, Any]:
            engine = make_engine(url, writer=True)
            for batch in vector_batches():
                await Applier(engine, Policy()).apply(batch)
            settings = Settings(database_url=url, auth_secret=SECRET)
            await ReminderScheduler(settings, engine, targets=[]).scan_once()
            async with engine.connect() as conn:
                client = (
                    await conn.execute(
                        select(ClientRow.client_id).where(ClientRow.manager_id == "m036").limit(1)
                    )
                ).scalar_one()
                reminders = (
                    await conn.execute(
                        select(ReminderRow.id).where(ReminderRow.manager_id == "m036").limit(2)
                    )
                ).scalars()
                ids = list(reminders)
            await engine.dispose()
            assert len(ids) == 2, "the vectors leave m036 with overdue clients"
            return {"client": client, "ack": ids[0], "snooze": ids[1]}

        yield url, asyncio.run(fill())


@pytest.fixture
async def client(filled: tuple[str, dict[str, Any]], tmp_path: Path) -> AsyncIterator[Any]:
    url, ids = filled
    app = create_app(Settings(database_url=url, data_dir=tmp_path, auth_secret=SECRET))
    async with asgi_client(app) as c:
        c.ids = ids  # type: ignore[attr-defined]
        yield c


def headers(role: str) -> dict[str, str]:
    tokens = {
        "anon": None,
        "bad": jwt.encode({"sub": "x", "role": "admin"}, "another-key-" + "k" * 40, "HS256"),
        "own_manager": mint_token(SECRET, "manager", manager_id="m036"),
        "other_manager": mint_token(SECRET, "manager", manager_id="m006"),
        "own_sup": mint_token(SECRET, "supervisor", branches=["b05"]),
        "other_sup": mint_token(SECRET, "supervisor", branches=["b01"]),
        "ops": mint_token(SECRET, "ops"),
        "admin": mint_token(SECRET, "admin"),
    }
    token = tokens[role]
    return {"Authorization": f"Bearer {token}"} if token else {}


# who gets 200 (everyone else with a valid token gets 403; no token or a bad one gets 401)
MANAGER_DATA = {"own_manager", "own_sup", "admin"}
BRANCH_DATA = {"own_sup", "admin"}
ADMIN = {"admin"}
OPS = {"ops", "admin"}
EVALUATORS = {"own_sup", "admin"}

SNOOZE_UNTIL = (datetime.now(UTC) + timedelta(days=2)).isoformat()

# (method, path template, body, who gets 200)
ROUTES: list[tuple[str, str, Any, set[str]]] = [
    ("GET", "/v1/managers/m036/tally?period=month&at=2026-09-15", None, MANAGER_DATA),
    ("GET", "/v1/managers/m036/assessment?period=year&at=2026-09-15", None, MANAGER_DATA),
    ("GET", "/v1/managers/m036/evaluation?period=year", None, MANAGER_DATA),
    (
        "PUT",
        "/v1/managers/m036/evaluation",
        {"period": "year", "points": "20", "reasons": "matrix"},
        EVALUATORS,
    ),
    ("GET", "/v1/branches/b05/tally?period=month", None, BRANCH_DATA),
    ("GET", "/v1/branches/b05/leaderboard?period=month", None, BRANCH_DATA),
    ("GET", "/v1/leaderboard", None, ADMIN),
    ("GET", "/v1/clients/{client}", None, MANAGER_DATA),
    ("GET", "/v1/clients/{client}/visits", None, MANAGER_DATA),
    ("GET", "/v1/managers/m036/visits?from=2026-01-01&to=2026-12-31", None, MANAGER_DATA),
    ("GET", "/v1/managers/m036/clients?sort=overdue_days&order=desc", None, MANAGER_DATA),
    ("GET", "/v1/managers/m036/coverage", None, MANAGER_DATA),
    ("GET", "/v1/branches/b05/coverage?period=month", None, BRANCH_DATA),
    ("GET", "/v1/branches/b05/unassigned", None, BRANCH_DATA),
    ("GET", "/v1/managers/m036/plan?days=30", None, MANAGER_DATA),
    ("GET", "/v1/branches/b05/assessment?period=year", None, BRANCH_DATA),
    ("GET", "/v1/managers/m036/series?from=2026-09-01&to=2026-09-30", None, MANAGER_DATA),
    ("GET", "/v1/branches/b05/series?step=month&from=2026-01-01&to=2026-12-31", None, BRANCH_DATA),
    ("GET", "/v1/branches/b05/reports/weekly?at=2026-09-15", None, BRANCH_DATA),
    ("GET", "/v1/branches/b05/leaderboard?period=month&format=xlsx", None, BRANCH_DATA),
    ("GET", "/v1/overdue?manager_id=m036&format=csv", None, MANAGER_DATA),
    ("POST", "/v1/managers/m036/feed-token", None, MANAGER_DATA),
    ("DELETE", "/v1/managers/m036/feed-token", None, MANAGER_DATA),
    ("GET", "/v1/clients/{client}/balances?period=month", None, MANAGER_DATA),
    ("GET", "/v1/overdue?manager_id=m036", None, MANAGER_DATA),
    ("GET", "/v1/overdue?branch_id=b05", None, {"own_sup", "admin", "own_manager"}),
    (
        "GET",
        "/v1/clients/tier-review",
        None,
        {"own_manager", "other_manager", "own_sup", "other_sup", "admin"},
    ),
    ("GET", "/v1/clients/tier-review?manager_id=m036", None, MANAGER_DATA),
    ("GET", "/v1/clients/tier-review?branch_id=b05", None, {"own_sup", "admin", "own_manager"}),
    ("GET", "/v1/reminders?manager_id=m036", None, MANAGER_DATA),
    (
        "GET",
        "/v1/reminders",
        None,
        {"own_manager", "other_manager", "own_sup", "other_sup", "admin"},
    ),
    ("POST", "/v1/reminders/{ack}/ack", None, MANAGER_DATA),
    ("POST", "/v1/reminders/{snooze}/snooze", {"until": SNOOZE_UNTIL}, MANAGER_DATA),
    ("GET", "/v1/reminders/deliveries", None, OPS),
    ("GET", "/v1/data-quality?branch_id=b05", None, {"own_sup", "admin", "own_manager"}),
    ("GET", "/v1/data-quality?manager_id=m036", None, MANAGER_DATA),
    (
        "GET",
        "/v1/data-quality",
        None,
        {"own_manager", "other_manager", "own_sup", "other_sup", "admin"},
    ),
    ("GET", "/v1/events/rejected", None, ADMIN),
    ("GET", "/v1/audit", None, ADMIN),
    ("GET", "/metrics", None, OPS),
]


def cases() -> list[Any]:
    return [
        pytest.param(m, p, b, ok, role, id=f"{m} {p.split('?')[0]} as {role}")
        for m, p, b, ok in ROUTES
        for role in ROLES
    ]


@pytest.mark.parametrize(("method", "path", "body", "ok", "role"), cases())
async def test_status_by_route_and_role(
    client: Any, method: str, path: str, body: Any, ok: set[str], role: str
) -> None:
    url = path.format(**client.ids)
    r = await client.request(method, url, json=body, headers=headers(role))
    if role in ("anon", "bad"):
        expected = 401
    elif role in ok:
        expected = 200
    else:
        expected = 403
    assert r.status_code == expected, (method, url, role, r.text)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/managers/nobody/tally",
        "/v1/managers/nobody/assessment",
        "/v1/branches/nowhere/tally",
        "/v1/branches/nowhere/leaderboard",
        "/v1/clients/nobody",
        "/v1/reminders/999999/ack",
    ],
)
async def test_unknown_ids_are_404_for_admins(client: Any, path: str) -> None:
    method = "POST" if path.endswith("/ack") else "GET"
    r = await client.request(method, path, headers=headers("admin"))
    assert r.status_code == 404, r.text
    assert "not found" in r.json()["detail"]


async def test_every_route_is_in_the_matrix(client: Any) -> None:
    """A new route must be added to ROUTES (or be tested on its own, listed here)."""
    spec = (await client.get("/openapi.json")).json()

    def template(path: str) -> str:
        return (
            path.split("?")[0]
            .replace("m036", "{manager_id}")
            .replace("b05", "{branch_id}")
            .replace("{client}", "{client_id}")
            .replace("{ack}", "{reminder_id}")
            .replace("{snooze}", "{reminder_id}")
        )

    covered = {(m, template(p)) for m, p, _, _ in ROUTES}
    tested_alone = {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/v1/stream"),  # tests/db/test_stream.py (a stream never ends)
        ("GET", "/readyz/api"),
        ("GET", "/v1/ops/lag"),  # needs a broker: tests/system/test_ops_kafka.py
        ("GET", "/v1/calendar/{token}.ics"),  # the feed token is the key: tests/db/test_plan.py
    }
    served = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert served - covered - tested_alone == set()
