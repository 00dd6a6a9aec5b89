"""Balances (日均): the shared vectors, an independent oracle with gaps, corrections, late
snapshots and a mid-month transfer, on both databases."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from api.auth import mint_token
from config import Settings
from crmtracker.broker import ensure_topics
from crmtracker.compose import api_app as create_app
from models.balances import average_balances, client_averages
from models.db import make_engine
from models.decode import decode_event
from models.events import BalanceSnapshot, InvalidEvent
from models.policy import Policy, money, period_range
from models.tables import BalanceDayRow, BalanceOpeningRow, BalanceSnapshotRow, RejectedRow
from streams.apply import Applier, Incoming
from streams.replay import replay
from testkit.broker import isolated_settings, produce, wait_for_counts
from testkit.feed import Feed, env, vector_batches
from testkit.paths import VECTORS
from testkit.process import WorkerProcess

TODAY = date(2026, 12, 3)


def balance_batches(size: int = 100) -> list[list[Incoming]]:
    feed = Feed()
    msgs = [
        feed.msg(m["topic"], m["value"].encode(), m["key"])
        for m in map(json.loads, (VECTORS / "balances.jsonl").read_text().splitlines())
    ]
    return [msgs[i : i + size] for i in range(0, len(msgs), size)]


def month_of(key: str) -> tuple[str, date, date]:
    owner, ym = key.split("|")
    start, end = period_range("month", date(int(ym[:4]), int(ym[5:]), 1))
    return owner, start, end


async def manager_month(engine: Any, key: str, today: date = TODAY) -> dict[str, str]:
    owner, start, end = month_of(key)
    async with engine.connect() as conn:
        avg = (await average_balances(conn, "manager", [owner], start, end, today))[owner]
    return {line: money(v) for line, v in avg.items()}


async def test_vectors_reproduce_the_expected_averages(db_url: str) -> None:
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy())
    for batch in vector_batches():
        await applier.apply(batch)
    batches = balance_batches()
    for batch in batches:
        await applier.apply(batch)
    expected = json.loads((VECTORS / "balances_expected.json").read_text())
    got = {k: await manager_month(engine, k) for k in expected["average_balance"]}
    assert got == expected["average_balance"]
    # redelivered in other batch shapes: nothing changes
    for batch in balance_batches(size=37)[::-1]:
        r = await applier.apply(batch)
        assert sum(r.applied.values()) == 0
    got = {k: await manager_month(engine, k) for k in expected["average_balance"]}
    assert got == expected["average_balance"]
    # a replay rebuilds the same changes and openings from the stored snapshots
    before = await _balance_rows(engine)
    rebuilt = (await replay(engine, Policy())).balance_changes
    assert rebuilt == len(before[0]) > 0  # the count the replay reports: the change rows
    assert await _balance_rows(engine) == before
    got = {k: await manager_month(engine, k) for k in expected["average_balance"]}
    assert got == expected["average_balance"]
    await engine.dispose()


async def _balance_rows(engine: Any) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
    """The non-zero change rows and the year openings, as sets of plain tuples."""
    async with engine.connect() as conn:
        days = {
            tuple(r)
            for r in (await conn.execute(select(BalanceDayRow.__table__))).all()
            if r.liability or r.asset
        }
        openings = {
            tuple(r) for r in (await conn.execute(select(BalanceOpeningRow.__table__))).all()
        }
    return days, openings


# --- the independent oracle -----------------------------------------------------------------
def oracle(
    snapshots: list[dict[str, Any]],
    history: dict[str, list[tuple[date, str]]],
    start: date,
    end: date,
    mode: str = "increment",
    window: int = 183,
) -> dict[str, dict[str, Decimal]]:
    """Day by day: each account's winning snapshot per date (latest occurred_at; the first
    of equals), carried forward; each day credited to the holder of that day. Increment
    mode: after a hand-over, the client's deposits up to its base (average daily deposits
    of the ``window`` days before the hand-over) stay with the previous holder."""
    best: dict[tuple[str, date], dict[str, Any]] = {}
    for s in snapshots:
        k = (s["account_id"], s["as_of_date"])
        if k not in best or s["occurred_at"] > best[k]["occurred_at"]:
            best[k] = s
    accounts = {s["account_id"]: (s["client_id"], s["business_line"]) for s in snapshots}
    first_day = min(s["as_of_date"] for s in snapshots) - timedelta(days=window + 1)
    # per (client, line): day → carried balance (all its accounts)
    per_client: dict[tuple[str, str], dict[date, Decimal]] = defaultdict(
        lambda: defaultdict(Decimal)
    )
    for acc, (client, line) in accounts.items():
        balance = Decimal(0)
        day = first_day
        while day <= end:
            if (acc, day) in best:
                balance = best[(acc, day)]["balance"]
            per_client[(client, line)][day] += balance
            day += timedelta(days=1)
    sums: dict[str, dict[str, Decimal]] = defaultdict(
        lambda: {"liability": Decimal(0), "asset": Decimal(0)}
    )
    days = (end - start).days + 1
    for (client, line), series in per_client.items():
        day = start
        while day <= end:
            hist = history[client]
            i = max([k for k, (first, _m) in enumerate(hist) if first <= day], default=0)
            holder = hist[i][1]
            amount = series[day]
            if mode == "increment" and line == "liability" and i > 0:
                handed = hist[i][0]
                base_days = [handed - timedelta(days=n) for n in range(1, window + 1)]
                base = sum((series[d] for d in base_days), Decimal(0)) / window
                kept = min(amount, base)
                sums[hist[i - 1][1]][line] += kept
                amount -= kept
            sums[holder][line] += amount
            day += timedelta(days=1)
    return {m: {k: v / days for k, v in lines.items()} for m, lines in sums.items()}


def snap(
    eid: str, client: str, account: str, line: str, balance: Decimal, day: date, at: datetime
) -> tuple[bytes, dict[str, Any]]:
    value = env(
        eid,
        "balance.snapshot",
        at.isoformat(),
        client_id=client,
        account_id=account,
        business_line=line,
        balance=str(balance),
        as_of_date=day.isoformat(),
    )
    record = {
        "client_id": client,
        "account_id": account,
        "business_line": line,
        "balance": balance,
        "as_of_date": day,
        "occurred_at": at,
    }
    return value, record


def reference(feed: Feed) -> list[Incoming]:
    out = []
    for m in ("ma", "mb", "mc"):
        out.append(
            feed.msg(
                "crm.managers",
                env(
                    f"{m}-1",
                    "manager.upserted",
                    "2026-01-01T08:00:00+08:00",
                    manager_id=m,
                    branch_id="b1" if m != "mc" else "b2",
                ),
            )
        )
    return out


def client_msg(feed: Feed, eid: str, client: str, manager: str, at: str) -> Incoming:
    return feed.msg(
        "crm.clients",
        env(eid, "client.upserted", at, client_id=client, manager_id=manager, assigned_at=at),
    )


def random_log(rng: random.Random) -> tuple[list[tuple[bytes, dict[str, Any]]], list[str]]:
    """Snapshots of 6 accounts of 4 clients, Sept-Nov 2026: gaps, corrections (later
    occurred_at), stale corrections (earlier), resends, shuffled."""
    accounts = [
        ("c1", "a1", "liability"),
        ("c1", "a2", "asset"),
        ("c2", "a3", "liability"),
        ("c3", "a4", "liability"),
        ("c4", "a5", "asset"),
        ("c4", "a6", "liability"),
    ]
    out = []
    n = 0
    for client, acc, line in accounts:
        day = date(2026, 9, 1) + timedelta(days=rng.randrange(20))
        while day <= date(2026, 11, 20):
            if rng.random() < 0.7:  # a gap otherwise
                at = datetime(day.year, day.month, day.day, 18, tzinfo=UTC)
                bal = Decimal(rng.randrange(0, 10**9)) / 100
                n += 1
                out.append(snap(f"s{n}", client, acc, line, bal, day, at))
                r = rng.random()
                if r < 0.15:  # a correction, later
                    n += 1
                    bal2 = Decimal(rng.randrange(0, 10**9)) / 100
                    out.append(snap(f"s{n}", client, acc, line, bal2, day, at + timedelta(hours=5)))
                elif r < 0.3:  # a stale correction, earlier: loses
                    n += 1
                    bal2 = Decimal(rng.randrange(0, 10**9)) / 100
                    out.append(snap(f"s{n}", client, acc, line, bal2, day, at - timedelta(hours=5)))
            day += timedelta(days=1)
    resent = [out[i] for i in rng.sample(range(len(out)), 20)]
    out.extend(resent)
    rng.shuffle(out)
    return out, ["c1", "c2", "c3", "c4"]


TRANSFER_AT = "2026-10-15T10:00:00+08:00"
HISTORY = {
    "c1": [(date(2026, 1, 1), "ma"), (date(2026, 10, 15), "mb")],
    "c2": [(date(2026, 1, 1), "ma")],
    "c3": [(date(2026, 1, 1), "mb"), (date(2026, 10, 15), "mc")],
    "c4": [(date(2026, 1, 1), "mc")],
}


async def check_against_oracle(engine: Any, records: list[dict[str, Any]]) -> None:
    wrong = []
    for ym in ("2026-09", "2026-10", "2026-11"):
        start, end = period_range("month", date(int(ym[:4]), int(ym[5:]), 1))
        want = oracle(records, HISTORY, start, end)
        async with engine.connect() as conn:
            got = await average_balances(conn, "manager", ["ma", "mb", "mc"], start, end, TODAY)
            branches = await average_balances(conn, "branch", ["b1", "b2"], start, end, TODAY)
        zero = {"liability": Decimal(0), "asset": Decimal(0)}
        for m in ("ma", "mb", "mc"):
            w = {k: money(v) for k, v in want.get(m, zero).items()}
            g = {k: money(v) for k, v in got[m].items()}
            if w != g:
                wrong.append((m, ym, w, g))
        b1 = {
            k: money(want.get("ma", zero)[k] + want.get("mb", zero)[k])
            for k in ("liability", "asset")
        }
        if b1 != {k: money(v) for k, v in branches["b1"].items()}:
            wrong.append(("b1", ym, b1, branches["b1"]))
    assert not wrong, wrong


async def test_oracle_gaps_corrections_late_and_a_mid_month_transfer(db_url: str) -> None:
    rng = random.Random(19)
    log, _clients = random_log(rng)
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply(reference(feed))
    start = "2026-01-01T09:00:00+08:00"
    # c4's snapshots arrive before the client: held, then applied
    early = [m for m in log if m[1]["client_id"] == "c4"][:10]
    r = await applier.apply([feed.msg("bank.balances", v, key="c4") for v, _ in early])
    assert r.held == len(early)
    await applier.apply(
        [client_msg(feed, f"{c}-1", c, HISTORY[c][0][1], start) for c in ("c1", "c2", "c3", "c4")]
    )
    # the first part of the log, then the transfers (late: facts dated past them are in),
    # then the rest in batches of every size
    first, rest = log[:150], log[150:]
    await applier.apply([feed.msg("bank.balances", v) for v, _ in first])
    await applier.apply(
        [
            client_msg(feed, "c1-2", "c1", "mb", TRANSFER_AT),
            client_msg(feed, "c3-2", "c3", "mc", TRANSFER_AT),
        ]
    )
    i = 0
    while i < len(rest):
        n = rng.randrange(1, 60)
        await applier.apply([feed.msg("bank.balances", v) for v, _ in rest[i : i + n]])
        i += n
    await check_against_oracle(engine, [rec for _, rec in log])
    # a replay rebuilds the same figures from the snapshots and today's history
    before = await _balance_rows(engine)
    await replay(engine, Policy())
    assert await _balance_rows(engine) == before
    await check_against_oracle(engine, [rec for _, rec in log])
    # per client, from the snapshots
    async with engine.connect() as conn:
        per_client = await client_averages(
            conn, ["c2"], date(2026, 10, 1), date(2026, 10, 31), TODAY
        )
    want = oracle(
        [rec for _, rec in log if rec["client_id"] == "c2"],
        HISTORY,
        date(2026, 10, 1),
        date(2026, 10, 31),
    )["ma"]
    assert {k: money(v) for k, v in per_client["c2"].items()} == {
        k: money(v) for k, v in want.items()
    }
    await engine.dispose()


@pytest.mark.parametrize("moved", [("c1",), ("c2",), ("c1", "c2")])
async def test_a_transfer_after_an_account_changed_client_equals_the_rebuild(
    db_url: str, moved: tuple[str, ...]
) -> None:
    """Account a1 is c1's until 10 October, then c2's (and a loan): a late transfer of
    either client, or both, moves what each client's holders were credited, the take-back
    of a1's last c1 balance on the 11th included, as the rebuild computes it."""
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    start = "2026-01-01T09:00:00+08:00"
    await applier.apply(reference(feed))
    await applier.apply(
        [client_msg(feed, "c1-1", "c1", "ma", start), client_msg(feed, "c2-1", "c2", "mc", start)]
    )
    snaps = []
    for i in range(20):
        day = date(2026, 10, 1) + timedelta(days=i)
        at = datetime(2026, 10, 1, 18, tzinfo=UTC) + timedelta(days=i)
        owner, line = ("c1", "liability") if i < 10 else ("c2", "asset")
        snaps.append(snap(f"a1-{i}", owner, "a1", line, Decimal(1000 + 37 * i), day, at)[0])
        snaps.append(snap(f"a2-{i}", "c2", "a2", "liability", Decimal(500 + 11 * i), day, at)[0])
    for i in range(0, len(snaps), 7):
        await applier.apply([feed.msg("bank.balances", v) for v in snaps[i : i + 7]])
    late = "2026-10-05T10:00:00+08:00"  # before a1 moved to c2
    r = await applier.apply([client_msg(feed, f"{c}-2", c, "mb", late) for c in moved])
    assert r.changed_managers >= {"mb"}
    live = await _balance_rows(engine)
    await replay(engine, Policy())
    assert await _balance_rows(engine) == live
    await engine.dispose()


