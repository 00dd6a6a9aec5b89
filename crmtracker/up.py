"""``crm-tracker up``: broker (already started), worker, API and demo on one machine.

The worker runs as a child process (faust wants its own event loop and signal handling; a
child also survives nothing it should not: it is restarted if it dies). The API and the demo
generator run in this process. SIGINT/SIGTERM stop everything in order; a ``kill -9`` of
``up`` takes its children with it (``crmtracker.procs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

import uvicorn

from config import Settings
from crmtracker import compose
from crmtracker.broker import ensure_topics
from crmtracker.procs import ProcessRecord, die_with_parent

log = logging.getLogger("crmtracker.up")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: ``up`` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _supervise_worker(
    settings: Settings, stop: asyncio.Event, record: ProcessRecord | None = None
) -> None:
    env = {**os.environ, **settings.child_env()}
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "crmtracker",
            "worker",
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
        if record is not None:
            record.add("worker", proc.pid)
        waiter = asyncio.ensure_future(proc.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if record is not None and waiter.done():
            record.remove(proc.pid)
        if stop.is_set():
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(waiter, 15)
                except TimeoutError:
                    proc.kill()
                    await waiter
            if record is not None:
                record.remove(proc.pid)
            stopper.cancel()
            return
        stopper.cancel()
        log.error("worker exited with code %s; restarting it in 1 s", proc.returncode)
        await asyncio.sleep(1)


async def _demo(
    settings: Settings, stop: asyncio.Event, rate: float, history_days: int = 0
) -> None:
    from aiokafka import AIOKafkaProducer

    from demo import run_demo

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        acks="all",
        linger_ms=20,
        **settings.kafka.client_args(),
    )
    await producer.start()
    try:

        async def send(topic: str, key: bytes, value: bytes) -> None:
            await producer.send(topic, key=key, value=value)

        sent = await run_demo(
            send,
            lambda role: getattr(settings.topics, role),
            stop=stop,
            rate=rate,
            log=log.info,
            history_days=history_days,
            balance_nights=30,  # 日均 on the dashboard from the first minute
        )
        log.info("demo sent %d messages", sent)
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


async def _scheduler(settings: Settings, stop: asyncio.Event) -> None:
    """The reminder scheduler in this process (one more asyncio task next to the API)."""
    try:
        await compose.run_scheduler(settings, stop)
    except Exception:  # the API and worker keep running; the error is in the log
        log.exception("the reminder scheduler stopped")


def _banner(
    settings: Settings,
    token: str,
    demo: bool,
    supervisor_token: str | None = None,
    database: str | None = None,
) -> str:
    api = f"http://{settings.api_host}:{settings.api_port}"
    if database is None:
        database = f"SQLite {settings.sqlite_path}" if not settings.database_url else "configured"
    broker = "   (embedded broker, memory only)" if settings.embedded_broker else ""
    paths = (
        ["/v1/managers/m-b01-01/tally", "/v1/branches/b01/tally?period=week", "/v1/overdue"]
        if demo
        else ["/v1/events/rejected"]
    )
    lines = [
        "",
        "crm-tracker is up" + (" with the demo running" if demo else " (waiting for events)"),
        f"  API            {api}   (OpenAPI: {api}/docs)",
        f"  Kafka          {settings.bootstrap}{broker}",
        f"  database       {database}",
        f"  admin token    {token}",
        f"  dashboard      {api}/dashboard#token={token}",
        *(
            [f"  b01 supervisor {api}/dashboard#token={supervisor_token}"]
            if supervisor_token
            else []
        ),
        "",
        "  try (Ctrl-C stops everything):",
        f"    export TOKEN={token}",
        *(f'    curl -s -H "Authorization: Bearer $TOKEN" "{api}{path}"' for path in paths),
        "",
    ]
    return "\n".join(lines)


def _demo_digest(settings: Settings) -> Settings:
    """The demo shows the morning digest two minutes after start (once its backdated clients
    are in and reminded), whatever the hour or the day, unless CRM_DIGEST_TIME,
    CRM_QUIET_HOURS or CRM_QUIET_WEEKENDS say otherwise: these settings with that changed."""
    from datetime import UTC, datetime, timedelta

    given = settings.model_fields_set
    changes: dict[str, object] = {}
    if "digest_time" not in given:
        at = datetime.now(UTC).astimezone(settings.tz) + timedelta(minutes=2)
        if at.date() != datetime.now(UTC).astimezone(settings.tz).date():
            at = at.replace(hour=0, minute=0)  # started at 23:58: just after midnight
        changes["digest_time"] = at.strftime("%H:%M")
    if "quiet_hours" not in given:
        changes["quiet_hours"] = "off"
    if "quiet_weekends" not in given:
        changes["quiet_weekends"] = False
    return settings.replaced(**changes)


def demo_settings(settings: Settings) -> Settings:
    """What ``up --demo`` runs with: the demo's backdated clients are reminded within seconds
    (not a minute) and its digest comes soon, unless the environment says otherwise."""
    if "reminder_scan_seconds" not in settings.model_fields_set:
        settings = settings.replaced(reminder_scan_seconds=10)
    return _demo_digest(settings)


async def run_up(
    settings: Settings,
    *,
    demo: bool,
    demo_rate: float = 25.0,
    record: ProcessRecord | None = None,
    database: str | None = None,
    demo_history_days: int = 0,
) -> int:
    from api.auth import mint_token, parse_ttl
    from crmtracker.heap import settle_heap

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    await ensure_topics(settings)
    if demo:
        settings = demo_settings(settings)
    server = _Server(
        uvicorn.Config(
            compose.api_app(settings),
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
            lifespan="on",
        )
    )
    tasks = [
        asyncio.create_task(_supervise_worker(settings, stop, record), name="worker"),
        asyncio.create_task(server.serve(), name="api"),
    ]
    tasks.append(asyncio.create_task(_scheduler(settings, stop), name="scheduler"))
    if demo:
        tasks.append(
            asyncio.create_task(_demo(settings, stop, demo_rate, demo_history_days), name="demo")
        )
    while not server.started:
        if tasks[1].done():  # e.g. the port is taken
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            print(
                f"crm-tracker up: the API could not start on port {settings.api_port}",
                file=sys.stderr,
            )
            return 1
        await asyncio.sleep(0.05)
    settle_heap()
    ttl = parse_ttl(settings.token_ttl)
    secret = compose.signing_secret(settings)
    token = mint_token(secret, "admin", ttl=ttl)
    # the demo's first branch, as its supervisor sees it on the dashboard
    supervisor = mint_token(secret, "supervisor", branches=["b01"], ttl=ttl) if demo else None
    print(_banner(settings, token, demo, supervisor, database), flush=True)

    await stop.wait()
    print("stopping ...", file=sys.stderr, flush=True)
    server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)
    print("stopped", file=sys.stderr, flush=True)
    return 0
