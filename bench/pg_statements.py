"""The PostgreSQL server's CPU per statement of the apply: ``bench/apply_only.py`` with every
round trip of every asyncpg connection timed on its backend.

The server is on this machine and shared, so its total CPU says little: each connection's
backend is idle between round trips, and the CPU it used in one (``/proc/<pid>/schedstat``,
nanoseconds on a CPU) is what the server spent on that statement, whoever else uses the
server. Prints the statements by server CPU per event of the timed batches (after the
reference batch). Same arguments as ``apply_only``:

    python bench/pg_statements.py --events 300000 --db postgresql --settle-heap --batch 5000
"""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg.connection

import bench.apply_only as apply_only

# (calls, server ns, wall ns) per statement (its first 110 characters); P = prepare,
# Q = simple query, BI = bind and execute
STATS: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
_TIMED = ("query", "prepare", "bind_execute", "bind_execute_many", "bind", "execute", "copy_in")


def on_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _name(method: str, args: tuple[Any, ...], kw: dict[str, Any]) -> str:
    if method == "query":
        q = args[0]
    elif method == "prepare":
        q = args[1]
    else:
        state = args[0] if args else kw.get("state")
        q = getattr(state, "query", state)
    tag = {"query": "Q", "prepare": "P"}.get(method, method[:2].upper())
    text = re.sub(r"\s+", " ", str(q)).strip()
    return f"{tag} {text[:110]}"


class TimedProtocol:
    """An asyncpg protocol whose round trips are timed on the backend."""

    def __init__(self, protocol: Any, pid: int) -> None:
        object.__setattr__(self, "_protocol", protocol)
        object.__setattr__(self, "_pid", pid)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._protocol, name)
        if name not in _TIMED:
            return attr
        pid = self._pid

        async def timed(*args: Any, **kw: Any) -> Any:
            cpu0, wall0 = on_cpu_ns(pid), time.perf_counter_ns()
            try:
                return await attr(*args, **kw)
            finally:
                s = STATS[_name(name, args, kw)]
                s[0] += 1
                s[1] += on_cpu_ns(pid) - cpu0
                s[2] += time.perf_counter_ns() - wall0

        return timed

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._protocol, name, value)


def install() -> None:
    init: Callable[..., None] = asyncpg.connection.Connection.__init__

    def timed_init(self: Any, protocol: Any, *args: Any, **kw: Any) -> None:
        init(self, protocol, *args, **kw)
        self._protocol = TimedProtocol(protocol, protocol.get_server_pid())

    asyncpg.connection.Connection.__init__ = timed_init  # type: ignore[method-assign]


def report(events: int, top: int = 20) -> None:
    total = sum(s[1] for s in STATS.values())
    print(f"server CPU in statements: {total / 1e9:.2f} s = {total / 1e3 / events:.2f} µs/ev")
    for name, (n, ns, wall) in sorted(STATS.items(), key=lambda kv: -kv[1][1])[:top]:
        print(
            f"{ns / 1e3 / events:7.2f} µs/ev {n:6d} calls {ns / 1e6 / n:8.2f} ms/call"
            f" (wall {wall / 1e6 / n:8.2f})  {name}"
        )


class _Applier(apply_only.Applier):
    """Counts from the batch after the first (the reference data), as apply_only times."""

    _first = True

    async def apply(self, messages: Any) -> Any:
        result = await super().apply(messages)
        if self._first:
            self._first = False
            STATS.clear()
        return result


def main(argv: list[str] | None = None) -> int:
    install()
    apply_only.Applier = _Applier  # type: ignore[misc]
    run_db = apply_only.run_db

    async def run_and_report(kind: str, args: Any, workdir: Path) -> dict:
        row = await run_db(kind, args, workdir)
        report(row["events"])
        return row

    apply_only.run_db = run_and_report
    return apply_only.main(argv)


if __name__ == "__main__":
    sys.exit(main())
