"""``crm-tracker``: the one entry point (CONTRACT.md §5)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config import Settings
from crmtracker import compose

if TYPE_CHECKING:
    from streams.replay import ReplayResult

log = logging.getLogger("crmtracker")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir)
    if getattr(args, "port", None):
        overrides["api_port"] = args.port
    if getattr(args, "host", None):
        overrides["api_host"] = args.host
    if getattr(args, "kafka_port", None):
        overrides["kafka_port"] = args.kafka_port
    # each value has its field's type; the dict mixing them is typed object
    settings = Settings(**overrides)  # type: ignore[arg-type]
    compose.seal_notes_with(settings)  # visit notes: this data directory's key
    return settings


def _err(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- token ---------------------------------------------------------------------------------
def cmd_token(args: argparse.Namespace) -> int:
    from api.auth import mint_token, parse_ttl

    settings = _settings(args)
    try:
        token = mint_token(
            compose.signing_secret(settings),
            args.role,
            manager_id=args.manager,
            branches=args.branch,
            ttl=parse_ttl(args.ttl or settings.token_ttl),
        )
    except ValueError as exc:
        _err(f"crm-tracker token: {exc}")
        return 2
    _audit_token(settings, args)
    print(token)
    return 0


def _audit_token(settings: Settings, args: argparse.Namespace) -> None:
    """Record the minting in the audit log (who ran it on which host); a database that cannot
    be reached does not stop the token, but says so."""
    import getpass
    import socket

    from models.audit import record
    from models.db import upgrade

    async def write() -> None:
        async with compose.engine_scope(settings, writer=True) as engine, engine.begin() as conn:
            await record(
                conn,
                actor=f"cli:{getpass.getuser()}",
                role="cli",
                action="token.minted",
                subject=f"role:{args.role}",
                detail={
                    "role": args.role,
                    "manager_id": args.manager,
                    "branches": sorted(args.branch),
                    "ttl": args.ttl or settings.token_ttl,
                },
                remote_addr=socket.gethostname(),
            )

    try:
        upgrade(settings.db_url)
        asyncio.run(write())
    except Exception as exc:  # the token is still useful; the operator is told
        _err(f"crm-tracker token: not recorded in the audit log ({type(exc).__name__}: {exc})")


# --- db ------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> int:
    from models.db import upgrade

    settings = _settings(args)
    upgrade(settings.db_url, args.revision)
    _err(f"database at {_safe_url(settings.db_url)} is at revision {args.revision}")
    return 0


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- worker / api --------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    from crmtracker.eventloop import use_event_loop
    from crmtracker.heap import settle_heap

    settings = _settings(args)
    use_event_loop(settings.event_loop, auto="asyncio")
    settle_heap()
    compose.run_worker(settings)
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from crmtracker.eventloop import loop_name
    from crmtracker.heap import settle_heap
    from models.db import upgrade

    settings = _settings(args)
    problem = settings.secret_problem()
    if problem:
        _err(f"crm-tracker api: refusing to start: {problem}")
        return 2
    upgrade(settings.db_url)
    app = compose.api_app(settings)
    settle_heap()
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        loop=loop_name(settings.event_loop, auto="uvloop"),
    )
    return 0


# --- scheduler ---------------------------------------------------------------------------
def cmd_scheduler(args: argparse.Namespace) -> int:
    import signal

    from models.db import upgrade

    settings = _settings(args)
    upgrade(settings.db_url)
    if settings.metrics_port:
        from streams.metrics import serve

        serve(settings.metrics_port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await compose.run_scheduler(settings, stop)

    asyncio.run(main())
    return 0


def cmd_reminders(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from models.db import upgrade
    from reminders.service import recompute_all

    settings = _settings(args)
    upgrade(settings.db_url)

    async def main() -> None:
        async with compose.engine_scope(settings, writer=True) as engine:
            r = await recompute_all(
                engine, settings.policy, datetime.now(UTC), source="crm-tracker-cli"
            )
        _err(f"due dates recomputed: {r.changed} clients changed, {r.resolved} reminders resolved")

    asyncio.run(main())
    return 0


def cmd_notes(args: argparse.Namespace) -> int:
    from models import visit_ledger
    from models.db import upgrade

    settings = _settings(args)
    if args.new_key:
        if settings.notes_keys is not None:
            _err("CRM_NOTES_KEYS is set: put the new key first in it instead of --new-key")
            return 2
        _err(f"new notes key added first in {visit_ledger.add_key(settings)}")
        compose.seal_notes_with(settings)
    upgrade(settings.db_url)

    async def main() -> int:
        async with compose.engine_scope(settings, writer=True) as engine, engine.begin() as conn:
            return await visit_ledger.rotate(conn, visit_ledger.cipher_for(settings))

    n = asyncio.run(main())
    _err(f"visit notes re-encrypted under the newest key: {n} visits")
    return 0


# --- lag -----------------------------------------------------------------------------------
def cmd_lag(args: argparse.Namespace) -> int:
    from crmtracker import lagview

    return lagview.run(
        _settings(args),
        url=args.url,
        token=args.token,
        as_json=args.json,
        use_direct=args.direct,
        samples=args.samples,
        interval=args.interval,
    )


# --- up ------------------------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from crmtracker.broker import BrokerError, EmbeddedBroker
    from crmtracker.procs import AlreadyRunning, ProcessRecord
    from models.db import upgrade

    settings = _settings(args)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if args.postgres and settings.database_url:
        _err("crm-tracker up: --postgres runs its own PostgreSQL; unset CRM_DATABASE_URL for it")
        return 2
    # what a crashed (kill -9) up on this data directory left running is ended first
    record = ProcessRecord(settings.data_dir)
    try:
        for line in record.acquire():
            _err(f"crm-tracker up: ended the {line} left by an earlier up that did not stop")
    except AlreadyRunning as exc:
        _err(f"crm-tracker up: {exc}")
        return 1
    broker = None
    pg = None
    database = None
    try:
        if settings.embedded_broker:
            broker = EmbeddedBroker(settings.kafka_port, log_path=settings.data_dir / "broker.log")
            try:
                broker.start()
            except BrokerError as exc:
                _err(f"crm-tracker up: {exc}")
                return 1
            assert broker.proc is not None
            record.add("broker", broker.proc.pid)
        if args.postgres:
            from crmtracker.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError

            pg = EmbeddedPostgres(settings.data_dir / "postgres", durable=True)
            try:
                pg.start()
            except EmbeddedPostgresError as exc:
                _err(f"crm-tracker up: PostgreSQL did not start: {exc}")
                return 1
            assert pg.proc is not None
            record.add("postgres", pg.proc.pid)
            settings = settings.replaced(database_url=pg.url("postgres"))
            database = f"PostgreSQL {pg.url('postgres')}   (embedded, in {pg.data_dir})"
        upgrade(settings.db_url)
        from crmtracker.eventloop import use_event_loop
        from crmtracker.up import run_up

        use_event_loop(settings.event_loop, auto="uvloop")  # the API's loop
        return asyncio.run(
            run_up(
                settings,
                demo=args.demo,
                demo_rate=args.demo_rate,
                demo_history_days=args.demo_history_days,
                record=record,
                database=database,
            )
        )
    except KeyboardInterrupt:
        return 0
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.close()
        record.release()


# --- check / produce / contract ------------------------------------------------------------
def _open_input(name: str) -> Any:
    return sys.stdin.buffer if name == "-" else open(name, "rb")


def cmd_check(args: argparse.Namespace) -> int:
    """Validate a JSONL file of messages with the worker's own decoding (``decode_event``)."""
    from models.contract import read_jsonl
    from models.decode import decode_event
    from models.events import InvalidEvent

    settings = _settings(args)
    policy = settings.policy
    total = rejected = 0
    try:
        stream = _open_input(args.file)
    except OSError as exc:
        _err(f"crm-tracker check: {exc}")
        return 2
    with stream:
        for line in read_jsonl(stream):
            total += 1
            try:
                decode_event(line.value, policy)  # the worker's path, rule for rule
            except InvalidEvent as exc:
                rejected += 1
                event = f" (event {exc.event_id})" if exc.event_id else ""
                print(f"line {line.number}{event}: {exc.reason}", flush=False)
    sys.stdout.flush()
    _err(f"{total} messages: {total - rejected} valid, {rejected} rejected")
    return 1 if rejected else 0


