"""The hand-over rule (他人移交的客户, 增量认领: DOMAIN.md "Hand-over", issue 16 point 6) through
the live apply, the moves it makes and the replay, on SQLite and PostgreSQL.

The case used throughout, worked by hand. Managers ``old`` (branch b1) and ``new`` (b2);
client ``c`` held by ``old`` from 2026-08-01, no claim ratio of its own; handed over to ``new``
at 2026-11-15 09:00 (Shanghai). Accounts: ``a1`` opened 2026-09-01 (before the hand-over),
``a2`` opened 2026-11-18 (after), ``a3`` never seen opened. One transaction each, profit
100.00:

- t1 on a1, 2026-11-20, liability (1.0): existing business, old's at 1.0 → 100.00;
- t2 on a2, 2026-11-21, intermediary (2.0): new's at the hand-over ratio 0.8 → 160.00;
- t3 on a3, 2026-11-22, asset (0.9): never seen opened = existing, old's at 1.0 → 90.00.

So in November old has 2 transactions, 190.00; new 1 transaction, 160.00 (+ the opening of
a2). If old leaves (inactive), a full transfer: new also takes t1 at the deposit hand-over
ratio 0.6 → 60.00 and t3 at 0.8 → 0.9 × 0.8 × 100 = 72.00: new 3 transactions, 292.00, old
none. Mode ``full`` gives the same 292.00 while old is active.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from models.db import make_engine
from models.policy import Policy
from models.tables import AccountRow
from streams.apply import Applier, Incoming
from streams.replay import replay
from testkit.checks import assert_tallies, buckets, month_doc
from testkit.db import Engines, fresh_database
from testkit.factories import Msg, compute_expected, generate_log, valid_events
from testkit.feed import Feed, add_old_and_new_managers, batches_of, env

INCREMENT, FULL = Policy(), Policy(handover_mode="full")
HAND_OVER = "2026-11-15T09:00:00+08:00"


def _client(feed: Feed, eid: str, manager: str, assigned_at: str) -> Incoming:
    return feed.msg(
        "crm.clients",
        env(
            eid,
            "client.upserted",
            assigned_at,
            client_id="c",
            manager_id=manager,
            assigned_at=assigned_at,
        ),
    )


def _opened(feed: Feed, account: str, at: str) -> Incoming:
    return feed.msg(
        "bank.accounts",
        env(
            f"o-{account}",
            "account.opened",
            at,
            client_id="c",
            account_id=account,
            account_type="general_settlement",
        ),
    )


def _tx(feed: Feed, eid: str, account: str, at: str, line: str) -> Incoming:
    return feed.msg(
        "bank.transactions",
        env(
            eid,
            "transaction.posted",
            at,
            client_id="c",
            account_id=account,
            business_line=line,
            amount="1000.00",
            simulated_profit="100.00",
        ),
    )


def _manager(feed: Feed, eid: str, at: str, active: bool) -> Incoming:
    return feed.msg(
        "crm.managers",
        env(eid, "manager.upserted", at, manager_id="old", branch_id="b1", active=active),
    )


async def _figures(engine: Any) -> dict[str, tuple[int, str]]:
    out = {}
    for key in ("old|2026-11", "new|2026-11", "b1|2026-11", "b2|2026-11"):
        doc = await month_doc(engine, key, branch=key.startswith("b"))
        out[key] = (doc["transactions"], doc["weighted_profit"])
    return out


SPLIT = {
    "old|2026-11": (2, "190.00"),
    "new|2026-11": (1, "160.00"),
    "b1|2026-11": (2, "190.00"),
    "b2|2026-11": (1, "160.00"),
}
TAKEN = {
    "old|2026-11": (0, "0.00"),
    "new|2026-11": (3, "292.00"),
    "b1|2026-11": (0, "0.00"),
    "b2|2026-11": (3, "292.00"),
}


async def _the_case_arriving_late(applier: Applier) -> None:
    """Everything arrives out of order: the business first, then the (late) hand-over, then
    the (late) openings, so both moves run: the transfer's and the openings'."""
    feed = Feed()
    await add_old_and_new_managers(applier, feed)
    await applier.apply([_client(feed, "c-1", "old", "2026-08-01T00:00:00+08:00")])
    await applier.apply(
        [
            _tx(feed, "t1", "a1", "2026-11-20T10:00:00+08:00", "liability"),
            _tx(feed, "t2", "a2", "2026-11-21T10:00:00+08:00", "intermediary"),
            _tx(feed, "t3", "a3", "2026-11-22T10:00:00+08:00", "asset"),
        ]
    )
    await applier.apply([_client(feed, "c-2", "new", HAND_OVER)])
    await applier.apply(
        [
            _opened(feed, "a1", "2026-09-01T10:00:00+08:00"),
            _opened(feed, "a2", "2026-11-18T10:00:00+08:00"),
        ]
    )


async def test_hand_over_splits_existing_and_new_accounts(db_url: str, engines: Engines) -> None:
    """See the module docstring: old keeps a1 and a3 (190.00), new takes a2 (160.00) and
    its opening; the late transfer moves nothing (no account opened after it is known yet:
    all three are existing business), the late opening of a2 moves t2 from old to new."""
    engine = engines(db_url, writer=True)
    applier = Applier(engine, INCREMENT)
    feed = Feed()
    await add_old_and_new_managers(applier, feed)
    await applier.apply([_client(feed, "c-1", "old", "2026-08-01T00:00:00+08:00")])
    await applier.apply(
        [
            _tx(feed, "t1", "a1", "2026-11-20T10:00:00+08:00", "liability"),
            _tx(feed, "t2", "a2", "2026-11-21T10:00:00+08:00", "intermediary"),
            _tx(feed, "t3", "a3", "2026-11-22T10:00:00+08:00", "asset"),
        ]
    )
    await applier.apply([_client(feed, "c-2", "new", HAND_OVER)])
    # no opening known yet: every account is existing business, the transfer moves nothing
    assert (await _figures(engine))["old|2026-11"] == (3, "390.00")
    assert (await _figures(engine))["new|2026-11"] == (0, "0.00")
    await applier.apply([_opened(feed, "a1", "2026-09-01T10:00:00+08:00")])
    assert (await _figures(engine))["old|2026-11"] == (3, "390.00")
    await applier.apply([_opened(feed, "a2", "2026-11-18T10:00:00+08:00")])
    assert await _figures(engine) == SPLIT
    assert (await month_doc(engine, "new|2026-11"))["accounts_opened"] == {"general_settlement": 1}
    assert (await month_doc(engine, "old|2026-09"))["accounts_opened"] == {"general_settlement": 1}
    async with engine.connect() as conn:
        rows = (await conn.execute(select(AccountRow.account_id, AccountRow.client_id))).all()
    assert sorted(rows) == [("a1", "c"), ("a2", "c")]
    # a resent opening, or an opening and its business in one batch, changes nothing more
    feed2 = Feed()
    await applier.apply([_opened(feed2, "a2", "2026-11-18T10:00:00+08:00")])
    await applier.apply(
        [
            _opened(feed2, "a4", "2026-11-25T10:00:00+08:00"),
            _tx(feed2, "t4", "a4", "2026-11-26T10:00:00+08:00", "liability"),  # 100 × 0.6
        ]
    )
    figures = await _figures(engine)
    assert figures["new|2026-11"] == (2, "220.00") and figures["old|2026-11"] == (2, "190.00")


async def test_previous_manager_leaving_makes_a_full_transfer(
    db_url: str, engines: Engines
) -> None:
    """Old leaves (active false): new takes t1 (60.00) and t3 (72.00) too, 292.00 in all;
    old comes back: the split again. Each change of the flag moves the facts exactly."""
    engine = engines(db_url, writer=True)
    applier = Applier(engine, INCREMENT)
    await _the_case_arriving_late(applier)
    assert await _figures(engine) == SPLIT
    feed = Feed()
    await applier.apply([_manager(feed, "old-left", "2026-12-01T09:00:00+08:00", False)])
    assert await _figures(engine) == TAKEN
    await applier.apply([_manager(feed, "old-back", "2026-12-02T09:00:00+08:00", True)])
    assert await _figures(engine) == SPLIT


async def test_mode_full_takes_everything_from_the_hand_over(db_url: str, engines: Engines) -> None:
    """``[handover] mode = "full"``: as before the rule, new takes all three (292.00)."""
    engine = engines(db_url, writer=True)
    await _the_case_arriving_late(Applier(engine, FULL))
    assert await _figures(engine) == TAKEN


async def test_replay_follows_the_mode(db_url: str, engines: Engines) -> None:
    """A replay re-credits history by the mode of its policy, both ways."""
    engine = engines(db_url, writer=True)
    await _the_case_arriving_late(Applier(engine, INCREMENT))
    live = await buckets(engine)
    await replay(engine, FULL)
    assert await _figures(engine) == TAKEN
    await replay(engine, INCREMENT)
    assert await _figures(engine) == SPLIT
    assert await buckets(engine) == live


def _log_with_handed_over_accounts(seed: int) -> list[Any]:
    """A generated log (transfers in October) plus, for every client, an account opened on
    2026-10-25 with a November transaction on it (increment business for the transferred
    ones), and one manager who leaves in December."""
    log = generate_log(seed, events=1200, managers=6, branches=2, clients=50, transfers=10)
    messages = list(log.messages)
    rng = random.Random(seed)
    cids = sorted({e["payload"]["client_id"] for e in _clients(log)})
    for i, c in enumerate(cids):
        opened = {
            "event_id": f"x-open-{c}",
            "event_type": "account.opened",
            "schema_version": 1,
            "occurred_at": "2026-10-25T10:00:00+08:00",
            "payload": {"client_id": c, "account_id": f"x{c}", "account_type": "special"},
        }
        tx = {
            "event_id": f"x-tx-{c}",
            "event_type": "transaction.posted",
            "schema_version": 1,
            "occurred_at": f"2026-11-{1 + i % 28:02d}T10:00:00+08:00",
            "payload": {
                "client_id": c,
                "account_id": f"x{c}",
                "business_line": rng.choice(("asset", "liability", "intermediary")),
                "amount": "100.00",
                "simulated_profit": f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}",
            },
        }
        messages.append(Msg("accounts", c.encode(), json.dumps(opened).encode()))
        messages.append(Msg("transactions", c.encode(), json.dumps(tx).encode()))
    first = next(m for m in log.messages if m.role == "managers")
    leaving = json.loads(first.value)
    leaving["event_id"] = "leaves"
    leaving["occurred_at"] = "2026-12-01T09:00:00+08:00"
    leaving["payload"]["active"] = False
    messages.append(Msg("managers", first.key, json.dumps(leaving).encode()))
    log.messages = messages
    return log


def _clients(log: Any) -> list[dict]:
    valid, _bad = valid_events(log.messages)
    return [e for e in valid if e["event_type"] == "client.upserted"]


async def _apply_log(url: str, log: Any, policy: Policy, seed: int) -> Any:
    engine = make_engine(url, writer=True)
    applier = Applier(engine, policy)
    for batch in batches_of(log, random.Random(seed)):
        await applier.apply(batch)
    return engine


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_replay_after_switching_the_mode_equals_a_fresh_computation(kind: str) -> None:
    """A log with hand-overs, openings before and after them (arriving in any order against
    the business on them) and a manager leaving, applied live in one mode and replayed in
    the other, gives the buckets of a fresh apply in the other mode, and the independent
    oracle's figures (testkit/factories.py) for that mode."""
    seed = 7
    log = _log_with_handed_over_accounts(seed)
    valid, _bad = valid_events(log.messages)
    expected = {m: compute_expected(valid, handover=m) for m in ("increment", "full")}
    assert expected["increment"] != expected["full"]

    async def run(url_a: str, url_b: str) -> None:
        a = await _apply_log(url_a, log, INCREMENT, seed)
        b = await _apply_log(url_b, log, FULL, seed + 1)
        try:
            await assert_tallies(a, *expected["increment"])
            await assert_tallies(b, *expected["full"])
            live = await buckets(a)
            await replay(a, FULL)
            assert await buckets(a) == await buckets(b)
            await replay(b, INCREMENT)
            assert await buckets(b) == live
            await assert_tallies(b, *expected["increment"])
        finally:
            await a.dispose()
            await b.dispose()

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        urls = []
        for name in ("a", "b"):
            (Path(tmp) / name).mkdir()
            urls.append(stack.enter_context(fresh_database(kind, Path(tmp) / name)))
        asyncio.run(run(*urls))


