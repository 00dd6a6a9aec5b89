"""The idempotent batch apply on SQLite and PostgreSQL, without a broker."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from models.db import make_engine
from models.policy import Policy
from models.tables import EventRow, RejectedRow
from streams.apply import Applier, Incoming, attributed_manager
from streams.worker import Pipeline
from testkit.checks import assert_tallies, counts, month_doc
from testkit.db import Engines
from testkit.fakes import FlakyApplier
from testkit.feed import Feed, add_old_and_new_managers, env, vector_batches
from testkit.paths import VECTORS

FULL = Policy(handover_mode="full")
"""Transfers that take everything from the hand-over on: these tests are about moving facts
(the hand-over rule, 增量认领, has its own in tests/db/test_handover.py)."""


async def assert_vectors(engine: Any) -> None:
    expected = json.loads((VECTORS / "expected.json").read_text())
    await assert_tallies(engine, expected["tallies"], expected["branches"])
    _applied, rejected, held = await counts(engine)
    assert (rejected, held) == (expected["bad"], 0)


async def test_vectors_give_the_expected_tallies(db_url: str, engines: Engines) -> None:
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    for batch in vector_batches():
        await applier.apply(batch)
    await assert_vectors(engine)


async def test_redelivery_changes_nothing(db_url: str, engines: Engines) -> None:
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    batches = vector_batches(size=300)
    for batch in batches:
        await applier.apply(batch)
    # a crash before the offset commit: everything comes again, in other batch shapes
    for batch in batches[::-1]:
        result = await applier.apply(batch)
        assert sum(result.applied.values()) == 0
    await assert_vectors(engine)


async def test_event_for_unknown_client_is_held_then_applied(db_url: str, engines: Engines) -> None:
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    tx = env(
        "t1",
        "transaction.posted",
        "2026-11-02T10:00:00+08:00",
        client_id="c9",
        account_id="a",
        business_line="intermediary",
        amount="100",
        simulated_profit="10",
    )
    r = await applier.apply([feed.msg("bank.transactions", tx)])
    assert r.held == 1
    async with engine.connect() as conn:
        held = (await conn.execute(select(RejectedRow))).one()
    assert held.status == "held" and "client c9 is not known yet" in held.reason
    # the client arrives, but its manager does not exist yet: still held, for the manager
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    "c9-1",
                    "client.upserted",
                    "2026-08-01T00:00:00+08:00",
                    client_id="c9",
                    manager_id="m9",
                    claim_ratio="0.5",
                ),
            )
        ]
    )
    async with engine.connect() as conn:
        held = (await conn.execute(select(RejectedRow))).one()
    assert held.status == "held" and "manager m9" in held.reason
    r = await applier.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    "m9-1",
                    "manager.upserted",
                    "2026-08-01T00:00:00+08:00",
                    manager_id="m9",
                    branch_id="b9",
                ),
            )
        ]
    )
    assert r.released == 1
    doc = await month_doc(engine, "m9|2026-11")
    assert doc["transactions"] == 1
    assert doc["weighted_profit"] == "10.00"  # 10 × 2.0 × 0.5
    # a resend of the held event after its release is a duplicate
    r = await applier.apply([feed.msg("bank.transactions", tx)])
    assert sum(r.applied.values()) == 0 and r.duplicates == 1
    assert (await month_doc(engine, "m9|2026-11"))["transactions"] == 1


def deposit(feed: Feed, event_id: str, at: str, profit: str) -> Incoming:
    """A liability transaction of 1000 on client c's account a."""
    return feed.msg(
        "bank.transactions",
        env(
            event_id,
            "transaction.posted",
            at,
            client_id="c",
            account_id="a",
            business_line="liability",
            amount="1000",
            simulated_profit=profit,
        ),
    )