def cmd_produce(args: argparse.Namespace) -> int:
    """Publish a JSONL file to the configured topics, keyed as the contract says."""
    from models.contract import read_jsonl, route

    settings = _settings(args)
    try:
        with _open_input(args.file) as stream:
            lines = list(read_jsonl(stream))
    except OSError as exc:
        _err(f"crm-tracker produce: {exc}")
        return 2
    routed: list[tuple[str, bytes | None, bytes | None]] = []
    unrouted = 0
    for line in lines:
        r = route(line, settings)
        if isinstance(r, str):
            unrouted += 1
            _err(f"line {line.number}: not sent: {r}")
        else:
            routed.append((r[0], r[1], line.value))
    bar = None if args.quiet else _progress("produce")

    async def send() -> int:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap,
            acks="all",
            linger_ms=20,
            max_batch_size=256 * 1024,
            **settings.kafka.client_args(),
        )
        await producer.start()
        done = 0
        try:
            pending = []
            for topic, key, value in routed:
                pending.append(await producer.send(topic, key=key, value=value))
                if len(pending) >= 1000:
                    await producer.flush()
                    for f in pending:
                        await f
                    done += len(pending)
                    pending = []
                    if bar:
                        bar(done, len(routed))
            await producer.flush()
            for f in pending:
                await f
            done += len(pending)
        finally:
            await producer.stop()
        if bar:
            bar(done, len(routed))
        return done

    try:
        sent = asyncio.run(send())
    except Exception as exc:
        _err(f"crm-tracker produce: {type(exc).__name__}: {exc} (broker {settings.bootstrap})")
        return 1
    _err(
        f"sent {sent} messages to {settings.bootstrap}"
        + (f", {unrouted} not sent" if unrouted else "")
    )
    return 1 if unrouted else 0


