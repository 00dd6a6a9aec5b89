"""What a supervisor sees: ``crm-tracker up``, a burst of events, a screen of tallies.

    python bench/up_e2e.py [--db sqlite,postgresql] [--polling on,off] [--json out.json]

For each database and polling mode, a fresh ``crm-tracker up`` (its own embedded broker, data
directory and API port; SQLite in the data directory, or a scratch PostgreSQL database on
``--pg-url`` given as ``CRM_DATABASE_URL``, created and dropped here):

1. wait until ``GET /healthz`` answers, mint a supervisor token with ``crm-tracker token`` and
   the same data directory (every branch of the log);
2. produce the log with librdkafka (confluent-kafka): ``testkit.factories.generate_log`` sized to
   52,000 messages by default (40 managers, 1,500 clients, 5 % resends with the same
   event_id, 200 malformed messages, late client records whose facts come first);
3. polling on: a supervisor screen asks for 120 manager tallies (every manager, the log's
   three months) every 0.2 s over 6 connections, from before the first message; polling
   off: nothing reads the API until the worker group's committed offsets reach the end of
   every input partition (offsets are committed after the database commit), then the same
   120 tallies are read every 0.2 s;
4. "exact" is the first moment every one of the 120 tallies answers the transactions and
   weighted profit that ``testkit/factories.py`` computed independently from the log;
   msg/s = messages / (first produce -> exact);
5. the ceiling, in the same run on the same broker: a bare librdkafka consumer (assigned
   every input partition from the beginning, no group) reading the same topics and
   ``json.loads`` each value; msg/s first message -> last message.

Also reported: time to /healthz, offsets caught up, the screen's rounds and their latency,
the worker's and the ``up`` process's CPU seconds, and how long ``up`` took to stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import (
    DEFAULT_PG,
    cpu_seconds,
    finish,
    fmt,
    percentile,
    scratch_database,
    text_table,
    wait_http,
)
from crmtracker.broker import free_port
from testkit.factories import MONTHS, GeneratedLog, generate_log
from testkit.process import Child, child_environ

ROOT = Path(__file__).resolve().parents[1]

TRANSFERS = 12  # generate_log's default: transferred clients, one extra upsert each
SCREEN_CONNECTIONS = 6  # a browser's connections per host


class BenchError(RuntimeError):
    pass


@dataclass
class Result:
    db: str
    polling: bool
    messages: int = 0
    healthz_s: float | None = None  # `up` started -> /healthz answers
    produce_s: float | None = None  # first produce -> every message acknowledged
    caught_up_s: float | None = None  # first produce -> committed offsets at the end
    exact_s: float | None = None  # first produce -> every screen tally exact
    msg_s: float | None = None  # messages / exact_s
    ceiling_msg_s: float | None = None  # bare librdkafka consumer, first -> last message
    ceiling_total_s: float | None = None  # ... its start -> last message
    ratio_ceiling: float | None = None  # msg_s / ceiling_msg_s
    screen_rounds: int = 0  # rounds of 120 tallies while measuring
    screen_requests: int = 0
    screen_not_200: dict[str, int] = field(default_factory=dict)  # status -> answers
    screen_round_p50_ms: float | None = None
    screen_round_p99_ms: float | None = None
    tallies_exact: int = 0  # of the screen's tallies, at the end
    tallies: int = 0
    worker_cpu_s: float | None = None  # the worker process, start -> exact
    up_cpu_s: float | None = None  # the `up` process (API, scheduler), start -> exact
    stop_s: float | None = None  # SIGTERM -> `up` exited
    load_1m: float | None = None  # the machine's 1-minute load average when exact
    up_exit: int | None = None
    error: str | None = None


# --- the log ---------------------------------------------------------------------------------
def build_log(args: argparse.Namespace) -> GeneratedLog:
    """``generate_log`` with as many facts as make ``args.messages`` messages in all."""
    fixed = args.managers + args.clients + TRANSFERS + args.malformed
    facts = round((args.messages - fixed) / (1 + args.resends))
    while facts + round(facts * args.resends) + fixed < args.messages:
        facts += 1
    while facts + round(facts * args.resends) + fixed > args.messages:
        facts -= 1
    log = generate_log(
        args.seed,
        events=facts,
        managers=args.managers,
        branches=args.branches,
        clients=args.clients,
        duplicate_rate=args.resends,
        malformed_rate=args.malformed / facts,
        late_clients=args.late_clients,
        transfers=TRANSFERS,
    )
    if log.bad != args.malformed:
        raise BenchError(f"the log has {log.bad} malformed messages, not {args.malformed}")
    return log


def screen_targets(log: GeneratedLog, n: int) -> list[tuple[str, str, int, Decimal]]:
    """(manager, month, transactions, weighted profit) of the first ``n`` manager-months."""
    out = []
    for manager in sorted(log.manager_branch):
        for month in MONTHS:
            t = log.tallies[f"{manager}|{month}"]
            out.append((manager, month, t["transactions"], Decimal(t["weighted_profit"])))
    return out[:n]


# --- processes -------------------------------------------------------------------------------
def child_pids(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(p) for p in (task / "children").read_text().split()]
    return out


def worker_pid(up_pid: int) -> int | None:
    for pid in child_pids(up_pid):
        with contextlib.suppress(OSError):
            if b"worker" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return pid
    return None


class Up:
    """``python -m crmtracker up`` as a child process, logging into its data directory."""

    def __init__(self, data_dir: Path, env: dict[str, str], api_port: int) -> None:
        self.data_dir = data_dir
        self.api_port = api_port
        self.env = child_environ(env)
        self.kafka_port = free_port()
        self.log_path = data_dir / "up.log"
        self.started = time.monotonic()
        args = ["up", "--data-dir", str(data_dir), "--port", str(api_port)]
        # in its data directory: no stray .env
        self.child = Child(
            [*args, "--kafka-port", str(self.kafka_port)], env, self.log_path, new_session=True
        )
        self.proc = self.child.proc

    def cli(self, command: str) -> list[str]:
        return [sys.executable, "-m", "crmtracker", command, "--data-dir", str(self.data_dir)]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def token(self, branches: list[str]) -> str:
        cmd = [*self.cli("token"), "--role", "supervisor"]
        for b in branches:
            cmd += ["--branch", b]
        out = subprocess.run(
            cmd, env=self.env, cwd=self.data_dir, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def stop(self) -> tuple[int | None, float]:
        started = time.monotonic()
        code = self.child.stop(60, group=True)
        return code, time.monotonic() - started

    def tail(self, n: int = 30) -> str:
        return self.child.tail(n)


# --- librdkafka ------------------------------------------------------------------------------
def produce(bootstrap: str, log: GeneratedLog) -> tuple[float, float, dict[tuple[str, int], int]]:
    """Produce the log in order (acks=all); (start, seconds, end offset per partition).
    Blocking: run it in a thread."""
    from confluent_kafka import Producer

    ends: dict[tuple[str, int], int] = {}
    failed: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))
            return
        key = (msg.topic(), msg.partition())
        ends[key] = max(ends.get(key, 0), msg.offset() + 1)

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "log_level": 3}
    )
    started = time.monotonic()
    for m in log.messages:
        while True:
            try:
                producer.produce(m.topic, value=m.value, key=m.key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    seconds = time.monotonic() - started
    if left or failed:
        raise BenchError(f"produce: {left} not delivered, {len(failed)} failed {failed[:3]}")
    return started, seconds, ends


def bare_consume(bootstrap: str, ends: dict[tuple[str, int], int]) -> tuple[float, float]:
    """A bare librdkafka consumer reading every partition from the start to ``ends``;
    (msg/s first -> last message, seconds start -> last). Blocking."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    total = sum(ends.values())
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-bare-{uuid.uuid4().hex[:8]}",  # required; never joined
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    started = time.monotonic()
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
    seen = first_n = 0
    first = last = None
    try:
        while seen < total:
            if time.monotonic() - started > 120:
                raise BenchError(f"bare consumer read {seen}/{total} in 120 s")
            batch = consumer.consume(10_000, 1.0)
            n = 0
            for m in batch:
                if m.error():
                    continue
                n += 1
                if m.value() is not None:
                    with contextlib.suppress(ValueError):
                        json.loads(m.value())
            if n:
                seen += n
                last = time.monotonic()
                if first is None:
                    first, first_n = last, seen
    finally:
        consumer.close()
    assert first is not None and last is not None
    span = last - first
    rate = (seen - first_n) / span if span > 0.05 else seen / (last - started)
    return rate, last - started


