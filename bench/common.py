"""Shared pieces of the latency, API-load and memory benchmarks: an embedded broker, scratch
databases, the worker and the API as child processes, tokens, percentiles."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from config import Settings
from crmtracker.broker import EmbeddedBroker, free_port
from testkit import process
from testkit.db import scratch_database as scratch_database  # the benches take it from here

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def embedded_broker(workdir: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(free_port(), log_path=workdir / "broker.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Child(process.Child):
    """``python -m crmtracker <command>`` as a child process in a session of its own, started
    at once, its log in ``log_path``."""

    def __init__(self, command: str, env: dict[str, str], log_path: Path) -> None:
        super().__init__(command, env, log_path, new_session=True)


def api_env(settings: Settings, port: int, secret: str) -> dict[str, str]:
    env = settings.child_env()
    env.update(
        CRM_API_PORT=str(port),
        CRM_API_HOST="127.0.0.1",
        CRM_AUTH_SECRET=secret,
    )
    return env


def wait_http(url: str, timeout: float = 60.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


def new_secret() -> str:
    return secrets.token_urlsafe(48)


def bearer(secret: str, role: str = "admin", **kw: object) -> dict[str, str]:
    from api.auth import mint_token

    return {"Authorization": f"Bearer {mint_token(secret, role, **kw)}"}  # type: ignore[arg-type]


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Columns as wide as their widest cell, the first ``left`` aligned left, the rest right."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def finish(
    doc: dict[str, Any], results: list[dict[str, Any]], json_path: Path | None, workdir: Path
) -> int:
    """Print the JSON, write it if asked, keep the logs only when a run failed; exit status."""
    import json
    import shutil

    print(json.dumps(doc, indent=2))
    if json_path:
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
    failed = any(r.get("error") for r in results)
    if failed:
        print(f"logs kept in {workdir}", file=sys.stderr)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0
