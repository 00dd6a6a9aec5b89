"""API load: 50 concurrent clients on the manager tally and the branch leaderboard.

    python bench/api_load.py [--managers 1000] [--concurrency 50] [--seconds 15]
                             [--db sqlite,postgresql] [--cache on,off] [--tool auto|wrk|httpx]
                             [--json out.json]

Per database: a fresh database gets ``--managers`` managers in one branch, a month of daily
buckets for each (bulk insert of ``manager_daily``/``branch_daily`` rows) and 10 clients each
(about half of them overdue for a visit, credit clients also for a post-loan check), then
``crm-tracker api`` runs as a child process (``CRM_DATABASE_URL``, ``CRM_AUTH_SECRET``), once
per ``--cache`` setting (``CRM_API_READ_CACHE``). ``--concurrency`` clients send requests back
to back for ``--seconds`` per endpoint, with an admin token:

- ``GET /healthz``: the framework's floor (no database, no auth) at the same concurrency;
- ``GET /v1/managers/{random manager}/tally?period=month&at=...``;
- ``GET /v1/branches/{branch}/leaderboard?period=month&at=...`` (first page, 100 of 1,000);
- ``GET /v1/overdue?branch_id={branch}`` (first page; never cached: it depends on the clock).

The load tool is ``wrk`` (Debian package ``wrk``; C, so the client costs the shared 2 cores
little) when it is on PATH, else httpx clients in this process (which cost the API about half
of its CPU). Reported per endpoint: requests/s, p50/p99/max latency, errors (non-200).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import (
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
from config import Settings
from crmtracker.broker import free_port

BRANCH = "b-load"
MONTH = date(2026, 10, 1)


async def seed(url: str, managers: int, rng: random.Random) -> int:
    from sqlalchemy import insert, text

    from models.db import make_engine
    from models.tables import BranchDayRow, ClientRow, ManagerDayRow, ManagerRow

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
            await conn.execute(insert(ClientRow.__table__), list(_clients(mids, now, rng)))
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


def _clients(mids: list[str], now: datetime, rng: random.Random) -> Any:
    """10 clients per manager, visit clocks running out from 60 days ago to 60 days ahead."""
    for m in mids:
        for j in range(10):
            credit = j % 3 == 0
            yield {
                "client_id": f"{m}-c{j}",
                "manager_id": m,
                "branch_id": BRANCH,
                "credit_client": credit,
                "assigned_at": now - timedelta(days=400),
                "updated_at": now - timedelta(days=400),
                "next_visit_due": now + timedelta(minutes=rng.randint(-60 * 1440, 60 * 1440)),
                "next_post_loan_due": (
                    now + timedelta(minutes=rng.randint(-60 * 1440, 60 * 1440)) if credit else None
                ),
            }


def warm_every(base: str, paths: list[str], headers: dict[str, str]) -> None:
    """Ask every path once before measuring: the target is the *kept* answer, and the timed
    warm-up alone does not reach 1,000 managers when each first computation costs ~5 ms of
    the API's one database thread (SQLite): those first computations would be measured."""
    import httpx

    with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
        for path in paths:
            client.get(path)


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


WRK_SCRIPT = """
local paths = {%s}
local auth = "%s"
request = function()
  return wrk.format("GET", paths[math.random(#paths)], {["Authorization"] = auth})
end
"""


def _ms(text: str) -> float:
    for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)):
        if text.endswith(unit):
            return round(float(text[: -len(unit)]) * scale, 1)
    return float(text)


