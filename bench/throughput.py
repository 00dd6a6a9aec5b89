"""Throughput benchmark: the faust worker against a bare aiokafka consumer.

    python bench/throughput.py [--events N] [--partitions P] [--db sqlite,postgresql]
                               [--json out.json]

For each database, on one embedded (Tansu) broker:

1. fresh topics (``bench<uuid>.`` prefix, P partitions) get the demo's reference messages and
   then N activity messages (DemoGenerator, seeded), produced with aiokafka (acks=all);
2. a bare aiokafka consumer (fresh group) reads them all and ``json.loads`` each value: the
   ceiling for "read from Kafka in Python";
3. the real worker (``python -m crmtracker worker``) applies them to a fresh database; the
   database is polled every 0.5 s for ``count(events) + count(rejected_events where
   status='rejected')`` until it reaches the expected figure (distinct valid event ids plus
   invalid messages, computed with the product's own ``decode_event``). Held events have a
   row in both tables, hence the status filter.

Reported: produce time, bare msg/s, worker startup (process start to first applied event),
apply rate (events / (last applied - first applied)), overall rate including startup, the
ratio apply/bare, the worker's peak RSS (VmHWM) and CPU time. The worker log is kept in the
temp directory and scanned for warnings and errors.

Everything (broker, worker, temp files, the PostgreSQL database) is cleaned up in ``finally``;
``--keep`` keeps the temp directory (logs, SQLite file) and the PostgreSQL database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, fmt, peak_rss_mib, text_table
from config import Settings
from crmtracker.broker import EmbeddedBroker, ensure_topics, free_port
from demo import DemoGenerator, DemoMessage
from testkit.db import create_pg_database, drop_pg_database
from testkit.process import WorkerProcess

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
POLL_INTERVAL = 0.5
FIRST_APPLY_TIMEOUT = 120.0
SETTLE_S = 10.0


class BenchError(RuntimeError):
    pass


# --- results ---------------------------------------------------------------------------------
@dataclass
class Result:
    db: str
    events: int  # messages produced (reference + activity)
    partitions: int
    expected: int = 0  # distinct valid event ids + invalid messages
    applied: int = 0  # count(events) + count(rejected) at the end
    complete: bool = False
    produce_s: float | None = None
    produce_msg_s: float | None = None
    bare_msg_s: float | None = None  # first record -> last record
    bare_total_s: float | None = None  # consumer start (incl. group join) -> last record
    faust_msg_s: float | None = None  # bare faust counting agent, first batch -> last batch
    faust_total_s: float | None = None  # its process start -> last batch
    worker_startup_s: float | None = None  # process start -> first applied event seen
    apply_s: float | None = None  # first applied event seen -> last applied event seen
    pipeline_events_s: float | None = None
    overall_events_s: float | None = None  # including startup
    ratio_pipeline_bare: float | None = None  # pipeline / bare aiokafka
    ratio_pipeline_faust: float | None = None  # pipeline / bare faust
    db_span_s: float | None = None  # max(received_at) - min(received_at), worker's clock
    worker_peak_rss_mib: float | None = None
    worker_cpu_s: float | None = None  # user+sys of the worker up to the last applied event
    broker_cpu_s: float | None = None  # user+sys of the broker over the same interval
    held_at_end: int | None = None  # rejected_events status='held' when the count was reached
    held_left: int | None = None  # ... still held after up to SETTLE_S more seconds
    held_stuck: int | None = None  # ... of those, ones whose client and manager are known
    rejected: int | None = None
    worker_exit: int | None = None
    exact: bool | None = None  # every manager-month's transactions and weighted profit
    mismatches: int | None = None  # manager-months that differ from the independent sums
    manager_months: int | None = None
    log_warnings: dict[str, int] = field(default_factory=dict)
    error: str | None = None


# --- the workload ----------------------------------------------------------------------------
@dataclass
class Workload:
    messages: list[DemoMessage]
    reference: int
    activity: int
    valid_distinct: int
    invalid: int
    duplicates: int
    tallies: tuple[dict, dict] | None = field(default=None, repr=False)
    """``expected_tallies`` once computed (every run uses the default policy)."""

    @property
    def expected(self) -> int:
        return self.valid_distinct + self.invalid


def build_workload(n: int, clients: int, seed: int, settings: Settings) -> Workload:
    from models.decode import decode_event
    from models.events import InvalidEvent

    # A fixed clock: the same bytes on every run with the same seed.
    start = datetime(2025, 6, 2, 10, 0, tzinfo=settings.tz)
    gen = DemoGenerator(seed=seed, clients=clients, tz=settings.policy.timezone, now=lambda: start)
    reference = gen.reference_messages()
    activity: list[DemoMessage] = []
    while len(activity) < n:
        activity.extend(gen.next_messages(min(10_000, n - len(activity))))
    messages = reference + activity
    policy = settings.policy
    ids: set[str] = set()
    invalid = dups = 0
    for m in messages:
        try:
            ev = decode_event(m.value, policy)
        except InvalidEvent:
            invalid += 1
            continue
        if ev.event_id in ids:
            dups += 1
        ids.add(ev.event_id)
    return Workload(messages, len(reference), len(activity), len(ids), invalid, dups)


# --- helpers (blocking; kept out of coroutines) ----------------------------------------------
def _sum_or_none(values: Iterable[float | None]) -> float | None:
    vals = list(values)
    return None if any(v is None for v in vals) else sum(vals)  # type: ignore[arg-type]


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:])


_LEVEL = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b\s+(\S+?):?\s+(.*)")


def scan_log(path: Path) -> dict[str, int]:
    """Warning/error lines of the worker log, grouped by a normalised message."""
    out: Counter[str] = Counter()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        m = _LEVEL.search(line)
        if m:
            msg = re.sub(r"\d+", "N", m.group(3))[:160]
            out[f"{m.group(1)} {m.group(2)}: {msg}"] += 1
        elif line.startswith("Traceback"):
            out["Traceback"] += 1
    return dict(out.most_common(20))


# --- the phases ------------------------------------------------------------------------------
async def produce(settings: Settings, messages: list[DemoMessage]) -> float:
    from aiokafka import AIOKafkaProducer

    topics = settings.topics
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=256 * 1024,
        **settings.kafka.client_args(),
    )
    await producer.start()
    try:
        started = time.monotonic()
        futures = []
        for m in messages:
            topic = getattr(topics, m.topic_role)
            futures.append(await producer.send(topic, m.value, key=m.key))
        await producer.flush()
        await asyncio.gather(*futures)
        return time.monotonic() - started
    finally:
        await producer.stop()


async def bare_consume(settings: Settings, total: int, timeout: float) -> tuple[float, float]:
    """Read ``total`` messages; return (msg/s first->last record, seconds start->last)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *settings.topics.inputs,
        bootstrap_servers=settings.bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex[:12]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=int(settings.session_timeout * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_interval * 1000),
        **settings.kafka.client_args(),
    )
    started = time.monotonic()
    await consumer.start()
    try:
        seen = bad = first_n = 0
        first = last = None
        deadline = started + timeout
        while seen < total:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"bare consumer read only {seen}/{total} messages in {timeout:.0f}s"
                )
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for rec in records:
                    try:
                        json.loads(rec.value)
                    except ValueError:
                        bad += 1
                seen += len(records)
            if batches:
                now = time.monotonic()
                if first is None:
                    first, first_n = now, seen
                last = now
        assert first is not None and last is not None
        # records of the first fetch arrived before ``first``: they are not in the span
        span = last - first
        rate = (seen - first_n) / span if span > 0.05 else seen / (last - started)
        return rate, last - started
    finally:
        await consumer.stop()