def cmd_contract(args: argparse.Namespace) -> int:
    """Print the AsyncAPI document, or write / check the generated files of docs/."""
    from models import contract

    if args.write:
        changed = contract.write_docs(Path(args.write))
        _err(f"{len(changed)} files written under {args.write}" if changed else "up to date")
        return 0
    print(contract.dumps(contract.asyncapi(_settings(args))), end="")
    return 0


# --- replay --------------------------------------------------------------------------------
def _progress(label: str) -> Any:
    def bar(done: int, total: int) -> None:
        width = 40
        filled = width if total == 0 else width * done // total
        pct = 100 if total == 0 else 100 * done // total
        end = "\n" if done >= total else ""
        sys.stderr.write(
            f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {pct:3d}% {done}/{total}{end}"
        )
        sys.stderr.flush()

    return bar


_progress_bar = _progress("replay")


def cmd_replay(args: argparse.Namespace) -> int:
    from models.db import upgrade
    from streams.replay import replay

    settings = _settings(args)
    try:
        since = date.fromisoformat(args.since) if args.since else None
    except ValueError:
        _err(f"crm-tracker replay: --from wants a date like 2026-11-01, not {args.since!r}")
        return 2
    upgrade(settings.db_url)

    async def run() -> Any:
        async with compose.engine_scope(settings, writer=True) as engine:
            return await replay(
                engine, settings.policy, since, None if args.quiet else _progress_bar
            )

    _err(replay_summary(asyncio.run(run()), since))
    return 0