def load_wrk(
    base: str, paths: list[str], auth: str, concurrency: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    """``wrk`` with ``concurrency`` connections on one thread, after a 3 s warm-up."""
    import re
    import subprocess

    script = workdir / "wrk.lua"
    script.write_text(WRK_SCRIPT % (", ".join(f'"{x}"' for x in paths), auth))
    cmd = ["wrk", "-t1", f"-c{concurrency}", "--timeout", "30s", "--latency", "-s", str(script)]
    subprocess.run([*cmd, "-d3s", base], capture_output=True, check=True)
    out = subprocess.run([*cmd, f"-d{seconds:.0f}s", base], capture_output=True, text=True).stdout
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    lat = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
    done = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (pct and lat and done and rps):
        raise RuntimeError(f"unreadable wrk output:\n{out}")
    return {
        "requests": int(done.group(1)),
        "rps": round(float(rps.group(1)), 1),
        "p50_ms": _ms(pct["50"]),
        "p99_ms": _ms(pct["99"]),
        "max_ms": _ms(lat.group(1)),
        "errors": (int(bad.group(1)) if bad else 0)
        + (sum(int(x) for x in sock.groups()) if sock else 0),
    }


async def bench_db(kind: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    rng = random.Random(args.seed)
    runs: list[dict[str, Any]] = []
    async with scratch_database(kind, workdir, args.pg_url) as url:
        t0 = time.monotonic()
        rows = await seed(url, args.managers, rng)
        seed_s = round(time.monotonic() - t0, 1)
        for cache in args.cache.split(","):
            out: dict[str, Any] = {
                "db": kind,
                "cache": cache,
                "tool": args.tool,
                "managers": args.managers,
                "bucket_rows": rows,
                "seed_s": seed_s,
                "endpoints": {},
            }
            runs.append(out)
            settings = Settings(
                kafka_bootstrap="127.0.0.1:9",  # the API reads the database only
                database_url=url,
                data_dir=workdir / f"data-{kind}",
                api_read_cache=cache == "on",
            )
            secret = new_secret()
            port = free_port()
            env = api_env(settings, port, secret)
            env["CRM_API_READ_CACHE"] = "true" if cache == "on" else "false"
            api = Child("api", env, workdir / f"api-{kind}-{cache}.log")
            try:
                await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/healthz", 60)
                headers = bearer(secret, "admin")
                base = f"http://127.0.0.1:{port}"
                at = (MONTH + timedelta(days=14)).isoformat()
                mids = [f"lm{i:05d}" for i in range(args.managers)]
                endpoints = {
                    "healthz (floor)": ["/healthz"],
                    "manager tally": [f"/v1/managers/{m}/tally?period=month&at={at}" for m in mids],
                    "branch leaderboard": [
                        f"/v1/branches/{BRANCH}/leaderboard?period=month&at={at}"
                    ],
                    "overdue": [f"/v1/overdue?branch_id={BRANCH}"],
                }
                for name, paths in endpoints.items():
                    print(
                        f"[{kind}, cache {cache}] {name}: {args.concurrency} clients, "
                        f"{args.seconds:.0f}s ({args.tool})",
                        file=sys.stderr,
                    )
                    if cache == "on":
                        await asyncio.to_thread(warm_every, base, paths, headers)
                    if args.tool == "wrk":
                        out["endpoints"][name] = await asyncio.to_thread(
                            load_wrk,
                            base,
                            paths,
                            headers["Authorization"],
                            args.concurrency,
                            args.seconds,
                            workdir,
                        )
                    else:
                        out["endpoints"][name] = await load(
                            base,
                            lambda paths=paths: rng.choice(paths),
                            headers,
                            args.concurrency,
                            args.seconds,
                        )
                out["api_peak_rss_mib"] = peak_rss_mib(api.pid)
            except Exception as exc:
                out["error"] = f"{type(exc).__name__}: {exc}\n{api.tail()}"
                print(f"[{kind}] FAILED: {out['error']}", file=sys.stderr)
            finally:
                api.stop()
    return runs


def table(results: list[dict]) -> str:
    head = ("db", "cache", "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors")
    rows = [
        (
            r["db"],
            r["cache"],
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
    p.add_argument("--cache", default="on,off", help="CRM_API_READ_CACHE settings to run")
    p.add_argument("--tool", choices=("auto", "wrk", "httpx"), default="auto")
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="crm-apiload-"))
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "httpx"
    if args.tool == "httpx":
        print("wrk is not on PATH (apt-get install wrk): httpx clients share the API's cores")

    async def run() -> list[dict]:
        return [r for k in args.db.split(",") for r in await bench_db(k.strip(), args, workdir)]

    results = asyncio.run(run())
    print(table(results))
    doc = {
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "tool": args.tool,
        "results": results,
    }
    return finish(doc, results, args.json, workdir)


if __name__ == "__main__":
    sys.exit(main())
