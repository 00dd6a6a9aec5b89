"""The database apply alone: the same workload as the throughput bench, no broker.

Feeds ``Applier.apply`` in batches straight from memory, so the figure is the apply step's
own ceiling (decode, resolve, dedupe claim, bucket upserts, stream rows) on each database.
``--profile FILE`` writes a cProfile dump of the apply loop (``FILE.<db>`` with several).

    python bench/apply_only.py --events 200000 [--db sqlite,postgresql] [--batch N]
        [--settle-heap]   # the worker's garbage-collector settings (crmtracker/heap.py)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import scratch_database
from bench.throughput import build_workload
from config import Settings
from crmtracker.heap import settle_heap
from models.db import make_engine
from streams.apply import Applier, Incoming

PG_URL = os.environ.get("CRM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def run_db(kind: str, args: argparse.Namespace, workdir: Path) -> dict:
    settings = Settings()
    wl = build_workload(args.events, args.clients, args.seed, settings)
    msgs = [
        Incoming(f"crm.{m.topic_role}", i % 8, i, m.key, m.value) for i, m in enumerate(wl.messages)
    ]
    async with scratch_database(kind, workdir, PG_URL) as url:
        engine = make_engine(url, writer=True)
        applier = Applier(engine, settings.policy)
        # the reference data first, as the worker would meet it on a fresh start
        await applier.apply(msgs[: wl.reference])
        body = msgs[wl.reference :]
        if args.settle_heap:  # as `crm-tracker worker` does once it has started
            settle_heap()
        prof = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        cpu0 = time.process_time()
        times0 = os.times()
        if prof:
            prof.enable()
        applied = 0
        seg_t, seg_cpu, seg_n = started, cpu0, 0
        for i in range(0, len(body), args.batch):
            res = await applier.apply(body[i : i + args.batch])
            applied += sum(res.applied.values())
            seg_n += len(body[i : i + args.batch])
            if seg_n >= 100_000:  # per 100k: does the cost per event grow with the data?
                t, c = time.perf_counter(), time.process_time()
                print(
                    f"  [{kind}] up to {i + args.batch:,}: {seg_n / (t - seg_t):,.0f} ev/s, "
                    f"{(c - seg_cpu) / seg_n * 1e6:.1f} cpu µs/ev",
                    file=sys.stderr,
                )
                seg_t, seg_cpu, seg_n = t, c, 0
        if prof:
            prof.disable()
            prof.dump_stats(f"{args.profile}.{kind}" if "," in args.db else args.profile)
        took = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        times = os.times()
        await engine.dispose()
    return {
        "db": kind,
        "events": len(body),
        "batch": args.batch,
        "applied": applied,
        "seconds": round(took, 2),
        "events_s": round(len(body) / took),
        "worker_cpu_us_per_event": round(cpu / len(body) * 1e6, 1),
        # the kernel's share: socket I/O to the database (on loopback it includes delivering
        # the bytes to the server), SQLite's file writes
        "system_cpu_us_per_event": round((times.system - times0.system) / len(body) * 1e6, 1),
    }


async def main_async(args: argparse.Namespace) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory(prefix="crm-apply-") as tmp:
        for kind in args.db.split(","):
            out.append(await run_db(kind.strip(), args, Path(tmp)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--clients", type=int, default=5000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--batch", type=int, default=None, help="events per apply (default: CRM_BATCH_SIZE, 4000)"
    )
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument(
        "--profile", help="cProfile dump of the apply loop (FILE.db when several databases)"
    )
    p.add_argument(
        "--settle-heap",
        action="store_true",
        help="freeze the heap and collect less often before the timed part, as the worker does",
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.batch is None:  # the worker's own batch size
        args.batch = Settings().batch_size
    rows = asyncio.run(main_async(args))
    lines = [
        f"{'db':<11} {'events':>8} {'batch':>6} {'ev/s':>8} {'cpu µs/ev':>10} {'of it sys':>10}"
    ]
    for r in rows:
        lines.append(
            f"{r['db']:<11} {r['events']:>8} {r['batch']:>6} {r['events_s']:>8,} "
            f"{r['worker_cpu_us_per_event']:>10} {r['system_cpu_us_per_event']:>10}"
        )
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"results": rows}, indent=2) + "\n")
    return 0 if all(r["applied"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