async def bare_faust(settings: Settings, total: int, timeout: float) -> tuple[float, float]:
    """A faust app whose agents only count (``bench/bare_faust.py``, own process and group).

    Returns (msg/s first batch -> last batch, seconds process start -> last batch)."""
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "bare_faust.py"),
        "--bootstrap",
        settings.bootstrap,
        "--topics",
        ",".join(settings.topics.inputs),
        "--total",
        str(total),
        "--partitions",
        str(settings.topic_partitions),
        "--group",
        f"bench-faust-{uuid.uuid4().hex[:12]}",
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tempfile.gettempdir(),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError(f"bare faust did not count {total} messages in {timeout:.0f}s") from None
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"bare faust failed ({proc.returncode}): {err.decode()[-2000:]}")
    r = json.loads(lines[-1])
    span = r["last"] - r["first"]
    rate = (r["count"] - r.get("first_n", 0)) / span if span > 0.05 else None
    return rate, r["last"] - r["started"]


def start_py_spy(pid: int, out: Path, workdir: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling ``pid`` at 100 Hz into collapsed stacks (written on SIGINT)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(workdir / f"{out.stem}-py-spy.log", "wb") as log:
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


_COUNT_SQL = (
    "SELECT (SELECT count(*) FROM events),"
    " (SELECT count(*) FROM rejected_events WHERE status = 'rejected'),"
    " (SELECT count(*) FROM rejected_events WHERE status = 'held')"
)
_STUCK_SQL = (
    "SELECT count(*) FROM rejected_events r WHERE r.status = 'held'"
    " AND (r.waiting_client_id IS NULL"
    "      OR EXISTS (SELECT 1 FROM clients c WHERE c.client_id = r.waiting_client_id))"
    " AND (r.waiting_manager_id IS NULL"
    "      OR EXISTS (SELECT 1 FROM managers m WHERE m.manager_id = r.waiting_manager_id))"
)
_SPAN_SQL = (
    "SELECT min(t), max(t) FROM (SELECT received_at AS t FROM events"
    " UNION ALL SELECT received_at FROM rejected_events) s"
)


def _as_utc(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v


async def run_pipeline(
    settings: Settings,
    res: Result,
    workdir: Path,
    stall_timeout: float,
    broker_pid: int | None,
    profile_dir: Path | None = None,
    workers: int = 1,
) -> None:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from sqlalchemy import text

    from models.db import make_engine, upgrade

    await asyncio.to_thread(upgrade, settings.db_url)
    engine = make_engine(settings.db_url)
    log_path = workdir / f"worker-{res.db}.log"
    worker = WorkerProcess(settings, log_path, cwd=workdir, new_session=True)
    # more workers: one consumer group sharing the partitions (figures: the sums over them)
    others = [
        WorkerProcess(settings, workdir / f"worker-{res.db}-{i}.log", cwd=workdir, new_session=True)
        for i in range(2, workers + 1)
    ]
    everyone = [worker, *others]

    async def counts() -> tuple[int, int, int]:
        async with engine.connect() as conn:
            row = (await conn.execute(text(_COUNT_SQL))).one()
        return int(row[0]), int(row[1]), int(row[2])

    # progress is watched on the broker: the group's committed offsets (each committed only
    # after its batch's database commit). Counting the rows instead, every poll, cost the
    # database a scan of ``events`` each time (PostgreSQL: 0.2-0.35 s of two cores at 1M
    # rows), competing with the worker on this machine; rows are counted at the first
    # progress and once at the end
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
    await admin.start()
    tps = [
        TopicPartition(t, p)
        for t in settings.topics.inputs
        for p in range(settings.topics.partitions)
    ]

    async def committed() -> int:
        got = await admin.list_consumer_group_offsets(settings.group_id, partitions=tps)
        return sum(o.offset for o in got.values() if o.offset > 0)

    spy: subprocess.Popen[bytes] | None = None
    try:
        broker_cpu0 = cpu_seconds(broker_pid) if broker_pid else None
        for w in everyone:
            w.start()
        if profile_dir is not None and worker.pid:
            spy = start_py_spy(worker.pid, profile_dir / f"profile-{res.db}.collapsed", workdir)
        t_first = t_last = None
        n_first = 0
        read = read_last = 0  # messages committed (offsets), all input partitions
        last_growth = None
        done = False
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            now = time.monotonic()
            for w in everyone:
                code = w.poll()
                if code is not None:
                    raise BenchError(
                        f"worker exited with code {code}; tail of {w.log_path}:\n{tail(w.log_path)}"
                    )
            read = await committed()
            if read > read_last:
                if t_first is None:
                    t_first = now
                    events, rejected, _held = await counts()
                    n_first = events + rejected
                t_last, read_last, last_growth = now, read, now
                wcpu = _sum_or_none(cpu_seconds(w.pid) if w.pid else None for w in everyone)
                bcpu = cpu_seconds(broker_pid) if broker_pid else None
            if read >= res.events:
                done = True
                break
            if t_first is None and now - worker.started_mono > FIRST_APPLY_TIMEOUT:
                raise BenchError(
                    f"nothing applied within {FIRST_APPLY_TIMEOUT:.0f}s of the worker start; "
                    f"tail of {log_path}:\n{tail(log_path)}"
                )
            if last_growth is not None and now - last_growth > stall_timeout:
                print(
                    f"  [{res.db}] committed offsets stuck at {read} of {res.events} messages for "
                    f"{stall_timeout:.0f}s: stopping the wait",
                    file=sys.stderr,
                )
                break
        events, rejected, held = await counts()
        n_last = events + rejected
        res.complete = done and n_last >= res.expected
        res.applied, res.rejected, res.held_at_end = n_last, rejected, held
        res.worker_peak_rss_mib = _sum_or_none(
            peak_rss_mib(w.pid) if w.pid else None for w in everyone
        )
        # held events are released when their client/manager arrives: give stragglers time
        settle_until = time.monotonic() + SETTLE_S
        while held and time.monotonic() < settle_until and worker.poll() is None:
            await asyncio.sleep(POLL_INTERVAL)
            held = (await counts())[2]
        res.held_left = held
        async with engine.connect() as conn:
            res.held_stuck = int((await conn.execute(text(_STUCK_SQL))).scalar_one())
        assert t_first is not None and t_last is not None
        res.worker_startup_s = t_first - worker.started_mono
        res.apply_s = t_last - t_first
        if res.apply_s > 0:
            res.pipeline_events_s = (n_last - n_first) / res.apply_s
        res.overall_events_s = n_last / (t_last - worker.started_mono)
        res.worker_cpu_s = wcpu
        if broker_cpu0 is not None and bcpu is not None:
            res.broker_cpu_s = bcpu - broker_cpu0
        async with engine.connect() as conn:
            lo, hi = (await conn.execute(text(_SPAN_SQL))).one()
        lo, hi = _as_utc(lo), _as_utc(hi)
        if lo and hi:
            res.db_span_s = (hi - lo).total_seconds()
    finally:
        if spy is not None:  # py-spy writes its output on SIGINT
            spy.send_signal(signal.SIGINT)
            try:
                await asyncio.to_thread(spy.wait, 30)
            except subprocess.TimeoutExpired:
                spy.kill()
        res.worker_exit = worker.stop()
        for w in others:
            res.worker_exit = w.stop() or res.worker_exit
        await engine.dispose()
        await admin.close()
        res.log_warnings = scan_log(log_path)
        for w in others:
            for k, v in scan_log(w.log_path).items():
                res.log_warnings[k] = res.log_warnings.get(k, 0) + v


async def bench_db(
    db: str,
    args: argparse.Namespace,
    bootstrap: str,
    workload: Workload,
    workdir: Path,
    broker_pid: int | None,
) -> Result:
    res = Result(
        db=db, events=len(workload.messages), partitions=args.partitions, expected=workload.expected
    )
    pg_name = None
    try:
        if db == "sqlite":
            url = f"sqlite:///{workdir / 'bench.sqlite3'}"
        else:
            pg_name, url = await create_pg_database(args.pg_url, "bench")
        settings = Settings(
            kafka_bootstrap=bootstrap,
            kafka_session_timeout=2.0,
            kafka_heartbeat_interval=0.5,
            database_url=url,
            data_dir=workdir / f"data-{db}",
            topic_prefix=f"bench{uuid.uuid4().hex[:12]}.",
            group_id=f"bench-{db}-{uuid.uuid4().hex[:8]}",
            topic_partitions=args.partitions,
        )
        await ensure_topics(settings)

        print(f"[{db}] producing {res.events} messages ...", file=sys.stderr, flush=True)
        res.produce_s = await produce(settings, workload.messages)
        res.produce_msg_s = res.events / res.produce_s

        print(f"[{db}] bare aiokafka consumer ...", file=sys.stderr, flush=True)
        res.bare_msg_s, res.bare_total_s = await bare_consume(
            settings, res.events, timeout=FIRST_APPLY_TIMEOUT + res.events / 500
        )

        print(f"[{db}] bare faust counting agent ...", file=sys.stderr, flush=True)
        res.faust_msg_s, res.faust_total_s = await bare_faust(
            settings, res.events, timeout=FIRST_APPLY_TIMEOUT + res.events / 500
        )

        print(f"[{db}] worker (expecting {res.expected} rows) ...", file=sys.stderr, flush=True)
        await run_pipeline(
            settings, res, workdir, args.stall_timeout, broker_pid, args.profile, args.workers
        )
        if res.complete:
            expected = (await asyncio.to_thread(expected_tallies, workload, settings))[1]
            got = await pipeline_tallies(settings.db_url)
            res.manager_months = len(expected)
            res.mismatches = sum(
                1 for k in expected.keys() | got.keys() if expected.get(k) != got.get(k)
            )
            res.exact = res.mismatches == 0
        if res.pipeline_events_s and res.bare_msg_s:
            res.ratio_pipeline_bare = res.pipeline_events_s / res.bare_msg_s
        if res.pipeline_events_s and res.faust_msg_s:
            res.ratio_pipeline_faust = res.pipeline_events_s / res.faust_msg_s
    except Exception as exc:
        res.error = f"{type(exc).__name__}: {exc}"
        print(f"[{db}] FAILED: {res.error}", file=sys.stderr, flush=True)
    finally:
        if pg_name is not None and args.keep:
            print(f"[{db}] database kept: {pg_name}", file=sys.stderr)
        elif pg_name is not None:
            try:
                await drop_pg_database(args.pg_url, pg_name)
            except Exception as exc:
                print(f"[{db}] could not drop database {pg_name}: {exc}", file=sys.stderr)
    return res


async def pipeline_tallies(url: str) -> dict[str, tuple[int, Any]]:
    """What the worker wrote: {"manager|YYYY-MM": (transactions, exact weighted profit)},
    summed in Python from the daily buckets (to compare with ``expected_tallies``)."""
    from decimal import Decimal

    from sqlalchemy import select

    from models.db import make_engine
    from models.tables import ManagerDayRow

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        ManagerDayRow.manager_id,
                        ManagerDayRow.day,
                        ManagerDayRow.transactions,
                        ManagerDayRow.weighted_profit,
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    out: dict[str, tuple[int, Any]] = {}
    for manager, day, n, weighted in rows:
        if not n:
            continue  # a day of accounts or visits only
        key = f"{manager}|{day:%Y-%m}"
        have_n, have_w = out.get(key, (0, Decimal(0)))
        out[key] = (have_n + n, have_w + weighted)
    return out


# --- the peer: Quix Streams on the same tally workload ----------------------------------------
@dataclass
class PeerResult:
    name: str = "quixstreams"
    messages: int = 0  # transaction-topic messages (incl. resends and malformed ones)
    manager_months: int = 0
    msg_s: float | None = None  # first message -> last message
    total_s: float | None = None  # process start -> last message
    exact: bool | None = None
    mismatches: int | None = None
    peak_rss_mib: float | None = None
    error: str | None = None


def expected_tallies(workload: Workload, settings: Settings) -> tuple[dict, dict]:
    """(reference for the peer, expected {"manager|YYYY-MM": (n, Decimal)}) with the product's
    decoder and policy: valid transactions, each event_id once. Computed once per workload
    (a million messages decode in tens of seconds), for each database and the peer."""
    if workload.tallies is None:
        workload.tallies = _expected_tallies(workload, settings)
    return workload.tallies


def _expected_tallies(workload: Workload, settings: Settings) -> tuple[dict, dict]:
    from decimal import Decimal

    from models.decode import decode_event
    from models.events import InvalidEvent

    policy = settings.policy
    ref: dict[str, tuple[str, str]] = {}
    for m in workload.messages:
        if m.topic_role != "clients":
            continue
        ev = decode_event(m.value, policy)
        p = ev.payload
        ratio = p.claim_ratio if p.claim_ratio is not None else policy.default_claim_ratio
        ref[p.client_id] = (p.manager_id, str(ratio))
    seen: set[str] = set()
    out: dict[str, tuple[int, Decimal]] = {}
    for m in workload.messages:
        if m.topic_role != "transactions":
            continue
        try:
            ev = decode_event(m.value, policy)
        except InvalidEvent:
            continue
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        p = ev.payload
        manager, ratio = ref[p.client_id]
        manager = p.manager_id or manager
        month = ev.occurred_at.astimezone(policy.tz).strftime("%Y-%m")
        w = p.simulated_profit * policy.coefficients[p.business_line] * Decimal(ratio)
        n, total = out.get(f"{manager}|{month}", (0, Decimal(0)))
        out[f"{manager}|{month}"] = (n + 1, total + w)
    return ref, out


async def run_peer(
    bootstrap: str, workload: Workload, partitions: int, workdir: Path, timeout: float
) -> PeerResult:
    from decimal import Decimal

    from aiokafka import AIOKafkaProducer

    res = PeerResult()
    try:
        base = Settings(data_dir=workdir)
        ref, expected = await asyncio.to_thread(expected_tallies, workload, base)
        ref_path = workdir / "peer-reference.json"
        ref_path.write_text(json.dumps(ref))
        topic = f"peer{uuid.uuid4().hex[:12]}.bank.transactions"
        msgs = [m for m in workload.messages if m.topic_role == "transactions"]
        res.messages = len(msgs)
        # the topic is created as the peer would (retention -1, a Tansu quirk) and filled
        # before the peer starts, as the tracker's topics are before the worker starts
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=partitions,
                        replication_factor=1,
                        topic_configs={"retention.ms": "-1", "retention.bytes": "-1"},
                    )
                ]
            )
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024
        )
        await producer.start()
        try:
            futs = [await producer.send(topic, m.value, key=m.key) for m in msgs]
            await producer.flush()
            await asyncio.gather(*futs)
        finally:
            await producer.stop()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bench" / "peers" / "quix_tally.py"),
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--total",
            str(len(msgs)),
            "--reference",
            str(ref_path),
            "--partitions",
            str(partitions),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=workdir,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BenchError(f"the peer did not finish in {timeout:.0f}s") from None
        lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise BenchError(f"peer failed ({proc.returncode}): {err.decode()[-2000:]}")
        r = json.loads(lines[-1])
        span = r["last"] - r["first"]
        res.msg_s = r["count"] / span if span > 0.05 else None
        res.total_s = r["last"] - r["started"]
        got = {k: (n, Decimal(v)) for k, (n, v) in r["totals"].items()}
        res.manager_months = len(expected)
        res.mismatches = sum(
            1 for k in expected.keys() | got.keys() if expected.get(k) != got.get(k)
        )
        res.exact = res.mismatches == 0
    except Exception as exc:
        res.error = f"{type(exc).__name__}: {exc}"
        print(f"[peer] FAILED: {res.error}", file=sys.stderr, flush=True)
    return res


