"""Reminder scan benchmark: the scheduler's scan over many clients.

    python bench/reminder_scan.py [--clients N] [--due 0.1] [--db sqlite,postgresql]
                              [--chunk 5000] [--json out.json] [--keep]

For each database: a fresh, migrated database (a temp SQLite file; a new PostgreSQL
database) gets N clients (default 1,000,000) over N/200 managers, inserted in bulk (COPY on
PostgreSQL, executemany on SQLite; the insert figure includes generating the rows) with due dates from the product's own rules
(``reminders.rules.due_dates``); a fraction ``--due`` of them is overdue (due 1 minute to
6 days ago, so none is past the escalation grace), the rest due in 1 h to 180 days; 40 % are
credit clients. Then, with the clock frozen, the real ``ReminderScheduler.scan_once``:

1. ``idle``: a scan an hour before anything is due (the steady-state cost of a scan);
2. ``fire``: the first scan: fires every due reminder (reminder rows + outbox rows);
3. ``again``: the same scan repeated (everything already fired: nothing to do);
4. ``escalate``: 8 days later: escalates what fired and fires what came due meanwhile.

Reported per database: insert time, each scan's seconds, reminders fired and escalated per
second. A table on stdout and, with ``--json``, the figures as JSON (also printed last).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from config import Settings
from models.db import make_engine, upgrade
from models.policy import TIERS, Policy
from reminders.rules import ClientClock, due_dates
from scheduler.service import ReminderScheduler

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)
CLIENT_COLS = (
    "client_id",
    "segment",
    "tier",
    "manager_id",
    "branch_id",
    "credit_client",
    "visit_interval_days",
    "assigned_at",
    "updated_at",
    "last_visit_at",
    "last_post_loan_at",
    "next_visit_due",
    "next_post_loan_due",
)


@dataclass
class Result:
    db: str
    clients: int
    due_clients: int
    insert_s: float = 0.0
    scans: dict[str, dict[str, float]] = field(default_factory=dict)


CHUNK_ROWS = 50_000


def generate(
    n: int, due_fraction: float, seed: int, counter: list[int]
) -> Iterator[list[tuple[Any, ...]]]:
    """Client rows (in chunks) whose clocks, by the product's rules, give the wanted due
    spread; the same seed gives the same rows. ``counter[0]`` counts the overdue ones."""
    rng = random.Random(seed)
    policy = Policy()
    managers = max(1, n // 200)
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        tier = TIERS[i % len(TIERS)]
        interval = policy.visit_interval_days[tier]
        credit = rng.random() < 0.4
        if rng.random() < due_fraction:
            target = NOW - timedelta(seconds=rng.randint(60, 6 * 86_400))
            counter[0] += 1
        else:
            target = NOW + timedelta(seconds=rng.randint(3_600, 180 * 86_400))
        last_visit = target - timedelta(days=interval)
        assigned = last_visit - timedelta(days=rng.randint(1, 400))
        last_check = NOW - timedelta(seconds=rng.randint(3_600, 80 * 86_400)) if credit else None
        d = due_dates(ClientClock(tier, credit, None, assigned, last_visit, last_check), policy)
        m = i % managers
        rows.append(
            (
                f"c{i:08d}",
                "corporate",
                tier,
                f"m{m:05d}",
                f"b{m // 10:04d}",
                credit,
                None,
                assigned,
                assigned,
                last_visit,
                last_check,
                d.visit,
                d.post_loan_check,
            )
        )
        if len(rows) == CHUNK_ROWS:
            yield rows
            rows = []
    if rows:
        yield rows


def _manager_rows(n: int) -> list[tuple[Any, ...]]:
    return [
        (f"m{m:05d}", f"b{m // 10:04d}", f"s{m // 10:04d}", True, NOW - timedelta(days=999))
        for m in range(max(1, n // 200))
    ]


async def insert_pg(url: str, rows: Iterator[list[tuple[Any, ...]]], n: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.copy_records_to_table(
            "managers",
            records=_manager_rows(n),
            columns=["manager_id", "branch_id", "supervisor_id", "active", "updated_at"],
        )
        for chunk in rows:
            await conn.copy_records_to_table("clients", records=chunk, columns=list(CLIENT_COLS))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


def insert_sqlite(path: str, rows: Iterator[list[tuple[Any, ...]]], n: int) -> None:
    def ts(v: Any) -> Any:  # SQLAlchemy's SQLite storage: naive UTC text
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v

    db = sqlite3.connect(path)
    try:
        db.executemany(
            "INSERT INTO managers (manager_id, branch_id, supervisor_id, active, updated_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [tuple(ts(v) for v in r) for r in _manager_rows(n)],
        )
        marks = ", ".join("?" * len(CLIENT_COLS))
        sql = f"INSERT INTO clients ({', '.join(CLIENT_COLS)}) VALUES ({marks})"
        for chunk in rows:
            db.executemany(sql, [tuple(ts(v) for v in r) for r in chunk])
        db.commit()
        db.execute("ANALYZE")
    finally:
        db.close()


async def bench_db(kind: str, args: argparse.Namespace) -> Result:
    import asyncpg

    tmp = Path(tempfile.mkdtemp(prefix="crm-bench-rem-"))
    pg_name = None
    admin = args.pg_url
    try:
        if kind == "sqlite":
            path = tmp / "bench.sqlite3"
            url = f"sqlite+aiosqlite:///{path}"
        else:
            pg_name = f"crm_bench_{uuid.uuid4().hex[:10]}"
            c = await asyncpg.connect(admin)
            await c.execute(f'CREATE DATABASE "{pg_name}"')
            await c.close()
            url = (
                admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
                + "/"
                + pg_name
            )
        await asyncio.to_thread(upgrade, url)
        n = args.clients
        counter = [0]
        rows = generate(n, args.due, args.seed, counter)
        t0 = time.perf_counter()
        if kind == "sqlite":
            await asyncio.to_thread(insert_sqlite, str(path), rows, n)
        else:
            await insert_pg(url, rows, n)
        res = Result(kind, n, counter[0], insert_s=time.perf_counter() - t0)
        print(
            f"[{kind}] generated and inserted {n:,} clients ({counter[0]:,} overdue)"
            f" in {res.insert_s:.1f} s",
            file=sys.stderr,
        )

        engine = make_engine(url, writer=True)
        clock = {"t": NOW}
        sched = ReminderScheduler(
            Settings(database_url=url, data_dir=tmp),
            engine,
            now=lambda: clock["t"],
            targets=[],
            chunk=args.chunk,
        )
        plan = [
            ("idle", NOW - timedelta(days=7)),
            ("fire", NOW),
            ("again", NOW),
            ("escalate", NOW + timedelta(days=8)),
        ]
        for name, at in plan:
            clock["t"] = at
            t0 = time.perf_counter()
            r = await sched.scan_once()
            dt = time.perf_counter() - t0
            res.scans[name] = {
                "seconds": round(dt, 3),
                "fired": r.total_fired,
                "escalated": r.escalated,
                "fired_per_s": round(r.total_fired / dt, 1) if dt else 0.0,
                "escalated_per_s": round(r.escalated / dt, 1) if dt else 0.0,
            }
            print(f"[{kind}] scan {name}: {res.scans[name]}", file=sys.stderr)
        await engine.dispose()
        return res
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            if pg_name:
                c = await asyncpg.connect(admin)
                await c.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
                await c.close()


def table(results: list[Result]) -> str:
    head = (
        f"{'db':<11}{'clients':>11}{'due':>9}{'insert s':>10}  "
        + "  ".join(f"{n + ' s':>10}" for n in ("idle", "fire", "again", "escalate"))
        + f"{'fired/s':>11}{'escal./s':>11}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        s = r.scans
        lines.append(
            f"{r.db:<11}{r.clients:>11,}{r.due_clients:>9,}{r.insert_s:>10.1f}  "
            + "  ".join(f"{s[n]['seconds']:>10.2f}" for n in ("idle", "fire", "again", "escalate"))
            + f"{s['fire']['fired_per_s']:>11,.0f}{s['escalate']['escalated_per_s']:>11,.0f}"
        )
    lines.append(
        "fire: reminders fired (visit + post-loan) in the first scan; escalate: the scan 8 days"
        " later (escalations plus the reminders that came due meanwhile)"
    )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[Result]:
    return [await bench_db(kind, args) for kind in args.db.split(",") if kind]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=1_000_000, help="clients (N)")
    p.add_argument("--due", type=float, default=0.1, help="fraction of clients overdue")
    p.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    p.add_argument("--chunk", type=int, default=5000, help="rows per scan transaction")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--pg-url", default=DEFAULT_PG, help="an existing database to connect through")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the databases")
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    print(table(results))
    doc = [asdict(r) for r in results]
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
