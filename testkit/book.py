"""A client book on a frozen day: managers, clients, accounts, facts and visits applied by the
real apply step (the client book, coverage, plan, series and report tests read it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from models.db import make_engine
from models.policy import Policy
from streams.apply import Applier
from testkit import api
from testkit.feed import Feed, env, tx

SECRET = "book-secret-" + "b" * 40


TZ = ZoneInfo("Asia/Shanghai")


NOW = datetime(2026, 11, 20, 12, 0, tzinfo=TZ)


async def fill_book(url: str) -> None:
    engine = make_engine(url, writer=True)
    feed = Feed()
    applier = Applier(engine, Policy(), now=lambda: NOW)
    t0 = "2026-01-01T09:00:00+08:00"
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
                    name="Wang",
                    annual_profit_target="365000",
                ),
            ),
            feed.msg(
                "crm.managers", env("m2", "manager.upserted", t0, manager_id="m2", branch_id="b1")
            ),
            feed.msg(
                "crm.managers", env("m3", "manager.upserted", t0, manager_id="m3", branch_id="b2")
            ),
            feed.msg(
                "crm.clients",
                env(
                    "c1",
                    "client.upserted",
                    "2026-01-02T09:00:00+08:00",
                    client_id="c1",
                    manager_id="m1",
                    tier="gold",
                    credit_client=True,
                    claim_ratio="0.8",
                    segment="corporate",
                    name="Acme",
                ),
            ),
            feed.msg(
                "crm.clients",
                env(
                    "c2",
                    "client.upserted",
                    t0,
                    client_id="c2",
                    manager_id="m1",
                    tier="bronze",
                    segment="retail",
                    name="Bo",
                ),
            ),
            feed.msg(
                "crm.clients",
                env("c3", "client.upserted", t0, client_id="c3", manager_id="m2", tier="diamond"),
            ),
            feed.msg(
                "crm.clients",
                env("c4", "client.upserted", t0, client_id="c4", manager_id="m3", tier="gold"),
            ),
        ]
    )
    await applier.apply(
        [
            feed.msg(
                "bank.transactions",
                tx("t1", "2026-11-03T10:00:00+08:00", "c1", "intermediary", "1000.00"),
            ),
            feed.msg(
                "bank.transactions",
                tx("t2", "2026-11-19T10:00:00+08:00", "c1", "liability", "333.33"),
            ),
            feed.msg(
                "bank.transactions",
                tx("t3", "2026-10-31T23:59:00+08:00", "c1", "liability", "5000"),
            ),
            feed.msg(
                "bank.transactions", tx("t4", "2026-11-05T10:00:00+08:00", "c2", "asset", "10.01")
            ),
            feed.msg(
                "crm.visits",
                env(
                    "v1",
                    "visit.logged",
                    "2026-11-10T10:00:00+08:00",
                    client_id="c1",
                    manager_id="m1",
                    method="on_site",
                    kind="routine",
                ),
            ),
            feed.msg(
                "crm.visits",
                env(
                    "v2",
                    "visit.logged",
                    "2026-11-11T10:00:00+08:00",
                    client_id="c3",
                    manager_id="m1",
                    method="phone",
                    kind="routine",
                ),
            ),
            feed.msg(
                "crm.visits",
                env(
                    "v3",
                    "visit.logged",
                    "2026-11-01T10:00:00+08:00",
                    client_id="c3",
                    manager_id="m2",
                    method="phone",
                    kind="routine",
                ),
            ),
        ]
    )
    await engine.dispose()


def auth(role: str, **kw: Any) -> dict[str, str]:
    return api.auth(role, SECRET, **kw)
