"""Assessment (考核) for a hand-computed example, through the real apply step.

The example, worked by hand (policy defaults: coefficients asset 0.9, liability 1.0,
intermediary 2.0; performance 70 × min(completion, 1.0); annual judgement of rules §15):

manager m1, branch b1
  annual profit target 1,000,000.00 given 2024-01-02, raised to 1,200,000.00 on 2026-01-05
  (the raise comes after 1 January: 2026 keeps the target issued at its start, 年初下达)
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
  target 1,000,000.00 (in force on 1 January 2026), weighted 660,000.00
  completion 660,000 / 1,000,000 = 0.66 → performance 70 × 0.66 = 46.20
  post-loan discipline at 2027-01-01 00:00 (+08:00): cA due 2027-02-18 (ok), cB never
  checked on site, due 2026-04-05 (overdue) → 1 of 2 → derived evaluation 30 × 0.5 = 15.00
  total 61.20; grade by 2 credit clients held at the year's end: E (≤ 10)
  annual completions: 2024 0 / 1,000,000 = 0 (the first target, given 2 January, is that
  year's); 2025 500,000 / 1,000,000 = 0.5; 2026 0.66
  judgement of 2026: 60-99 % this year (a run of one: 2025 was below 60 %) → reminder
A supervisor then enters 27.50 evaluation points → total 46.20 + 27.50 = 73.70.
November 2026 alone: target 1,000,000 × 30 / 365 = 82,191.78; weighted 0 → ratio 0.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import insert

from models.assessment import assess
from models.policy import Policy, money
from models.tables import EvaluationRow
from models.tally import period_target, target_history
from streams.apply import Applier
from testkit.db import Engines
from testkit.feed import Feed, client_upsert, deposit_profit, env, manager_upsert

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


async def test_hand_computed_assessment(db_url: str, engines: Engines) -> None:
    engine = engines(db_url, writer=True)
    policy = Policy()
    await fill(Applier(engine, policy))
    async with engine.connect() as conn:
        doc = await assess(conn, "m1", "year", date(2026, 1, 1), date(2026, 12, 31), policy, JUDGED)
    assert doc["target"] == "1000000.00"
    assert doc["weighted_profit"] == "660000.00"
    assert doc["completion_ratio"] == "0.6600"
    assert doc["performance_points"] == "46.20"
    assert doc["evaluation"]["source"] == "derived"
    assert doc["evaluation"]["derived_signal"]["credit_clients"] == 2
    assert doc["evaluation"]["derived_signal"]["not_overdue"] == 1
    assert doc["evaluation_points"] == "15.00"
    assert doc["total_score"] == "61.20"
    assert doc["credit_clients"] == 2 and doc["grade"] == "E"
    assert doc["settled"] is True and doc["pace"] is None
    assert doc["flags"] == ["reminder"]
    assert [
        (y["year"], y["completion_ratio"], y["judgement"]) for y in doc["annual_completion"]
    ] == [
        (2024, "0.0000", "demote_one_level"),
        (2025, "0.5000", "reappoint_by_performance"),
        (2026, "0.6600", "reminder"),
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
    assert doc["evaluation_points"] == "27.50" and doc["total_score"] == "73.70"
    assert month["target"] == "82191.78"
    assert month["flags"] == []  # the annual judgement is for years only
    assert month["completion_ratio"] == "0.0000"
    assert month["period"]["label"] == "2026-11"


async def test_a_running_year_is_judged_on_pace_not_by_the_annual_judgement(
    db_url: str,
    engines: Engines,
) -> None:
    """The same manager on 2026-08-01 08:00 (+08:00), the year still running:
    no flag (a running year is never judged); pace: 1 January to 1 August is 213 days, the
    target pro-rated to them 1,000,000 × 213 / 365 = 583,561.64, weighted so far 660,000
    ≥ that → on pace (against the whole year it would be 0.66, "behind"). The settled years
    shown are 2023-2025; 2025's own judgement: below 60 % in 2024 and 2025 → reappoint."""
    engine = engines(db_url, writer=True)
    policy = Policy()
    await fill(Applier(engine, policy))
    mid_year = datetime(2026, 8, 1, tzinfo=UTC)
    async with engine.connect() as conn:
        doc = await assess(
            conn, "m1", "year", date(2026, 1, 1), date(2026, 12, 31), policy, mid_year
        )
    assert doc["settled"] is False and doc["flags"] == []
    assert doc["pace"] == {
        "elapsed": {"from": "2026-01-01", "to": "2026-08-01"},
        "expected_to_date": "583561.64",
        "ratio": "1.1310",
        "on_pace": True,
    }
    assert [(y["year"], y["judgement"]) for y in doc["annual_completion"]] == [
        (2023, None),
        (2024, "demote_one_level"),
        (2025, "reappoint_by_performance"),
    ]


# --- the annual judgement over 2023-2025 --------------------------------------------------


async def _judge(
    engine: Any, manager_id: str, year: int, policy: Policy | None = None
) -> dict[str, Any]:
    at = datetime(year + 1, 1, 10, tzinfo=UTC)
    async with engine.connect() as conn:
        return await assess(
            conn,
            manager_id,
            "year",
            date(year, 1, 1),
            date(year, 12, 31),
            policy or Policy(),
            at,
        )