async def wait_caught_up(
    up: Up, group: str, ends: dict[tuple[str, int], int], interval: float, deadline: float
) -> float:
    """When ``caught_up`` first held, asked every ``interval`` s."""
    while True:
        if await caught_up(up.bootstrap, group, ends):
            return time.monotonic()
        if time.monotonic() > deadline or up.proc.poll() is not None:
            raise BenchError("the worker's committed offsets did not reach the end in time")
        await asyncio.sleep(interval)


async def caught_up(bootstrap: str, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """The group's committed offsets are at ``ends`` on every partition (broker only)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(
            group, partitions=[TopicPartition(t, p) for t, p in ends]
        )
    finally:
        await admin.close()
    return all(
        (o := got.get(TopicPartition(t, p))) is not None and o.offset >= end
        for (t, p), end in ends.items()
    )


# --- the screen ------------------------------------------------------------------------------
class Screen:
    """120 tallies read together (``SCREEN_CONNECTIONS`` connections), round after round."""

    def __init__(self, api: str, token: str, targets: list, interval: float) -> None:
        import httpx

        self.targets = targets
        self.interval = interval
        self.client = httpx.AsyncClient(
            base_url=api,
            headers={"Authorization": f"Bearer {token}"},
            limits=httpx.Limits(max_connections=SCREEN_CONNECTIONS),
            timeout=30,
        )
        self.rounds_ms: list[float] = []
        self.requests = 0
        self.statuses: Counter[int] = Counter()
        self.exact = 0

    async def _one(self, manager: str, month: str, n: int, weighted: Decimal) -> bool:
        r = await self.client.get(
            f"/v1/managers/{manager}/tally", params={"period": "month", "at": f"{month}-15"}
        )
        self.requests += 1
        if r.status_code != 200:  # 404 until the manager's record is applied
            self.statuses[r.status_code] += 1
            return False
        body = r.json()
        return body["transactions"] == n and Decimal(body["weighted_profit"]) == weighted

    async def round(self) -> bool:
        """One look at every tally; True when all are exact."""
        started = time.monotonic()
        ok = await asyncio.gather(*(self._one(*t) for t in self.targets))
        self.rounds_ms.append((time.monotonic() - started) * 1000)
        self.exact = sum(ok)
        return all(ok)

    async def until_exact(self, deadline: float) -> float:
        """Rounds every ``interval`` s (at once when one took longer); when all were exact."""
        while True:
            started = time.monotonic()
            if await self.round():
                return time.monotonic()
            if started > deadline:
                raise BenchError(f"tallies not exact in time: {self.exact}/{len(self.targets)}")
            await asyncio.sleep(max(0.0, started + self.interval - time.monotonic()))

    async def close(self) -> None:
        await self.client.aclose()


# --- one run ---------------------------------------------------------------------------------
async def run_one(
    db: str, polling: bool, log: GeneratedLog, args: argparse.Namespace, workdir: Path
) -> Result:
    res = Result(db=db, polling=polling, messages=len(log.messages))
    tag = f"[{db}, polling {'on' if polling else 'off'}]"
    data_dir = workdir / f"{db}-{'polling' if polling else 'quiet'}"
    data_dir.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        env: dict[str, str] = {}
        if db == "postgresql":
            env["CRM_DATABASE_URL"] = await stack.enter_async_context(
                scratch_database("postgresql", data_dir, args.pg_url)
            )
        up = Up(data_dir, env, free_port())
        screen: Screen | None = None
        watch_exact: asyncio.Task[float] | None = None
        caught: asyncio.Task[float] | None = None
        try:
            await asyncio.to_thread(wait_http, f"{up.api}/healthz", 120.0)
            res.healthz_s = time.monotonic() - up.started
            branches = sorted(set(log.manager_branch.values()))
            token = await asyncio.to_thread(up.token, branches)
            targets = screen_targets(log, args.screen)
            res.tallies = len(targets)
            screen = Screen(up.api, token, targets, args.interval)
            print(f"{tag} up answers after {res.healthz_s:.1f}s; producing", file=sys.stderr)

            # the screen is on before the first message, as a supervisor's would be
            producing = asyncio.create_task(asyncio.to_thread(produce, up.bootstrap, log))
            if polling:
                watch_exact = asyncio.create_task(
                    screen.until_exact(time.monotonic() + args.timeout + 60)
                )
            t0, res.produce_s, ends = await producing
            deadline = t0 + args.timeout
            caught = asyncio.create_task(
                wait_caught_up(up, "crm-tracker", ends, args.interval, deadline)
            )
            if watch_exact is not None:
                exact_at = await asyncio.wait_for(
                    watch_exact, max(1.0, deadline - time.monotonic())
                )
            else:
                await caught
                exact_at = await screen.until_exact(deadline)
            res.exact_s = exact_at - t0
            res.msg_s = res.messages / res.exact_s
            wpid = worker_pid(up.proc.pid)
            res.worker_cpu_s = cpu_seconds(wpid) if wpid else None
            res.up_cpu_s = cpu_seconds(up.proc.pid)
            res.load_1m = os.getloadavg()[0]
            res.caught_up_s = await asyncio.wait_for(caught, 60) - t0
            res.screen_rounds = len(screen.rounds_ms)
            res.screen_requests = screen.requests
            res.screen_not_200 = {str(k): v for k, v in sorted(screen.statuses.items())}
            res.screen_round_p50_ms = percentile(screen.rounds_ms, 50)
            res.screen_round_p99_ms = percentile(screen.rounds_ms, 99)
            res.tallies_exact = screen.exact
            print(
                f"{tag} exact after {res.exact_s:.2f}s ({res.msg_s:,.0f} msg/s); ceiling ...",
                file=sys.stderr,
            )
            res.ceiling_msg_s, res.ceiling_total_s = await asyncio.to_thread(
                bare_consume, up.bootstrap, ends
            )
            res.ratio_ceiling = res.msg_s / res.ceiling_msg_s
        except Exception as exc:
            res.error = f"{type(exc).__name__}: {exc}"
            print(f"{tag} FAILED: {res.error}\n{up.tail()}", file=sys.stderr)
        finally:
            for task in (watch_exact, caught):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
            if screen is not None:
                await screen.close()
            res.up_exit, res.stop_s = await asyncio.to_thread(up.stop)
    return res


# --- output ----------------------------------------------------------------------------------
def table(results: list[Result]) -> str:
    head = (
        "db",
        "polling",
        "healthz s",
        "produce s",
        "caught up s",
        "exact s",
        "msg/s",
        "ceiling msg/s",
        "÷ ceiling",
        "rounds",
        "round p50 ms",
        "round p99 ms",
        "worker CPU s",
        "stop s",
        "load",
        "exact",
    )
    rows = [
        (
            r.db,
            "on" if r.polling else "off",
            fmt(r.healthz_s, ".1f"),
            fmt(r.produce_s, ".2f"),
            fmt(r.caught_up_s, ".2f"),
            fmt(r.exact_s, ".2f"),
            fmt(r.msg_s, ",.0f"),
            fmt(r.ceiling_msg_s, ",.0f"),
            fmt(r.ratio_ceiling, ".3f"),
            str(r.screen_rounds),
            fmt(r.screen_round_p50_ms, ".0f"),
            fmt(r.screen_round_p99_ms, ".0f"),
            fmt(r.worker_cpu_s, ".1f"),
            fmt(r.stop_s, ".1f"),
            fmt(r.load_1m, ".1f"),
            "ERROR" if r.error else f"{r.tallies_exact}/{r.tallies}",
        )
        for r in results
    ]
    return text_table(head, rows, left=2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    p.add_argument("--polling", default="on,off", help="the screen during ingestion: on,off")
    p.add_argument("--messages", type=int, default=52_000, help="messages in the log")
    p.add_argument("--managers", type=int, default=40)
    p.add_argument("--branches", type=int, default=4)
    p.add_argument("--clients", type=int, default=1_500)
    p.add_argument("--resends", type=float, default=0.05, help="share of facts resent")
    p.add_argument("--malformed", type=int, default=200)
    p.add_argument("--late-clients", type=int, default=30, help="client records after facts")
    p.add_argument("--screen", type=int, default=120, help="tallies on the supervisor screen")
    p.add_argument("--interval", type=float, default=0.2, help="seconds between screen rounds")
    p.add_argument("--timeout", type=float, default=300.0, help="first produce -> exact, at most")
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--pg-url", default=DEFAULT_PG, help="PostgreSQL server for the scratch db")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.db = [d.strip() for d in args.db.split(",") if d.strip()]
    if not args.db or any(d not in ("sqlite", "postgresql") for d in args.db):
        p.error("--db takes sqlite and/or postgresql")
    modes = [m.strip() for m in args.polling.split(",") if m.strip()]
    if not modes or any(m not in ("on", "off") for m in modes):
        p.error("--polling takes on and/or off")
    args.polling = [m == "on" for m in modes]
    return args


async def run(args: argparse.Namespace, log: GeneratedLog, workdir: Path) -> list[Result]:
    return [
        await run_one(db, polling, log, args, workdir) for db in args.db for polling in args.polling
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="crm-up-e2e-"))
    t = time.monotonic()
    log = build_log(args)
    roles: dict[str, int] = {}
    for m in log.messages:
        roles[m.role] = roles.get(m.role, 0) + 1
    print(
        f"log: {len(log.messages)} messages {roles}, {log.bad} malformed "
        f"(generated in {time.monotonic() - t:.1f}s)",
        file=sys.stderr,
    )
    results = asyncio.run(run(args, log, workdir))
    print()
    print(table(results))
    for r in results:
        if r.error or r.screen_not_200:
            mode = "on" if r.polling else "off"
            print(f"[{r.db}, polling {mode}] not 200: {r.screen_not_200} {r.error or ''}")
    doc = {
        "messages": len(log.messages),
        "by_topic": roles,
        "malformed": log.bad,
        "managers": args.managers,
        "clients": args.clients,
        "late_clients": args.late_clients,
        "resends": args.resends,
        "screen": {"tallies": args.screen, "interval_s": args.interval},
        "seed": args.seed,
        "cpus": os.cpu_count(),
        "results": [asdict(r) for r in results],
    }
    return finish(doc, [asdict(r) for r in results], args.json, workdir)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