async def test_a_year_reads_at_most_366_change_rows_and_one_opening(db_url: str) -> None:
    """Balances over two years: next year's query does not read the year before."""
    engine = make_engine(db_url, writer=True)
    # the clock after the last snapshot (an event dated ahead of it is refused)
    applier = Applier(engine, Policy(), now=lambda: datetime(2028, 1, 5, tzinfo=UTC))
    feed = Feed()
    await applier.apply(reference(feed))
    await applier.apply([client_msg(feed, "c1-1", "c1", "ma", "2025-12-01T09:00:00+08:00")])
    msgs, total = [], Decimal(0)
    day, n = date(2026, 1, 1), 0
    while day <= date(2027, 12, 31):
        n += 1
        bal = Decimal(n * 10)
        at = datetime(day.year, day.month, day.day, 20, tzinfo=UTC)
        msgs.append(
            feed.msg("bank.balances", snap(f"y{n}", "c1", "a1", "liability", bal, day, at)[0])
        )
        if day.year == 2027:
            total += bal
        day += timedelta(days=1)
    for i in range(0, len(msgs), 200):
        await applier.apply(msgs[i : i + 200])
    async with engine.connect() as conn:
        got = await average_balances(
            conn, "manager", ["ma"], date(2027, 1, 1), date(2027, 12, 31), date(2028, 1, 5)
        )
        rows = (
            await conn.execute(
                select(func.count())
                .select_from(BalanceDayRow)
                .where(BalanceDayRow.owner_id == "ma", BalanceDayRow.day >= date(2027, 1, 1))
            )
        ).scalar_one()
    assert rows <= 365
    assert money(got["ma"]["liability"]) == money(total / 365)
    # a late correction in 2026 moves 2027's opening too
    at = datetime(2026, 3, 1, 23, tzinfo=UTC)
    await applier.apply(
        [
            feed.msg(
                "bank.balances",
                snap("late", "c1", "a1", "liability", Decimal("1e6"), date(2026, 6, 30), at)[0],
            )
        ]
    )
    async with engine.connect() as conn:
        got2 = await average_balances(
            conn, "manager", ["ma"], date(2027, 1, 1), date(2027, 12, 31), date(2028, 1, 5)
        )
    assert got2 == got  # 1 July 2026 has its own snapshot: nothing carried into 2027
    await engine.dispose()