@pytest.mark.parametrize(
    ("profits", "step"),
    [
        # 2023 1.0 met, 2024 0.5 below 60 %, 2025 0.8: 60-99 % once → reminder
        (("1000000", "500000", "800000"), "reminder"),
        # 2023 1.2 met, 2024 0.7 and 2025 0.9: 60-99 % two years running → demote one level
        (("1200000", "700000", "900000"), "demote_one_level"),
        # 2023 1.0 met, 2024 0.4 and 2025 0.5: below 60 % two years running → reappoint
        (("1000000", "400000", "500000"), "reappoint_by_performance"),
    ],
)
async def test_annual_judgement_steps_over_2023_to_2025(
    db_url: str, profits: tuple[str, str, str], step: str, engines: Engines
) -> None:
    """Target 1,000,000.00 given 2022-12-01 (in force on 1 January of 2023, 2024, 2025);
    one deposit profit per year, so each year's completion is profit / 1,000,000 (see the
    parameters). Judged on 2026-01-10: 2025 is settled, and the flag is the strongest step
    of rules §15 that its run of years calls for, alone."""
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply([manager_upsert(feed, "m-1", "2022-12-01T09:00:00+08:00", "mj", "1000000")])
    await applier.apply([client_upsert(feed, "cj", "mj", "2022-12-01T09:00:00+08:00")])
    await applier.apply(
        [
            deposit_profit(feed, f"t{year}", f"{year}-06-15T10:00:00+08:00", "cj", profit)
            for year, profit in zip((2023, 2024, 2025), profits, strict=True)
        ]
    )
    doc = await _judge(engine, "mj", 2025)
    assert [y["completion_ratio"] for y in doc["annual_completion"]] == [
        str((Decimal(p) / 1000000).quantize(Decimal("0.0001"))) for p in profits
    ]
    assert doc["flags"] == [step]
    # 百分制 whatever the completion: 70 × min(c, 1.0) + 30 (no credit clients: discipline full)
    assert Decimal(doc["total_score"]) <= 100


async def test_a_mid_year_target_raise_does_not_change_the_year(
    db_url: str, engines: Engines
) -> None:
    """Target 1,000,000 given 2024-12-01, raised to 2,000,000 on 2025-07-01; deposit profit
    900,000 in 2025, none in 2024.
    2024: its first target came in December → 1,000,000; completion 0 (below 60 %).
    2025: the target in force on 1 January is 1,000,000 (the July raise does not rewrite
    it): completion 0.9 → 60-99 % once → reminder (against 2,000,000 it would be 0.45, a
    second year below 60 % → reappoint_by_performance). Performance 70 × 0.9 = 63.00.
    2026 is held to the raised 2,000,000 (in force on 1 January 2026): the month of
    November 2026 is 2,000,000 × 30 / 365 = 164,383.56 in the tally's target too."""
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply(
        [
            manager_upsert(feed, "m-1", "2024-12-01T09:00:00+08:00", "mr", "1000000"),
            manager_upsert(feed, "m-2", "2025-07-01T09:00:00+08:00", "mr", "2000000"),
        ]
    )
    await applier.apply([client_upsert(feed, "cr", "mr", "2024-12-01T09:00:00+08:00")])
    await applier.apply([deposit_profit(feed, "t1", "2025-08-15T10:00:00+08:00", "cr", "900000")])
    doc = await _judge(engine, "mr", 2025)
    assert doc["target"] == "1000000.00"
    assert doc["completion_ratio"] == "0.9000" and doc["performance_points"] == "63.00"
    assert doc["flags"] == ["reminder"]
    async with engine.connect() as conn:
        history = (await target_history(conn, ["mr"]))["mr"]
        tz = Policy().tz
        assert period_target(history, date(2024, 1, 1), date(2024, 12, 31), tz) == 1000000
        assert period_target(history, date(2026, 1, 1), date(2026, 12, 31), tz) == 2000000
        nov = period_target(history, date(2026, 11, 1), date(2026, 11, 30), tz)
        assert money(nov) == "164383.56"


async def test_a_manager_hired_in_september(db_url: str, engines: Engines) -> None:
    """Hired 2025-09-01 (``hired_at``), target 1,200,000 from the same day; deposit profit
    200,000 in 2025, 600,000 in 2026.
    2025: 122 days employed (1 Sep - 31 Dec) of 365 → target 1,200,000 × 122 / 365 =
    401,095.89; completion 200,000 / 401,095.89 = 0.4986 → performance 70 × that = 34.90;
    122/365 = 0.33 of the year < half → no annual judgement, though below 60 %.
    2026: the full target (in force on 1 January 2026) 1,200,000; completion 0.5 → below
    60 %, a run of one (2025 was not judged) → demote_one_level, not reappoint."""
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply(
        [
            manager_upsert(
                feed, "m-1", "2025-09-01T09:00:00+08:00", "mh", "1200000", hired_at="2025-09-01"
            )
        ]
    )
    await applier.apply([client_upsert(feed, "ch", "mh", "2025-09-01T09:00:00+08:00")])
    await applier.apply(
        [
            deposit_profit(feed, "t1", "2025-11-15T10:00:00+08:00", "ch", "200000"),
            deposit_profit(feed, "t2", "2026-03-15T10:00:00+08:00", "ch", "600000"),
        ]
    )
    first = await _judge(engine, "mh", 2025)
    assert first["hired_at"] == "2025-09-01"
    assert first["target"] == "401095.89"
    assert first["completion_ratio"] == "0.4986" and first["performance_points"] == "34.90"
    assert first["flags"] == []
    assert first["annual_completion"][-1]["not_judged"].startswith("less than half a year")
    second = await _judge(engine, "mh", 2026, Policy())
    assert second["target"] == "1200000.00" and second["completion_ratio"] == "0.5000"
    assert second["flags"] == ["demote_one_level"]


