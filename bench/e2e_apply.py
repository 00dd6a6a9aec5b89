"""up_e2e's log through ``Applier.apply`` alone: the worker's database apply on that mix.

Builds the same log as ``bench/up_e2e.py`` (its generator and defaults), gives each message a
partition from its key as the broker would (8 per topic), and applies it in batches in
production order. Reports CPU µs per message per phase (the first batch: reference data and
the schema's first use; the rest), and with ``--profile FILE`` a cProfile dump of the rest.

    python bench/e2e_apply.py [--db sqlite,postgresql] [--batch 4000] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

from bench.common import DEFAULT_PG, scratch_database
from bench.up_e2e import build_log
from config import Settings
from crmtracker.heap import settle_heap
from models.db import make_engine
from streams.apply import Applier, Incoming


def log_args(seed: int) -> argparse.Namespace:
    return argparse.Namespace(
        messages=52_000,
        managers=40,
        branches=4,
        clients=1_500,
        resends=0.05,
        malformed=200,
        late_clients=30,
        seed=seed,
    )


async def run_db(kind: str, args: argparse.Namespace, workdir: Path) -> dict:
    settings = Settings()
    log = build_log(log_args(args.seed))
    offsets: dict[tuple[str, int], int] = {}
    msgs = []
    for m in log.messages:
        part = zlib.crc32(m.key or b"") % 8
        off = offsets.get((m.topic, part), 0)
        offsets[(m.topic, part)] = off + 1
        msgs.append(Incoming(m.topic, part, off, m.key, m.value))
    async with scratch_database(kind, workdir, args.pg_url) as url:
        engine = make_engine(url, writer=True)
        applier = Applier(engine, settings.policy)
        settle_heap()
        prof = cProfile.Profile() if args.profile else None
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        applied = held = released = dup = rej = 0
        first_cpu = None
        for i in range(0, len(msgs), args.batch):
            if prof and i > 0:
                prof.enable()
            res = await applier.apply(msgs[i : i + args.batch])
            if prof:
                prof.disable()
            applied += sum(res.applied.values())
            held += res.held
            released += res.released
            dup += res.duplicates
            rej += len(res.rejected)
            if first_cpu is None:
                first_cpu = time.process_time() - cpu0
        cpu = time.process_time() - cpu0
        took = time.perf_counter() - t0
        if prof:
            prof.dump_stats(f"{args.profile}.{kind}")
        await engine.dispose()
    n = len(msgs)
    return {
        "db": kind,
        "messages": n,
        "applied": applied,
        "held": held,
        "released": released,
        "duplicates": dup,
        "rejected": rej,
        "seconds": round(took, 2),
        "cpu_s": round(cpu, 2),
        "first_batch_cpu_s": round(first_cpu or 0, 3),
        "cpu_us_per_msg": round(cpu / n * 1e6, 1),
        "rest_us_per_msg": round((cpu - (first_cpu or 0)) / (n - min(n, args.batch)) * 1e6, 1),
    }


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="crm-e2e-apply-") as tmp:
        for kind in args.db.split(","):
            print(await run_db(kind.strip(), args, Path(tmp)), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--batch", type=int, default=4000)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--pg-url", default=os.environ.get("CRM_BENCH_PG_URL", DEFAULT_PG))
    p.add_argument("--profile")
    args = p.parse_args(argv)
    print(os.getloadavg(), file=sys.stderr)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
