"""Memory: worker and API resident set (VmHWM) with a large roster.

    python bench/memory.py [--clients 1000000] [--managers 10000] [--events 100000]
                           [--db sqlite,postgresql] [--json out.json]

Per database: bulk-insert ``--managers`` managers (in 100 branches) and ``--clients`` clients
with their first assignment, straight into the tables (not through the topics: that would be a
throughput run); then start the worker on an embedded broker, produce ``--events``
transactions for clients drawn at random from the whole roster, wait until they are applied,
start the API and request each endpoint family a few hundred times; then read VmHWM (peak
RSS) and VmRSS of both processes from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_PG,
    Child,
    api_env,
    bearer,
    embedded_broker,
    finish,
    new_secret,
    peak_rss_mib,
    rss_mib,
    scratch_database,
    wait_http,
)
from config import Settings
from crmtracker.broker import ensure_topics, free_port


async def seed(url: str, clients: int, managers: int) -> float:
    from sqlalchemy import insert

    from models.db import make_engine
    from models.tables import AssignmentRow, ClientRow, ManagerRow

    t0 = time.monotonic()
    engine = make_engine(url)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(ManagerRow.__table__),
                [
                    {
                        "manager_id": f"mm{i:05d}",
                        "branch_id": f"mb{i % 100:03d}",
                        "active": True,
                        "updated_at": at,
                    }
                    for i in range(managers)
                ],
            )
        step = 20_000
        for lo in range(0, clients, step):
            ids = range(lo, min(lo + step, clients))
            async with engine.begin() as conn:
                await conn.execute(
                    insert(ClientRow.__table__),
                    [
                        {
                            "client_id": f"mc{i:07d}",
                            "manager_id": f"mm{i % managers:05d}",
                            "branch_id": f"mb{i % managers % 100:03d}",
                            "credit_client": i % 3 == 0,
                            "assigned_at": at,
                            "updated_at": at,
                        }
                        for i in ids
                    ],
                )
                await conn.execute(
                    insert(AssignmentRow.__table__),
                    [
                        {
                            "client_id": f"mc{i:07d}",
                            "assigned_at": at,
                            "manager_id": f"mm{i % managers:05d}",
                            "event_id": f"seed-{i}",
                        }
                        for i in ids
                    ],
                )
    finally:
        await engine.dispose()
    return time.monotonic() - t0


def transaction(client: str, when: datetime, rng: random.Random) -> bytes:
    return json.dumps(
        {
            "event_id": uuid.uuid4().hex,
            "event_type": "transaction.posted",
            "schema_version": 1,
            "occurred_at": when.isoformat(),
            "payload": {
                "client_id": client,
                "account_id": f"a-{client}",
                "business_line": rng.choice(("asset", "liability", "intermediary")),
                "amount": f"{rng.randint(100, 10**7)}.00",
                "simulated_profit": f"{rng.randint(-1000, 10**5)}.{rng.randint(0, 99):02d}",
            },
        }
    ).encode()


async def bench_db(kind: str, args: argparse.Namespace, bootstrap: str, workdir: Path) -> dict:
    import httpx
    from aiokafka import AIOKafkaProducer
    from sqlalchemy import func, select

    from models.db import make_engine
    from models.tables import EventRow

    out: dict[str, Any] = {"db": kind, "clients": args.clients, "managers": args.managers}
    rng = random.Random(args.seed)
    async with scratch_database(kind, workdir, args.pg_url) as url:
        print(f"[{kind}] seeding {args.clients} clients ...", file=sys.stderr, flush=True)
        out["seed_s"] = round(await seed(url, args.clients, args.managers), 1)
        settings = Settings(
            kafka_bootstrap=bootstrap,
            kafka_session_timeout=2.0,
            kafka_heartbeat_interval=0.5,
            database_url=url,
            data_dir=workdir / f"data-{kind}",
            topic_prefix=f"mem{uuid.uuid4().hex[:10]}.",
            group_id=f"mem-{kind}-{uuid.uuid4().hex[:8]}",
            topic_partitions=8,
        )
        await ensure_topics(settings)
        worker = Child("worker", settings.child_env(), workdir / f"worker-{kind}.log")
        api = None
        engine = make_engine(url)
        try:
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024
            )
            await producer.start()
            base = datetime(2026, 10, 1, 9, tzinfo=settings.tz)
            try:
                for i in range(args.events):
                    c = f"mc{rng.randrange(args.clients):07d}"
                    when = base + timedelta(seconds=rng.randrange(30 * 86400))
                    await producer.send(
                        settings.topics.transactions, transaction(c, when, rng), key=c.encode()
                    )
                    if i % 10_000 == 0:
                        await asyncio.sleep(0)
                await producer.flush()
            finally:
                await producer.stop()
            t0 = time.monotonic()
            while True:
                async with engine.connect() as conn:
                    n = (
                        await conn.execute(select(func.count()).select_from(EventRow))
                    ).scalar_one()
                if n >= args.events:
                    break
                if not worker.alive() or time.monotonic() - t0 > 600:
                    raise RuntimeError(f"worker applied {n}/{args.events}\n{worker.tail()}")
                await asyncio.sleep(1)
            out["apply_s"] = round(time.monotonic() - t0, 1)
            secret = new_secret()
            port = free_port()
            api = Child("api", api_env(settings, port, secret), workdir / f"api-{kind}.log")
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 60)
            headers = bearer(secret, "admin")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
                for i in range(200):
                    m = f"mm{rng.randrange(args.managers):05d}"
                    cl = f"mc{rng.randrange(args.clients):07d}"
                    for path in (
                        f"/v1/managers/{m}/tally?period=month&at=2026-10-15",
                        f"/v1/clients/{cl}",
                        f"/v1/branches/mb{i % 100:03d}/leaderboard?period=month&at=2026-10-15",
                    ):
                        r = await c.get(path, headers=headers)
                        if r.status_code != 200:
                            out.setdefault("api_errors", {})[path.split("?")[0].split("/")[2]] = (
                                r.status_code
                            )
                await c.get("/v1/overdue?limit=1000", headers=headers)
            out["worker_peak_rss_mib"] = peak_rss_mib(worker.pid)
            out["worker_rss_mib"] = rss_mib(worker.pid)
            out["api_peak_rss_mib"] = peak_rss_mib(api.pid)
            out["api_rss_mib"] = rss_mib(api.pid)
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            print(f"[{kind}] FAILED: {out['error']}", file=sys.stderr)
        finally:
            worker.stop()
            if api is not None:
                api.stop()
            await engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=1_000_000)
    p.add_argument("--managers", type=int, default=10_000)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="crm-memory-"))

    async def run(bootstrap: str) -> list[dict]:
        return [await bench_db(k.strip(), args, bootstrap, workdir) for k in args.db.split(",")]

    with embedded_broker(workdir) as broker:
        results = asyncio.run(run(broker.bootstrap))
    head = "db          clients  managers  events  worker VmHWM MiB  API VmHWM MiB  apply s"
    print(head)
    for r in results:
        print(
            f"{r['db']:<10} {r['clients']:>8} {r['managers']:>9} {args.events:>7} "
            f"{r.get('worker_peak_rss_mib') or 0:>17.0f} {r.get('api_peak_rss_mib') or 0:>14.0f} "
            f"{r.get('apply_s', '-'):>8}" + (f"  ERROR {r['error']}" if r.get("error") else "")
        )
    doc = {"events": args.events, "results": results}
    return finish(doc, results, args.json, workdir)


if __name__ == "__main__":
    sys.exit(main())