# --- output ----------------------------------------------------------------------------------
def table(results: list[Result]) -> str:
    head = (
        "db",
        "events",
        "produce s",
        "aiokafka msg/s",
        "faust msg/s",
        "startup s",
        "pipeline ev/s",
        "overall ev/s",
        "pipe/faust",
        "pipe/aiokafka",
        "peak RSS MiB",
        "complete",
        "exact",
    )
    rows = [
        (
            r.db,
            str(r.events),
            fmt(r.produce_s, ".2f"),
            fmt(r.bare_msg_s, ",.0f"),
            fmt(r.faust_msg_s, ",.0f"),
            fmt(r.worker_startup_s, ".2f"),
            fmt(r.pipeline_events_s, ",.0f"),
            fmt(r.overall_events_s, ",.0f"),
            fmt(r.ratio_pipeline_faust, ".3f"),
            fmt(r.ratio_pipeline_bare, ".3f"),
            fmt(r.worker_peak_rss_mib, ".0f"),
            ("yes" if r.complete else f"no ({r.applied}/{r.expected})") if not r.error else "ERROR",
            "-" if r.exact is None else ("yes" if r.exact else f"NO ({r.mismatches} differ)"),
        )
        for r in results
    ]
    return text_table(head, rows, left=1)


async def run(
    args: argparse.Namespace,
    bootstrap: str,
    workload: Workload,
    workdir: Path,
    broker_pid: int | None,
) -> tuple[list[Result], PeerResult | None]:
    results = []
    for db in args.db:
        results.append(await bench_db(db, args, bootstrap, workload, workdir, broker_pid))
    peer = None
    if args.peer:
        print("[peer] Quix Streams tally ...", file=sys.stderr, flush=True)
        peer = await run_peer(
            bootstrap, workload, args.partitions, workdir, FIRST_APPLY_TIMEOUT + args.events / 500
        )
    return results, peer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="activity messages (N)")
    p.add_argument("--partitions", type=int, default=8, help="partitions per topic (P)")
    p.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--clients", type=int, default=5000, help="demo roster size")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample the worker with py-spy (100 Hz, collapsed stacks) into DIR/profile-<db>"
        ".collapsed; summarise with bench/profile_summary.py",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes in the group (>1: scale-out; CPU and RSS are their sums)",
    )
    p.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the Quix Streams peer on the same tally workload",
    )
    p.add_argument(
        "--pg-url",
        default=DEFAULT_PG,
        help="PostgreSQL server (a scratch database is created on it)",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=15.0,
        help="stop waiting when the count has not grown for this many seconds",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temp dir (logs, SQLite file) and the PostgreSQL database",
    )
    args = p.parse_args(argv)
    args.db = [d.strip() for d in args.db.split(",") if d.strip()]
    for d in args.db:
        if d not in ("sqlite", "postgresql"):
            p.error(f"unknown --db {d!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="crm-bench-"))
    base = Settings(data_dir=workdir)
    t0 = time.monotonic()
    workload = build_workload(args.events, args.clients, args.seed, base)
    print(
        f"workload: {workload.reference} reference + {workload.activity} activity messages; "
        f"{workload.valid_distinct} distinct valid, {workload.invalid} invalid, "
        f"{workload.duplicates} resends (generated in {time.monotonic() - t0:.1f}s)",
        file=sys.stderr,
        flush=True,
    )
    broker = EmbeddedBroker(free_port(), log_path=workdir / "broker.log")
    results: list[Result] = []
    peer: PeerResult | None = None
    try:
        broker.start()
        broker_pid = broker.proc.pid if broker.proc else None
        results, peer = asyncio.run(run(args, broker.bootstrap, workload, workdir, broker_pid))
    finally:
        broker.stop()
        failed = not results or any(r.error or not r.complete or r.exact is False for r in results)
        failed = failed or (peer is not None and (peer.error is not None or not peer.exact))
        if args.keep or failed:
            print(f"temp dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(table(results))
    for r in results:
        extra = (
            f"[{r.db}] rows {r.applied}/{r.expected} (rejected {r.rejected}; held when reached "
            f"{r.held_at_end}, {SETTLE_S:.0f}s later {r.held_left}, of which {r.held_stuck} "
            f"wait for a known client/manager); bare read incl. group join {fmt(r.bare_total_s, '.2f')}s; "
            f"apply span {fmt(r.apply_s, '.2f')}s (db received_at span "
            f"{fmt(r.db_span_s, '.2f')}s); worker CPU {fmt(r.worker_cpu_s, '.1f')}s, "
            f"broker CPU {fmt(r.broker_cpu_s, '.1f')}s; worker exit {r.worker_exit}"
        )
        print(extra)
        for k, v in r.log_warnings.items():
            print(f"    log x{v}: {k}")
        if r.error:
            print(f"    error: {r.error}")
    if peer is not None:
        print(
            f"[peer] {peer.name}: {peer.messages} transaction messages, "
            f"{fmt(peer.msg_s, ',.0f')} msg/s (incl. startup {fmt(peer.total_s, '.2f')}s); "
            f"exact: {peer.exact} ({peer.mismatches} of {peer.manager_months} manager-months "
            f"differ){'; error: ' + peer.error if peer.error else ''}"
        )
    doc = {
        "events": args.events,
        "partitions": args.partitions,
        "workers": args.workers,
        "clients": args.clients,
        "seed": args.seed,
        "workload": {
            "messages": len(workload.messages),
            "reference": workload.reference,
            "activity": workload.activity,
            "valid_distinct": workload.valid_distinct,
            "invalid": workload.invalid,
            "resends": workload.duplicates,
        },
        "cpus": os.cpu_count(),
        "results": [asdict(r) for r in results],
        "peer": asdict(peer) if peer is not None else None,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    bad_peer = peer is not None and (peer.error is not None or not peer.exact)
    bad = any(r.error or not r.complete or r.exact is False for r in results)
    return 1 if bad_peer or bad else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