def replay_summary(result: ReplayResult, since: date | None = None) -> str:
    """What ``crm-tracker replay`` did, in one line."""
    return (
        f"replayed {result.events} events"
        + (f" from {since.isoformat()}" if since else "")
        + f": {result.corrected} re-credited, {result.manager_days} manager-days, "
        f"{result.branch_days} branch-days and {result.balance_changes} balance day-changes "
        "rebuilt"
        + (f", {result.skipped} left as they were (manager unknown)" if result.skipped else "")
    )


# --- reports -------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from datetime import UTC, date, datetime

    from models import reports
    from models.db import upgrade

    settings = _settings(args)
    now = datetime.now(UTC)
    try:
        week = date.fromisoformat(args.week) if args.week else None
    except ValueError:
        _err(f"crm-tracker report weekly: --week wants a date like 2026-11-16, not {args.week!r}")
        return 2
    week = week or reports.last_week(now.astimezone(settings.tz).date())
    upgrade(settings.db_url)

    def bar(done: int, total: int) -> None:
        if args.quiet:
            return
        width = 30
        filled = width * done // total
        end = "\n" if done >= total else ""
        sys.stderr.write(
            f"\rweekly report [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{end}"
        )
        sys.stderr.flush()

    async def run() -> Any:
        async with compose.engine_scope(settings) as engine, engine.connect() as conn:
            return await reports.weekly(conn, args.branch, week, settings.policy, now, bar)

    report = asyncio.run(run())
    if report is None:
        _err(f"crm-tracker report weekly: branch {args.branch} not found")
        return 1
    Path(args.out).write_bytes(reports.workbook(report, settings.tz.key))
    _err(
        f"weekly report of {args.branch} for {report.start.isoformat()} – "
        f"{report.end.isoformat()}: {len(report.rows)} managers, written to {args.out}"
    )
    return 0