def test_migration_backfills_the_accounts_from_stored_openings(tmp_path: Path) -> None:
    """Openings stored before the accounts table existed are backfilled by migration 0007:
    the earliest of each account (a2 opened twice: 2026-11-18 02:00 UTC wins)."""
    import sqlite3

    from models.db import upgrade

    path = tmp_path / "crm.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, "0011")
    rows = [
        ("o1", "a1", "2026-09-01T10:00:00+08:00"),
        ("o2", "a2", "2026-11-19T10:00:00+08:00"),
        ("o3", "a2", "2026-11-18T10:00:00+08:00"),
    ]
    with sqlite3.connect(path) as db:
        for eid, account, at in rows:
            value = env(
                eid,
                "account.opened",
                at,
                client_id="c",
                account_id=account,
                account_type="special",
            ).decode()
            db.execute(
                'INSERT INTO events (event_id, event_type, topic, partition, "offset",'
                " occurred_at, received_at, status, client_id, value)"
                " VALUES (?, 'account.opened', 'bank.accounts', 0, ?, ?, ?, 'applied', 'c', ?)",
                (eid, int(eid[1]), at, at, value),
            )
    upgrade(url)
    with sqlite3.connect(path) as db:
        got = db.execute(
            "SELECT account_id, client_id, opened_at FROM accounts ORDER BY 1"
        ).fetchall()
    assert got == [
        ("a1", "c", "2026-09-01 02:00:00.000000"),
        ("a2", "c", "2026-11-18 02:00:00.000000"),
    ]
