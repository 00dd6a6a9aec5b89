"""Rules the bank's data can break, applied as sent and shown: claim-ratio floors by origin
(GET /v1/data-quality), and events dated in the future (rejected to the dead-letter topic)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from api.auth import mint_token
from config import Settings
from crmtracker.broker import EmbeddedBroker, ensure_topics
from crmtracker.compose import api_app as create_app
from models.db import make_engine
from models.decode import decode_event
from models.events import InvalidEvent
from models.policy import Policy
from models.tables import ClientRow, ManagerDayRow, RejectedRow
from streams.apply import Applier
from testkit.api import asgi_client
from testkit.broker import isolated_settings, produce, read_topic, wait_for_counts
from testkit.db import Engines
from testkit.feed import Feed, env
from testkit.process import WorkerProcess

SECRET = "quality-secret-" + "q" * 40

# (client, manager, origin, claim ratio): the floors are marketed 0.8, natural 0.5
CLIENTS = [
    ("q1", "mq1", "marketed", "0.7"),  # below 0.8 → exception
    ("q2", "mq1", "marketed", "0.8"),  # at the floor → fine
    ("q3", "mq1", "natural", "0.4"),  # below 0.5 → exception
    ("q4", "mq2", "natural", "0.5"),  # at the floor → fine
    ("q5", "mq2", "public_resource", "0.1"),  # negotiated: no floor → fine
    ("q6", "mq2", "marketed", None),  # unset: 1.0 applies → fine
    ("q7", "mq3", "marketed", "0.75"),  # below, branch b2 → exception
]


async def _fill(engine: Any) -> None:
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    f"{mid}-up",
                    "manager.upserted",
                    "2026-01-01T09:00:00+08:00",
                    manager_id=mid,
                    branch_id=branch,
                ),
            )
            for mid, branch in (("mq1", "b1"), ("mq2", "b1"), ("mq3", "b2"))
        ]
    )
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    f"{cid}-up",
                    "client.upserted",
                    "2026-01-05T09:00:00+08:00",
                    client_id=cid,
                    manager_id=mid,
                    origin=origin,
                    **({"claim_ratio": ratio} if ratio is not None else {}),
                ),
            )
            for cid, mid, origin, ratio in CLIENTS
        ]
    )
    # the ratio is applied as sent: q1's profit 1,000.00 on the liability line counts 700.00
    await applier.apply(
        [
            feed.msg(
                "bank.transactions",
                env(
                    "tq1",
                    "transaction.posted",
                    "2026-03-01T10:00:00+08:00",
                    client_id="q1",
                    account_id="a1",
                    business_line="liability",
                    amount="5000.00",
                    simulated_profit="1000.00",
                ),
            )
        ]
    )


@pytest.fixture
async def client(db_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    engine = make_engine(db_url, writer=True)
    await _fill(engine)
    await engine.dispose()
    app = create_app(Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET))
    async with asgi_client(app) as c:
        c.db_url = db_url  # type: ignore[attr-defined]
        yield c


def auth(role: str, **kw: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, role, **kw)}"}


async def test_claim_ratios_below_their_floor_are_listed_with_the_rule(
    client: httpx.AsyncClient,
) -> None:
    """By hand: q1 (marketed 0.7 < 0.8), q3 (natural 0.4 < 0.5) and q7 (marketed 0.75 < 0.8,
    branch b2) break the floor; q2 and q4 sit on it, q5 is a public-resource client (no
    floor), q6 has no ratio (1.0 applies). The ratio is applied as sent: q1's 1,000.00 of
    deposit profit is credited 1,000 × 1.0 × 0.7 = 700.00."""
    r = await client.get("/v1/data-quality", headers=auth("admin"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["total"] == 3 and doc["next_cursor"] is None
    assert [(i["client_id"], i["origin"], i["claim_ratio"], i["floor"]) for i in doc["items"]] == [
        ("q1", "marketed", "0.7", "0.8"),
        ("q3", "natural", "0.4", "0.5"),
        ("q7", "marketed", "0.75", "0.8"),
    ]
    first = doc["items"][0]
    assert first["rule"] == "claim_ratio_floor" and first["branch_id"] == "b1"
    assert "below the floor 0.8" in first["detail"]

    # a supervisor of b1 sees b1's two; b2's supervisor asking for b1 gets a 403
    b1 = (await client.get("/v1/data-quality", headers=auth("supervisor", branches=["b1"]))).json()
    assert [i["client_id"] for i in b1["items"]] == ["q1", "q3"]
    other = await client.get(
        "/v1/data-quality",
        params={"branch_id": "b1"},
        headers=auth("supervisor", branches=["b2"]),
    )
    assert other.status_code == 403
    mine = await client.get("/v1/data-quality", headers=auth("manager", manager_id="mq2"))
    assert mine.json()["items"] == []
    assert (await client.get("/v1/data-quality", headers=auth("ops"))).status_code == 403

    # pages by client id
    page1 = (
        await client.get("/v1/data-quality", params={"limit": 2}, headers=auth("admin"))
    ).json()
    assert [i["client_id"] for i in page1["items"]] == ["q1", "q3"]
    page2 = (
        await client.get(
            "/v1/data-quality",
            params={"limit": 2, "cursor": page1["next_cursor"]},
            headers=auth("admin"),
        )
    ).json()
    assert [i["client_id"] for i in page2["items"]] == ["q7"] and page2["next_cursor"] is None
    bad = await client.get("/v1/data-quality", params={"cursor": "x"}, headers=auth("admin"))
    assert bad.status_code == 422

    engine = make_engine(client.db_url)  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        credited = (
            await conn.execute(
                select(ManagerDayRow.weighted_profit).where(ManagerDayRow.manager_id == "mq1")
            )
        ).scalar_one()
    await engine.dispose()
    assert credited == Decimal("700.00")


def test_the_decoder_refuses_a_date_beyond_the_skew() -> None:
    """The one validation path (worker and checks alike): 5 minutes of skew by default."""
    now = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    raw = env(
        "f1",
        "visit.logged",
        "2027-12-03T16:00:00+08:00",
        client_id="c",
        manager_id="m",
        method="on_site",
        kind="routine",
    )
    with pytest.raises(InvalidEvent, match=r"occurred_at: .* is in the future"):
        decode_event(raw, Policy(), now=now)
    # within the skew (4 minutes ahead) it passes; without a clock (stored events) too
    near = raw.replace(b"2027-12-03T16:00:00", b"2026-12-03T16:04:00")
    assert decode_event(near, Policy(), now=now).event_id == "f1"
    assert decode_event(raw, Policy()).event_id == "f1"
    with pytest.raises(InvalidEvent):
        decode_event(near, Policy(), now=now, max_future_skew=timedelta(minutes=1))


@pytest.mark.kafka
async def test_a_future_dated_visit_is_dead_lettered_and_the_client_stays_overdue(
    broker: EmbeddedBroker, db_url: str, tmp_path: Path, engines: Engines
) -> None:
    """Through the broker and a real worker process: a bronze client assigned 200 days ago
    (interval 180 days) is 20 days overdue. A visit dated a year ahead (a typo of the year)
    is rejected (dead-letter topic and rejected list, the reason saying it is in the future),
    so the client's clock is not reset: still overdue, no last visit. A visit 2 hours ago
    is applied as usual (it would reset the clock of another client, cz)."""
    settings = isolated_settings(broker.bootstrap, db_url, tmp_path, topic_partitions=1)
    await ensure_topics(settings)
    now = datetime.now(UTC)

    def stamp(at: datetime) -> str:
        return at.isoformat(timespec="seconds")

    def msg(topic: str, key: str, eid: str, etype: str, at: datetime, **p: Any) -> Any:
        return (topic, key.encode(), env(eid, etype, stamp(at), **p))

    assigned = now - timedelta(days=200)
    visit = {"manager_id": "mf", "method": "on_site", "kind": "routine"}
    await produce(
        settings,
        [
            msg(
                "crm.managers",
                "mf",
                "mf-up",
                "manager.upserted",
                assigned,
                manager_id="mf",
                branch_id="bf",
            ),
            *(
                msg(
                    "crm.clients",
                    cid,
                    f"{cid}-up",
                    "client.upserted",
                    assigned,
                    client_id=cid,
                    manager_id="mf",
                    tier="bronze",
                )
                for cid in ("cf", "cz")
            ),
            msg(
                "crm.visits",
                "cf",
                "v-future",
                "visit.logged",
                now + timedelta(days=365),
                client_id="cf",
                **visit,
            ),
            msg(
                "crm.visits",
                "cz",
                "v-past",
                "visit.logged",
                now - timedelta(hours=2),
                client_id="cz",
                **visit,
            ),
        ],
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    engine = engines(db_url)
    worker.start()
    try:
        await wait_for_counts(engine, 4, 1, 120, worker)
        dead = await read_topic(settings, "crm.deadletter", 1)
        assert len(dead) == 1
        record = json.loads(dead[0].value)
        assert "is in the future" in record["reason"]
        async with engine.connect() as conn:
            rejected = (await conn.execute(select(RejectedRow))).one()
            clients = {r.client_id: r for r in (await conn.execute(select(ClientRow))).all()}
        assert rejected.status == "rejected" and rejected.event_id == "v-future"
        assert "occurred_at" in rejected.reason and "in the future" in rejected.reason
        cf = clients["cf"]
        assert cf.last_visit_at is None
        assert cf.next_visit_due is not None and cf.next_visit_due < datetime.now(UTC)
        assert clients["cz"].last_visit_at is not None
    finally:
        assert worker.stop() == 0, worker.log_tail()