# --- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crm-tracker",
        description="Live activity tallies and visit reminders for bank relationship managers.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def data_dir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--data-dir",
            help="SQLite file and signing secret (default ./.crm-data, env CRM_DATA_DIR)",
        )

    up = sub.add_parser("up", help="everything on one machine (embedded broker + SQLite)")
    up.add_argument("--demo", action="store_true", help="also play core banking and the CRM app")
    up.add_argument("--demo-rate", type=float, default=25.0, help="demo events per second")
    up.add_argument(
        "--demo-history-days",
        type=int,
        default=365,
        help="days of past activity the demo backfills before its live traffic (0: none)",
    )
    up.add_argument("--port", type=int, help="API port (default 8000)")
    up.add_argument("--host", help="API address to bind (default 127.0.0.1)")
    up.add_argument("--kafka-port", type=int, help="embedded broker port (default 9092)")
    up.add_argument(
        "--postgres",
        action="store_true",
        help="run an embedded PostgreSQL in DATA_DIR/postgres instead of SQLite",
    )
    data_dir(up)
    up.set_defaults(func=cmd_up)

    w = sub.add_parser("worker", help="the stream processor alone (production)")
    data_dir(w)
    w.set_defaults(func=cmd_worker)

    a = sub.add_parser("api", help="the HTTP API alone (production)")
    a.add_argument("--port", type=int)
    a.add_argument("--host")
    data_dir(a)
    a.set_defaults(func=cmd_api)

    s = sub.add_parser("scheduler", help="the reminder scheduler alone (production)")
    data_dir(s)
    s.set_defaults(func=cmd_scheduler)

    r = sub.add_parser("reminders", help="visit reminders")
    rsub = r.add_subparsers(dest="reminders_command", required=True)
    rr = rsub.add_parser(
        "recompute", help="recompute every client's due dates (after a policy change)"
    )
    data_dir(rr)
    rr.set_defaults(func=cmd_reminders)

    rp = sub.add_parser("report", help="reports")
    rpsub = rp.add_subparsers(dest="report_command", required=True)
    rw = rpsub.add_parser("weekly", help="the weekly branch report (XLSX) for the Monday meeting")
    rw.add_argument("--branch", required=True, help="branch id, e.g. b01")
    rw.add_argument("--out", required=True, help="the XLSX file to write")
    rw.add_argument("--week", help="a day of the week to report (default: last week)")
    rw.add_argument("--quiet", action="store_true", help="no progress bar")
    data_dir(rw)
    rw.set_defaults(func=cmd_report)

    n = sub.add_parser("notes", help="visit notes encryption")
    nsub = n.add_subparsers(dest="notes_command", required=True)
    nr = nsub.add_parser(
        "rotate", help="re-encrypt every visit's notes under the newest key (key rotation)"
    )
    nr.add_argument(
        "--new-key",
        action="store_true",
        help="first add a new key to the data directory's key file (embedded setup)",
    )
    data_dir(nr)
    nr.set_defaults(func=cmd_notes)

    t = sub.add_parser("token", help="mint a bearer token (printed alone on stdout)")
    t.add_argument("--role", required=True, choices=["manager", "supervisor", "ops", "admin"])
    t.add_argument("--manager", help="manager id (role manager)")
    t.add_argument("--branch", action="append", default=[], help="branch id (repeatable)")
    t.add_argument("--ttl", help="lifetime, e.g. 30m, 8h, 7d (default 8h)")
    data_dir(t)
    t.set_defaults(func=cmd_token)

    r = sub.add_parser(
        "replay",
        help="rebuild tallies from the stored events (after a policy change); "
        "the worker may keep running",
    )
    r.add_argument("--from", dest="since", help="rebuild days from this date on (default: all)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    data_dir(r)
    r.set_defaults(func=cmd_replay)

    c = sub.add_parser(
        "check",
        help="validate a JSONL file of messages as the worker would (exit 1 if any is rejected)",
    )
    c.add_argument("file", help="JSONL: envelopes, or {topic, key, value} records; - for stdin")
    c.set_defaults(func=cmd_check)

    pr = sub.add_parser(
        "produce", help="publish a JSONL file to the configured topics (keys as the contract says)"
    )
    pr.add_argument("file", help="JSONL: envelopes, or {topic, key, value} records; - for stdin")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_produce)

    ct = sub.add_parser(
        "contract", help="the AsyncAPI document of the topics and messages (JSON on stdout)"
    )
    ct.add_argument(
        "--write", metavar="DIR", help="write asyncapi.json and schemas/*.json under DIR instead"
    )
    ct.set_defaults(func=cmd_contract)

    lg = sub.add_parser(
        "lag",
        help="consumer lag per partition with its status (exit 0 OK, 1 WARN, 2 worse)",
    )
    lg.add_argument("--json", action="store_true", help="the GET /v1/ops/lag answer as JSON")
    lg.add_argument("--url", help="API base URL (default http://CRM_API_HOST:CRM_API_PORT)")
    lg.add_argument("--token", help="ops/admin token (default: minted from the signing secret)")
    lg.add_argument(
        "--direct", action="store_true", help="sample the broker from here, not via the API"
    )
    lg.add_argument("--samples", type=int, default=3, help="direct: samples to judge over")
    lg.add_argument("--interval", type=float, default=2.0, help="direct: seconds between them")
    data_dir(lg)
    lg.set_defaults(func=cmd_lag)

    d = sub.add_parser("db", help="database schema")
    dsub = d.add_subparsers(dest="db_command", required=True)
    du = dsub.add_parser("upgrade", help="apply migrations (Alembic)")
    du.add_argument("revision", nargs="?", default="head")
    data_dir(du)
    du.set_defaults(func=cmd_db)
    return p


# libraries that log message contents or SQL parameters at DEBUG (visit notes, client names):
# held at WARNING whatever CRM_LOG_LEVEL says
QUIET_LOGGERS = (
    "aiokafka",
    "faust",
    "mode",
    "alembic",
    "uvicorn.error",
    "apscheduler",
    "aiosqlite",
    "asyncpg",
    "sqlalchemy.engine",
    "httpx",
    "httpcore",
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging(os.environ.get("CRM_LOG_LEVEL", "INFO"))
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
