"""Assessment (考核) for a hand-computed example, through the real apply step.

The example, worked by hand (policy defaults: coefficients asset 0.9, liability 1.0,
intermediary 2.0; cap 1.2; warn below 60 %; demotion review below 60 % two years running):

manager m1, branch b1
  annual profit target 1,000,000.00 given 2024-01-02, raised to 1,200,000.00 on 2026-01-05
clients (both credit clients, held by m1)
  cA: claim ratio unset (1.0)     cB: claim ratio 0.5
business (weighted = simulated profit × coefficient × claim ratio)
  2025-06-01 cA liability     profit 500,000.00 → 500,000.00
  2026-03-10 cA intermediary  profit 300,000.00 → 600,000.00
  2026-07-01 cB liability     profit 120,000.00 →  60,000.00
visits
  2026-11-20 cA on-site post-loan check (resets cA's post-loan clock)
  2026-12-01 cB phone "post-loan check" (does not count: checks are on-site)

Year 2026, judged on 2027-01-10 (the year is settled):
  target 1,200,000.00 (the one in force at the year's end), weighted 660,000.00
  completion 660,000 / 1,200,000 = 0.55 → performance 70 × 0.55 = 38.50, flag warn
  post-loan discipline at 2027-01-01 00:00 (+08:00): cA due 2027-02-18 (ok), cB never
  checked on site, due 2026-04-05 (overdue) → 1 of 2 → derived evaluation 30 × 0.5 = 15.00
  total 53.50; grade by 2 credit clients held: E (≤ 10)
  annual completions: 2024 0 / 1,000,000 = 0; 2025 500,000 / 1,000,000 = 0.5;
  2026 0.55 → two years running below 60 % → demotion_review
A supervisor then enters 27.50 evaluation points → total 38.50 + 27.50 = 66.00.
November 2026 alone: target 1,200,000 × 30 / 365 = 98,630.14; weighted 0 → ratio 0.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import insert

from models.assessment import assess
from models.db import make_engine
from models.policy import Policy
from models.tables import EvaluationRow
from streams.apply import Applier
from tests.test_apply import Feed, env

JUDGED = datetime(2027, 1, 10, 9, 0, tzinfo=UTC)


async def fill(applier: Applier) -> None:
    feed = Feed()
    await applier.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    "m1-a",
                    "manager.upserted",
                    "2024-01-02T09:00:00+08:00",
                    manager_id="m1",
                    branch_id="b1",
                    annual_profit_target="1000000.00",
                ),
            ),
            feed.msg(
                "crm.managers",
                env(
                    "m1-b",
                    "manager.upserted",
                    "2026-01-05T09:00:00+08:00",
                    manager_id="m1",
                    branch_id="b1",
                    annual_profit_target="1200000.00",
                ),
            ),
        ]
    )
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    f"{cid}-up",
                    "client.upserted",
                    "2025-01-01T09:00:00+08:00",
                    client_id=cid,
                    manager_id="m1",
                    credit_client=True,
                    assigned_at="2026-01-05T09:00:00+08:00",
                    **extra,
                ),
            )
            for cid, extra in (("cA", {}), ("cB", {"claim_ratio": "0.5"}))
        ]
    )

    def tx(eid: str, at: str, client: str, line: str, profit: str) -> object:
        return feed.msg(
            "bank.transactions",
            env(
                eid,
                "transaction.posted",
                at,
                client_id=client,
                account_id="acct",
                business_line=line,
                amount="1000000.00",
                simulated_profit=profit,
            ),
        )

    def visit(eid: str, at: str, client: str, method: str) -> object:
        return feed.msg(
            "crm.visits",
            env(
                eid,
                "visit.logged",
                at,
                client_id=client,
                manager_id="m1",
                method=method,
                kind="post_loan_check",
            ),
        )

    await applier.apply(
        [
            tx("t1", "2025-06-01T10:00:00+08:00", "cA", "liability", "500000.00"),
            tx("t2", "2026-03-10T10:00:00+08:00", "cA", "intermediary", "300000.00"),
            tx("t3", "2026-07-01T10:00:00+08:00", "cB", "liability", "120000.00"),
        ]  # type: ignore[list-item]
    )
    await applier.apply(
        [
            visit("v1", "2026-11-20T10:00:00+08:00", "cA", "on_site"),
            visit("v2", "2026-12-01T10:00:00+08:00", "cB", "phone"),
        ]  # type: ignore[list-item]
    )


async def test_hand_computed_assessment(db_url: str) -> None:
    engine = make_engine(db_url, writer=True)
    policy = Policy()
    await fill(Applier(engine, policy))
    async with engine.connect() as conn:
        doc = await assess(conn, "m1", "year", date(2026, 1, 1), date(2026, 12, 31), policy, JUDGED)
    assert doc["target"] == "1200000.00"
    assert doc["weighted_profit"] == "660000.00"
    assert doc["completion_ratio"] == "0.5500"
    assert doc["performance_points"] == "38.50"
    assert doc["evaluation"]["source"] == "derived"
    assert doc["evaluation"]["derived_signal"]["credit_clients"] == 2
    assert doc["evaluation"]["derived_signal"]["not_overdue"] == 1
    assert doc["evaluation_points"] == "15.00"
    assert doc["total_score"] == "53.50"
    assert doc["credit_clients"] == 2 and doc["grade"] == "E"
    assert doc["flags"] == ["warn", "demotion_review"]
    assert [(y["year"], y["completion_ratio"]) for y in doc["annual_completion"]] == [
        (2024, "0.0000"),
        (2025, "0.5000"),
        (2026, "0.5500"),
    ]

    # the supervisor's evaluation replaces the derived signal
    async with engine.begin() as conn:
        await conn.execute(
            insert(EvaluationRow).values(
                manager_id="m1",
                period="2026",
                version=1,
                points=Decimal("27.50"),
                reasons="work log complete; one post-loan check missed",
                entered_by="sup-1",
                entered_at=JUDGED,
            )
        )
    async with engine.connect() as conn:
        doc = await assess(conn, "m1", "year", date(2026, 1, 1), date(2026, 12, 31), policy, JUDGED)
        month = await assess(
            conn, "m1", "month", date(2026, 11, 1), date(2026, 11, 30), policy, JUDGED
        )
    assert doc["evaluation"]["source"] == "supervisor"
    assert doc["evaluation_points"] == "27.50" and doc["total_score"] == "66.00"
    assert month["target"] == "98630.14"
    assert month["completion_ratio"] == "0.0000"
    assert month["period"]["label"] == "2026-11"
    await engine.dispose()


async def test_a_running_year_is_not_judged_for_demotion(db_url: str) -> None:
    engine = make_engine(db_url, writer=True)
    policy = Policy()
    await fill(Applier(engine, policy))
    mid_year = datetime(2026, 8, 1, tzinfo=UTC)
    async with engine.connect() as conn:
        doc = await assess(
            conn, "m1", "year", date(2026, 1, 1), date(2026, 12, 31), policy, mid_year
        )
    # settled years 2023-2025: 2023 had no target, so no run of three; 2024-2025 both
    # below 60 % → demotion review already stands on the settled years
    assert [y["year"] for y in doc["annual_completion"]] == [2023, 2024, 2025]
    assert "demotion_review" in doc["flags"]
    await engine.dispose()
