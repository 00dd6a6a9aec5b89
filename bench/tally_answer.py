"""What one computed (uncached) manager tally answer costs, in CPU ms, on each database.

    python bench/tally_answer.py [--db sqlite,postgresql] [--rounds 5] [--profile FILE]
        [--dump FILE]   # every answer (as_of blanked), to compare before/after a change

Builds ``testkit.tally_book`` at up_e2e's size (40 managers, 1,500 clients, ~50k facts, plus
nightly balances, 40 hand-overs with business after them, targets; ``--plain``: up_e2e's log
alone, 12 transfers and no balances) on a scratch database, then calls the app in this
process (httpx ASGI transport, read cache off, so every answer is computed) for every
manager x the log's three months, ``--rounds`` times: process CPU per answer (this process
runs both client and app; the client's share is measured alone with a cached run).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from bench.common import scratch_database
from config import Settings
from crmtracker.compose import api_app
from testkit.api import SECRET, asgi_client, auth
from testkit.factories import MONTHS, generate_log
from testkit.tally_book import apply_book, tally_book

PG_URL = os.environ.get("CRM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AS_OF = re.compile(rb'"as_of":"[^"]*"')


async def run_db(kind: str, args: argparse.Namespace, workdir: Path) -> dict:
    if args.plain:  # up_e2e's log as it is: no balances, no business after the transfers
        log = generate_log(args.seed, events=args.events, managers=40, branches=4, clients=1_500)
        snaps: list = []
    else:
        log, snaps = tally_book(
            args.seed, events=args.events, managers=40, branches=4, clients=1_500, transfers=40
        )
    out: dict = {"db": kind}
    async with scratch_database(kind, workdir, PG_URL) as url:
        t0 = time.perf_counter()
        engine = await apply_book(url, log, snaps, Settings().policy)
        await engine.dispose()
        out["build_s"] = round(time.perf_counter() - t0, 1)
        paths = [
            f"/v1/managers/{m}/tally?period=month&at={month}-15"
            for m in sorted(log.manager_branch)
            for month in MONTHS
        ]
        dump: dict[str, str] = {}
        for cache in (False, True):
            settings = Settings(
                database_url=url, data_dir=workdir, auth_secret=SECRET, api_read_cache=cache
            )
            app = api_app(settings)
            async with asgi_client(app) as c:
                headers = auth("admin")
                for p in paths:  # warm: statement caches, connections
                    r = await c.get(p, headers=headers)
                    assert r.status_code == 200, r.text
                    dump[p] = AS_OF.sub(b'"as_of":""', r.content).decode()
                prof = cProfile.Profile() if args.profile and not cache else None
                if prof:
                    prof.enable()
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for _ in range(args.rounds):
                    for p in paths:
                        r = await c.get(p, headers=headers)
                        assert r.status_code == 200
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                if prof:
                    prof.disable()
                    prof.dump_stats(f"{args.profile}.{kind}")
            n = args.rounds * len(paths)
            key = "cached" if cache else "computed"
            out[f"{key}_cpu_ms"] = round(cpu / n * 1000, 3)
            out[f"{key}_wall_ms"] = round(wall / n * 1000, 3)
        out["answer_cpu_ms"] = round(out["computed_cpu_ms"] - out["cached_cpu_ms"], 3)
        out["dump"] = dump
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--events", type=int, default=48_000)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--profile")
    p.add_argument("--dump")
    p.add_argument("--plain", action="store_true", help="up_e2e's log alone (no balances)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tally-answer-") as tmp:
        for kind in args.db.split(","):
            res = asyncio.run(run_db(kind, args, Path(tmp)))
            dump = res.pop("dump")
            if args.dump:
                Path(f"{args.dump}.{kind}").write_text(json.dumps(dump, indent=0, sort_keys=True))
            res["load_1m"] = os.getloadavg()[0]
            print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
