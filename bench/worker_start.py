"""How fast the worker starts and stops: process start -> partitions assigned -> SIGTERM -> exit.

    python bench/worker_start.py [--runs 5] [--db sqlite] [--consumer direct] [--json out.json]

One embedded broker, one migrated scratch database, the input topics created; then ``--runs``
times in a row: ``python -m crmtracker worker`` started, its metrics endpoint polled every
20 ms until ``crm_worker_assigned_partitions`` is above 0 (the gauge is set by the
consumer's rebalance callback: the worker can fetch), then SIGTERM and the time to exit.
The session timeout is 2 s by default, as in ``crm-tracker up`` (the embedded broker holds a
new group's first join for about a session timeout: ~32 s with the 30 s default of a worker
pointed at an external broker).
Also lists the consumer groups and the topics the runs left on the broker (faust's own
consumer, when it runs, joins a group and declares a leader topic of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import (
    DEFAULT_PG,
    Child,
    embedded_broker,
    finish,
    percentile,
    scratch_database,
)
from config import Settings
from crmtracker.broker import ensure_topics, free_port

_ASSIGNED = re.compile(r"^crm_worker_assigned_partitions ([0-9.e+]+)$", re.M)


@dataclass
class Result:
    db: str
    consumer: str
    runs: int = 0
    assigned_s: list[float] = field(default_factory=list)  # process start -> assigned
    stop_s: list[float] = field(default_factory=list)  # SIGTERM -> exit
    exit_codes: list[int | None] = field(default_factory=list)
    assigned_p50_s: float | None = None
    stop_p50_s: float | None = None
    groups: list[str] = field(default_factory=list)  # on the broker after the runs
    topics: list[str] = field(default_factory=list)
    error: str | None = None


def assigned(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            m = _ASSIGNED.search(r.read().decode())
    except OSError:
        return 0.0
    return float(m.group(1)) if m else 0.0


async def broker_state(settings: Settings) -> tuple[list[str], list[str]]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    try:
        groups = sorted(g[0] for g in await admin.list_consumer_groups())
        topics = sorted(await admin.list_topics())
    finally:
        await admin.close()
    return groups, topics


async def bench(args: argparse.Namespace, bootstrap: str, workdir: Path) -> Result:
    res = Result(db=args.db, consumer=args.consumer)
    async with scratch_database(args.db, workdir, args.pg_url) as url:
        settings = Settings(
            kafka_bootstrap=bootstrap,
            database_url=url,
            data_dir=workdir,
            consumer=args.consumer,
            metrics_port=free_port(),
            kafka_session_timeout=args.session_timeout,
        )
        await ensure_topics(settings)
        try:
            for i in range(args.runs):
                child = Child("worker", settings.child_env(), workdir / f"worker-{i}.log")
                started = time.monotonic()
                while assigned(settings.metrics_port) <= 0:
                    if not child.alive() or time.monotonic() - started > 120:
                        raise RuntimeError(f"no partitions assigned:\n{child.tail()}")
                    await asyncio.sleep(0.02)
                res.assigned_s.append(time.monotonic() - started)
                stopping = time.monotonic()
                res.exit_codes.append(await asyncio.to_thread(child.stop))
                res.stop_s.append(time.monotonic() - stopping)
                res.runs += 1
                print(
                    f"[{args.db}, {args.consumer}] run {i + 1}: assigned after "
                    f"{res.assigned_s[-1]:.2f}s, stopped in {res.stop_s[-1]:.2f}s",
                    file=sys.stderr,
                )
            res.groups, res.topics = await broker_state(settings)
        except Exception as exc:
            res.error = f"{type(exc).__name__}: {exc}"
    res.assigned_p50_s = percentile(res.assigned_s, 50)
    res.stop_p50_s = percentile(res.stop_s, 50)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    p.add_argument("--consumer", default="direct", choices=["direct", "agents"])
    p.add_argument(
        "--session-timeout",
        type=float,
        default=2.0,
        help="CRM_KAFKA_SESSION_TIMEOUT (2 s: what `up` uses with its embedded broker; a "
        "worker given CRM_KAFKA_BOOTSTRAP defaults to 30 s)",
    )
    p.add_argument("--pg-url", default=DEFAULT_PG)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="crm-worker-start-"))
    with embedded_broker(workdir) as broker:
        res = asyncio.run(bench(args, broker.bootstrap, workdir))
    print(
        f"{res.db}, {res.consumer}: assigned p50 {res.assigned_p50_s}s {res.assigned_s}; "
        f"stop p50 {res.stop_p50_s}s {res.stop_s}; exit codes {res.exit_codes}\n"
        f"groups {res.groups}\ntopics {res.topics}"
    )
    return finish(asdict(res), [asdict(res)], args.json, workdir)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