async def test_transfer_splits_the_month_including_a_late_event(
    db_url: str, engines: Engines
) -> None:
    engine = engines(db_url, writer=True)
    applier = Applier(engine, FULL)
    feed = Feed()
    await add_old_and_new_managers(applier, feed)
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    "c-1",
                    "client.upserted",
                    "2026-08-01T00:00:00+08:00",
                    client_id="c",
                    manager_id="old",
                ),
            ),
            feed.msg(
                "crm.clients",
                env(
                    "c-2",
                    "client.upserted",
                    "2026-11-15T09:00:00+08:00",
                    client_id="c",
                    manager_id="new",
                    assigned_at="2026-11-15T09:00:00+08:00",
                ),
            ),
        ]
    )

    def tx(i: int, at: str) -> Incoming:
        return deposit(feed, f"t{i}", at, "1.00")

    await applier.apply([tx(1, "2026-11-10T10:00:00+08:00"), tx(2, "2026-11-20T10:00:00+08:00")])
    # arrives last, happened before the transfer: stays with the old manager
    await applier.apply([tx(3, "2026-11-15T08:59:59+08:00"), tx(4, "2026-11-15T01:00:00Z")])
    old = await month_doc(engine, "old|2026-11")
    new = await month_doc(engine, "new|2026-11")
    assert (old["transactions"], new["transactions"]) == (2, 2)
    assert (await month_doc(engine, "b1|2026-11", branch=True))["transactions"] == 2
    assert (await month_doc(engine, "b2|2026-11", branch=True))["transactions"] == 2


def test_attribution_before_first_assignment_goes_to_the_first_manager() -> None:
    from datetime import datetime

    hist = [
        (datetime.fromisoformat("2026-08-01T00:00:00+08:00"), "a"),
        (datetime.fromisoformat("2026-10-01T00:00:00+08:00"), "b"),
    ]
    at = datetime.fromisoformat
    assert attributed_manager(hist, at("2026-01-01T00:00:00+08:00")) == "a"
    assert attributed_manager(hist, at("2026-09-30T23:59:59+08:00")) == "a"
    assert attributed_manager(hist, at("2026-10-01T00:00:00+08:00")) == "b"
    assert attributed_manager([], at("2026-10-01T00:00:00+08:00")) is None


async def test_bad_messages_are_recorded_once_even_when_redelivered(
    db_url: str, engines: Engines
) -> None:
    engine = engines(db_url, writer=True)
    applier = Applier(engine, Policy())
    bad = Incoming("bank.transactions", 3, 17, b"k", b"{oops")
    for _ in range(3):
        r = await applier.apply([bad])
        assert [reason for _m, reason in r.rejected] == [r.rejected[0][1]]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(RejectedRow))).all()
    assert len(rows) == 1
    assert rows[0].reason.startswith("bank.transactions[3]@17: value is not valid JSON")


async def test_pipeline_waits_out_database_outages_and_skips_nothing(
    sqlite_url: str, engines: Engines
) -> None:
    engine = engines(sqlite_url, writer=True)
    applier = FlakyApplier(engine, Policy(), failures=3)
    dead: list[tuple[Incoming, str]] = []

    async def deadletter(m: Incoming, reason: str) -> None:
        dead.append((m, reason))

    pipeline = Pipeline(applier, deadletter, max_backoff=0.05)
    feed = Feed()
    await pipeline.handle(
        [
            feed.msg(
                "crm.managers",
                env(
                    "m",
                    "manager.upserted",
                    "2026-08-01T00:00:00+08:00",
                    manager_id="m",
                    branch_id="b",
                ),
            )
        ]
    )
    assert applier.failures == 0 and pipeline.healthy
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(EventRow))).scalar() == 1
    assert dead == []


async def test_pipeline_isolates_a_message_that_breaks_the_apply(
    sqlite_url: str, engines: Engines
) -> None:
    engine = engines(sqlite_url, writer=True)
    applier = FlakyApplier(engine, Policy(), failures=0, poison="POISON")
    dead: list[tuple[Incoming, str]] = []

    async def deadletter(m: Incoming, reason: str) -> None:
        dead.append((m, reason))

    pipeline = Pipeline(applier, deadletter, max_backoff=0.05)
    feed = Feed()
    batch = [
        feed.msg(
            "crm.managers",
            env(
                f"m{i}",
                "manager.upserted",
                "2026-08-01T00:00:00+08:00",
                manager_id=f"m{i}",
                branch_id="b",
                name="POISON" if i == 5 else f"n{i}",
            ),
        )
        for i in range(8)
    ]
    await pipeline.handle(batch)
    assert [m.offset for m, _ in dead] == [5]
    assert "could not be applied: RuntimeError" in dead[0][1]
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(EventRow))).scalar() == 7
        row = (await conn.execute(select(RejectedRow))).one()
    assert row.offset == 5 and row.status == "rejected"


