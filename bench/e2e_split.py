"""bench/e2e_apply.py with the apply's steps timed (process CPU of all threads, so SQLite's
own work in aiosqlite's thread counts): where the worker's apply CPU goes on up_e2e's mix.

Each step's figure excludes the timed steps inside it. The timers cost about 1 µs per timed
call: the total is a few µs per message above ``bench/e2e_apply.py``'s.

    python -m bench.e2e_split [--db sqlite,postgresql] [--statements]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streams.apply.applier as A
from bench import e2e_apply
from models import visit_ledger
from streams.apply import accounts, buckets, held, ledger, reference, transfer, visits

SPENT: dict[str, float] = defaultdict(float)
CALLS: dict[str, int] = defaultdict(int)
_inner = [0.0]  # CPU of the timed steps inside the one being timed


def _account(name: str, t0: float, inner_before: float) -> None:
    dt = time.process_time() - t0
    SPENT[name] += dt - _inner[0]
    CALLS[name] += 1
    _inner[0] = inner_before + dt


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*a: Any, **kw: Any) -> Any:
        saved, _inner[0] = _inner[0], 0.0
        t0 = time.process_time()
        try:
            return await fn(*a, **kw)
        finally:
            _account(name, t0, saved)

    return wrapper


def timed_sync(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*a: Any, **kw: Any) -> Any:
        saved, _inner[0] = _inner[0], 0.0
        t0 = time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            _account(name, t0, saved)

    return wrapper


def by_caller(fn: Callable[..., Any], what: str) -> Callable[..., Any]:
    """A statement's time, named by the function of ours that runs it."""

    async def wrapper(*a: Any, **kw: Any) -> Any:
        f = sys._getframe(1)
        while f.f_back is not None and "/sqlalchemy/" in f.f_code.co_filename:
            f = f.f_back
        where = f"{what} {Path(f.f_code.co_filename).name}:{f.f_code.co_name}"
        return await timed(where, fn)(*a, **kw)

    return wrapper


def patch(obj: Any, attr: str, name: str) -> None:
    setattr(obj, attr, timed(name, getattr(obj, attr)))


def instrument(statements: bool) -> None:
    patch(A.Applier, "apply", "apply: dedupe in batch, begin/commit, rest")
    patch(A.Applier, "_record_rejected", "rejected rows")
    patch(A.Applier, "_apply_reference", "reference (claim, write, ...)")
    patch(A.Applier, "_handed_over_clients_of", "handed_over_clients_of")
    patch(A.Applier, "_apply_facts", "facts: credit loop, rest")
    A.decode_event = timed_sync("decode_event", A.decode_event)
    A.Fact = timed_sync("Fact()", A.Fact)  # type: ignore[assignment,misc]
    A.Applier._fact_row = timed_sync("_fact_row", A.Applier._fact_row)  # type: ignore[method-assign]
    patch(A, "resolve", "resolve (terms, credit)")
    patch(A, "recompute_due", "recompute_due (reference)")
    patch(A, "publish", "stream publish")
    patch(A, "apply_snapshots", "snapshots")
    patch(A, "move_clients", "move_clients")
    patch(visit_ledger, "record", "visit_ledger.record")
    for cls in ledger.Ledger.__subclasses__():
        for meth in ("claim", "lock_keys", "lock_hold_release"):
            if meth in cls.__dict__:
                patch(cls, meth, f"ledger.{meth}")
    patch(buckets.Tally, "write", "tally.write")
    patch(held.HeldEvents, "hold", "held.hold")
    patch(held.HeldEvents, "settle", "held.settle")
    patch(held.HeldEvents, "load", "held.load")
    patch(visits.Visits, "record", "visits.record (clocks, reminders)")
    patch(accounts.Accounts, "record", "accounts.record")
    patch(transfer.Transfers, "move", "transfers.move")
    patch(reference.ReferenceWriter, "write", "reference.write")
    if statements:  # the SQLAlchemy statements (PostgreSQL's go mostly to the driver)
        from sqlalchemy.ext.asyncio import AsyncConnection

        setattr(AsyncConnection, "execute", by_caller(AsyncConnection.execute, "sql"))  # noqa: B010
        setattr(  # noqa: B010
            AsyncConnection,
            "exec_driver_sql",
            by_caller(AsyncConnection.exec_driver_sql, "driver-sql"),
        )


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="crm-e2e-split-") as tmp:
        for kind in args.db.split(","):
            SPENT.clear()
            CALLS.clear()
            r = await e2e_apply.run_db(kind.strip(), args, Path(tmp))
            print(r)
            n = r["messages"]
            for k, v in sorted(SPENT.items(), key=lambda kv: -kv[1]):
                print(f"  {k:<52} {v / n * 1e6:7.1f} µs/msg  ({CALLS[k]} calls)")
            print(f"  {'sum':<52} {sum(SPENT.values()) / n * 1e6:7.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--batch", type=int, default=4000)
    p.add_argument("--seed", type=int, default=15)
    p.add_argument("--pg-url", default=os.environ.get("CRM_BENCH_PG_URL", e2e_apply.DEFAULT_PG))
    p.add_argument("--statements", action="store_true", help="time each statement by caller")
    args = p.parse_args(argv)
    args.profile = None
    instrument(args.statements)
    print("load", os.getloadavg(), file=sys.stderr)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
