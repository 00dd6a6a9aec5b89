"""Digest and escalation-push benchmark: the cost of the messages to people at scale.

    python bench/digest.py [--clients N] [--due 0.1] [--db sqlite,postgresql]

Same data as bench/reminder_scan.py (N clients over N/200 managers, a fraction ``--due`` overdue),
with one channel configured (a default WeCom robot; nothing is sent: the figures are the
scheduler's writing of the messages). With the clock frozen: the first scan (fires), the
morning digest pass (one message per manager), a scan 8 days later that escalates (one push
per supervisor) and that day's digest pass (managers plus supervisors' branch sections), and a
repeated digest pass (the day is done: the steady cost a scan pays after the digest time).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import time as clock_time
from datetime import timedelta
from pathlib import Path

from bench.reminder_scan import DEFAULT_PG, NOW, generate, insert_pg, insert_sqlite
from config import Settings
from models.db import make_engine, upgrade
from scheduler.service import ReminderScheduler


class Sink:
    """A channel target (the default WeCom robot) that is never sent to here."""

    name = "wecom:*"
    kind = "wecom"

    async def send(self, key: str, body: bytes, headers: dict[str, str]) -> None:
        raise AssertionError("the benchmark does not deliver")

    async def close(self) -> None:
        return None


async def bench_db(kind: str, args: argparse.Namespace) -> dict[str, float]:
    import asyncpg

    tmp = Path(tempfile.mkdtemp(prefix="crm-bench-digest-"))
    pg_name = None
    try:
        if kind == "sqlite":
            path = tmp / "bench.sqlite3"
            url = f"sqlite+aiosqlite:///{path}"
        else:
            pg_name = f"crm_bench_{uuid.uuid4().hex[:10]}"
            c = await asyncpg.connect(args.pg_url)
            await c.execute(f'CREATE DATABASE "{pg_name}"')
            await c.close()
            base = args.pg_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            url = f"{base}/{pg_name}"
        await asyncio.to_thread(upgrade, url)
        rows = generate(args.clients, args.due, 7, [0])
        if kind == "sqlite":
            await asyncio.to_thread(insert_sqlite, str(path), rows, args.clients)
        else:
            await insert_pg(url, rows, args.clients)
        engine = make_engine(url, writer=True)
        clock = {"t": NOW}
        settings = Settings(database_url=url, data_dir=tmp, quiet_weekends=False)
        sched = ReminderScheduler(settings, engine, now=lambda: clock["t"], targets=[Sink()])
        digest_rules = sched.rules
        out: dict[str, float] = {}

        async def timed(name: str, step: object) -> None:
            t0 = time.perf_counter()
            n = await step  # type: ignore[misc]
            out[f"{name}_s"] = round(time.perf_counter() - t0, 3)
            out[name] = n if isinstance(n, int) else getattr(n, "total_fired", 0)
            print(f"[{kind}] {name}: {out[name]} in {out[name + '_s']} s", file=sys.stderr)

        # scans without the digest (its time not reached), then the digest pass alone
        sched.rules = replace(digest_rules, digest_time=clock_time(23, 59))
        await timed("fire_scan", sched.scan_once())
        sched.rules = digest_rules
        await timed("digests_day1", sched.digest_once(NOW))
        clock["t"] = NOW + timedelta(days=8)
        sched.rules = replace(digest_rules, digest_time=clock_time(23, 59))
        t0 = time.perf_counter()
        r = await sched.scan_once()
        out["escalate_scan_s"] = round(time.perf_counter() - t0, 3)
        out["escalated"], out["pushes"] = r.escalated, r.escalation_notices
        print(f"[{kind}] escalate scan: {r} in {out['escalate_scan_s']} s", file=sys.stderr)
        sched.rules = digest_rules
        await timed("digests_day9", sched.digest_once(clock["t"]))
        await timed("digests_again", sched.digest_once(clock["t"]))
        await engine.dispose()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if pg_name:
            c = await asyncpg.connect(args.pg_url)
            await c.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
            await c.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=100_000)
    p.add_argument("--due", type=float, default=0.1)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--pg-url", default=DEFAULT_PG)
    args = p.parse_args(argv)
    for kind in args.db.split(","):
        print(kind, asyncio.run(bench_db(kind, args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