def test_money_columns_round_trip_exactly_on_sqlite() -> None:
    from models.tables import ExactDecimal

    t = ExactDecimal()

    class D:
        name = "sqlite"

    v = Decimal("123456789012345.123456789")
    assert t.process_result_value(t.process_bind_param(v, D()), D()) == v  # type: ignore[arg-type]


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_a_transfer_applied_after_the_facts_moves_their_credit(
    db_url: str, engines: Engines
) -> None:
    """Topics are not ordered: facts dated after a transfer may be applied before it."""
    engine = engines(db_url, writer=True)
    applier = Applier(engine, FULL)
    feed = Feed()
    await add_old_and_new_managers(applier, feed)
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    "c-1",
                    "client.upserted",
                    "2026-08-01T00:00:00+08:00",
                    client_id="c",
                    manager_id="old",
                    claim_ratio="0.6",
                ),
            )
        ]
    )
    facts = [
        feed.msg(
            "bank.transactions",
            env(
                f"t{i}",
                "transaction.posted",
                at,
                client_id="c",
                account_id="a",
                business_line="off_balance",
                amount="10",
                simulated_profit="3.33",
                **extra,
            ),
        )
        for i, (at, extra) in enumerate(
            [
                ("2026-11-10T10:00:00+08:00", {}),
                ("2026-11-20T10:00:00+08:00", {}),
                ("2026-11-21T10:00:00+08:00", {"manager_id": "old"}),  # override: never moves
            ]
        )
    ]
    await applier.apply(facts)
    assert (await month_doc(engine, "old|2026-11"))["transactions"] == 3
    # the transfer arrives last; so does a resend of it (nothing moves twice)
    transfer = feed.msg(
        "crm.clients",
        env(
            "c-2",
            "client.upserted",
            "2026-11-16T09:00:00+08:00",
            client_id="c",
            manager_id="new",
            claim_ratio="0.6",
            assigned_at="2026-11-15T00:00:00+08:00",
        ),
    )
    await applier.apply([transfer])
    await applier.apply([transfer])
    old = await month_doc(engine, "old|2026-11")
    new = await month_doc(engine, "new|2026-11")
    assert (old["transactions"], new["transactions"]) == (2, 1)
    # 3.33 × 1.5 × 0.6 = 2.997 each: exact sums, rounded once
    assert (old["weighted_profit"], new["weighted_profit"]) == ("5.99", "3.00")
    assert (await month_doc(engine, "b2|2026-11", branch=True))["weighted_profit"] == "3.00"
    assert (await month_doc(engine, "b1|2026-11", branch=True))["weighted_profit"] == "5.99"
    # a re-upsert naming the manager already in force changes nothing
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    "c-3",
                    "client.upserted",
                    "2026-11-22T09:00:00+08:00",
                    client_id="c",
                    manager_id="new",
                    claim_ratio="0.6",
                ),
            )
        ]
    )
    assert (await month_doc(engine, "new|2026-11"))["transactions"] == 1