def test_balance_snapshot_validation() -> None:
    ok = env(
        "e1",
        "balance.snapshot",
        "2026-11-10T01:00:00+08:00",
        client_id="c",
        account_id="a",
        business_line="liability",
        balance="12.50",
        as_of_date="2026-11-09",
    )
    ev = decode_event(ok)
    assert ev.payload.balance == Decimal("12.50")  # type: ignore[union-attr]
    bad = {
        "business_line": ("intermediary", "payload.business_line"),
        "balance": ("-1", "payload.balance"),
        "as_of_date": ("2026/11/09", "payload.as_of_date"),
        "currency": ("USD", "payload.currency"),
    }
    for field, (value, where) in bad.items():
        doc = json.loads(ok)
        doc["payload"][field] = value
        try:
            decode_event(json.dumps(doc).encode())
        except InvalidEvent as exc:
            assert exc.reason.startswith(where), exc.reason
        else:
            raise AssertionError(f"{field}={value!r} accepted")
    doc = json.loads(ok)
    del doc["payload"]["as_of_date"]
    try:
        decode_event(json.dumps(doc).encode())
    except InvalidEvent as exc:
        assert "as_of_date: required field is missing" in exc.reason
    else:
        raise AssertionError("missing as_of_date accepted")


async def test_a_bad_snapshot_is_rejected_with_its_reason(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    value = env(
        "x",
        "balance.snapshot",
        "2026-11-10T01:00:00+08:00",
        client_id="c",
        account_id="a",
        business_line="asset",
        balance="abc",
        as_of_date="2026-11-09",
    )
    r = await applier.apply([feed.msg("bank.balances", value)])
    assert len(r.rejected) == 1
    async with engine.connect() as conn:
        row = (await conn.execute(select(RejectedRow))).one()
    assert row.status == "rejected" and "payload.balance" in row.reason
    assert row.reason.startswith("bank.balances[0]@0")
    await engine.dispose()


# --- through the real broker and the worker process ------------------------------------------
def _jsonl(name: str) -> list[tuple[str, bytes | None, bytes | None]]:
    out = []
    for line in (VECTORS / name).read_text().splitlines():
        m = json.loads(line)
        key, value = m.get("key"), m.get("value")
        out.append(
            (
                m["topic"],
                None if key is None else key.encode(),
                None if value is None else value.encode(),
            )
        )
    return out


def _ids(messages: list[tuple[str, bytes | None, bytes | None]]) -> tuple[int, set[str], int]:
    """(distinct valid event ids but balances, the balances that win their account and day,
    invalid messages). Balances are recorded in ``balance_snapshots``, not in ``events``:
    the newest ``occurred_at`` of an account and day, the first of equals (in the order of
    its partition, which is the order here: one key per client)."""
    ids, bad = set(), 0
    wins: dict[tuple[str, date], tuple[datetime, str]] = {}
    for _t, _k, v in messages:
        try:
            e = decode_event(v)
        except InvalidEvent:
            bad += 1
            continue
        p = e.payload
        if isinstance(p, BalanceSnapshot):
            key = (p.account_id, p.as_of_date)
            if key not in wins or wins[key][0] < e.occurred_at:
                wins[key] = (e.occurred_at, e.event_id)
        else:
            ids.add(e.event_id)
    return len(ids), {eid for _at, eid in wins.values()}, bad


async def _wait_for_snapshots(engine: Any, wanted: set[str], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as conn:
            stored = set((await conn.execute(select(BalanceSnapshotRow.event_id))).scalars())
        if wanted <= stored:
            return
        assert asyncio.get_running_loop().time() < deadline, len(wanted - stored)
        await asyncio.sleep(0.5)


@pytest.mark.kafka
async def test_vectors_and_oracle_through_the_broker(
    broker: Any, db_url: str, tmp_path: Path
) -> None:
    rng = random.Random(7)
    log, _clients = random_log(rng)
    start = "2026-01-01T09:00:00+08:00"
    oracle_msgs: list[tuple[str, bytes | None, bytes | None]] = []
    for m in ("ma", "mb", "mc"):
        oracle_msgs.append(
            (
                "crm.managers",
                m.encode(),
                env(
                    f"{m}-1",
                    "manager.upserted",
                    start,
                    manager_id=m,
                    branch_id="b1" if m != "mc" else "b2",
                ),
            )
        )
    for c in ("c1", "c2", "c3", "c4"):
        oracle_msgs.append(
            (
                "crm.clients",
                c.encode(),
                env(
                    f"{c}-1",
                    "client.upserted",
                    start,
                    client_id=c,
                    manager_id=HISTORY[c][0][1],
                    assigned_at=start,
                ),
            )
        )
    for c, m in (("c1", "mb"), ("c3", "mc")):
        oracle_msgs.append(
            (
                "crm.clients",
                c.encode(),
                env(
                    f"{c}-2",
                    "client.upserted",
                    TRANSFER_AT,
                    client_id=c,
                    manager_id=m,
                    assigned_at=TRANSFER_AT,
                ),
            )
        )
    oracle_msgs += [("bank.balances", rec["client_id"].encode(), v) for v, rec in log]
    messages = _jsonl("events.jsonl") + _jsonl("balances.jsonl") + oracle_msgs
    valid, winners, bad = _ids(messages)
    settings = isolated_settings(broker.bootstrap, db_url, tmp_path)
    await ensure_topics(settings)
    await produce(settings, messages)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    engine = make_engine(db_url)
    worker.start()
    try:
        await wait_for_counts(engine, valid, bad, 240, worker)
        await _wait_for_snapshots(engine, winners, 240)
        expected = json.loads((VECTORS / "balances_expected.json").read_text())
        got = {k: await manager_month(engine, k) for k in expected["average_balance"]}
        assert got == expected["average_balance"]
        await check_against_oracle(engine, [rec for _, rec in log])
    finally:
        assert worker.stop() == 0, worker.log_tail()
        await engine.dispose()


# --- the API ---------------------------------------------------------------------------------
SECRET = "test-secret-" + "x" * 40


async def test_tallies_and_leaderboards_carry_average_balances(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy())
    for batch in vector_batches() + balance_batches():
        await applier.apply(batch)
    await engine.dispose()
    expected = json.loads((VECTORS / "balances_expected.json").read_text())["average_balance"]
    settings = Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET)
    app = create_app(settings)
    headers = {"Authorization": f"Bearer {mint_token(SECRET, 'admin')}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.get(
                "/v1/managers/m010/tally",
                params={"period": "month", "at": "2026-10-05"},
                headers=headers,
            )
            assert r.status_code == 200
            assert r.json()["average_balance"] == expected["m010|2026-10"]
            branch = r.json()["branch_id"]
            # the branch: the sum of its managers' averages (same days), rounded once
            r = await c.get(
                f"/v1/branches/{branch}/leaderboard",
                params={"period": "month", "at": "2026-10-05", "metric": "average_deposits"},
                headers=headers,
            )
            assert r.status_code == 200
            board = r.json()["items"]
            assert board[0]["manager_id"] == "m010"
            assert board[0]["value"] == expected["m010|2026-10"]["liability"]
            assert board[0]["tally"]["average_balance"] == expected["m010|2026-10"]
            values = [Decimal(i["value"]) for i in board]
            assert values == sorted(values, reverse=True)
            r = await c.get(
                f"/v1/branches/{branch}/tally",
                params={"period": "month", "at": "2026-10-05"},
                headers=headers,
            )
            want = sum(
                (
                    Decimal(expected[f"{i['manager_id']}|2026-10"]["liability"])
                    for i in board
                    if f"{i['manager_id']}|2026-10" in expected
                ),
                Decimal(0),
            )
            assert abs(Decimal(r.json()["average_balance"]["liability"]) - want) <= Decimal(
                "0.01"
            ) * len(board)
            # per client: c0092 is m010's only client with balances
            r = await c.get(
                "/v1/clients/c0092/balances",
                params={"period": "month", "at": "2026-10-05"},
                headers=headers,
            )
            assert r.status_code == 200
            assert r.json()["average_balance"] == expected["m010|2026-10"]
            assert r.json()["days"] == 31
            r = await c.get(
                "/v1/clients/c0092/balances", params={"from": "2026-10-05"}, headers=headers
            )
            assert r.status_code == 422
            r = await c.get(
                f"/v1/branches/{branch}/leaderboard",
                params={"period": "month", "metric": "average_nothing"},
                headers=headers,
            )
            assert r.status_code == 422


# --- alerts: 大额资金流出 --------------------------------------------------------------------
async def test_an_outflow_fires_one_alert_that_is_delivered(db_url: str, tmp_path: Path) -> None:
    from aiohttp import web

    from crmtracker.broker import free_port
    from models.tables import ReminderRow
    from scheduler.delivery import WebhookTarget
    from scheduler.service import ReminderScheduler

    engine = make_engine(db_url, writer=True)
    clock = [datetime(2026, 11, 12, 2, tzinfo=UTC)]
    applier = Applier(engine, Policy(), now=lambda: clock[0])
    feed = Feed()
    await applier.apply(reference(feed))
    await applier.apply([client_msg(feed, "k-1", "k", "ma", "2026-01-01T09:00:00+08:00")])

    def night(n: int, day: date, balances: dict[str, str]) -> list[Incoming]:
        at = datetime(day.year, day.month, day.day, 18, tzinfo=UTC)
        return [
            feed.msg(
                "bank.balances",
                snap(f"n{n}-{acc}", "k", acc, "liability", Decimal(b), day, at)[0],
            )
            for acc, b in balances.items()
        ]

    await applier.apply(night(1, date(2026, 11, 9), {"d1": "8000000", "d2": "2000000"}))
    # 10 Nov: down 20 % and 2,000,000: within the policy (30 %, 5,000,000)
    await applier.apply(night(2, date(2026, 11, 10), {"d1": "6000000"}))
    # 11 Nov: 8,000,000 → 4,000,000 (d2 carried): a 50 % fall
    last = night(3, date(2026, 11, 11), {"d1": "2000000"})
    await applier.apply(last)
    await applier.apply(last)  # redelivered: nothing new
    # a late correction of a past day never alerts
    await applier.apply(night(4, date(2026, 11, 10), {"d2": "10"})[:1])

    async def alerts() -> list[Any]:
        async with engine.connect() as conn:
            return list(
                (await conn.execute(select(ReminderRow).where(ReminderRow.kind == "outflow"))).all()
            )

    rows = await alerts()
    assert len(rows) == 1
    alert = rows[0]
    assert alert.client_id == "k" and alert.manager_id == "ma" and alert.status == "open"
    assert alert.due_at == datetime(2026, 11, 11, 16, tzinfo=UTC)  # 12 Nov 00:00 bank time

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        settings = Settings(database_url=db_url, data_dir=tmp_path)
        sched = ReminderScheduler(
            settings,
            engine,
            now=lambda: clock[0],
            targets=[WebhookTarget(f"http://127.0.0.1:{port}/hook", None)],
        )
        r = await sched.deliver_once()
        assert r.delivered == 1
        assert (await sched.deliver_once()).delivered == 0
        await sched.stop()
    finally:
        await runner.cleanup()
    assert [
        (e["event_type"], e["payload"]["kind"], e["payload"]["client_id"]) for e in received
    ] == [("reminder.fired", "outflow", "k")]
    # the manager answers with a visit (the clock moves past it: an event dated ahead of the
    # clock is refused): the alert is resolved
    clock[0] = datetime(2026, 11, 12, 8, tzinfo=UTC)
    await applier.apply(
        [
            feed.msg(
                "crm.visits",
                env(
                    "v1",
                    "visit.logged",
                    "2026-11-12T15:00:00+08:00",
                    client_id="k",
                    manager_id="ma",
                    method="phone",
                    kind="business",
                ),
            )
        ]
    )
    assert [a.status for a in await alerts()] == ["resolved"]
    await engine.dispose()


# --- standard deposits and the tier review ---------------------------------------------------
async def test_tier_review_on_hand_made_clients(db_url: str, tmp_path: Path) -> None:
    tz = Policy().tz
    today = datetime.now(tz).date()
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy())
    feed = Feed()
    await applier.apply(reference(feed))
    long_ago = datetime.combine(today - timedelta(days=400), datetime.min.time(), tz)
    recent = datetime.combine(today - timedelta(days=60), datetime.min.time(), tz)
    # (client, manager, since, sent tier, bad credit, {account: (line, balance)})
    clients = [
        ("k1", "ma", long_ago, "gold", False, {"k1-d": ("liability", "60000000")}),
        ("k2", "ma", long_ago, "diamond", True, {"k2-d": ("liability", "300000000")}),
        ("k3", "ma", recent, "bronze", False, {"k3-d": ("liability", "300000000")}),
        (
            "k4",
            "mb",
            long_ago,
            "gold",
            False,
            {"k4-d": ("liability", "5000000"), "k4-l": ("asset", "2000000")},
        ),
        ("k5", "mb", long_ago, "silver", False, {"k5-l": ("asset", "3000000")}),
        ("k6", "mc", long_ago, None, False, {}),
        ("k7", "ma", long_ago, "gold", False, {"k7-d": ("liability", "4999999.99")}),
        # silver by its deposits; gold with its fee income (below)
        ("k8", "ma", long_ago, "silver", False, {"k8-d": ("liability", "4990000")}),
    ]
    msgs = []
    for cid, mid, since, tier, bad, _accounts in clients:
        payload: dict[str, Any] = {
            "client_id": cid,
            "manager_id": mid,
            "bad_credit": bad,
            "assigned_at": since.isoformat(),
        }
        if tier:
            payload["tier"] = tier
        msgs.append(
            feed.msg(
                "crm.clients", env(f"{cid}-up", "client.upserted", since.isoformat(), **payload)
            )
        )
    await applier.apply(msgs)
    day = today - timedelta(days=300)
    at = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)
    await applier.apply(
        [
            feed.msg("bank.balances", snap(f"{acc}-s", cid, acc, line, Decimal(bal), day, at)[0])
            for cid, _m, _s, _t, _b, accounts in clients
            for acc, (line, bal) in accounts.items()
        ]
    )

    def fee(eid: str, days_ago: int, profit: str) -> Incoming:
        at = datetime.combine(today - timedelta(days=days_ago), datetime.min.time(), tz)
        return feed.msg(
            "bank.transactions",
            env(
                eid,
                "transaction.posted",
                (at + timedelta(hours=10)).isoformat(),
                client_id="k8",
                account_id="k8-f",
                business_line="intermediary",
                amount="1000.00",
                simulated_profit=profit,
            ),
        )

    # fee income in the half-year: 60 + 40 = 100 → 100 × 100 = 10,000 of standard deposits;
    # one older than the half-year does not count
    await applier.apply([fee("f1", 10, "60.00"), fee("f2", 100, "40.00"), fee("f3", 250, "900")])
    await engine.dispose()
    settings = Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET)
    app = create_app(settings)

    def as_(role: str, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, role, **kw)}"}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            r = await c.get("/v1/clients/tier-review", headers=as_("admin"))
            assert r.status_code == 200, r.text
            got = {i["client_id"]: i for i in r.json()["items"]}
            assert {k: (i["tier"], i["computed_tier"]) for k, i in got.items()} == {
                "k1": ("gold", "platinum"),
                "k2": ("diamond", "bronze"),  # bad credit, whatever the deposits
                "k6": (None, "bronze"),
                "k7": ("gold", "silver"),  # a cent below gold
                "k8": ("silver", "gold"),  # 4,990,000 + 100 × 100 of fee income
            }
            assert got["k8"]["standard_deposits"] == "5000000.00"
            assert got["k1"]["standard_deposits"] == "60000000.00"
            assert got["k7"]["standard_deposits"] == "4999999.99"
            assert got["k1"]["relationship_days"] >= 399
            # k3: under half a year, not classified; k4: 5M + 0.5 × 2M = gold; k5: silver
            # paged one by one, the same list
            seen, cursor = [], None
            while True:
                params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
                r = await c.get("/v1/clients/tier-review", params=params, headers=as_("admin"))
                seen += [i["client_id"] for i in r.json()["items"]]
                cursor = r.json()["next_cursor"]
                if cursor is None:
                    break
            assert seen == ["k1", "k2", "k6", "k7", "k8"]
            # scope: a manager sees their own clients only; another manager's filter is a 403
            r = await c.get("/v1/clients/tier-review", headers=as_("manager", manager_id="mb"))
            assert r.json()["items"] == []
            r = await c.get(
                "/v1/clients/tier-review",
                params={"manager_id": "ma"},
                headers=as_("manager", manager_id="mb"),
            )
            assert r.status_code == 403
            r = await c.get("/v1/clients/tier-review", headers=as_("supervisor", branches=["b2"]))
            assert [i["client_id"] for i in r.json()["items"]] == ["k6"]
            r = await c.get(
                "/v1/clients/tier-review", params={"cursor": "%%%"}, headers=as_("admin")
            )
            assert r.status_code == 422


