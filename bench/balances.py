"""Balances at scale: nightly end-of-day snapshots through the apply step, and period queries.

The worker's own apply step (``Applier.apply``, decode → claim → resolve → balances), fed in
batches from memory (no broker, as bench/apply_only.py), on a scratch database:

- ``night``: every account's snapshot for one night (night 1 creates the accounts' rows,
  night 2 is the steady state), and for comparison as many ``transaction.posted`` events
  through the same apply step, with the ratio of the two rates (and of CPU per event);
- ``month``: 30 nights of every account (``--month-accounts``), night after night;
- queries: a manager's month average, a branch's year average, a branch leaderboard on
  ``average_deposits`` (median of ``--repeat`` runs).

    python bench/balances.py --accounts 1000000 --month-accounts 100000 [--db postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import scratch_database
from config import Settings
from models.balances import average_balances
from models.db import make_engine
from streams.apply import Applier, Incoming

PG_URL = os.environ.get("CRM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
START = date(2026, 1, 1)


def _env(eid: str, etype: str, at: str, payload: str) -> bytes:
    return (
        f'{{"event_id": "{eid}", "event_type": "{etype}", "schema_version": 1, '
        f'"occurred_at": "{at}", "payload": {payload}}}'
    ).encode()


class Bank:
    """Accounts (two per client), clients, managers (one per 500 clients), branches."""

    def __init__(self, accounts: int) -> None:
        self.accounts = accounts
        self.clients = max(accounts // 2, 1)
        self.managers = max(self.clients // 500, 10)
        self.branches = max(self.managers // 10, 1)
        self.offset = 0

    def _msg(self, topic: str, value: bytes) -> Incoming:
        self.offset += 1
        return Incoming(topic, self.offset % 8, self.offset, None, value)

    def reference(self) -> list[Incoming]:
        at = "2025-12-01T09:00:00+08:00"
        out = [
            self._msg(
                "crm.managers",
                _env(
                    f"m{m}",
                    "manager.upserted",
                    at,
                    f'{{"manager_id": "m{m}", "branch_id": "b{m % self.branches}"}}',
                ),
            )
            for m in range(self.managers)
        ]
        out += [
            self._msg(
                "crm.clients",
                _env(
                    f"c{c}",
                    "client.upserted",
                    at,
                    f'{{"client_id": "c{c}", "manager_id": "m{c % self.managers}"}}',
                ),
            )
            for c in range(self.clients)
        ]
        return out

    def night(self, day: date, accounts: int | None = None) -> list[Incoming]:
        at = f"{day + timedelta(days=1)}T01:00:00+08:00"
        out = []
        n = accounts or self.accounts
        for a in range(n):
            line = "liability" if a % 3 else "asset"
            bal = f"{(a * 7919 + day.toordinal() * 104729) % 10_000_000}.{a % 100:02d}"
            out.append(
                self._msg(
                    "bank.balances",
                    _env(
                        f"s{a}-{day}",
                        "balance.snapshot",
                        at,
                        f'{{"client_id": "c{a // 2}", "account_id": "a{a}", '
                        f'"business_line": "{line}", "balance": "{bal}", '
                        f'"as_of_date": "{day}"}}',
                    ),
                )
            )
        return out

    def transactions(self, day: date) -> list[Incoming]:
        at = f"{day}T10:00:00+08:00"
        return [
            self._msg(
                "bank.transactions",
                _env(
                    f"t{a}-{day}",
                    "transaction.posted",
                    at,
                    f'{{"client_id": "c{a // 2}", "account_id": "a{a}", '
                    f'"business_line": "liability", "amount": "{a % 9999}.10", '
                    f'"simulated_profit": "{a % 77}.01"}}',
                ),
            )
            for a in range(self.accounts)
        ]


async def _analyze(engine: Any) -> None:
    """Fresh table statistics, as autovacuum keeps them on a production server (this
    machine's PostgreSQL runs with ``autovacuum = off``): without them the planner takes
    the balance tables filled by the bench for small ones and reads a batch's accounts by a
    scan of the whole table, a cost that grows with the bank (the transactions read
    nothing). Not timed."""
    if engine.dialect.name == "postgresql":
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE")


async def _apply(applier: Applier, msgs: list[Incoming], batch: int) -> dict[str, Any]:
    started = time.perf_counter()
    cpu0 = time.process_time()
    applied = 0
    for i in range(0, len(msgs), batch):
        res = await applier.apply(msgs[i : i + batch])
        applied += sum(res.applied.values())
    took = time.perf_counter() - started
    return {
        "events": len(msgs),
        "applied": applied,
        "seconds": round(took, 2),
        "events_s": round(len(msgs) / took),
        "cpu_us_per_event": round((time.process_time() - cpu0) / len(msgs) * 1e6, 1),
    }


async def _timed(repeat: int, fn: Any) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


async def _queries(engine: Any, bank: Bank, day: date, repeat: int) -> dict[str, Any]:
    today = day + timedelta(days=1)
    month = (
        day.replace(day=1),
        (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1),
    )
    year = (date(day.year, 1, 1), date(day.year, 12, 31))
    branch_managers = [f"m{m}" for m in range(bank.managers) if m % bank.branches == 0]

    async def manager_month() -> None:
        async with engine.connect() as conn:
            await average_balances(conn, "manager", ["m0"], *month, today)

    async def branch_year() -> None:
        async with engine.connect() as conn:
            await average_balances(conn, "branch", ["b0"], *year, today)

    async def leaderboard() -> None:
        async with engine.connect() as conn:
            await average_balances(conn, "manager", branch_managers, *month, today)

    return {
        "manager_month_ms": await _timed(repeat, manager_month),
        "branch_year_ms": await _timed(repeat, branch_year),
        f"branch_leaderboard_{len(branch_managers)}_managers_ms": await _timed(repeat, leaderboard),
    }


async def _exact(engine: Any, bank: Bank, first: date, stop: date) -> bool:
    """Branch b0's month averages against a sum computed here from the generator's balances."""
    from decimal import Decimal

    sums = {"liability": Decimal(0), "asset": Decimal(0)}
    day = first
    while day < stop:
        for a in range(bank.accounts):
            manager = (a // 2) % bank.managers
            if manager % bank.branches:
                continue
            bal = (a * 7919 + day.toordinal() * 104729) % 10_000_000
            line = "liability" if a % 3 else "asset"
            sums[line] += Decimal(f"{bal}.{a % 100:02d}")
        day += timedelta(days=1)
    days = (stop - first).days
    async with engine.connect() as conn:
        got = await average_balances(conn, "branch", ["b0"], first, stop - timedelta(days=1), stop)
    ok = all(got["b0"][line] == sums[line] / days for line in sums)
    if not ok:
        print(f"MISMATCH: {got['b0']} != {sums} / {days}", file=sys.stderr)
    return ok


async def run_db(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = Settings()
    out: dict[str, Any] = {"db": kind, "batch": args.batch}
    now = datetime(2026, 12, 31, tzinfo=UTC)
    if args.accounts:
        bank = Bank(args.accounts)
        out["night"] = {
            "accounts": bank.accounts,
            "clients": bank.clients,
            "managers": bank.managers,
            "branches": bank.branches,
        }
        async with scratch_database(kind, workdir, PG_URL) as url:
            engine = make_engine(url, writer=True)
            applier = Applier(engine, settings.policy, now=lambda: now)
            await _apply(applier, bank.reference(), args.batch)
            await _analyze(engine)
            d1, d2 = date(2026, 11, 1), date(2026, 11, 2)
            out["night"]["night_1"] = await _apply(applier, bank.night(d1), args.batch)
            await _analyze(engine)
            out["night"]["night_2"] = await _apply(applier, bank.night(d2), args.batch)
            out["night"]["transactions"] = await _apply(applier, bank.transactions(d2), args.batch)
            # the bar: a night applies at least as fast as transactions do
            night, tx = out["night"]["night_2"], out["night"]["transactions"]
            out["night"]["snapshots_vs_transactions"] = {
                "events_s": round(night["events_s"] / tx["events_s"], 2),
                "cpu_per_event": round(night["cpu_us_per_event"] / tx["cpu_us_per_event"], 2),
            }
            out["night"]["queries"] = await _queries(engine, bank, d2, args.repeat)
            await engine.dispose()
    if args.month_accounts:
        bank = Bank(args.month_accounts)
        out["month"] = {
            "accounts": bank.accounts,
            "managers": bank.managers,
            "branches": bank.branches,
        }
        async with scratch_database(kind, workdir, PG_URL) as url:
            engine = make_engine(url, writer=True)
            applier = Applier(engine, settings.policy, now=lambda: now)
            await _apply(applier, bank.reference(), args.batch)
            nights = []
            day = date(2026, 11, 1)
            await _analyze(engine)
            for n in range(30):
                nights.append(await _apply(applier, bank.night(day), args.batch))
                day += timedelta(days=1)
                if n == 0:
                    await _analyze(engine)
            total = sum(n["seconds"] for n in nights)
            events = sum(n["events"] for n in nights)
            out["month"]["nights"] = 30
            out["month"]["events"] = events
            out["month"]["seconds"] = round(total, 1)
            out["month"]["events_s"] = round(events / total)
            out["month"]["first_night_events_s"] = nights[0]["events_s"]
            out["month"]["last_night_events_s"] = nights[-1]["events_s"]
            out["month"]["exact"] = await _exact(engine, bank, date(2026, 11, 1), day)
            out["month"]["queries"] = await _queries(
                engine, bank, day - timedelta(days=1), args.repeat
            )
            await engine.dispose()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accounts", type=int, default=200_000, help="accounts for one night")
    ap.add_argument("--month-accounts", type=int, default=20_000, help="accounts for 30 nights")
    ap.add_argument("--db", default="postgresql", help="sqlite, postgresql or both (comma)")
    ap.add_argument("--batch", type=int, default=Settings().batch_size)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.db.split(","):
            results.append(asyncio.run(run_db(kind, args, Path(tmp))))
            print(json.dumps(results[-1], indent=2), file=sys.stderr)
    doc = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "runs": results}
    print(json.dumps(doc, indent=2))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