async def test_a_transfer_to_a_manager_not_known_yet_holds_the_moved_facts(
    db_url: str, engines: Engines
) -> None:
    """Agents run concurrently: a transfer can be applied before its new manager's record."""
    engine = engines(db_url, writer=True)
    applier = Applier(engine, FULL)
    feed = Feed()
    await applier.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    "old-up",
                    "manager.upserted",
                    "2026-08-01T00:00:00+08:00",
                    manager_id="old",
                    branch_id="b1",
                ),
            )
        ]
    )
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    "c-1",
                    "client.upserted",
                    "2026-08-01T00:00:00+08:00",
                    client_id="c",
                    manager_id="old",
                ),
            )
        ]
    )
    await applier.apply(
        [
            feed.msg(
                "bank.transactions",
                env(
                    f"t{i}",
                    "transaction.posted",
                    at,
                    client_id="c",
                    account_id="a",
                    business_line="asset",
                    amount="100",
                    simulated_profit="10",
                ),
            )
            for i, at in enumerate(["2026-11-01T10:00:00+08:00", "2026-11-20T10:00:00+08:00"])
        ]
    )
    await applier.apply(
        [
            feed.msg(
                "crm.clients",
                env(
                    "c-2",
                    "client.upserted",
                    "2026-11-16T00:00:00+08:00",
                    client_id="c",
                    manager_id="late",
                    assigned_at="2026-11-15T00:00:00+08:00",
                ),
            )
        ]
    )
    # the moved fact has left 'old' and waits, listed as held, for 'late'
    assert (await month_doc(engine, "old|2026-11"))["transactions"] == 1
    assert (await month_doc(engine, "b1|2026-11", branch=True))["weighted_profit"] == "9.00"
    async with engine.connect() as conn:
        held = (await conn.execute(select(RejectedRow).where(RejectedRow.status == "held"))).one()
    assert "manager late is not known yet" in held.reason
    r = await applier.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    "late-up",
                    "manager.upserted",
                    "2026-08-01T00:00:00+08:00",
                    manager_id="late",
                    branch_id="b2",
                ),
            )
        ]
    )
    assert r.released == 1
    assert (await month_doc(engine, "late|2026-11"))["transactions"] == 1
    # claimed after a hand-over by a client without a ratio: 10 × 0.9 × 0.8 (hand-over ratio)
    assert (await month_doc(engine, "b2|2026-11", branch=True))["weighted_profit"] == "7.20"
    assert (await month_doc(engine, "old|2026-11"))["transactions"] == 1
    assert await counts(engine) == (6, 0, 0)  # 2 managers, 2 client records, 2 transactions


async def test_a_transfer_racing_the_release_of_its_clients_held_fact(
    pg_url: str, engines: Engines
) -> None:
    """Two workers at once (PostgreSQL): one applies a client's transfer while another
    applies the manager record that releases a held fact of that client. The releasing
    worker does not lock the client, so it may credit the fact by the history before the
    transfer commits; the transfer must then find the fact applied and move it. Seen once
    in the three-worker kill test: an account opening credited to the previous manager."""
    engine = engines(pg_url, writer=True)
    policy = FULL
    feed = Feed()

    def up(kind: str, eid: str, at: str, **payload: Any) -> list[Incoming]:
        topic = {"manager": "crm.managers", "client": "crm.clients"}[kind]
        return [feed.msg(topic, env(eid, f"{kind}.upserted", at, **payload))]

    setup = Applier(engine, policy)
    await setup.apply(
        up("manager", "new-up", "2026-08-01T00:00:00+08:00", manager_id="new", branch_id="b2")
    )
    # the client's first manager is not known yet: its account opening waits, held
    await setup.apply(
        up("client", "c-1", "2026-08-01T00:00:00+08:00", client_id="c", manager_id="old")
    )
    opened = env(
        "acc",
        "account.opened",
        "2026-11-20T10:00:00+08:00",
        client_id="c",
        account_id="a",
        account_type="payroll",
    )
    assert (await setup.apply([feed.msg("bank.accounts", opened)])).held == 1

    # worker A: the transfer (dated before the opening), stopped after its history write
    transfer = Applier(engine, policy)
    written, resume = asyncio.Event(), asyncio.Event()
    original = transfer._write_reference

    async def stop_after(conn: Any, fresh: Any) -> Any:
        out = await original(conn, fresh)
        written.set()
        await resume.wait()
        return out

    transfer._write_reference = stop_after  # type: ignore[method-assign]
    a = asyncio.create_task(
        transfer.apply(
            up(
                "client",
                "c-2",
                "2026-11-16T00:00:00+08:00",
                client_id="c",
                manager_id="new",
                assigned_at="2026-11-15T00:00:00+08:00",
            )
        )
    )
    await asyncio.wait_for(written.wait(), 10)
    # worker B: the old manager's record arrives and releases the opening meanwhile
    b = asyncio.create_task(
        Applier(engine, policy).apply(
            up("manager", "old-up", "2026-08-01T00:00:00+08:00", manager_id="old", branch_id="b1")
        )
    )
    done, _ = await asyncio.wait({b}, timeout=3)
    assert b in done, "the release does not wait for the transfer (the race under test)"
    resume.set()
    await asyncio.wait_for(asyncio.gather(a, b), 10)

    # the opening is dated after the transfer: the new manager's, once, and nowhere else
    new = await month_doc(engine, "new|2026-11")
    old = await month_doc(engine, "old|2026-11")
    assert new["accounts_opened"].get("payroll") == 1
    assert old["accounts_opened"].get("payroll", 0) == 0
    assert (await month_doc(engine, "b2|2026-11", branch=True))["accounts_opened"] == {"payroll": 1}
    async with engine.connect() as conn:
        row = (await conn.execute(select(EventRow).where(EventRow.event_id == "acc"))).one()
    assert (row.status, row.manager_id, row.branch_id) == ("applied", "new", "b2")