# --- hand-over increments (增量认领): the README's worked example -----------------------------
async def _handed_over_client(applier: Applier, feed: Feed) -> None:
    """The README's worked example: client h with ma (b1) since 2025, deposits 1,000,000
    from 1 December 2025, 1,500,000 from 1 July 2026, 600,000 from 16 August; handed over to
    mc (b2) on 1 July 2026 10:00."""
    await applier.apply(reference(feed))
    await applier.apply([client_msg(feed, "h-1", "h", "ma", "2025-11-01T09:00:00+08:00")])
    at = datetime(2026, 9, 1, tzinfo=UTC)  # one late file: the days fill in whatever the order
    await applier.apply(
        [
            feed.msg("bank.balances", snap(f"h{n}", "h", "hd", "liability", Decimal(b), d, at)[0])
            for n, (d, b) in enumerate(
                [
                    (date(2025, 12, 1), "1000000"),
                    (date(2026, 7, 1), "1500000"),
                    (date(2026, 8, 16), "600000"),
                ]
            )
        ]
    )
    # handed over to mc (branch b2) on 1 July 2026
    await applier.apply([client_msg(feed, "h-2", "h", "mc", "2026-07-01T10:00:00+08:00")])


def _leaves(feed: Feed, manager: str, branch: str) -> Incoming:
    """The manager's record saying they have left (1 November 2026)."""
    record = {"manager_id": manager, "branch_id": branch, "active": False}
    at = "2026-11-01T08:00:00+08:00"
    return feed.msg("crm.managers", env(f"{manager}-2", "manager.upserted", at, **record))


