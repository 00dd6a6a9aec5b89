"""The API's read cache (api/reads.py): answers are reused only while the data under them is
unchanged, whoever changes it, and a request never sees less than what was committed before
it arrived."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, insert, text, update

from api.reads import AS_OF, ReadCache
from config import Settings
from crmtracker.compose import api_app as create_app
from models.db import make_engine
from models.policy import Policy
from models.tables import (
    VERSIONED_TABLES,
    BalanceDayRow,
    BalanceOpeningRow,
    BranchDayRow,
    ManagerDayRow,
    ManagerRow,
    ManagerTargetRow,
)
from streams.apply import Applier
from testkit.api import SECRET, asgi_client, auth
from testkit.db import Engines
from testkit.feed import vector_batches

SEPT = {"period": "month", "at": "2026-09-15"}


async def version_of(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT COALESCE(SUM(version), 0) FROM data_versions"))
            ).scalar_one()
        )


# per versioned table: its rows, the key of a new row, what else an insert needs, a change
_NOW = datetime(2026, 9, 3, tzinfo=UTC)
_NEW_ROWS: dict[str, tuple[Any, str, str, dict[str, Any], dict[str, Any]]] = {
    "managers": (
        ManagerRow,
        "manager_id",
        "m-new",
        {"branch_id": "b-x", "active": True, "updated_at": _NOW},
        {"name": "New"},
    ),
    "manager_targets": (
        ManagerTargetRow,
        "manager_id",
        "m-new",
        {"effective_at": _NOW, "annual_profit_target": Decimal(1), "event_id": "e"},
        {"annual_profit_target": Decimal(2)},
    ),
    "manager_daily": (
        ManagerDayRow,
        "manager_id",
        "m-new",
        {"day": _NOW.date()},
        {"transactions": 3},
    ),
    "branch_daily": (BranchDayRow, "branch_id", "b-new", {"day": _NOW.date()}, {"transactions": 3}),
    "balance_daily": (
        BalanceDayRow,
        "owner_id",
        "m-new",
        {"scope": "manager", "day": _NOW.date()},
        {"liability": Decimal(3)},
    ),
    "balance_openings": (
        BalanceOpeningRow,
        "owner_id",
        "m-new",
        {"scope": "manager", "year": 2027},
        {"asset": Decimal(3)},
    ),
}


def _writes(table: str) -> list[Any]:
    """An insert, an update and a delete of a new row, by plain SQL (no application code)."""
    model, key_col, key, needs, change = _NEW_ROWS[table]
    t = model.__table__
    where = t.c[key_col] == key
    return [
        insert(t).values({key_col: key, **needs}),
        update(t).where(where).values(change),
        delete(t).where(where),
    ]


@pytest.mark.parametrize("table", VERSIONED_TABLES)
async def test_every_write_to_a_versioned_table_moves_the_version(
    db_url: str, table: str, engines: Engines
) -> None:
    engine = engines(db_url)
    before = await version_of(engine)
    for stmt in _writes(table):
        async with engine.begin() as conn:
            await conn.execute(stmt)
        after = await version_of(engine)
        assert after != before, f"{stmt} on {table} did not move the data version"
        before = after
    # a rolled-back write moves nothing: the version is part of the transaction
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await conn.execute(_writes(table)[0])
            raise RuntimeError("roll back")
    assert await version_of(engine) == before


@pytest.fixture
async def served(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any]]:
    """The API over the vectors, a client, the app's read cache and a writer engine."""
    writer = make_engine(db_url, writer=True)
    applier = Applier(writer, Policy())
    for batch in vector_batches():
        await applier.apply(batch)
    app = create_app(Settings(database_url=db_url, data_dir=tmp_path, auth_secret=SECRET))
    async with asgi_client(app) as c:
        yield c, app.state.reads, writer
    await writer.dispose()