async def test_origin_claim_defaults_follow_the_hand_over(db_url: str, engines: Engines) -> None:
    """With the policy's origin defaults on: a natural-growth client's business is credited
    at 0.5; after a hand-over, deposits at 0.6 and the rest at 0.8, also when the transfer
    arrives after the business it covers; a replay computes the same."""
    from streams.replay import replay
    from testkit.checks import buckets

    policy = Policy(origin_claim_defaults=True, handover_mode="full")
    engine = engines(db_url, writer=True)
    applier = Applier(engine, policy)
    feed = Feed()
    await add_old_and_new_managers(applier, feed)

    def client(eid: str, at: str, manager: str) -> Incoming:
        return feed.msg(
            "crm.clients",
            env(eid, "client.upserted", at, client_id="c", manager_id=manager, origin="natural"),
        )

    def tx(i: int, at: str, line: str) -> Incoming:
        return feed.msg(
            "bank.transactions",
            env(
                f"t{i}",
                "transaction.posted",
                at,
                client_id="c",
                account_id="a",
                business_line=line,
                amount="1000",
                simulated_profit="100.00",
            ),
        )

    await applier.apply([client("c-1", "2026-11-01T09:00:00+08:00", "old")])
    await applier.apply(
        [
            tx(1, "2026-11-05T10:00:00+08:00", "liability"),  # old: 100 × 1.0 × 0.5
            tx(2, "2026-11-20T10:00:00+08:00", "liability"),  # after the hand-over: × 0.6
            tx(3, "2026-11-21T10:00:00+08:00", "intermediary"),  # 100 × 2.0 × 0.8
        ]
    )
    # the transfer arrives after the business it covers
    await applier.apply([client("c-2", "2026-11-15T09:00:00+08:00", "new")])
    old = await month_doc(engine, "old|2026-11")
    new = await month_doc(engine, "new|2026-11")
    assert old["weighted_profit"] == "50.00"
    assert new["weighted_profit"] == "220.00"  # 60 + 160
    live = await buckets(engine)
    await replay(engine, policy)
    assert await buckets(engine) == live


async def test_a_database_refusing_connections_rejects_nothing(pg_url: str) -> None:
    """PostgreSQL that stops accepting connections (SQLSTATE 55000, as during a restart or a
    maintenance switch) is an outage: the pipeline waits, then applies everything."""
    import asyncpg

    from testkit.db import pg_admin_url

    for url in (pg_url,):
        name = url.rsplit("/", 1)[1]
        engine = make_engine(url, writer=True)
        dead: list[tuple[Incoming, str]] = []

        async def deadletter(m: Incoming, reason: str, dead: list[Any] = dead) -> None:
            dead.append((m, reason))

        pipeline = Pipeline(Applier(engine, Policy()), deadletter, max_backoff=0.2)
        feed = Feed()
        batch = [
            feed.msg(
                "crm.managers",
                env(
                    f"m{i}",
                    "manager.upserted",
                    "2026-08-01T00:00:00+08:00",
                    manager_id=f"m{i}",
                    branch_id="b",
                ),
            )
            for i in range(4)
        ]
        admin = await asyncpg.connect(pg_admin_url())
        try:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await engine.dispose()  # no pooled connection survives the switch
            task = asyncio.create_task(pipeline.handle(batch))
            await asyncio.sleep(1.5)
            assert not task.done() and not pipeline.healthy
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await asyncio.wait_for(task, 30)
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await admin.close()
        assert dead == [] and pipeline.healthy
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(EventRow))).scalar() == 4
        await engine.dispose()