async def _worked_example_transactions(applier: Applier, feed: Feed) -> None:
    """The README's worked example's business of client h (see the test above)."""

    def tx(eid: str, account: str, at: str, profit: str, line: str = "liability") -> Incoming:
        fact = {"client_id": "h", "account_id": account, "business_line": line}
        fact |= {"amount": "100000.00", "simulated_profit": profit}
        return feed.msg("bank.transactions", env(eid, "transaction.posted", at, **fact))

    opened = env(
        "hn-open",
        "account.opened",
        "2026-08-01T10:00:00+08:00",
        client_id="h",
        account_id="hn",
        account_type="deposit",
    )
    await applier.apply(
        [
            tx("t1", "hd", "2026-07-10T11:00:00+08:00", "3000.00"),
            tx("t2", "hl", "2026-07-11T11:00:00+08:00", "500.00", "asset"),
            feed.msg("bank.accounts", opened),
            tx("t3", "hn", "2026-08-10T11:00:00+08:00", "900.00"),
            tx("t4", "hn", "2026-08-20T11:00:00+08:00", "1000.00"),
        ]
    )


async def test_handover_worked_example(db_url: str) -> None:
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy(), now=lambda: datetime(2026, 12, 1, tzinfo=UTC))
    feed = Feed()
    await _handed_over_client(applier, feed)

    async def month(m: int, policy: Policy) -> dict[str, dict[str, str]]:
        start, end = period_range("month", date(2026, m, 1))
        async with engine.connect() as conn:
            mgr = await average_balances(
                conn, "manager", ["ma", "mc"], start, end, date(2026, 12, 1), policy
            )
            br = await average_balances(
                conn, "branch", ["b1", "b2"], start, end, date(2026, 12, 1), policy
            )
        return {k: money(v["liability"]) for k, v in (mgr | br).items()}  # type: ignore[misc]

    # June: before the hand-over, all of it with ma
    assert await month(6, Policy()) == {
        "ma": "1000000.00",
        "mc": "0.00",
        "b1": "1000000.00",
        "b2": "0.00",
    }
    # July: base 1,000,000 stays with ma, the increment 500,000 goes to mc
    assert await month(7, Policy()) == {
        "ma": "1000000.00",
        "mc": "500000.00",
        "b1": "1000000.00",
        "b2": "500000.00",
    }
    # August: 15 days at 1,500,000 then 16 at 600,000 (below the base: all with ma)
    assert await month(8, Policy()) == {
        "ma": "793548.39",
        "mc": "241935.48",
        "b1": "793548.39",
        "b2": "241935.48",
    }
    # full mode: everything from the hand-over on is the new manager's
    assert await month(8, Policy(handover_mode="full")) == {
        "ma": "0.00",
        "mc": "1035483.87",
        "b1": "0.00",
        "b2": "1035483.87",
    }
    # the previous manager has left: a full transfer whatever the mode
    await applier.apply([_leaves(feed, "ma", "b1")])
    assert (await month(8, Policy()))["mc"] == "1035483.87"
    await engine.dispose()