async def test_grade_counts_the_clients_held_at_the_period_end(
    db_url: str, engines: Engines
) -> None:
    """m1 holds 12 credit clients (c00-c11) from 2026-01-05; on 2026-05-01 c10 and c11 move
    to m2; c12, not a credit client, stays with m1.
    Q1 2026 (ends 31 March): m1 held 12 → grade D (11-20); m2 held none → E.
    Q2 2026 (ends 30 June): m1 held 10 → E (≤ 10); m2 held 2 → E. Judged later (2026-12-03),
    the past quarters keep the clients of their own end, not today's."""
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply(
        [
            manager_upsert(feed, "m-1", "2026-01-01T09:00:00+08:00", "g1", "1000000"),
            manager_upsert(feed, "m-2", "2026-01-01T09:00:00+08:00", "g2", "1000000"),
        ]
    )
    await applier.apply(
        [
            client_upsert(feed, f"c{i:02d}", "g1", "2026-01-05T09:00:00+08:00", credit_client=True)
            for i in range(12)
        ]
        + [client_upsert(feed, "c12", "g1", "2026-01-05T09:00:00+08:00")]
    )
    await applier.apply(
        [
            client_upsert(feed, cid, "g2", "2026-05-01T09:00:00+08:00", credit_client=True)
            for cid in ("c10", "c11")
        ]
    )
    later = datetime(2026, 12, 3, 9, tzinfo=UTC)
    out = {}
    async with engine.connect() as conn:
        for mid in ("g1", "g2"):
            for q, (lo, hi) in (
                ("Q1", (date(2026, 1, 1), date(2026, 3, 31))),
                ("Q2", (date(2026, 4, 1), date(2026, 6, 30))),
            ):
                doc = await assess(conn, mid, "quarter", lo, hi, Policy(), later)
                out[(mid, q)] = (doc["credit_clients"], doc["grade"])
    assert out == {
        ("g1", "Q1"): (12, "D"),
        ("g1", "Q2"): (10, "E"),
        ("g2", "Q1"): (0, "E"),
        ("g2", "Q2"): (2, "E"),
    }


async def test_work_log_promptness_counts_late_visits(db_url: str, engines: Engines) -> None:
    """Visits by m1 received by the worker at 2026-11-10 12:00 UTC (its clock), limit 48 h:
    v1 happened 2026-11-09 18:00 (+08:00) = 10:00 UTC, 26 h before → on time;
    v2 2026-11-08 20:00 (+08:00) = 12:00 UTC, exactly 48 h → on time (late is beyond it);
    v3 2026-11-05 10:00 (+08:00), 5 days → late;
    v4 2026-10-30 10:00 (+08:00) is October's → not in November's count.
    November 2026: 3 visits, 1 late, on-time share 2/3 = 0.6667; shown beside the post-loan
    signal in the evaluation part."""
    engine = engines(db_url, writer=True)
    received = datetime(2026, 11, 10, 12, tzinfo=UTC)
    applier = Applier(engine, Policy(), now=lambda: received)
    feed = Feed()
    await applier.apply([manager_upsert(feed, "m-1", "2026-01-01T09:00:00+08:00", "m1", "1000000")])
    await applier.apply([client_upsert(feed, "cv", "m1", "2026-01-05T09:00:00+08:00")])
    await applier.apply(
        [
            feed.msg(
                "crm.visits",
                env(
                    eid,
                    "visit.logged",
                    at,
                    client_id="cv",
                    manager_id="m1",
                    method="phone",
                    kind="routine",
                ),
            )
            for eid, at in (
                ("v1", "2026-11-09T18:00:00+08:00"),
                ("v2", "2026-11-08T20:00:00+08:00"),
                ("v3", "2026-11-05T10:00:00+08:00"),
                ("v4", "2026-10-30T10:00:00+08:00"),
            )
        ]
    )
    async with engine.connect() as conn:
        doc = await assess(
            conn, "m1", "month", date(2026, 11, 1), date(2026, 11, 30), Policy(), received
        )
    log = doc["evaluation"]["work_log"]
    assert (log["visits"], log["late"], log["limit_hours"]) == (3, 1, 48)
    assert log["on_time_share"] == "0.6667"
    assert "derived_signal" in doc["evaluation"]