def test_raw_driver_errors_of_an_outage_are_transient() -> None:
    """The PostgreSQL claim runs on the raw asyncpg connection: its errors arrive unwrapped."""
    import asyncpg

    from streams.worker import is_transient

    assert is_transient(asyncpg.exceptions.ReadOnlySQLTransactionError("read-only"))
    assert is_transient(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert is_transient(asyncpg.exceptions.ObjectNotInPrerequisiteStateError("not accepting"))
    assert not is_transient(asyncpg.exceptions.UniqueViolationError("duplicate key"))
    assert not is_transient(ValueError("a bad message"))


async def test_terms_kept_across_batches_follow_every_writer(db_url: str) -> None:
    """A worker keeps the credit rule's terms between batches; a transfer applied by another
    worker, an operator's SQL and a batch of its own that rolled back are all seen."""
    from sqlalchemy import text

    engine = make_engine(db_url, writer=True)
    a, b = Applier(engine, FULL), Applier(engine, FULL)
    feed = Feed()
    await add_old_and_new_managers(a, feed)

    def client(eid: str, at: str, manager: str, assigned: str | None = None) -> Incoming:
        extra = {"assigned_at": assigned} if assigned else {}
        return feed.msg(
            "crm.clients",
            env(eid, "client.upserted", at, client_id="c", manager_id=manager, **extra),
        )

    def tx(i: int, at: str) -> Incoming:
        return deposit(feed, f"t{i}", at, "100.00")

    async def credited(eid: str) -> tuple[str, Decimal]:
        async with engine.connect() as conn:
            row = (await conn.execute(select(EventRow).where(EventRow.event_id == eid))).one()
        return row.manager_id, row.weighted_profit

    await a.apply([client("c-1", "2026-11-01T09:00:00+08:00", "old")])
    await a.apply([tx(1, "2026-11-05T10:00:00+08:00")])
    assert await credited("t1") == ("old", Decimal("100.00"))
    # another worker applies the transfer; the first one's next fact follows it
    await b.apply([client("c-2", "2026-11-15T09:00:00+08:00", "new", "2026-11-15T09:00:00+08:00")])
    await a.apply([tx(2, "2026-11-20T10:00:00+08:00")])
    assert await credited("t2") == ("new", Decimal("60"))  # a hand-over's deposits: 0.6
    # an operator's SQL on a claim ratio
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE clients SET claim_ratio = '0.5' WHERE client_id = 'c'"))
    await a.apply([tx(3, "2026-11-21T10:00:00+08:00")])
    assert await credited("t3") == ("new", Decimal("50.00"))
    # a batch that moves the client back to 'old' and fails after crediting: rolled back
    original = a.ledger.add

    async def fail(*args: Any) -> None:
        raise RuntimeError("the database went away")

    a.ledger.add = fail  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await a.apply(
            [
                client("c-3", "2026-11-25T09:00:00+08:00", "old", "2026-11-25T09:00:00+08:00"),
                tx(4, "2026-11-26T10:00:00+08:00"),
            ]
        )
    a.ledger.add = original  # type: ignore[method-assign]
    # another writer moves the reference version on (as far as the rolled-back batch had)
    await b.apply(
        [
            feed.msg(
                "crm.managers",
                env(
                    "x-up",
                    "manager.upserted",
                    "2026-08-01T00:00:00+08:00",
                    manager_id="x",
                    branch_id="b3",
                ),
            )
        ]
    )
    await a.apply([tx(5, "2026-11-27T10:00:00+08:00")])
    assert await credited("t5") == ("new", Decimal("50.00"))
    await engine.dispose()