async def test_handover_weighted_profit_worked_example(db_url: str, tmp_path: Path) -> None:
    """The README's worked example of the weighted profit of deposit business after a
    hand-over, read from both managers' and both branches' tallies."""
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy(), now=lambda: datetime(2026, 12, 1, tzinfo=UTC))
    feed = Feed()
    await _handed_over_client(applier, feed)
    # 10 July on hd (held before the hand-over: credited to ma, ratio 1.0); 11 July a loan
    # (not deposit business: it keeps the transaction rule); on hn, opened by mc after the
    # hand-over (credited to mc at 0.6), 10 and 20 August
    await _worked_example_transactions(applier, feed)
    app = create_app(Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET))
    headers = {"Authorization": f"Bearer {mint_token(SECRET, 'admin')}"}

    async def read(*months: str) -> list[dict[str, str]]:
        """Per month (a day of it), the weighted profit of ma, mc, b1 and b2; and the
        leaderboard's value for ma in the last one."""
        out = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                for at in months:
                    got = {}
                    for path in ("managers/ma", "managers/mc", "branches/b1", "branches/b2"):
                        r = await c.get(
                            f"/v1/{path}/tally",
                            params={"period": "month", "at": at},
                            headers=headers,
                        )
                        assert r.status_code == 200, r.text
                        got[path.split("/")[1]] = r.json()["weighted_profit"]
                    r = await c.get(
                        "/v1/branches/b1/leaderboard",
                        params={"period": "month", "at": at, "metric": "weighted_profit"},
                        headers=headers,
                    )
                    board = {i["manager_id"]: i["value"] for i in r.json()["items"]}
                    got["board ma"] = board.get("ma", "0.00")
                    out.append(got)
        return out

    def split(ma: str, mc: str) -> dict[str, str]:
        return {"ma": ma, "mc": mc, "b1": ma, "b2": mc, "board ma": ma}

    # July: D = 1,500,000, base 1,000,000, s = 1/3: t1's 3,000 → mc 3,000 × 1/3 × 0.6 = 600,
    # ma 3,000 × 2/3 × 1.0 = 2,000; t2 (a loan) stays with ma: 450.
    # August: t3 on the 10th (s = 1/3): mc 180, ma 600; t4 on the 20th (D = 600,000 below
    # the base, s = 0): ma 1,000
    assert await read("2026-07-15", "2026-08-15") == [
        split("2450.00", "600.00"),
        split("1600.00", "180.00"),
    ]
    # ma leaves: a full transfer, the transaction rule alone (mc at the hand-over ratios):
    # July t1 3,000 × 0.6 + t2 500 × 0.9 × 0.8; August t3 900 × 0.6 + t4 1,000 × 0.6
    await applier.apply([_leaves(feed, "ma", "b1")])
    assert await read("2026-07-15", "2026-08-15") == [
        split("0.00", "2160.00"),
        split("0.00", "1140.00"),
    ]
    await engine.dispose()