async def _get(client: httpx.AsyncClient, path: str, **kw: Any) -> dict[str, Any]:
    r = await client.get(path, params=SEPT, headers=kw.pop("headers", auth()))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_answers_are_reused_until_any_writer_changes_the_data(
    served: tuple[httpx.AsyncClient, ReadCache, Any],
) -> None:
    client, reads, writer = served
    first = await _get(client, "/v1/managers/m036/tally")
    hits = reads.hits
    again = await _get(client, "/v1/managers/m036/tally")
    assert reads.hits > hits, "an unchanged answer was computed again"
    assert {k: v for k, v in again.items() if k != "as_of"} == {
        k: v for k, v in first.items() if k != "as_of"
    }

    # a bucket changed behind the API's back (not through the worker): the next answer has it
    async with writer.begin() as conn:
        await conn.execute(
            update(ManagerDayRow)
            .where(ManagerDayRow.manager_id == "m036", ManagerDayRow.day == date(2026, 9, 10))
            .values(weighted_profit=ManagerDayRow.weighted_profit + Decimal("0.01"))
        )
    after = await _get(client, "/v1/managers/m036/tally")
    assert Decimal(after["weighted_profit"]) == Decimal(first["weighted_profit"]) + Decimal("0.01")

    # a new target is in the next answer
    async with writer.begin() as conn:
        await conn.execute(
            insert(ManagerTargetRow).values(
                manager_id="m036",
                # in force on 1 January 2026: the year's target (年初下达)
                effective_at=datetime(2025, 12, 30, tzinfo=UTC),
                annual_profit_target=Decimal("3650000"),
                event_id="by-hand",
            )
        )
    targeted = await _get(client, "/v1/managers/m036/tally")
    assert targeted["target"]["target"] == "300000.00"  # 30 days of 3,650,000 / 365

    # the branch tally and the leaderboard follow their own tables
    branch = await _get(client, "/v1/branches/b01/tally")
    board = await _get(client, "/v1/branches/b01/leaderboard")
    async with writer.begin() as conn:
        await conn.execute(
            update(BranchDayRow)
            .where(BranchDayRow.branch_id == "b01", BranchDayRow.day == date(2026, 9, 10))
            .values(transactions=BranchDayRow.transactions + 5)
        )
        await conn.execute(
            update(ManagerRow)
            .where(ManagerRow.manager_id == board["items"][-1]["manager_id"])
            .values(name="Renamed")
        )
    assert (await _get(client, "/v1/branches/b01/tally"))["transactions"] == branch[
        "transactions"
    ] + 5
    names = [i["name"] for i in (await _get(client, "/v1/branches/b01/leaderboard"))["items"]]
    assert names[-1] == "Renamed"


async def test_the_cache_is_visible_in_the_metrics(
    served: tuple[httpx.AsyncClient, ReadCache, Any],
) -> None:
    client, _reads, _writer = served

    async def counter(name: str) -> float:
        r = await client.get("/metrics", headers=auth())
        assert r.status_code == 200
        lines = [x for x in r.text.splitlines() if x.startswith(name + " ")]
        return float(lines[0].split()[1]) if lines else 0.0

    hits = await counter("crm_api_read_cache_hits_total")
    reads = await counter("crm_api_data_version_reads_total")
    for _ in range(3):
        await _get(client, "/v1/branches/b01/leaderboard")
    assert await counter("crm_api_read_cache_hits_total") >= hits + 2
    assert await counter("crm_api_data_version_reads_total") >= reads + 3


async def test_scope_follows_a_manager_moving_branch(
    served: tuple[httpx.AsyncClient, ReadCache, Any],
) -> None:
    client, _reads, writer = served
    path = "/v1/managers/m036/tally"
    home = (await _get(client, path))["branch_id"]
    sup = auth("supervisor", branches=[home])
    assert (await client.get(path, params=SEPT, headers=sup)).status_code == 200
    assert (await client.get(path, params=SEPT, headers=sup)).status_code == 200  # cached
    async with writer.begin() as conn:
        await conn.execute(
            update(ManagerRow)
            .where(ManagerRow.manager_id == "m036")
            .values(branch_id="b-elsewhere")
        )
    assert (await client.get(path, params=SEPT, headers=sup)).status_code == 403


async def test_as_of_is_the_time_of_the_request_not_of_the_cached_answer(
    served: tuple[httpx.AsyncClient, ReadCache, Any],
) -> None:
    client, reads, _writer = served
    paths = ("/v1/branches/b01/leaderboard", "/v1/managers/m036/tally", "/v1/branches/b01/tally")
    for path in paths:
        await _get(client, path)
    await asyncio.sleep(1.1)
    hits = reads.hits
    board, tally, branch = [await _get(client, path) for path in paths]
    assert reads.hits >= hits + 3
    now = datetime.now(UTC)
    stamps = [item["tally"]["as_of"] for item in board["items"]]
    stamps += [tally["as_of"], branch["as_of"]]
    assert len(stamps) > 2
    for at in stamps:
        assert abs((now - datetime.fromisoformat(at)).total_seconds()) < 1.5
    # the stand-in the kept answers carry never reaches a caller
    assert AS_OF not in json.dumps([board, tally, branch])


