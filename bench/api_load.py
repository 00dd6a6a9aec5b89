"""API load: 50 concurrent clients on the manager tally and the branch leaderboard.

    python bench/api_load.py [--managers 1000] [--concurrency 50] [--seconds 15]
                             [--db sqlite,postgresql] [--json out.json]

Per database: a fresh database gets ``--managers`` managers in one branch and a month of
daily buckets for each (bulk insert of ``manager_daily``/``branch_daily`` rows), then
``crm-tracker api`` runs as a child process (``CRM_DATABASE_URL``, ``CRM_AUTH_SECRET``).
``--concurrency`` httpx clients (one asyncio task each, one shared connection pool) send
requests back to back for ``--seconds`` per endpoint, with an admin token:

- ``GET /v1/managers/{random manager}/tally?period=month&at=...``
- ``GET /v1/branches/{branch}/leaderboard?period=month&at=...``

Reported per endpoint: requests/s, p50/p99/max latency (client side: includes the client's
own event loop, on the same 2 cores as the API), errors (non-200).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    DEFAULT_PG,
    Child,
    api_env,
    bearer,
    finish,
    new_secret,
    peak_rss_mib,
    percentile,
    scratch_database,
    wait_http,
)
from crmtracker.broker import free_port  # noqa: E402
from crmtracker.settings import Settings  # noqa: E402

BRANCH = "b-load"
MONTH = date(2026, 10, 1)


async def seed(url: str, managers: int, rng: random.Random) -> int:
    from sqlalchemy import insert, text

    from models.db import make_engine
    from models.tables import BranchDayRow, ManagerDayRow, ManagerRow

    engine = make_engine(url)
    now = datetime.now(UTC)
    mids = [f"lm{i:05d}" for i in range(managers)]
    days = [MONTH + timedelta(days=d) for d in range(31)]
    rows = 0
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(ManagerRow.__table__),
                [
                    {
                        "manager_id": m,
                        "name": f"Manager {m}",
                        "branch_id": BRANCH,
                        "active": True,
                        "updated_at": now,
                    }
                    for m in mids
                ],
            )
            branch: dict[date, list[Any]] = {d: [0, Decimal(0)] for d in days}
            batch: list[dict[str, Any]] = []
            for m in mids:
                for d in days:
                    n = rng.randint(0, 20)
                    w = Decimal(rng.randint(-100_000, 2_000_000)).scaleb(-2)
                    batch.append(
                        {
                            "manager_id": m,
                            "day": d,
                            "transactions": n,
                            "volume_asset": w * 10,
                            "profit_asset": w,
                            "weighted_profit": w,
                            "visits_total": n % 3,
                            "visits_phone": n % 3,
                        }
                    )
                    branch[d][0] += n
                    branch[d][1] += w
                if len(batch) >= 5000:
                    await conn.execute(insert(ManagerDayRow.__table__), batch)
                    rows += len(batch)
                    batch = []
            if batch:
                await conn.execute(insert(ManagerDayRow.__table__), batch)
                rows += len(batch)
            await conn.execute(
                insert(BranchDayRow.__table__),
                [
                    {"branch_id": BRANCH, "day": d, "transactions": n, "weighted_profit": w}
                    for d, (n, w) in branch.items()
                ],
            )
        # planner statistics, as autovacuum would have them on a database in service
        async with engine.connect() as conn:
            await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
    return rows


async def load(
    base: str, path_of: Any, headers: dict[str, str], concurrency: int, seconds: float
) -> dict[str, Any]:
    import httpx

    lat: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        # warm up: connections and the API's caches
        await asyncio.gather(*(client.get(path_of(), headers=headers) for _ in range(concurrency)))
        t_end = time.monotonic() + seconds

        async def one() -> None:
            nonlocal errors
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                r = await client.get(path_of(), headers=headers)
                lat.append(time.monotonic() - t0)
                if r.status_code != 200:
                    errors += 1

        t0 = time.monotonic()
        await asyncio.gather(*(one() for _ in range(concurrency)))
        elapsed = time.monotonic() - t0
    return {
        "requests": len(lat),
        "rps": round(len(lat) / elapsed, 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 1) if lat else None,
        "p99_ms": round(percentile(lat, 99) * 1000, 1) if lat else None,
        "max_ms": round(max(lat) * 1000, 1) if lat else None,
        "errors": errors,
    }


async def bench_db(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"db": kind, "managers": args.managers, "endpoints": {}}
    rng = random.Random(args.seed)
    async with scratch_database(kind, workdir, args.pg_url) as url:
        t0 = time.monotonic()
        out["bucket_rows"] = await seed(url, args.managers, rng)
        out["seed_s"] = round(time.monotonic() - t0, 1)
        settings = Settings(
            kafka_bootstrap="127.0.0.1:9",  # the API reads the database only
            database_url=url,
            data_dir=workdir / f"data-{kind}",
        )
        secret = new_secret()
        port = free_port()
        api = Child("api", api_env(settings, port, secret), workdir / f"api-{kind}.log")
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 60)
            headers = bearer(secret, "admin")
            base = f"http://127.0.0.1:{port}"
            at = (MONTH + timedelta(days=14)).isoformat()
            mids = [f"lm{i:05d}" for i in range(args.managers)]
            endpoints = {
                "manager tally": lambda: (
                    f"/v1/managers/{rng.choice(mids)}/tally?period=month&at={at}"
                ),
                "branch leaderboard": lambda: (
                    f"/v1/branches/{BRANCH}/leaderboard?period=month&at={at}"
                ),
            }
            for name, path_of in endpoints.items():
                print(
                    f"[{kind}] {name}: {args.concurrency} clients, {args.seconds:.0f}s",
                    file=sys.stderr,
                )
                out["endpoints"][name] = await load(
                    base, path_of, headers, args.concurrency, args.seconds
                )
            out["api_peak_rss_mib"] = peak_rss_mib(api.pid)
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}\n{api.tail()}"
            print(f"[{kind}] FAILED: {out['error']}", file=sys.stderr)
        finally:
            api.stop()
    return out


def table(results: list[dict]) -> str:
    head = ("db", "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors")
    rows = [
        (
            r["db"],
            name,
            str(e["requests"]),
            f"{e['rps']:,.0f}",
            str(e["p50_ms"]),
            str(e["p99_ms"]),
            str(e["max_ms"]),
            str(e["errors"]),
        )
        for r in results
        for name, e in r["endpoints"].items()
    ]
    widths = [
        max(len(h), *(len(x[i]) for x in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*x) for x in rows]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--managers", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="crm-apiload-"))

    async def run() -> list[dict]:
        return [await bench_db(k.strip(), args, workdir) for k in args.db.split(",")]

    results = asyncio.run(run())
    print(table(results))
    doc = {"concurrency": args.concurrency, "seconds": args.seconds, "results": results}
    return finish(doc, results, args.json, workdir)


if __name__ == "__main__":
    sys.exit(main())