async def test_handover_split_is_the_same_in_every_view(
    db_url: str, tmp_path: Path, engines: Any
) -> None:
    """The weighted profit of the worked example's hand-over, per manager and branch, is
    the same in the tally, the leaderboard, the weekly report, the trend (by day and by
    month), the assessment and the client book: one figure for one thing, with the split
    and after the previous manager has left (a full transfer)."""
    import io

    import openpyxl

    applier = Applier(
        engines(db_url, writer=True), Policy(), now=lambda: datetime(2026, 12, 1, tzinfo=UTC)
    )
    feed = Feed()
    await _handed_over_client(applier, feed)
    await _worked_example_transactions(applier, feed)
    app = create_app(Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET))
    app.state.now = lambda: datetime(2026, 8, 25, 4, tzinfo=UTC)  # the client book's month
    headers = {"Authorization": f"Bearer {mint_token(SECRET, 'admin')}"}
    owners = {"ma": "managers", "mc": "managers", "b1": "branches", "b2": "branches"}

    async def views(c: httpx.AsyncClient, start: str, end: str) -> dict[str, dict[str, str]]:
        """Per owner, the weighted profit over [start, end] as each view shows it."""
        span = {"from": start, "to": end}
        out: dict[str, dict[str, str]] = {o: {} for o in owners}

        async def get(path: str, **params: str) -> Any:
            r = await c.get(path, params=params, headers=headers)
            assert r.status_code == 200, r.text
            return r

        for owner, kind in owners.items():
            tally = (await get(f"/v1/{kind}/{owner}/tally", **span)).json()
            out[owner]["tally"] = tally["weighted_profit"]
            assert tally["target"]["actual"] == tally["weighted_profit"]
            for step in ("day", "month"):
                trend = (await get(f"/v1/{kind}/{owner}/series", **span, step=step)).json()
                out[owner][f"trend by {step}"] = trend["points"][-1]["cumulative"]
                total = sum((Decimal(p["value"]) for p in trend["points"]), Decimal(0))
                out[owner][f"trend {step} points"] = str(total)
        for branch in ("b1", "b2"):
            board = (
                await get(f"/v1/branches/{branch}/leaderboard", **span, metric="weighted_profit")
            ).json()
            for item in board["items"]:
                if item["manager_id"] in owners:
                    out[item["manager_id"]]["leaderboard"] = item["value"]
                    out[item["manager_id"]]["leaderboard tally"] = item["tally"]["weighted_profit"]
        # the weekly report: the week of ``start`` (a Monday in the calls below)
        if date.fromisoformat(end) - date.fromisoformat(start) == timedelta(days=6):
            for branch in ("b1", "b2"):
                r = await get(f"/v1/branches/{branch}/reports/weekly", at=start)
                rows = list(openpyxl.load_workbook(io.BytesIO(r.content)).worksheets[0].values)
                header = next(i for i, v in enumerate(rows) if v[0] == "客户经理 manager")
                for row in rows[header + 1 :]:
                    if row[0] in owners:
                        out[row[0]]["weekly report"] = money(Decimal(str(row[2])))
        else:  # a month: the assessment, and the client book of August
            period = "year" if start.endswith("01-01") and end.endswith("12-31") else "month"
            for m in ("ma", "mc"):
                a = (await get(f"/v1/managers/{m}/assessment", period=period, at=start)).json()
                out[m]["assessment"] = a["weighted_profit"]
        return out

    def same(got: dict[str, dict[str, str]], want: dict[str, str]) -> None:
        for owner, shown in got.items():
            assert {v for v in shown.values()} == {want[owner]}, (owner, shown)

    def split(ma: str, mc: str) -> dict[str, str]:
        return {"ma": ma, "mc": mc, "b1": ma, "b2": mc}

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            # July (t1 split 2,000 / 600, t2 a loan: ma 450) and its week 6-12 July
            same(await views(c, "2026-07-01", "2026-07-31"), split("2450.00", "600.00"))
            same(await views(c, "2026-07-06", "2026-07-12"), split("2450.00", "600.00"))
            # August: t3 (10th, s = 1/3) ma 600, mc 180; t4 (20th, below the base) ma 1,000
            same(await views(c, "2026-08-01", "2026-08-31"), split("1600.00", "180.00"))
            same(await views(c, "2026-08-10", "2026-08-16"), split("600.00", "180.00"))
            same(await views(c, "2026-08-17", "2026-08-23"), split("1000.00", "0.00"))
            # the year (running): its assessment reads the split with the settled years'
            year = await views(c, "2026-01-01", "2026-12-31")
            same(year, split("4050.00", "780.00"))
            # the client book (August, the month of the app's clock): h is mc's, with mc's part
            book = (await c.get("/v1/managers/mc/clients", headers=headers)).json()
            assert {i["client_id"]: i["weighted_profit_month"] for i in book["items"]} == {
                "h": "180.00"
            }
    # ma leaves: a full transfer, every view the transaction rule's credit to mc
    await applier.apply([_leaves(feed, "ma", "b1")])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            same(await views(c, "2026-07-01", "2026-07-31"), split("0.00", "2160.00"))
            same(await views(c, "2026-08-10", "2026-08-16"), split("0.00", "540.00"))
            book = (await c.get("/v1/managers/mc/clients", headers=headers)).json()
            assert book["items"][0]["weighted_profit_month"] == "1140.00"