# --- the version read, without a database ------------------------------------------------------
class GatedCache(ReadCache):
    """Version reads that take a snapshot when they begin and end when released."""

    def __init__(self) -> None:
        super().__init__(engine=None)  # type: ignore[arg-type]
        self.committed = 0
        self.reads: list[asyncio.Event] = []

    async def _query_version(self) -> tuple[int, int]:
        snapshot = self.committed
        gate = asyncio.Event()
        self.reads.append(gate)
        await gate.wait()
        return snapshot, 1


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_never_takes_a_version_read_that_began_before_it_arrived() -> None:
    cache = GatedCache()
    a = asyncio.create_task(cache.version())
    await _settle()
    assert len(cache.reads) == 1
    cache.committed = 1  # a commit lands while A's read is in flight
    b = asyncio.create_task(cache.version())  # B arrives after that commit
    c = asyncio.create_task(cache.version())
    await _settle()
    assert len(cache.reads) == 1, "B and C must wait: the read in flight began before them"
    cache.reads[0].set()
    await _settle()
    assert await a == (0, 1)
    assert len(cache.reads) == 2, "B and C share ONE new read"
    cache.reads[1].set()
    assert await b == (1, 1) and await c == (1, 1)


class _NoEngine:
    """Connections that are never used: the computations under test need none."""

    def connect(self) -> Any:
        class _Conn:
            async def __aenter__(self) -> None:
                return None

            async def __aexit__(self, *exc: Any) -> None:
                return None

        return _Conn()


async def _released(cache: GatedCache) -> tuple[int, int]:
    t = asyncio.create_task(cache.version())
    await _settle()
    cache.reads[-1].set()
    return await t