async def test_a_split_change_tells_both_sides_on_the_stream(db_url: str, tmp_path: Path) -> None:
    """A deposit transaction credited to the new manager moves the previous one's figures
    too (the split): the live stream names both (each in its own scope), and what the
    previous manager reads again is the tally's figure."""
    from testkit.serving import serve_in_thread
    from tests.db.test_stream import sse, wait_for

    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, Policy(), now=lambda: datetime(2026, 12, 1, tzinfo=UTC))
    feed = Feed()
    await _handed_over_client(applier, feed)
    await _worked_example_transactions(applier, feed)
    settings = Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET)

    def bearer(role: str, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(SECRET, role, **kw)}"}

    callers = {
        "ma": bearer("manager", manager_id="ma"),
        "mb": bearer("manager", manager_id="mb"),
        "b1": bearer("supervisor", branches=["b1"]),
        "b2": bearer("supervisor", branches=["b2"]),
    }
    seen: dict[str, list[dict[str, Any]]] = {k: [] for k in callers}
    with serve_in_thread(create_app(settings)) as api:
        tasks = [
            asyncio.create_task(sse(f"{api}/v1/stream", h, seen[k])) for k, h in callers.items()
        ]
        try:
            await wait_for(lambda: all(seen.values()))
            # 11 August on hn (mc's, 0.6): D 1,500,000, s = 1/3: mc 300 × 1/3 × 0.6 = 60,
            # ma 300 × 2/3 × 1.0 = 200 (the transaction rule stored mc 180)
            fact = {"client_id": "h", "account_id": "hn", "business_line": "liability"}
            fact |= {"amount": "1000.00", "simulated_profit": "300.00"}
            at = "2026-08-11T11:00:00+08:00"
            await applier.apply(
                [feed.msg("bank.transactions", env("t5", "transaction.posted", at, **fact))]
            )
            await wait_for(
                lambda: all(any(f["event"] == "tally" for f in seen[k]) for k in "ma b1 b2".split())
            )
            await asyncio.sleep(0.6)

            def tallies(k: str) -> list[tuple[str, str, list[str]]]:
                out = []
                for f in seen[k]:
                    if f["event"] == "tally":
                        d = json.loads(f["data"])
                        out.append((d["manager_id"], d["branch_id"], d["days"]))
                return out

            assert tallies("ma") == [("ma", "b1", ["2026-08-11"])]
            assert tallies("b1") == [("ma", "b1", ["2026-08-11"])]
            assert tallies("b2") == [("mc", "b2", ["2026-08-11"])]
            assert tallies("mb") == []  # not a side of the hand-over
            async with httpx.AsyncClient(base_url=api) as c:
                got = {}
                for m in ("ma", "mc"):
                    r = await c.get(
                        f"/v1/managers/{m}/tally",
                        params={"period": "month", "at": "2026-08-11"},
                        headers=callers["ma" if m == "ma" else "b2"],
                    )
                    got[m] = r.json()["weighted_profit"]
            assert got == {"ma": "1800.00", "mc": "240.00"}  # August 1,600 + 200, 180 + 60
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    await engine.dispose()


# --- alerts: 客户等级下降 ----------------------------------------------------------------------
async def test_a_computed_tier_drop_fires_one_alert(db_url: str, tmp_path: Path) -> None:
    from models.tables import ReminderRow
    from scheduler.service import ReminderScheduler

    # standard deposits over one day (yesterday's close), so a drop shows the next morning
    policy = Policy(standard_window_days=1, relationship_min_days=0)
    clock = [datetime(2026, 11, 10, 1, tzinfo=UTC)]
    engine = make_engine(db_url, writer=True)
    applier = Applier(engine, policy, now=lambda: clock[0])
    feed = Feed()
    await applier.apply(reference(feed))
    await applier.apply(
        [
            client_msg(feed, "t-1", "t", "ma", "2026-01-01T09:00:00+08:00"),
            client_msg(feed, "u-1", "u", "mb", "2026-01-01T09:00:00+08:00"),
        ]
    )

    async def close(day: date, balances: dict[str, str]) -> None:
        at = datetime(day.year, day.month, day.day, 18, tzinfo=UTC)
        await applier.apply(
            [
                feed.msg(
                    "bank.balances",
                    snap(f"{c}-{day}", c, f"{c}-d", "liability", Decimal(b), day, at)[0],
                )
                for c, b in balances.items()
            ]
        )

    settings = Settings(database_url=db_url, data_dir=tmp_path)
    sched = ReminderScheduler(settings, engine, policy=policy, now=lambda: clock[0], targets=[])
    await close(date(2026, 11, 9), {"t": "60000000", "u": "6000000"})
    assert (await sched.scan_once()).tier_drops == 0  # platinum and gold: the first look
    clock[0] += timedelta(days=1)  # the next morning (an event dated ahead is refused)
    await close(date(2026, 11, 10), {"t": "6000000", "u": "60000000"})  # t falls, u rises
    assert (await sched.scan_once()).tier_drops == 1
    assert (await sched.scan_once()).tier_drops == 0  # checked today already
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(ReminderRow).where(ReminderRow.kind == "tier_drop"))
        ).all()
    assert [(r.client_id, r.manager_id, r.status) for r in rows] == [("t", "ma", "open")]
    await engine.dispose()