async def test_a_failed_computation_is_not_kept() -> None:
    cache = GatedCache()
    calls = 0

    async def flaky(_conn: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database went away")
        return 7

    cache.engine = _NoEngine()  # type: ignore[assignment]
    t = asyncio.create_task(cache.version())
    await _settle()
    cache.reads[0].set()
    v = await t
    with pytest.raises(ConnectionError):
        await cache.get(v, "k", flaky)
    assert await cache.get(v, "k", flaky) == 7
    assert await cache.get(v, "k", flaky) == 7
    assert calls == 2


def test_a_verified_token_is_remembered_but_still_expires() -> None:
    import time
    from datetime import timedelta

    from api.auth import TokenError, decode_token, mint_token

    token = mint_token(SECRET, "supervisor", branches=["b01"], ttl=timedelta(seconds=2))
    first = decode_token(SECRET, token)
    assert decode_token(SECRET, token) is first  # the second use is not decoded again
    with pytest.raises(TokenError):
        decode_token(SECRET + "-other", token)  # remembered per secret: still verified
    time.sleep(max(0.0, jwt_exp(token) - time.time()) + 0.05)
    with pytest.raises(TokenError, match="expired"):
        decode_token(SECRET, token)


def jwt_exp(token: str) -> float:
    import jwt

    return float(jwt.decode(token, options={"verify_signature": False})["exp"])


async def test_the_cache_stays_within_its_weight() -> None:
    cache = GatedCache()
    cache.engine = _NoEngine()  # type: ignore[assignment]
    cache.max_weight = 5
    v = await _released(cache)
    computed: list[str] = []

    def board(key: str) -> Any:
        async def compute(_conn: Any) -> dict[str, Any]:
            computed.append(key)
            return {"items": [key, key]}

        return compute

    for key in ("a", "b", "c"):
        await cache.get(v, key, board(key), weight=lambda b: len(b["items"]))
    assert cache.weight <= 5
    await cache.get(v, "c", board("c"), weight=lambda b: len(b["items"]))  # kept
    await cache.get(v, "a", board("a"), weight=lambda b: len(b["items"]))  # evicted: again
    assert computed == ["a", "b", "c", "a"]


async def test_a_version_connection_the_server_dropped_is_replaced(
    served: tuple[httpx.AsyncClient, ReadCache, Any], db_url: str
) -> None:
    """Version reads keep one connection of their own (no pool ping): when the server ends
    it (a restart, a terminated backend), the next request opens another and is answered."""
    if not db_url.startswith("postgresql"):
        pytest.skip("needs a server that can end a session: PostgreSQL")
    client, reads, writer = served
    first = await _get(client, "/v1/managers/m036/tally")
    assert reads._version_conn is not None
    pid = (await reads._version_conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    async with writer.begin() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.2)
    again = await _get(client, "/v1/managers/m036/tally")
    assert {k: v for k, v in again.items() if k != "as_of"} == {
        k: v for k, v in first.items() if k != "as_of"
    }
    assert reads._version_conn is not None
    new_pid = (await reads._version_conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    assert new_pid != pid


async def test_kept_computation_connections_the_server_dropped_are_replaced(
    served: tuple[httpx.AsyncClient, ReadCache, Any], db_url: str
) -> None:
    """Computations run on connections the cache keeps (no pool ping per answer): when the
    server ends them, the next computation opens another and the request is answered."""
    if not db_url.startswith("postgresql"):
        pytest.skip("needs a server that can end a session: PostgreSQL")
    client, reads, writer = served
    first = await _get(client, "/v1/managers/m036/tally")
    assert reads._idle

    async def pids() -> set[int]:
        return {
            (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            for _cm, conn in reads._idle
        }

    old = await pids()
    async with writer.begin() as conn:
        for pid in old:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # the data version moves: the next answer is computed, not taken from the cache
        await conn.execute(text("UPDATE data_versions SET version = version + 1"))
    await asyncio.sleep(0.2)
    misses = reads.misses
    again = await _get(client, "/v1/managers/m036/tally")
    assert reads.misses > misses
    assert {k: v for k, v in again.items() if k != "as_of"} == {
        k: v for k, v in first.items() if k != "as_of"
    }
    assert reads._idle and not (await pids()) & old


def test_a_cached_read_of_a_table_that_is_not_versioned_is_refused_at_import(
    monkeypatch: Any,
) -> None:
    from api import reads
    from api.reads import UnversionedTable, cached_answer, cached_read

    monkeypatch.setattr(reads, "CACHED_READS", {})  # the app's own stay as they are

    async def read(_conn: Any) -> int:
        return 1

    with pytest.raises(UnversionedTable, match="clients"):
        cached_read("managers", "clients")(read)
    with pytest.raises(UnversionedTable, match="declares"):
        cached_answer(out=dict)(read)
    assert cached_read("managers")(read).tables == {"managers"}


# rows a cached read may read although their table is not versioned: each is written in the
# same transaction as a row of the versioned table named, which moves the version
_WRITTEN_WITH = {
    "events": "managers",  # a manager.upserted event, with the managers row it upserts
    # a client's holders, with the balance deltas their move implies (streams/balances.py
    # move_clients; a move that writes no delta moves no balance: the averages stay)
    "balance_holders": "balance_daily",
}


async def test_a_cached_read_reads_only_the_tables_it_declares(
    served: tuple[httpx.AsyncClient, ReadCache, Any], db_url: str, monkeypatch: Any
) -> None:
    """Every cached route over the vectors, each cached read watched by SQLite's authorizer
    (which sees the reads made on the driver too): what each reads is what it declared."""
    if not db_url.startswith("sqlite"):
        pytest.skip("watches reads with SQLite's authorizer")
    import sqlite3
    from collections import defaultdict

    from api.reads import CACHED_READS
    from models.tables import Base

    stored = set(Base.metadata.tables)
    client = served[0]
    seen: dict[str, set[str]] = defaultdict(set)

    def watch(name: str, read: Any) -> Any:
        async def watched(conn: Any, *args: Any, **kwargs: Any) -> Any:
            tables = seen[name]

            def authorize(action: int, table: str | None, *_: Any) -> int:
                if action == sqlite3.SQLITE_READ and table in stored:  # not json_each()
                    tables.add(table)
                return sqlite3.SQLITE_OK

            driver = (await conn.get_raw_connection()).driver_connection
            await driver._execute(driver._conn.set_authorizer, authorize)
            try:
                return await read(conn, *args, **kwargs)
            finally:
                await driver._execute(driver._conn.set_authorizer, None)

        return watched

    for name, cached in CACHED_READS.items():
        monkeypatch.setattr(cached, "read", watch(name, cached.read))
    for path in (
        "/v1/managers/m036/tally",
        "/v1/branches/b05/tally",
        "/v1/branches/b05/leaderboard",
        "/v1/branches/b05/leaderboard?metric=average_deposits",
        "/v1/leaderboard",
    ):
        await _get(client, path)
    assert set(seen) == set(CACHED_READS), "every cached read was watched"
    for name, tables in seen.items():
        declared = CACHED_READS[name].tables
        for table in tables - declared:
            assert _WRITTEN_WITH.get(table) in declared, f"{name} reads {table} undeclared"
